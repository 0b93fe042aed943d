"""State-dict key names and shapes of the public PromptIR (va1shn9v/PromptIR), written from its module layout.

Independent of this package's modules. Layout of the public ``net/model.py``, ``PromptIR(decoder=True)`` (the
all-in-one model of ``train.py``): Restormer's blocks and resampling (:mod:`public_restormer_keys`), plus

* ``prompt1..3`` (``PromptGenBlock``): ``prompt_param`` [1, 5, prompt_dim, size, size], ``linear_layer``
  (nn.Linear lin_dim -> 5, with bias), ``conv3x3`` (no bias); (prompt_dim, size, lin_dim) = (64, 64, 96),
  (128, 32, 192), (320, 16, 384);
* ``chnl_reduce1..3`` and ``reduce_noise_channel_1..3``: 1x1 convs the forward never calls;
* ``noise_level3/2/1``: one transformer block each (heads[2]) on [features, prompt], ``reduce_noise_level3/2/1``
  1x1 back; ``up4_3`` upsamples from 4 * dim (the reduced prompted latent).

The public code writes several widths as constants valid at dim 48 (e.g. ``dim*2**2 + 512``); they are written the
same way here. Registration order as the public code; checked once against its ``state_dict()`` at the defaults
(548 tensors, 35,592,263 parameters).
"""
from collections import OrderedDict
from collections.abc import Sequence

from public_restormer_keys import conv_shapes, public_block_shapes, public_stage_shapes, resample_shapes

PUBLIC_PROMPTIR_PARAMETERS = 35_592_263  # sum of numel over PromptIR(decoder=True).parameters() of the public code
PROMPT_LEN = 5


def _prompt(name: str, prompt_dim: int, size: int, lin_dim: int) -> OrderedDict:
    return OrderedDict({f'{name}.prompt_param': (1, PROMPT_LEN, prompt_dim, size, size),
                        f'{name}.linear_layer.weight': (PROMPT_LEN, lin_dim),
                        f'{name}.linear_layer.bias': (PROMPT_LEN,),
                        f'{name}.conv3x3.weight': (prompt_dim, prompt_dim, 3, 3)})


def public_promptir_shapes(inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                           num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                           heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66) -> OrderedDict:
    """``{key: shape}`` of the public ``PromptIR(decoder=True)`` (bias False, WithBias LayerNorm)."""

    def stage(name: str, depth: int, c: int, level: int) -> OrderedDict:
        return public_stage_shapes(name, depth, c, heads[level], ffn_expansion_factor, False, True)

    def conv1x1(name: str, cin: int, cout: int) -> OrderedDict:
        return conv_shapes(name, cin, cout, 1, False)

    def prompt_block(name: str, c: int) -> OrderedDict:
        return public_block_shapes(name, c, heads[2], ffn_expansion_factor, False, True)

    shapes = OrderedDict()
    shapes.update(conv_shapes('patch_embed.proj', inp_channels, dim, 3, False))
    shapes.update(_prompt('prompt1', 64, 64, 96))
    shapes.update(_prompt('prompt2', 128, 32, 192))
    shapes.update(_prompt('prompt3', 320, 16, 384))
    shapes.update(conv1x1('chnl_reduce1', 64, 64))
    shapes.update(conv1x1('chnl_reduce2', 128, 128))
    shapes.update(conv1x1('chnl_reduce3', 320, 256))
    shapes.update(conv1x1('reduce_noise_channel_1', dim + 64, dim))
    shapes.update(stage('encoder_level1', num_blocks[0], dim, 0))
    shapes.update(resample_shapes('down1_2', dim, dim // 2))
    shapes.update(conv1x1('reduce_noise_channel_2', dim * 2 + 128, dim * 2))
    shapes.update(stage('encoder_level2', num_blocks[1], dim * 2, 1))
    shapes.update(resample_shapes('down2_3', dim * 2, dim))
    shapes.update(conv1x1('reduce_noise_channel_3', dim * 4 + 256, dim * 4))
    shapes.update(stage('encoder_level3', num_blocks[2], dim * 4, 2))
    shapes.update(resample_shapes('down3_4', dim * 4, dim * 2))
    shapes.update(stage('latent', num_blocks[3], dim * 8, 3))
    shapes.update(resample_shapes('up4_3', dim * 4, dim * 8))
    shapes.update(conv1x1('reduce_chan_level3', dim * 2 + 192, dim * 4))
    shapes.update(prompt_block('noise_level3', dim * 4 + 512))
    shapes.update(conv1x1('reduce_noise_level3', dim * 4 + 512, dim * 4))
    shapes.update(stage('decoder_level3', num_blocks[2], dim * 4, 2))
    shapes.update(resample_shapes('up3_2', dim * 4, dim * 8))
    shapes.update(conv1x1('reduce_chan_level2', dim * 4, dim * 2))
    shapes.update(prompt_block('noise_level2', dim * 2 + 224))
    shapes.update(conv1x1('reduce_noise_level2', dim * 2 + 224, dim * 4))
    shapes.update(stage('decoder_level2', num_blocks[1], dim * 2, 1))
    shapes.update(resample_shapes('up2_1', dim * 2, dim * 4))
    shapes.update(prompt_block('noise_level1', dim * 2 + 64))
    shapes.update(conv1x1('reduce_noise_level1', dim * 2 + 64, dim * 2))
    shapes.update(stage('decoder_level1', num_blocks[0], dim * 2, 0))
    shapes.update(stage('refinement', num_refinement_blocks, dim * 2, 0))
    shapes.update(conv_shapes('output', dim * 2, out_channels, 3, False))
    return shapes
