"""State-dict key names and shapes of the public IDT, written from its module layout (independent of this package).

Layout of Rainmer's ``models/IDT.py`` (class ``IDT``; the same module tree as jiexiaou/IDT ``model.py``, whose
constructor differs only in the default ``depths``, which set drop-path rates and no parameters):

* ``input_proj.proj.0`` (3x3 conv, bias), ``output_proj.proj.0`` (3x3 conv 2 * embed_dim -> in_chans, bias);
* ``encoderlayer_{0..3}`` and ``dowsample_{0..3}.conv.0`` (4x4 stride-2 conv), ``bottle``, ``upsample_{0..3}.deconv.0``
  (2x2 stride-2 transposed conv) and ``decoderlayer_{0..3}``, each layer a ``blocks`` ModuleList: ``num`` window
  blocks (``norm1``, ``attn``, ``norm2``, ``mlp``) then, except in ``bottle``, one spatial transformer (``attn``,
  ``norm2``, ``mlp``; its attention works on 8 x 8 = 64 pixel features with hidden width 64 * mlp_ratio);
* ``attn``: ``relative_position_bias_table`` [(2k-1)^2, heads] (k = 8 in window blocks, the layer's ``k_bound`` in
  spatial ones), ``Position_Extract`` (depthwise conv 2r+1, r = min(grid - 1, 2); then 1x1 conv with ``heads``
  groups), ``qkv.to_q`` (dim -> dim), ``qkv.to_kv`` (dim -> 3 dim), ``proj``, all with bias;
* ``mlp`` (LeFF): ``linear1.0``, ``dwconv.0`` (3x3 depthwise), ``linear2.0``, all with bias.

:data:`PUBLIC_DEFAULT_SHA256` is the SHA-256 of the public network's own ``"key shape"`` lines at its defaults,
recorded once from the public code; :func:`public_idt_keys` must reproduce it.
"""
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

PUBLIC_DEFAULT_PARAMETERS = 16_416_463  # sum of numel over the public IDT(opt=None).parameters()
PUBLIC_DEFAULT_KEYS = 571
PUBLIC_DEFAULT_SHA256 = 'ccf2e3fbc831627adb746554e1e88c0b59fd149ca1d2ee99fc50cfd24b4966dd'
PUBLIC_TINY = dict(img_size=64, embed_dim=8)  # a small instance the tests build
PUBLIC_TINY_PARAMETERS = 1_432_663  # the public IDT(opt=None, **PUBLIC_TINY)

# (window blocks, spatial k_bound or None) of the 9 layers, and their names
_LAYERS = (('encoderlayer_0', 3, 16), ('encoderlayer_1', 3, 8), ('encoderlayer_2', 2, 4), ('encoderlayer_3', 2, 2),
           ('bottle', 1, None), ('decoderlayer_0', 1, 2), ('decoderlayer_1', 2, 4), ('decoderlayer_2', 2, 8),
           ('decoderlayer_3', 3, 16))


def _attention(prefix: str, dim: int, heads: int, k_bound: int, grid: int) -> dict:
    radius = max(min(grid - 1, 2), 0)
    return {
        f'{prefix}.relative_position_bias_table': ((2 * k_bound - 1) ** 2, heads),
        f'{prefix}.Position_Extract.0.weight': (dim, 1, 2 * radius + 1, 2 * radius + 1),
        f'{prefix}.Position_Extract.0.bias': (dim,),
        f'{prefix}.Position_Extract.1.weight': (dim, dim // heads, 1, 1),
        f'{prefix}.Position_Extract.1.bias': (dim,),
        f'{prefix}.qkv.to_q.weight': (dim, dim), f'{prefix}.qkv.to_q.bias': (dim,),
        f'{prefix}.qkv.to_kv.weight': (3 * dim, dim), f'{prefix}.qkv.to_kv.bias': (3 * dim,),
        f'{prefix}.proj.weight': (dim, dim), f'{prefix}.proj.bias': (dim,),
    }


def _leff(prefix: str, dim: int, hidden: int) -> dict:
    return {f'{prefix}.linear1.0.weight': (hidden, dim), f'{prefix}.linear1.0.bias': (hidden,),
            f'{prefix}.dwconv.0.weight': (hidden, 1, 3, 3), f'{prefix}.dwconv.0.bias': (hidden,),
            f'{prefix}.linear2.0.weight': (dim, hidden), f'{prefix}.linear2.0.bias': (dim,)}


def _layer(prefix: str, dim: int, resolution: int, heads: int, num: int, k_bound: int | None, win_size: int,
           mlp_ratio: float) -> dict:
    keys = {}
    window = min(win_size, resolution)
    for i in range(num):
        block = f'{prefix}.blocks.{i}'
        keys.update({f'{block}.norm1.weight': (dim,), f'{block}.norm1.bias': (dim,)})
        keys.update(_attention(f'{block}.attn', dim, heads, 8, window))
        keys.update({f'{block}.norm2.weight': (dim,), f'{block}.norm2.bias': (dim,)})
        keys.update(_leff(f'{block}.mlp', dim, int(dim * mlp_ratio)))
    if k_bound is not None:
        block = f'{prefix}.blocks.{num}'
        keys.update(_attention(f'{block}.attn', 64, heads, k_bound, resolution // 8))
        keys.update({f'{block}.norm2.weight': (dim,), f'{block}.norm2.bias': (dim,)})
        keys.update(_leff(f'{block}.mlp', dim, int(64 * mlp_ratio)))
    return keys


def public_idt_keys(img_size: int = 128, in_chans: int = 3, embed_dim: int = 32,
                    num_heads: Sequence[int] = (1, 2, 4, 8, 16, 16, 8, 4, 2), win_size: int = 8,
                    mlp_ratio: float = 4.0) -> OrderedDict:
    """Key -> shape of the public IDT built with these arguments, in its state-dict order."""
    e = embed_dim
    keys = OrderedDict({'input_proj.proj.0.weight': (e, in_chans, 3, 3), 'input_proj.proj.0.bias': (e,),
                        'output_proj.proj.0.weight': (in_chans, 2 * e, 3, 3), 'output_proj.proj.0.bias': (in_chans,)})
    widths = [e, 2 * e, 4 * e, 8 * e, 16 * e, 16 * e, 8 * e, 4 * e, 2 * e]
    scales = [1, 2, 4, 8, 16, 8, 4, 2, 1]
    upsample = [(16 * e, 8 * e), (16 * e, 4 * e), (8 * e, 2 * e), (4 * e, e)]
    for index, (name, num, k_bound) in enumerate(_LAYERS):
        if index > 4:
            up_in, up_out = upsample[index - 5]
            keys[f'upsample_{index - 5}.deconv.0.weight'] = (up_in, up_out, 2, 2)
            keys[f'upsample_{index - 5}.deconv.0.bias'] = (up_out,)
        keys.update(_layer(name, widths[index], img_size // scales[index], num_heads[index], num, k_bound, win_size,
                           mlp_ratio))
        if index < 4:
            keys[f'dowsample_{index}.conv.0.weight'] = (2 * widths[index], widths[index], 4, 4)
            keys[f'dowsample_{index}.conv.0.bias'] = (2 * widths[index],)
    return keys


def keys_sha256(keys: dict) -> str:
    """SHA-256 of the ``"key (shape)"`` lines, one per entry in order (as the public network's were recorded)."""
    lines = ''.join(f'{key} {tuple(shape)}\n' for key, shape in keys.items())
    return hashlib.sha256(lines.encode()).hexdigest()
