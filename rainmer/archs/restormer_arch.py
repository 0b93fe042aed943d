"""Restormer (CVPR 2022) with the public constructor arguments and state-dict keys.

A 4-level U-Net of transformer blocks whose attention runs across channels (MDTA: a C x C attention map per head
from L2-normalised queries and keys over all pixels) and whose feed-forward network is gated by a GELU branch
(GDFN). Module names are the public ``basicsr/models/archs/restormer_arch.py``'s, so its released checkpoints load
strictly. The blocks are shared with PromptIR (:mod:`rainmer.archs.promptir_arch`).
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from rainmer.archs.fast import set_fast
from rainmer.archs.modules.backbone import pad_to_multiple
from rainmer.archs.modules.transformer import Downsample, LayerNorm, OverlapPatchEmbed, Upsample

SIZE_MULTIPLE = 8  # three 2x downsamplings


class GatedDconvFeedForward(nn.Module):
    """GDFN: conv1x1 to 2h -> dw3x3 -> GELU(first half) * second half -> conv1x1 back (h = int(dim * expansion))."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransposedAttention(nn.Module):
    """MDTA: q, k, v from conv1x1 + dw3x3; per head, softmax(temperature * q_n k_n^T) over channels, times v."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attention @ v).reshape(b, c, h, w))


class RestormerBlock(nn.Module):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))`` (keys ``norm1, attn, norm2, ffn``)."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str) -> None:  # noqa: N803 (public option name)
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = TransposedAttention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = GatedDconvFeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def restormer_stage(depth: int, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                    layer_norm_type: str) -> nn.Sequential:
    """``depth`` :class:`RestormerBlock` in a row (keys ``<stage>.<i>.*``)."""
    return nn.Sequential(*[RestormerBlock(dim, num_heads, ffn_expansion_factor, bias, layer_norm_type)
                           for _ in range(depth)])


@ARCH_REGISTRY.register()
class Restormer(nn.Module):
    """Restormer with the public defaults (26,126,644 parameters; the configuration of the deraining model).

    ``forward(x)`` returns the restored image for any H x W: it reflect-pads to a multiple of 8 and crops back
    (``size_multiple = 8`` tells DerainModel and ``rainmer derain`` the same, so they pad first and nothing more
    happens here).

    Args:
        inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads, ffn_expansion_factor, bias,
            LayerNorm_type, dual_pixel_task: as the public code (``dual_pixel_task`` adds ``skip_conv`` and drops the
            global residual, for 6-channel dual-pixel defocus deblurring).
        fast: ``auto`` | True | False: the fast evaluation of the same parameters (:mod:`rainmer.archs.fast`; here
            LayerNorm through ``F.layer_norm`` and channels_last activations).
    """

    size_multiple = SIZE_MULTIPLE

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias',  # noqa: N803 (public option name)
                 dual_pixel_task: bool = False, fast: bool | str = 'auto') -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError('Restormer has 4 levels: num_blocks and heads need 4 entries each')

        def stage(depth: int, width: int, level: int) -> nn.Sequential:
            return restormer_stage(depth, width, heads[level], ffn_expansion_factor, bias, LayerNorm_type)

        # registration order follows the public code, so state-dict order matches too
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = stage(num_blocks[0], dim, 0)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(num_blocks[1], dim * 2, 1)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = stage(num_blocks[2], dim * 4, 2)
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(num_blocks[3], dim * 8, 3)
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = stage(num_blocks[2], dim * 4, 2)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = stage(num_blocks[1], dim * 2, 1)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = stage(num_blocks[0], dim * 2, 0)  # level 1 keeps the concatenated 2*dim channels
        self.refinement = stage(num_refinement_blocks, dim * 2, 0)
        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)
        set_fast(self, fast)

    def restore(self, inp: Tensor) -> Tensor:
        """The public forward on an image whose H and W are multiples of 8."""
        embedded = self.patch_embed(inp)
        enc1 = self.encoder_level1(embedded)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1)))
        if self.dual_pixel_task:
            return self.output(dec1 + self.skip_conv(embedded))
        return self.output(dec1) + inp

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return self.restore(pad_to_multiple(x, SIZE_MULTIPLE))[..., :h, :w]
