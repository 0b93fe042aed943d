"""IDT (Image De-raining Transformer, Xiao et al., TPAMI 2022) with the public module names and defaults.

A 4-level U-Net on tokens. Every level stacks window transformer blocks (``IDTBlock``: multi-head self-attention in
8x8 windows) and, except the bottleneck, ends with a spatial transformer (``SpatialTransformerLayer``): attention
*between* the 8x8 windows, each channel separately, the 64 pixels of a window being the token's features. Both
attentions add a relative position bias and a "position" branch: convolutions over the token grid of an extra
value projection. Encoders downsample with 4x4 stride-2 convolutions, decoders upsample with 2x2 transposed
convolutions and concatenate the encoder features; the output is a residual added to the input.

The public network only runs on ``img_size`` x ``img_size`` inputs (128): its spatial transformers hold relative
position indices (and position kernels) for that grid of windows and its layers read the side from the token count.
Both public test protocols split larger images into overlapping 128 x 128 crops and merge the outputs weighted by
the inverse distance to the crop centre; :meth:`IDT.forward` does exactly that for every other size (see there).
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

SPATIAL_WINDOW = 8  # pixels per side of the spatial transformer's windows (fixed in the public code)
WINDOW_K_BOUND = 8  # relative-position clamp of the window attention
POSITION_RADIUS = 2  # the position branch's depthwise kernel is at most 5 x 5
LEVELS = 4
# per level: window blocks and the spatial transformer's relative-position clamp (k_bound); None: no spatial layer
ENCODER_LAYOUT = ((3, 16), (3, 8), (2, 4), (2, 2))
BOTTLENECK_LAYOUT = (1, None)
DECODER_LAYOUT = ((1, 2), (2, 4), (2, 8), (3, 16))


def _to_image(tokens: Tensor, h: int, w: int) -> Tensor:
    """[B, H*W, C] tokens (row-major) -> [B, C, H, W]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _to_tokens(image: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H*W, C] tokens (row-major)."""
    return image.flatten(2).transpose(1, 2)


def relative_position_index(grid: tuple[int, int], k_bound: int) -> Tensor:
    """Index into a ``(2k-1)^2`` bias table for every pair of positions of a grid, offsets clamped to ``k - 1``."""
    ys, xs = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing='ij')
    coords = torch.stack([ys.flatten(), xs.flatten()])
    offsets = (coords[:, :, None] - coords[:, None, :]).clamp(1 - k_bound, k_bound - 1) + (k_bound - 1)
    return offsets[0] * (2 * k_bound - 1) + offsets[1]


def stochastic_depth_rates(depths: Sequence[int], rate: float) -> list[list[float]]:
    """The public drop-path rates of the 9 layers (4 encoders, bottleneck, 4 decoders): a linear ramp over the
    encoders' ``depths``, mirrored for the decoders, and ``rate`` for the bottleneck."""
    half = LEVELS
    encoder = torch.linspace(0, rate, sum(depths[:half])).tolist()
    decoder = encoder[::-1]
    bounds = [sum(depths[:i]) for i in range(half + 1)]
    rates = [encoder[bounds[i]:bounds[i + 1]] for i in range(half)] + [[rate] * depths[half]]
    bounds = [sum(depths[half + 1:half + 1 + i]) for i in range(half + 1)]
    rates += [decoder[bounds[i]:bounds[i + 1]] for i in range(half)]
    if not all(rates):
        raise ValueError(f'IDT: every entry of depths must be >= 1 (got {list(depths)})')
    return rates


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability ``p`` while training (rescaled)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x / keep * mask


class LinearProjection(nn.Module):
    """Queries (``to_q``) and keys, values and the position branch's values (``to_kv``, 3 x dim)."""

    def __init__(self, dim: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_kv = nn.Linear(dim, dim * 3, bias=bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """q, k, v as [B_, heads, N, C/heads] and the position values as [B_, C, N] (channel = head, feature)."""
        b, n, c = x.shape
        q = self.to_q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        k, v, v_pos = self.to_kv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v, v_pos.transpose(-1, -2).reshape(b, c, n)


class WindowAttention(nn.Module):
    """Multi-head self-attention over the N = gh x gw tokens of a grid, with a clamped relative position bias, plus
    the position branch: a depthwise (up to 5x5) then a per-head 1x1 convolution of extra values over the grid."""

    def __init__(self, dim: int, grid: tuple[int, int], num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, k_bound: int = WINDOW_K_BOUND) -> None:
        super().__init__()
        self.grid = grid
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * k_bound - 1) ** 2, num_heads))
        radius = max(min(grid[0] - 1, POSITION_RADIUS), 0)
        self.Position_Extract = nn.Sequential(  # noqa: N815 (public name)
            nn.Conv2d(dim, dim, 2 * radius + 1, padding=radius, groups=dim),
            nn.Conv2d(dim, dim, 1, groups=num_heads))
        self.qkv = LinearProjection(dim, num_heads, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer('relative_position_index', relative_position_index(grid, k_bound), persistent=False)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v, v_pos = self.qkv(x)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1).to(q.dtype)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        position = self.Position_Extract(v_pos.view(b, c, *self.grid)).flatten(2).transpose(1, 2)
        return self.proj(attended.transpose(1, 2).reshape(b, n, c) + position)


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: linear, GELU, residual depthwise 3x3 conv + GELU on the token image, linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU())
        self.dwconv = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim), nn.GELU())
        self.linear2 = nn.Sequential(nn.Linear(hidden_dim, dim))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        image = _to_image(self.linear1(x), h, w)
        return self.linear2(_to_tokens(self.dwconv(image) + image))


class IDTBlock(nn.Module):
    """Window transformer block: pre-norm window attention and LeFF, both residual (with stochastic depth)."""

    def __init__(self, dim: int, resolution: int, num_heads: int, win_size: int = 8, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        self.win_size = min(win_size, resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, (self.win_size, self.win_size), num_heads, qkv_bias, qk_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LeFF(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        s = self.win_size
        windows = self.norm1(x).view(b, h // s, s, w // s, s, c).transpose(2, 3).reshape(-1, s * s, c)
        attended = self.attn(windows).view(b, h // s, w // s, s, s, c).transpose(2, 3).reshape(b, h * w, c)
        x = x + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class SpatialTransformerLayer(nn.Module):
    """Attention between the 8x8 windows of each channel (tokens: windows, features: their 64 pixels), then LeFF.

    As the public code, the attended windows are added back in window-major order (window by window, each window's
    pixels row by row), not folded back to their pixel positions, and the attention input is not normalised.
    """

    def __init__(self, resolution: int, num_heads: int, channel: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, drop_path: float = 0.0, k_bound: int = 8) -> None:
        super().__init__()
        features, grid = SPATIAL_WINDOW ** 2, resolution // SPATIAL_WINDOW
        self.attn = WindowAttention(features, (grid, grid), num_heads, qkv_bias, qk_scale, k_bound)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(channel)
        self.mlp = LeFF(channel, int(features * mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        s = SPATIAL_WINDOW
        windows = _to_image(x, h, w).reshape(b, c, h // s, s, w // s, s).transpose(3, 4)
        attended = self.attn(windows.reshape(b * c, (h // s) * (w // s), s * s))
        x = x + self.drop_path(attended.reshape(b, c, n).transpose(1, 2))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class BasicIDTLayer(nn.Module):
    """``blocks``: ``num`` window blocks, then a spatial transformer unless ``k_bound`` is None."""

    def __init__(self, dim: int, resolution: int, num_heads: int, win_size: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: float | None, drop_path: list[float], num: int, k_bound: int | None,
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        blocks = [IDTBlock(dim, resolution, num_heads, win_size, mlp_ratio, qkv_bias, qk_scale, drop_path[0])
                  for _ in range(num)]
        if k_bound is not None:
            blocks.append(SpatialTransformerLayer(resolution, num_heads, dim, mlp_ratio, qkv_bias, qk_scale,
                                                  drop_path[-1], k_bound))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        for block in self.blocks:
            if self.use_checkpoint and x.requires_grad:
                x = checkpoint(block, x, h, w, use_reentrant=False)
            else:
                x = block(x, h, w)
        return x


class Downsample(nn.Module):
    """4x4 stride-2 convolution on the token image."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channel, out_channel, 4, stride=2, padding=1))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return _to_tokens(self.conv(_to_image(x, h, w)))


class Upsample(nn.Module):
    """2x2 stride-2 transposed convolution on the token image."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.deconv = nn.Sequential(nn.ConvTranspose2d(in_channel, out_channel, 2, stride=2))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return _to_tokens(self.deconv(_to_image(x, h, w)))


class InputProj(nn.Module):
    """3x3 convolution and LeakyReLU, to tokens."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channel, out_channel, 3, padding=1), nn.LeakyReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return _to_tokens(self.proj(x))


class OutputProj(nn.Module):
    """Tokens to image, 3x3 convolution."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channel, out_channel, 3, padding=1))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.proj(_to_image(x, h, w))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Crop offsets of the public test scripts: every ``tile - overlap`` pixels while a crop fits, then a last crop
    flush with the end (``length >= tile``)."""
    stride = tile - overlap
    return list(range(0, length - tile, stride)) + [length - tile]


def centre_weights(size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The public merge weights of a ``size`` x ``size`` crop: ``1 / sqrt(dy^2 + dx^2 + 1e-3)``, offsets from
    ``size / 2``."""
    offsets = torch.arange(size, device=device, dtype=torch.float32) - size / 2
    return torch.rsqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2 + 1e-3).to(dtype)


@ARCH_REGISTRY.register()
class IDT(nn.Module):
    """IDT with the defaults of the public ``models/IDT.py`` that Rainmer trains (16,416,463 parameters; its key
    names and shapes, so the public ``net_latest.pth`` files load strictly (read as bare state dicts); BasicSR strips
    the ``module.`` prefix of their DataParallel saves).

    ``forward(x)`` runs the public network directly on ``img_size`` x ``img_size`` inputs (the training crops) and
    any other size through the public test protocol: sides under ``img_size`` reflect-padded (bottom/right) to it,
    overlapping ``img_size`` crops every ``img_size - tile_overlap`` pixels plus one flush with the far edge, their
    outputs averaged with the weights of :func:`centre_weights`, cropped back to H x W. ``tile_overlap`` 32 is
    Rainmer's ``test.py`` for IDT (tile 128, overlap 32), 20 the IDT repository's ``test_full_size.py``; both
    clamp each crop's output to [0, 1] before merging, which ``forward`` (also used for training) does not.

    Args:
        img_size: The side the network is built for (64 or a multiple of 128). Default: 128.
        in_chans, embed_dim, num_heads, win_size, mlp_ratio, qkv_bias, qk_scale, drop_path_rate: as the public
            code. The number of blocks per level is fixed by the architecture (3, 3, 2, 2, 1, 1, 2, 2, 3 plus
            the spatial transformers); ``depths`` only sets the stochastic-depth ramp, as in the public code
            (default: the public training scripts' and Rainmer's [3, 3, 2, 2, 1, 1, 2, 2, 3]).
        use_checkpoint: Gradient checkpointing per block (less memory, slower training).
        tile_overlap: Overlap of the crops for sizes other than ``img_size``. Default: 32.
        tile_batch: Crops restored per batch. Default: 16.
    """

    def __init__(self, img_size: int = 128, in_chans: int = 3, embed_dim: int = 32,
                 depths: Sequence[int] = (3, 3, 2, 2, 1, 1, 2, 2, 3),
                 num_heads: Sequence[int] = (1, 2, 4, 8, 16, 16, 8, 4, 2), win_size: int = 8,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_path_rate: float = 0.1, use_checkpoint: bool = False, tile_overlap: int = 32,
                 tile_batch: int = 16) -> None:
        super().__init__()
        if len(depths) != 2 * LEVELS + 1 or len(num_heads) != 2 * LEVELS + 1:
            raise ValueError('IDT has 9 layers (4 encoders, bottleneck, 4 decoders): depths and num_heads need 9 '
                             'entries each')
        if not (img_size == 64 or img_size % 128 == 0) or win_size < 1:
            raise ValueError(f'IDT: img_size must be 64 or a multiple of 128 (got {img_size})')
        if not 0 <= tile_overlap < img_size or tile_batch < 1:
            raise ValueError(f'IDT: tile_overlap must be in [0, img_size) and tile_batch >= 1 (got {tile_overlap}, '
                             f'{tile_batch})')
        self.img_size = img_size
        self.tile_overlap = tile_overlap
        self.tile_batch = tile_batch
        rates = stochastic_depth_rates(depths, drop_path_rate)

        def layer(index: int, dim: int, resolution: int, layout: tuple[int, int | None]) -> BasicIDTLayer:
            if resolution % min(win_size, resolution):
                raise ValueError(f'IDT: win_size {win_size} does not tile the {resolution}-pixel level')
            return BasicIDTLayer(dim, resolution, num_heads[index], win_size, mlp_ratio, qkv_bias, qk_scale,
                                 rates[index], *layout, use_checkpoint=use_checkpoint)

        # registration order follows the public code, so the state dict's order matches too
        self.input_proj = InputProj(in_chans, embed_dim)
        self.output_proj = OutputProj(2 * embed_dim, in_chans)
        for level, layout in enumerate(ENCODER_LAYOUT):
            dim = embed_dim * 2 ** level
            setattr(self, f'encoderlayer_{level}', layer(level, dim, img_size // 2 ** level, layout))
            setattr(self, f'dowsample_{level}', Downsample(dim, dim * 2))
        self.bottle = layer(LEVELS, embed_dim * 2 ** LEVELS, img_size // 2 ** LEVELS, BOTTLENECK_LAYOUT)
        for index, layout in enumerate(DECODER_LAYOUT):
            level = LEVELS - 1 - index  # 3, 2, 1, 0
            in_dim = embed_dim * 2 ** (LEVELS if index == 0 else level + 2)  # bottleneck, then the decoder's width
            setattr(self, f'upsample_{index}', Upsample(in_dim, embed_dim * 2 ** level))
            setattr(self, f'decoderlayer_{index}',
                    layer(LEVELS + 1 + index, embed_dim * 2 ** (level + 1), img_size // 2 ** level, layout))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def restore(self, x: Tensor) -> Tensor:
        """The public network's forward: x [B, C, img_size, img_size] plus the predicted residual."""
        h = w = self.img_size
        if x.shape[-2:] != (h, w):
            raise ValueError(f'IDT.restore needs {h}x{w} inputs (got {tuple(x.shape[-2:])}); forward takes any size')
        y = self.input_proj(x)
        skips = []
        for level in range(LEVELS):
            y = getattr(self, f'encoderlayer_{level}')(y, h, w)
            skips.append(y)
            y = getattr(self, f'dowsample_{level}')(y, h, w)
            h, w = h // 2, w // 2
        y = self.bottle(y, h, w)
        for index in range(LEVELS):
            y = getattr(self, f'upsample_{index}')(y, h, w)
            h, w = h * 2, w * 2
            y = getattr(self, f'decoderlayer_{index}')(torch.cat([y, skips.pop()], dim=-1), h, w)
        return x + self.output_proj(y, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """The restored image for any H x W: directly at ``img_size`` x ``img_size``, else in merged crops."""
        size = self.img_size
        h, w = x.shape[-2:]
        if (h, w) == (size, size):
            return self.restore(x)
        pad_h, pad_w = max(size - h, 0), max(size - w, 0)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect' if pad_h < h and pad_w < w else 'replicate')
        starts = [(top, left) for top in tile_starts(x.shape[-2], size, self.tile_overlap)
                  for left in tile_starts(x.shape[-1], size, self.tile_overlap)]
        weight = centre_weights(size, x.device, x.dtype)
        output, total = torch.zeros_like(x), x.new_zeros(x.shape[-2:])  # accumulated in x's dtype (fp32 under AMP)
        for first in range(0, len(starts), self.tile_batch):
            chunk = starts[first:first + self.tile_batch]
            crops = torch.cat([x[..., top:top + size, left:left + size] for top, left in chunk])
            for (top, left), restored in zip(chunk, self.restore(crops).split(x.shape[0])):
                output[..., top:top + size, left:left + size] += restored.to(x.dtype) * weight
                total[top:top + size, left:left + size] += weight
        return (output / total)[..., :h, :w]
