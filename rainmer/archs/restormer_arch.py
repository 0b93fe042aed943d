"""Restormer (CVPR 2022) with the public constructor arguments and state-dict keys.

A 4-level U-Net of transformer blocks whose attention runs across channels (MDTA: a C x C attention map per head
from L2-normalised queries and keys over all pixels) and whose feed-forward network is gated by a GELU branch
(GDFN). Module names are the public ``basicsr/models/archs/restormer_arch.py``'s, so its released checkpoints load
strictly. The blocks are shared with PromptIR (:mod:`rainmer.archs.promptir_arch`).
"""
from collections.abc import Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from rainmer.archs.fast import set_fast
from rainmer.archs.modules.backbone import pad_to_multiple
from rainmer.archs.modules.nerdrain_blocks import (
    ChannelAttention,
    GatedFeedForward,
    NeRDTransformerBlock,
    depthwise_conv,
    transformer_stage,
)
from rainmer.archs.modules.transformer import Downsample, OverlapPatchEmbed, Upsample

SIZE_MULTIPLE = 8  # three 2x downsamplings


class GatedDconvFeedForward(GatedFeedForward):
    """GDFN: NeRD-Rain's gated feed-forward with the dw3x3 held directly (key ``dwconv``)."""

    depthwise = staticmethod(depthwise_conv)


class TransposedAttention(ChannelAttention):
    """MDTA: per head, softmax(temperature * q_n k_n^T) over channels, times v; the dw3x3 held directly."""

    depthwise = staticmethod(depthwise_conv)


class RestormerBlock(NeRDTransformerBlock):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))`` (keys ``norm1, attn, norm2, ffn``)."""

    attention = TransposedAttention
    feed_forward = GatedDconvFeedForward


def restormer_stage(depth: int, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                    layer_norm_type: str) -> nn.Sequential:
    """``depth`` :class:`RestormerBlock` in a row (keys ``<stage>.<i>.*``)."""
    return transformer_stage(depth, dim, num_heads, ffn_expansion_factor, bias, layer_norm_type, RestormerBlock)


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
