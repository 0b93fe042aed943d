"""Tiled inference with bounded memory: overlapping tiles blended with feathered weights (no seams)."""
from collections.abc import Callable

import torch
from torch import Tensor


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap`` shared pixels."""
    if tile >= length:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f'tile overlap {overlap} must be in [0, tile size {tile})')
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def feather_weights(size: int, overlap: int, at_start: bool, at_end: bool, device, dtype, margin: int = 0) -> Tensor:
    """1-D blending weights of a tile: on each side that meets another tile, 0 over the ``margin`` pixels next to
    the edge (where a tile's output is disturbed by its own border), then a linear ramp up to the overlap's end."""
    weights = torch.ones(size, device=device, dtype=dtype)
    if overlap > 0:
        ramp_len = min(overlap, size)
        ramp = torch.arange(1, overlap + 1, device=device, dtype=dtype)
        ramp = ((ramp - margin) / (overlap - margin + 1)).clamp(min=0)[:ramp_len]
        if not at_start:
            weights[:ramp_len] = ramp
        if not at_end:
            weights[size - ramp_len:] = torch.minimum(weights[size - ramp_len:], ramp.flip(0))
    return weights


def tiled_forward(forward: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int,
                  margin: int | None = None) -> Tensor:
    """Run ``forward`` on overlapping ``tile`` x ``tile`` crops of x [B, C, H, W] and blend the outputs.

    Only one tile's activations are alive at a time, so peak memory is bounded by the tile size (plus the input
    and the output). Where two tiles overlap, the ``margin`` pixels (default ``overlap // 4``) next to each tile's
    inner edge get weight 0 and the rest ramps linearly, so a network whose receptive field reaches at most
    ``margin`` pixels gives exactly its whole-image output; networks with global operations (Rainmer's channel
    attention, pooled statistics) differ by how much those statistics vary between tiles. Outputs must have the
    input's spatial size.
    """
    margin = overlap // 4 if margin is None else margin
    if overlap and not 0 <= 2 * margin < overlap:
        raise ValueError(f'tile margin {margin} must be under half the overlap {overlap}')
    _, _, h, w = x.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    output = weight_sum = None
    for y in ys:
        for x0 in xs:
            patch = forward(x[..., y:y + tile, x0:x0 + tile])
            if output is None:
                output = x.new_zeros(x.shape[0], patch.shape[1], h, w, dtype=patch.dtype)
                weight_sum = x.new_zeros(1, 1, h, w, dtype=patch.dtype)
            th, tw = patch.shape[-2:]
            wy = feather_weights(th, overlap, y == 0, y + th >= h, x.device, patch.dtype, margin)
            wx = feather_weights(tw, overlap, x0 == 0, x0 + tw >= w, x.device, patch.dtype, margin)
            weight = (wy[:, None] * wx[None, :])[None, None]
            output[..., y:y + th, x0:x0 + tw] += patch * weight
            weight_sum[..., y:y + th, x0:x0 + tw] += weight
            del patch
    return output.div_(weight_sum)
