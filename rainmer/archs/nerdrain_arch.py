"""NeRD-Rain (CVPR 2024): bidirectional multi-scale implicit neural representations for image deraining.

Three U-Nets of transformer blocks work on the input at 1/4, 1/2 and full size. Coarse to fine, each scale's
encoder latent drives an implicit neural representation (INR) whose RGB output, added to that scale's input, is
upsampled and added to the next scale's input. The full-size network runs three encoder/decoder passes and the
half-size one two; bidirectional fusion of consecutive passes' latents feeds back fine to coarse, and decoder
features feed forward coarse to fine. Module names are the public code's, so its released checkpoints load
strictly (``param_key_g: state_dict``; BasicSR strips the ``module.`` prefix of its DataParallel saves).
"""
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from rainmer.archs.fast import set_fast
from rainmer.archs.modules.backbone import pad_to_multiple
from rainmer.archs.modules.nerdrain_blocks import BidirectionalFusion, ImplicitDecoder, transformer_stage
from rainmer.archs.modules.transformer import Downsample, OverlapPatchEmbed, Upsample

SIZE_MULTIPLE = 16  # quarter scale, then two 2x downsamplings
PASSES = {'small': 1, 'mid': 2, 'max': 3}  # encoder passes per scale (1/4, 1/2, 1)


class NeRDRainOutputs(NamedTuple):
    """Restored images at full, half and quarter size, and the INR-refined inputs of the half and quarter scales."""

    full: Tensor
    half: Tensor
    quarter: Tensor
    inr_half: Tensor
    inr_quarter: Tensor


def _down2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=0.5)  # nearest, as the public code


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2)


def stage_names(scale: str, index: int) -> dict[str, str]:
    """Public attribute names of one encoder/decoder pass (``index`` from 1) of a scale."""
    blocks = '' if scale == 'small' else str(index)  # encoder_level1_max2, latent_mid1, encoder_level1_small
    resample = '' if index == 1 else str(index)  # down1_2_max, down1_2_max2, up3_2_mid2
    return {
        'enc1': f'encoder_level1_{scale}{blocks}', 'down12': f'down1_2_{scale}{resample}',
        'enc2': f'encoder_level2_{scale}{blocks}', 'down23': f'down2_3_{scale}{resample}',
        'latent': f'latent_{scale}{blocks}', 'up32': f'up3_2_{scale}{resample}',
        'reduce2': f'reduce_chan_level2_{scale}{blocks}', 'dec2': f'decoder_level2_{scale}{blocks}',
        'up21': f'up2_1_{scale}{resample}', 'reduce1': f'reduce_chan_level1_{scale}{blocks}',
        'dec1': f'decoder_level1_{scale}{blocks}',
    }


@ARCH_REGISTRY.register()
class NeRDRain(nn.Module):
    """NeRD-Rain with the public defaults (22,893,146 parameters; ``NeRDRainS``: dim 32, 10,530,314).

    ``forward(x)`` returns the full-size restored image for any H x W (reflect-padded to a multiple of 16 and
    cropped back), so it drops into any BasicSR config; ``forward(x, multiscale=True)`` returns
    :class:`NeRDRainOutputs` for the multi-scale loss (outputs cropped to H x W, H//2 x W//2, H//4 x W//4).

    Args:
        inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor, bias, LayerNorm_type:
            as the public ``MultiscaleNet``.
        reuse_level1_reduction: The public forward applies ``reduce_chan_level1_max2`` in the third full-size
            pass and never uses ``reduce_chan_level1_max3`` (which it still holds). True (default) reproduces it;
            False uses ``reduce_chan_level1_max3``. Either way both are parameters, so checkpoints load strictly;
            with True, DDP needs ``find_unused_parameters: true``.
        fast: ``auto`` | True | False: the fast evaluation of the same parameters (:mod:`rainmer.archs.fast`;
            here LayerNorm through ``F.layer_norm`` and channels_last activations).
    """

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (2, 3, 3), heads: Sequence[int] = (1, 2, 4),
                 ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias',  # noqa: N803 (public option name)
                 reuse_level1_reduction: bool = True, fast: bool | str = 'auto') -> None:
        super().__init__()
        if len(num_blocks) != 3 or len(heads) != 3:
            raise ValueError('NeRDRain has 3 levels: num_blocks and heads need 3 entries each')
        self.reuse_level1_reduction = reuse_level1_reduction

        def stage(level: int, width: int) -> nn.Sequential:
            return transformer_stage(num_blocks[level], width, heads[level], ffn_expansion_factor, bias,
                                     LayerNorm_type)

        # registration order follows the public code (small, mid, max) so state-dict order matches too
        for scale, passes in PASSES.items():
            setattr(self, f'patch_embed_{scale}', OverlapPatchEmbed(inp_channels, dim))
            names = [stage_names(scale, i) for i in range(1, passes + 1)]
            self._add_pass_modules(names, dim, stage, bias)
            setattr(self, f'output_{scale}', nn.Conv2d(dim, out_channels, 3, padding=1, bias=bias))
            if scale == 'small':
                self.INR = ImplicitDecoder(dim, out_channels)
            elif scale == 'mid':
                self.output_mid_context = nn.Conv2d(dim, dim, 3, padding=1, bias=bias)
                self.INR2 = ImplicitDecoder(dim, out_channels)
            else:
                self.output_max_context1 = nn.Conv2d(dim, dim, 3, padding=1, bias=bias)
                self.output_max_context2 = nn.Conv2d(dim, dim, 3, padding=1, bias=bias)
        self.BF1 = BidirectionalFusion(dim * 4)
        self.BF2 = BidirectionalFusion(dim * 4)
        self.BF3 = BidirectionalFusion(dim * 4)
        self.upsmall2mid1 = Upsample(dim * 4)  # latent (4 dim, 1/16) -> INR feature (dim, 1/4)
        self.upsmall2mid2 = Upsample(dim * 2)
        self.upmid2max1 = Upsample(dim * 4)  # latent (4 dim, 1/8) -> INR feature (dim, 1/2)
        self.upmid2max2 = Upsample(dim * 2)
        set_fast(self, fast)

    def _add_pass_modules(self, passes: list[dict[str, str]], dim: int, stage, bias: bool) -> None:
        """Encoder stages of every pass, then resampling and decoder stages in the public code's order."""
        widths = {'enc1': (0, dim), 'enc2': (1, dim * 2), 'latent': (2, dim * 4), 'dec2': (1, dim * 2),
                  'dec1': (0, dim)}
        for role, make in (('enc1', None), ('down12', lambda: Downsample(dim)), ('enc2', None),
                           ('down23', lambda: Downsample(dim * 2)), ('latent', None),
                           ('up32', lambda: Upsample(dim * 4)),
                           ('reduce2', lambda: nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)), ('dec2', None),
                           ('up21', lambda: Upsample(dim * 2)),
                           ('reduce1', lambda: nn.Conv2d(dim * 2, dim, 1, bias=bias)), ('dec1', None)):
            for names in passes:
                setattr(self, names[role], stage(*widths[role]) if make is None else make())

    # ------------------------------------------------------------------ passes
    def _module(self, names: dict[str, str], role: str) -> nn.Module:
        return getattr(self, names[role])

    def _encode(self, names: dict[str, str], x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encoder features at 1, 1/2 and the latent at 1/4 of the pass's input size."""
        level1 = self._module(names, 'enc1')(x)
        level2 = self._module(names, 'enc2')(self._module(names, 'down12')(level1))
        latent = self._module(names, 'latent')(self._module(names, 'down23')(level2))
        return level1, level2, latent

    def _decode(self, names: dict[str, str], latent: Tensor, level1: Tensor, level2: Tensor,
                reduce1: nn.Module | None = None) -> Tensor:
        x = self._module(names, 'up32')(latent)
        x = self._module(names, 'dec2')(self._module(names, 'reduce2')(torch.cat([x, level2], dim=1)))
        x = self._module(names, 'up21')(x)
        x = (reduce1 or self._module(names, 'reduce1'))(torch.cat([x, level1], dim=1))
        return self._module(names, 'dec1')(x)

    def _forward_scales(self, x: Tensor) -> NeRDRainOutputs:
        small, mid = stage_names('small', 1), [stage_names('mid', i) for i in (1, 2)]
        full = [stage_names('max', i) for i in (1, 2, 3)]
        x_half, x_quarter = _down2(x), F.interpolate(x, scale_factor=0.25)

        # coarse to fine: encoder latents -> INR residuals -> inputs of the next scale
        s1, s2, s_latent = self._encode(small, self.patch_embed_small(x_quarter))
        inr_quarter = self.INR(self.upsmall2mid2(self.upsmall2mid1(s_latent))) + x_quarter
        mid_input = x_half + _up2(inr_quarter)
        m1, m2, m_latent = self._encode(mid[0], self.patch_embed_mid(mid_input))
        inr_half = self.INR2(self.upmid2max2(self.upmid2max1(m_latent))) + mid_input
        full_input = x + _up2(inr_half)

        # full size: three passes, each decoder's output re-encoded by the next
        latents = []
        features = self.patch_embed_max(full_input)
        for index, names in enumerate(full):
            f1, f2, f_latent = self._encode(names, features)
            latents.append(f_latent)
            if index < 2:
                context = self.output_max_context1 if index == 0 else self.output_max_context2
                features = context(self._decode(names, f_latent, f1, f2))

        # fine to coarse: fused full-size latents refine the half-size latents, fused half-size ones the quarter's
        feedback_a = _down2(self.BF1(latents[0], latents[1]))
        feedback_b = _down2(self.BF2(latents[1], latents[2]))
        m_context = self.output_mid_context(self._decode(mid[0], m_latent + feedback_a, m1, m2))
        m1b, m2b, m_latent_b = self._encode(mid[1], m_context)
        feedback_c = _down2(self.BF3(m_latent, m_latent_b))

        # decoders, coarse to fine, each adding the coarser scale's decoder features
        s_features = self._decode(small, s_latent + feedback_c, s1, s2)
        quarter = self.output_small(s_features) + x_quarter
        m_features = self._decode(mid[1], m_latent_b + feedback_b, m1b, m2b) + _up2(s_features)
        half = self.output_mid(m_features) + x_half
        reduce1 = self.reduce_chan_level1_max2 if self.reuse_level1_reduction else None
        f_features = self._decode(full[2], latents[2], f1, f2, reduce1=reduce1) + _up2(m_features)
        restored = self.output_max(f_features) + x
        return NeRDRainOutputs(restored, half, quarter, inr_half, inr_quarter)

    def forward(self, x: Tensor, multiscale: bool = False) -> Tensor | NeRDRainOutputs:
        h, w = x.shape[-2:]
        outputs = self._forward_scales(pad_to_multiple(x, SIZE_MULTIPLE))
        if not multiscale:
            return outputs.full[..., :h, :w]
        half, quarter = (h // 2, w // 2), (h // 4, w // 4)
        return NeRDRainOutputs(outputs.full[..., :h, :w], outputs.half[..., :half[0], :half[1]],
                               outputs.quarter[..., :quarter[0], :quarter[1]],
                               outputs.inr_half[..., :half[0], :half[1]],
                               outputs.inr_quarter[..., :quarter[0], :quarter[1]])


@ARCH_REGISTRY.register()
class NeRDRainS(NeRDRain):
    """NeRD-Rain-S: the public ``model_S.py``, i.e. NeRD-Rain with ``dim=32`` (10,530,314 parameters)."""

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 32,
                 num_blocks: Sequence[int] = (2, 3, 3), heads: Sequence[int] = (1, 2, 4),
                 ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias',  # noqa: N803 (public option name)
                 reuse_level1_reduction: bool = True, fast: bool | str = 'auto') -> None:
        super().__init__(inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor, bias,
                         LayerNorm_type, reuse_level1_reduction, fast)
