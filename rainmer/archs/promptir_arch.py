"""PromptIR (NeurIPS 2023): all-in-one blind restoration with learned prompts in Restormer's decoder.

The Restormer U-Net (:mod:`rainmer.archs.restormer_arch`) with a prompt block before each of the three upsamplings:
a :class:`PromptGenBlock` mixes its learned prompt components with softmax weights predicted from the pooled
feature map, resizes the mixture to the feature size and convolves it; a transformer block on
``[features, prompt]`` and a 1x1 conv back to the feature width follow. Module names are the public ``net/model.py``'s
(``PromptIR(decoder=True)``, the all-in-one model), so its checkpoints load strictly.
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from rainmer.archs.fast import set_fast
from rainmer.archs.modules.backbone import pad_to_multiple
from rainmer.archs.modules.transformer import Downsample, OverlapPatchEmbed, Upsample
from rainmer.archs.restormer_arch import SIZE_MULTIPLE, RestormerBlock, restormer_stage

PROMPT_DIMS = (64, 128, 320)  # prompt channels at levels 1, 2, 3 (decoder side: after levels 2, 3 and the latent)
PROMPT_SIZES = (64, 32, 16)  # stored spatial size of the prompt components
UNUSED_REDUCED_CHANNELS = 256  # output width of the public, never-called ``chnl_reduce3``


class PromptGenBlock(nn.Module):
    """``conv3x3(resize(sum_l softmax(linear(mean_hw x))_l * prompt_l))``: an input-conditioned prompt map.

    Args:
        prompt_dim: Prompt channels. prompt_len: Number of prompt components. prompt_size: Their stored H = W.
        lin_dim: Channels of the feature map that selects the components.
    """

    def __init__(self, prompt_dim: int = 128, prompt_len: int = 5, prompt_size: int = 96, lin_dim: int = 192) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        weights = F.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # [B, len]
        prompt = (weights[:, :, None, None, None] * self.prompt_param).sum(dim=1)  # [B, prompt_dim, size, size]
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return self.conv3x3(prompt)


@ARCH_REGISTRY.register()
class PromptIR(nn.Module):
    """PromptIR, all-in-one model (``decoder=True``): 35,592,263 parameters at the defaults.

    ``forward(x)`` returns the restored image for any H x W: it reflect-pads to a multiple of 8 and crops back
    (``size_multiple = 8`` tells DerainModel and ``rainmer derain`` the same, so they pad first).

    The public class holds modules its forward never calls (``chnl_reduce1..3``, ``reduce_noise_channel_1..3``:
    215,296 of the parameters at the defaults); they are kept, so checkpoints load strictly, and DDP needs
    ``find_unused_parameters: true``.

    Args:
        inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads, ffn_expansion_factor, bias,
            LayerNorm_type: as the public code.
        decoder: The prompt blocks. The public default is False, but its forward only runs with True (the
            upsampling after the latent is built for the prompted width), and the released model and training
            script use True: False is refused.
        prompt_len, prompt_dims, prompt_sizes: Components, channels and stored sizes of the three prompt blocks
            (the public code's constants; smaller values make test-sized networks).
        fast: ``auto`` | True | False: the fast evaluation of the same parameters (:mod:`rainmer.archs.fast`; here
            LayerNorm through ``F.layer_norm`` and channels_last activations).
    """

    size_multiple = SIZE_MULTIPLE

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias',  # noqa: N803 (public option name)
                 decoder: bool = True, prompt_len: int = 5, prompt_dims: Sequence[int] = PROMPT_DIMS,
                 prompt_sizes: Sequence[int] = PROMPT_SIZES, fast: bool | str = 'auto') -> None:
        super().__init__()
        if not decoder:
            raise ValueError('PromptIR: decoder=False does not run in the public code either (its up4_3 expects '
                             'the prompted latent); use decoder=True, the all-in-one model')
        if len(num_blocks) != 4 or len(heads) != 4 or len(prompt_dims) != 3 or len(prompt_sizes) != 3:
            raise ValueError('PromptIR has 4 levels and 3 prompt blocks: num_blocks and heads need 4 entries, '
                             'prompt_dims and prompt_sizes 3')
        self.decoder = decoder
        p1, p2, p3 = prompt_dims

        def stage(depth: int, width: int, level: int) -> nn.Sequential:
            return restormer_stage(depth, width, heads[level], ffn_expansion_factor, bias, LayerNorm_type)

        def prompt_block(width: int) -> RestormerBlock:  # every prompt block uses the heads of level 3
            return RestormerBlock(width, heads[2], ffn_expansion_factor, bias, LayerNorm_type)

        def conv1x1(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=1, bias=bias)

        # registration order follows the public code, so state-dict order matches too
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.prompt1 = PromptGenBlock(p1, prompt_len, prompt_sizes[0], lin_dim=dim * 2)
        self.prompt2 = PromptGenBlock(p2, prompt_len, prompt_sizes[1], lin_dim=dim * 4)
        self.prompt3 = PromptGenBlock(p3, prompt_len, prompt_sizes[2], lin_dim=dim * 8)
        self.chnl_reduce1 = conv1x1(p1, p1)  # never called (public layout)
        self.chnl_reduce2 = conv1x1(p2, p2)  # never called
        self.chnl_reduce3 = conv1x1(p3, UNUSED_REDUCED_CHANNELS)  # never called
        self.reduce_noise_channel_1 = conv1x1(dim + p1, dim)  # never called
        self.encoder_level1 = stage(num_blocks[0], dim, 0)
        self.down1_2 = Downsample(dim)
        self.reduce_noise_channel_2 = conv1x1(dim * 2 + p2, dim * 2)  # never called
        self.encoder_level2 = stage(num_blocks[1], dim * 2, 1)
        self.down2_3 = Downsample(dim * 2)
        self.reduce_noise_channel_3 = conv1x1(dim * 4 + UNUSED_REDUCED_CHANNELS, dim * 4)  # never called
        self.encoder_level3 = stage(num_blocks[2], dim * 4, 2)
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(num_blocks[3], dim * 8, 3)
        self.up4_3 = Upsample(dim * 4)  # the prompted latent is reduced to dim * 4 first
        self.reduce_chan_level3 = conv1x1(dim * 2 + dim * 4, dim * 4)
        self.noise_level3 = prompt_block(dim * 8 + p3)
        self.reduce_noise_level3 = conv1x1(dim * 8 + p3, dim * 4)
        self.decoder_level3 = stage(num_blocks[2], dim * 4, 2)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = conv1x1(dim * 4, dim * 2)
        self.noise_level2 = prompt_block(dim * 4 + p2)
        self.reduce_noise_level2 = conv1x1(dim * 4 + p2, dim * 4)
        self.decoder_level2 = stage(num_blocks[1], dim * 2, 1)
        self.up2_1 = Upsample(dim * 2)
        self.noise_level1 = prompt_block(dim * 2 + p1)
        self.reduce_noise_level1 = conv1x1(dim * 2 + p1, dim * 2)
        self.decoder_level1 = stage(num_blocks[0], dim * 2, 0)  # level 1 keeps the concatenated 2*dim channels
        self.refinement = stage(num_refinement_blocks, dim * 2, 0)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)
        set_fast(self, fast)

    @staticmethod
    def _prompted(x: Tensor, prompt: PromptGenBlock, block: RestormerBlock, reduce: nn.Conv2d) -> Tensor:
        return reduce(block(torch.cat([x, prompt(x)], dim=1)))

    def restore(self, inp: Tensor) -> Tensor:
        """The public forward on an image whose H and W are multiples of 8."""
        enc1 = self.encoder_level1(self.patch_embed(inp))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        latent = self._prompted(latent, self.prompt3, self.noise_level3, self.reduce_noise_level3)
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1)))
        dec3 = self._prompted(dec3, self.prompt2, self.noise_level2, self.reduce_noise_level2)
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1)))
        dec2 = self._prompted(dec2, self.prompt1, self.noise_level1, self.reduce_noise_level1)
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1)))
        return self.output(dec1) + inp

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return self.restore(pad_to_multiple(x, SIZE_MULTIPLE))[..., :h, :w]
