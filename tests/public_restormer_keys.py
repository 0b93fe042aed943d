"""State-dict key names and shapes of the public Restormer (swz30/Restormer), written from its module layout.

Independent of this package's modules. Layout of the public ``basicsr/models/archs/restormer_arch.py`` (class
``Restormer``): ``patch_embed.proj`` (3x3), four encoder levels of ``TransformerBlock`` (``norm1.body``, ``attn``
= MDTA: ``temperature`` [heads, 1, 1], ``qkv`` 1x1, ``qkv_dwconv`` depthwise 3x3, ``project_out`` 1x1;
``norm2.body``, ``ffn`` = GDFN: ``project_in`` 1x1 to 2h, ``dwconv`` depthwise 3x3, ``project_out`` 1x1 from h,
h = int(c * ffn_expansion_factor)), ``Downsample``/``Upsample`` (``body.0``: 3x3 conv without bias), 1x1
``reduce_chan_level3/2``, decoder levels 3, 2, 1 (level 1 at 2 * dim), ``refinement``, ``skip_conv`` (dual-pixel
only) and ``output`` (3x3). Every list below is in the public registration order; the shapes at the defaults were
checked once against the public network's ``state_dict()`` (494 tensors, 26,126,644 parameters).
"""
from collections import OrderedDict
from collections.abc import Sequence

PUBLIC_RESTORMER_PARAMETERS = 26_126_644  # sum of numel over Restormer().parameters() of the public code


def public_block_shapes(prefix: str, c: int, heads: int, ffn_expansion_factor: float = 2.66, bias: bool = False,
                        with_bias_norm: bool = True) -> OrderedDict:
    """``{key: shape}`` of one public ``TransformerBlock`` of width ``c`` under ``prefix``."""
    hidden = int(c * ffn_expansion_factor)
    shapes = OrderedDict()

    def conv(name: str, cout: int, cin_per_group: int, k: int) -> None:
        shapes[f'{prefix}.{name}.weight'] = (cout, cin_per_group, k, k)
        if bias:
            shapes[f'{prefix}.{name}.bias'] = (cout,)

    def norm(name: str) -> None:
        shapes[f'{prefix}.{name}.body.weight'] = (c,)
        if with_bias_norm:
            shapes[f'{prefix}.{name}.body.bias'] = (c,)

    norm('norm1')
    shapes[f'{prefix}.attn.temperature'] = (heads, 1, 1)
    conv('attn.qkv', 3 * c, c, 1)
    conv('attn.qkv_dwconv', 3 * c, 1, 3)
    conv('attn.project_out', c, c, 1)
    norm('norm2')
    conv('ffn.project_in', 2 * hidden, c, 1)
    conv('ffn.dwconv', 2 * hidden, 1, 3)
    conv('ffn.project_out', c, hidden, 1)
    return shapes


def public_stage_shapes(name: str, depth: int, c: int, heads: int, ffn_expansion_factor: float, bias: bool,
                        with_bias_norm: bool) -> OrderedDict:
    shapes = OrderedDict()
    for index in range(depth):
        shapes.update(public_block_shapes(f'{name}.{index}', c, heads, ffn_expansion_factor, bias, with_bias_norm))
    return shapes


def resample_shapes(name: str, cin: int, cout: int) -> OrderedDict:
    """``Downsample`` (cout = cin // 2) or ``Upsample`` (cout = 2 * cin): one 3x3 conv without bias."""
    return OrderedDict({f'{name}.body.0.weight': (cout, cin, 3, 3)})


def conv_shapes(name: str, cin: int, cout: int, k: int, bias: bool) -> OrderedDict:
    shapes = OrderedDict({f'{name}.weight': (cout, cin, k, k)})
    if bias:
        shapes[f'{name}.bias'] = (cout,)
    return shapes


def public_restormer_shapes(inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                            num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                            heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66,
                            bias: bool = False, LayerNorm_type: str = 'WithBias',  # noqa: N803
                            dual_pixel_task: bool = False) -> OrderedDict:
    """``{key: shape}`` of the public ``Restormer(...)`` in its registration order."""
    norm_bias = LayerNorm_type != 'BiasFree'

    def stage(name: str, depth: int, c: int, level: int) -> OrderedDict:
        return public_stage_shapes(name, depth, c, heads[level], ffn_expansion_factor, bias, norm_bias)

    shapes = OrderedDict()
    shapes.update(conv_shapes('patch_embed.proj', inp_channels, dim, 3, False))
    shapes.update(stage('encoder_level1', num_blocks[0], dim, 0))
    shapes.update(resample_shapes('down1_2', dim, dim // 2))
    shapes.update(stage('encoder_level2', num_blocks[1], dim * 2, 1))
    shapes.update(resample_shapes('down2_3', dim * 2, dim))
    shapes.update(stage('encoder_level3', num_blocks[2], dim * 4, 2))
    shapes.update(resample_shapes('down3_4', dim * 4, dim * 2))
    shapes.update(stage('latent', num_blocks[3], dim * 8, 3))
    shapes.update(resample_shapes('up4_3', dim * 8, dim * 16))
    shapes.update(conv_shapes('reduce_chan_level3', dim * 8, dim * 4, 1, bias))
    shapes.update(stage('decoder_level3', num_blocks[2], dim * 4, 2))
    shapes.update(resample_shapes('up3_2', dim * 4, dim * 8))
    shapes.update(conv_shapes('reduce_chan_level2', dim * 4, dim * 2, 1, bias))
    shapes.update(stage('decoder_level2', num_blocks[1], dim * 2, 1))
    shapes.update(resample_shapes('up2_1', dim * 2, dim * 4))
    shapes.update(stage('decoder_level1', num_blocks[0], dim * 2, 0))
    shapes.update(stage('refinement', num_refinement_blocks, dim * 2, 0))
    if dual_pixel_task:
        shapes.update(conv_shapes('skip_conv', dim, dim * 2, 1, bias))
    shapes.update(conv_shapes('output', dim * 2, out_channels, 3, bias))
    return shapes
