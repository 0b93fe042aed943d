"""State-dict keys and shapes (in order) of the three public RCDNet codes, written from their module layouts.

Independent of rainmer's modules; checked once against the public networks built by their own code (2,039 /
2,098 / 2,039 entries at the defaults):

* :func:`rainmer_layout`: the public Rainmer code's comparison, ``models/RCDNet.py`` (``configs/rcdnet_config.yaml``:
  ``num_map`` 32, ``num_channel`` 32, ``num_block`` 4, ``inter_iter`` 17) -- the layout of ``rainmer``'s RCDNet.
  Top level ``m_step``, ``b_step``, ``c0``, ``c``, ``cz``, ``tau``, then ``proxNet_M_S`` (S M-nets: ``tau``, then
  ``layer.<k>`` = conv, BN, ReLU, conv, BN), ``proxNet_B_S`` (S B-nets of ``num_channel + 3`` channels),
  ``proxNet_B_0``, ``proxNet_B_L``.
* :func:`mainnet_layout`: the authors' hongwang01/RCDNet ``Mainnet`` (``--stage 17 --num_M 32 --num_Z 32``; its
  released checkpoints): ``eta1``, ``eta2``, ``eta11``, ``eta12``, ``weight0``, ``conv`` (one kernel copy per
  iteration), ``w_z_f``, ``tau``, ``xnet``, ``mnet``, ``x_stage``, ``m_stage``, ``fxnet``; proximal nets with four
  branches ``resx1..4`` / ``resm1..4``.
* :func:`simple_layout`: hongwang01/RCDNet_simple ``RCDNet``: ``etaM_S``, ``etaB_S``, ``C0``, ``C``, ``C_z``, ``tau``,
  ``proxNet_B_0``, ``proxNet_B_S``, ``proxNet_M_S``, ``proxNet_B_last_layer``.
"""
from collections.abc import Callable

Keys = list[tuple[str, tuple[int, ...]]]
PUBLIC_PARAMETERS = {'rainmer': 2_975_186, 'mainnet': 3_166_355, 'simple': 2_975_186}
KERNEL = (9, 9)


def _branch(prefix: str, channels: int) -> Keys:
    """conv (0), BN (1), ReLU, conv (3), BN (4)."""
    keys: Keys = []
    for conv, bn in ((0, 1), (3, 4)):
        keys += [(f'{prefix}.{conv}.weight', (channels, channels, 3, 3)), (f'{prefix}.{conv}.bias', (channels,))]
        keys += [(f'{prefix}.{bn}.{name}', (channels,)) for name in ('weight', 'bias', 'running_mean', 'running_var')]
        keys.append((f'{prefix}.{bn}.num_batches_tracked', ()))
    return keys


def _prox(prefix: str, channels: int, blocks: int, branch_name: Callable[[int], str], threshold: bool) -> Keys:
    keys: Keys = [(f'{prefix}.tau', (1, channels, 1, 1))] if threshold else []
    for block in range(blocks):
        keys += _branch(f'{prefix}.{branch_name(block)}', channels)
    return keys


def _layer(block: int) -> str:
    return f'layer.{block}'


def rainmer_layout(num_map: int = 32, num_channel: int = 32, num_block: int = 4, inter_iter: int = 17) -> Keys:
    b = num_channel + 3
    keys: Keys = [('m_step', (inter_iter - 1, 1)), ('b_step', (inter_iter, 1)), ('c0', (3, num_map, *KERNEL)),
                  ('c', (3, num_map, *KERNEL)), ('cz', (num_channel, 3, 3, 3)), ('tau', (1,))]
    for stage in range(inter_iter):
        keys += _prox(f'proxNet_M_S.{stage}', num_map, num_block, _layer, True)
    for stage in range(inter_iter):
        keys += _prox(f'proxNet_B_S.{stage}', b, num_block, _layer, False)
    return keys + _prox('proxNet_B_0', b, num_block, _layer, False) + _prox('proxNet_B_L', b, num_block, _layer, False)


def mainnet_layout(stage: int = 17, num_M: int = 32, num_Z: int = 32) -> Keys:  # noqa: N803 (public names)
    b, iters = num_Z + 3, stage - 1

    def resx(block: int) -> str:
        return f'resx{block + 1}'

    def resm(block: int) -> str:
        return f'resm{block + 1}'

    keys: Keys = [('eta1', (1,)), ('eta2', (1,)), ('eta11', (iters, 1)), ('eta12', (iters, 1)),
                  ('weight0', (3, num_M, *KERNEL)), ('conv', (iters, 3, num_M, *KERNEL)), ('w_z_f', (num_Z, 3, 3, 3)),
                  ('tau', (1,))]
    keys += _prox('xnet', b, 4, resx, False) + _prox('mnet', num_M, 4, resm, True)
    for index in range(stage):
        keys += _prox(f'x_stage.{index}', b, 4, resx, False)
    for index in range(stage):
        keys += _prox(f'm_stage.{index}', num_M, 4, resm, True)
    return keys + _prox('fxnet', b, 4, resx, False)


def simple_layout(S: int = 17, num_M: int = 32, num_Z: int = 32, T: int = 4) -> Keys:  # noqa: N803 (public names)
    b = num_Z + 3
    keys: Keys = [('etaM_S', (S - 1, 1)), ('etaB_S', (S, 1)), ('C0', (3, num_M, *KERNEL)), ('C', (3, num_M, *KERNEL)),
                  ('C_z', (num_Z, 3, 3, 3)), ('tau', (1,))]
    keys += _prox('proxNet_B_0', b, T, _layer, False)
    for index in range(S):
        keys += _prox(f'proxNet_B_S.{index}', b, T, _layer, False)
    for index in range(S):
        keys += _prox(f'proxNet_M_S.{index}', num_M, T, _layer, True)
    return keys + _prox('proxNet_B_last_layer', b, T, _layer, False)


def parameter_count(keys: Keys) -> int:
    """Trainable elements: every entry except the BatchNorm buffers."""
    total = 0
    for key, shape in keys:
        if key.rsplit('.', 1)[-1] not in ('running_mean', 'running_var', 'num_batches_tracked'):
            size = 1
            for dim in shape:
                size *= dim
            total += size
    return total
