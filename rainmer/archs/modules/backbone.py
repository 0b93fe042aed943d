"""The 4-level sparse-transformer U-Net shared by DRSformer and Rainmer (state-dict keys of DRSformer)."""
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.moe import MixtureOfExperts
from rainmer.archs.modules.prompt import PromptedTransformerBlock
from rainmer.archs.modules.transformer import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample

SIZE_MULTIPLE = 8  # three 2x downsamplings


def pad_to_multiple(x: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """Reflect-pad the bottom/right so H and W are multiples of ``multiple`` (replicate if too small to reflect)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class SparseTransformerBackbone(nn.Module):
    """patch embed -> MEFC -> [fusion] -> 3 encoder levels + latent -> 3 decoder levels -> MEFC -> conv + input.

    Args:
        inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor, bias, LayerNorm_type:
            as DRSformer.
        attention: Keyword arguments of every block's :class:`TopKSparseAttention`.
        prompt_views: Prompts injected in every decoder block (empty for DRSformer).
        prompt_dim: Width of the prompt vectors.
        prompt_fusion: How the decoder blocks combine their prompts, ``sum`` or ``chralpha``
            (:class:`PromptedTransformerBlock`).
        mefc: Build the MEFC blocks at level 0 and before the output (DRSformer drops them for Rain200L/SPA).
    """

    def __init__(self, inp_channels: int, out_channels: int, dim: int, num_blocks: Sequence[int],
                 heads: Sequence[int], ffn_expansion_factor: float, bias: bool, LayerNorm_type: str,  # noqa: N803
                 attention: Mapping, prompt_views: Sequence[str] = (), prompt_dim: int = 0,
                 mefc: bool = True, prompt_fusion: str = 'sum') -> None:
        super().__init__()
        common = dict(ffn_expansion_factor=ffn_expansion_factor, bias=bias, LayerNorm_type=LayerNorm_type,
                      **attention)
        prompted = dict(common, prompt_views=tuple(prompt_views), prompt_dim=prompt_dim, prompt_fusion=prompt_fusion)

        def encoder_level(level: int) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(dim * 2**level, heads[level], **common)
                                   for _ in range(num_blocks[level])])

        def decoder_level(channels: int, level: int) -> nn.ModuleList:
            return nn.ModuleList(PromptedTransformerBlock(channels, heads[level], **prompted)
                                 for _ in range(num_blocks[level]))

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level0 = MixtureOfExperts(dim) if mefc else nn.Identity()
        self.encoder_level1 = encoder_level(0)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = encoder_level(1)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = encoder_level(2)
        self.down3_4 = Downsample(dim * 4)
        self.latent = encoder_level(3)
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = decoder_level(dim * 4, 2)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = decoder_level(dim * 2, 1)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = decoder_level(dim * 2, 0)  # level 1 keeps the concatenated 2*dim channels
        self.refinement = MixtureOfExperts(dim * 2) if mefc else nn.Identity()
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    @staticmethod
    def _decode(level: nn.ModuleList, x: Tensor, prompts: Mapping[str, Tensor] | None) -> Tensor:
        for block in level:
            x = block(x, prompts)
        return x

    def restore(self, inp: Tensor, prompts: Mapping[str, Tensor] | None = None,
                fuse: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Restore an image whose H and W are multiples of 8 (see :func:`pad_to_multiple`).

        Args:
            inp: [B, C, H, W]. prompts: view -> [B, prompt_dim, 1, 1] for the decoder blocks.
            fuse: Applied to the MEFC output before the first level (Rainmer's local knowledge fusion).
        """
        feat = self.encoder_level0(self.patch_embed(inp))
        if fuse is not None:
            feat = fuse(feat)
        enc1 = self.encoder_level1(feat)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1))
        dec3 = self._decode(self.decoder_level3, dec3, prompts)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1))
        dec2 = self._decode(self.decoder_level2, dec2, prompts)
        dec1 = self._decode(self.decoder_level1, torch.cat([self.up2_1(dec2), enc1], dim=1), prompts)
        return self.output(self.refinement(dec1)) + inp
