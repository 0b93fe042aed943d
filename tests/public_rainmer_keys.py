"""State-dict key names and shapes of the public Rainmer code (Schizophreni/Rainmer), written from its module layout.

Independent of this package's modules and of its converter, so that the converter test catches a wrong mapping.
Layout of the public ``models/Rainmer_SA.py`` (class ``Rainmer``), read from the public sources:

* ``disentangle`` (``models/modules.py``, ``MoCo_RainAtom``) holds ``encoder_q`` and ``encoder_k`` (same layout;
  ``encoder_k`` has ``requires_grad=False``). Each ``Encoder`` (``models/encoder.py``): ``conv.proj`` (3x3, bias),
  ``MoEs`` (DRSformer's ``subnet``, whose weight generator ``ca_fc`` is two ``nn.Linear``) and ``Atom``
  (``RainAtoms``: ``chromatic_enc`` and ``degra_enc``, each ``Sequential(conv3x3 + bias, LeakyReLU, ResBlock)``;
  ``ResBlock`` = ``conv1``, ``se1``, ``conv2``, ``se2``; ``SEBlock.se`` = ``Sequential(pool, conv, ReLU, conv,
  sigmoid)``, no bias, reduction 16).
* Backbone: DRSformer's names, but the MEFC ``subnet`` of ``Rainmer_SA.py`` builds ``ca_fc`` from 1x1 convs.
* ``cross_fuse`` (``LocalKnowledgeFusion``): ``location_map`` (3x3 convs) and ``channel_map`` (1x1 convs) at
  ``Sequential`` indices 0 and 2, with bias.
* Decoder blocks (``CrossTransformerBlock``): ``attn`` is ``CrossAttention`` with ``chr_promptAttn`` and
  ``detg_promptAttn`` (``PromptAttention``: ``classifier`` = conv C->C, GELU, conv C->1, sigmoid; ``trans`` = conv
  base_dim->C, SiLU; all with bias). ``Rainmer_SA_chralpha`` (the model of ``configs/rainmer_resize_alpha.yaml``)
  adds a ``chr_z`` [1, base_dim, 1, 1] (``torch.ones``, trainable) to each ``CrossAttention``, registered right
  after ``attns``: 16 x 128 more parameters at the defaults (35,825,344 trainable, 36,766,880 in all).
"""
from collections import OrderedDict
from collections.abc import Sequence

# MoE experts in the public ``Operations`` order: separable convs k=1,3,5,7, dilated convs k=3,5,7, avg-pool.
_SEPARABLE_KERNELS = (1, 3, 5, 7)
_DILATED_KERNELS = (3, 5, 7)
_STAGES = 4
_GENERATOR_HIDDEN = 2 * _STAGES * (len(_SEPARABLE_KERNELS) + len(_DILATED_KERNELS) + 1)  # OALayer: output * 2


def _moe(prefix: str, c: int, linear_generator: bool) -> dict:
    experts = len(_SEPARABLE_KERNELS) + len(_DILATED_KERNELS) + 1
    conv = () if linear_generator else (1, 1)
    keys = {
        f'{prefix}.layers.0.ca_fc.0.weight': (_GENERATOR_HIDDEN, c, *conv),
        f'{prefix}.layers.0.ca_fc.0.bias': (_GENERATOR_HIDDEN,),
        f'{prefix}.layers.0.ca_fc.2.weight': (_STAGES * experts, _GENERATOR_HIDDEN, *conv),
        f'{prefix}.layers.0.ca_fc.2.bias': (_STAGES * experts,),
        f'{prefix}.layers.1.preprocess.op.0.weight': (c, c, 1, 1),
    }
    for stage in range(_STAGES):
        ops = f'{prefix}.layers.1._ops.{stage}'
        for index, k in enumerate(_SEPARABLE_KERNELS):  # op: dw, pw, ReLU, dw, pw
            for position, shape in ((0, (c, 1, k, k)), (1, (c, c, 1, 1)), (3, (c, 1, k, k)), (4, (c, c, 1, 1))):
                keys[f'{ops}._ops.{index}.op.{position}.weight'] = shape
        for index, k in enumerate(_DILATED_KERNELS, start=len(_SEPARABLE_KERNELS)):  # op: dw dilated, pw
            keys[f'{ops}._ops.{index}.op.0.weight'] = (c, 1, k, k)
            keys[f'{ops}._ops.{index}.op.1.weight'] = (c, c, 1, 1)
        keys[f'{ops}._out.0.weight'] = (c, c * experts, 1, 1)
    return keys


def _projector(prefix: str, dim: int, base_dim: int) -> dict:
    keys = {f'{prefix}.0.weight': (base_dim, dim, 3, 3), f'{prefix}.0.bias': (base_dim,)}
    squeezed = base_dim // 16
    for conv, se in (('conv1', 'se1'), ('conv2', 'se2')):
        keys[f'{prefix}.2.{conv}.weight'] = (base_dim, base_dim, 3, 3)
        keys[f'{prefix}.2.{conv}.bias'] = (base_dim,)
        keys[f'{prefix}.2.{se}.se.1.weight'] = (squeezed, base_dim, 1, 1)
        keys[f'{prefix}.2.{se}.se.3.weight'] = (base_dim, squeezed, 1, 1)
    return keys


def _encoder(prefix: str, dim: int, base_dim: int) -> dict:
    keys = {f'{prefix}.conv.proj.weight': (dim, 3, 3, 3), f'{prefix}.conv.proj.bias': (dim,)}
    keys.update(_moe(f'{prefix}.MoEs', dim, linear_generator=True))
    keys.update(_projector(f'{prefix}.Atom.chromatic_enc', dim, base_dim))
    keys.update(_projector(f'{prefix}.Atom.degra_enc', dim, base_dim))
    return keys


def _block(prefix: str, c: int, heads: int, ffn_expansion_factor: float, rates: int, base_dim: int | None,
           chr_alpha: bool) -> dict:
    hidden = int(c * ffn_expansion_factor)
    keys = {f'{prefix}.norm1.body.weight': (c,), f'{prefix}.norm1.body.bias': (c,),
            f'{prefix}.attn.temperature': (heads, 1, 1), f'{prefix}.attn.attns': (rates,)}
    if base_dim is not None and chr_alpha:
        keys[f'{prefix}.attn.chr_z'] = (1, base_dim, 1, 1)
    keys.update({f'{prefix}.attn.qkv.weight': (3 * c, c, 1, 1),
                 f'{prefix}.attn.qkv_dwconv.weight': (3 * c, 1, 3, 3),
                 f'{prefix}.attn.project_out.weight': (c, c, 1, 1)})
    if base_dim is not None:
        for slot in ('chr_promptAttn', 'detg_promptAttn'):
            attention = f'{prefix}.attn.{slot}'
            keys.update({f'{attention}.classifier.0.weight': (c, c, 1, 1), f'{attention}.classifier.0.bias': (c,),
                         f'{attention}.classifier.2.weight': (1, c, 1, 1), f'{attention}.classifier.2.bias': (1,),
                         f'{attention}.trans.0.weight': (c, base_dim, 1, 1), f'{attention}.trans.0.bias': (c,)})
    keys.update({f'{prefix}.norm2.body.weight': (c,), f'{prefix}.norm2.body.bias': (c,),
                 f'{prefix}.ffn.project_in.weight': (2 * hidden, c, 1, 1),
                 f'{prefix}.ffn.dwconv3x3.weight': (2 * hidden, 1, 3, 3),
                 f'{prefix}.ffn.dwconv5x5.weight': (2 * hidden, 1, 5, 5),
                 f'{prefix}.ffn.dwconv3x3_1.weight': (hidden, 2, 3, 3),
                 f'{prefix}.ffn.dwconv5x5_1.weight': (hidden, 2, 5, 5),
                 f'{prefix}.ffn.project_out.weight': (c, 2 * hidden, 1, 1)})
    return keys


def public_rainmer_shapes(dim: int = 48, base_dim: int = 128, num_blocks: Sequence[int] = (4, 6, 6, 8),
                          heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66,
                          num_rates: int = 4, chr_alpha: bool = False) -> OrderedDict:
    """``{key: shape}`` of the public ``Rainmer`` (``Rainmer_SA``, or ``Rainmer_SA_chralpha`` with ``chr_alpha``).

    In the public registration order; ``bias=False``, ``LayerNorm_type='WithBias'``, 3 input/output channels.
    """
    shapes = OrderedDict()
    shapes.update(_encoder('disentangle.encoder_q', dim, base_dim))
    shapes.update(_encoder('disentangle.encoder_k', dim, base_dim))
    shapes['patch_embed.proj.weight'] = (dim, 3, 3, 3)
    shapes.update(_moe('encoder_level0', dim, linear_generator=False))
    for name, kernel in (('location_map', 3), ('channel_map', 1)):
        for index in (0, 2):
            shapes[f'cross_fuse.{name}.{index}.weight'] = (dim, dim, kernel, kernel)
            shapes[f'cross_fuse.{name}.{index}.bias'] = (dim,)

    def level(name: str, c: int, count: int, level_heads: int, prompted: bool) -> None:
        for index in range(count):
            shapes.update(_block(f'{name}.{index}', c, level_heads, ffn_expansion_factor, num_rates,
                                 base_dim if prompted else None, chr_alpha))

    for depth, name in enumerate(('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent')):
        c = dim * 2 ** depth
        level(name, c, num_blocks[depth], heads[depth], prompted=False)
        if depth < 3:
            shapes[f'down{depth + 1}_{depth + 2}.body.0.weight'] = (c // 2, c, 3, 3)
    for depth in (3, 2):  # up, reduce, decoder at dim * 2**(depth - 1)
        c = dim * 2 ** depth
        shapes[f'up{depth + 1}_{depth}.body.0.weight'] = (2 * c, c, 3, 3)
        shapes[f'reduce_chan_level{depth}.weight'] = (c // 2, c, 1, 1)
        level(f'decoder_level{depth}', c // 2, num_blocks[depth - 1], heads[depth - 1], prompted=True)
    shapes['up2_1.body.0.weight'] = (4 * dim, 2 * dim, 3, 3)
    level('decoder_level1', 2 * dim, num_blocks[0], heads[0], prompted=True)  # no channel reduction at level 1
    shapes.update(_moe('refinement', 2 * dim, linear_generator=False))
    shapes['output.weight'] = (3, 2 * dim, 3, 3)
    return shapes


def is_trainable(key: str) -> bool:
    """False for the momentum key encoder (the public MoCo wrapper sets ``requires_grad=False`` on it)."""
    return not key.startswith('disentangle.encoder_k.')
