"""State-dict keys and shapes of the public BRN at its defaults, in the public order.

Source: the public Rainmer code's comparison network, Schizophreni/Rainmer ``models/BRN.py`` class ``BRN``
(``configs/brn_config.yaml``: ``inter_iter: 8``). It is the authors' BRN (csdwren/RecDerain ``generator.py``)
without ``res_conv4_r`` / ``res_conv5_r``, which the authors' forward never uses but their released checkpoints
hold (:data:`RECDERAIN_EXTRA_KEYS`, 412,518 parameters in all). Generated once from the public network and written
here from its layout: ``Sequential`` modules with 3x3 convs (with bias) at index 0, or 0 and 2 in residual blocks.
"""

PUBLIC_BRN_PARAMETERS = 375_526
RECDERAIN_BRN_PARAMETERS = 412_518
FEATURES = 32


def conv_keys(name: str, out_channels: int, in_channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f'{name}.weight', (out_channels, in_channels, 3, 3)), (f'{name}.bias', (out_channels,))]


def _branch(suffix: str, in_channels: int, blocks: range) -> list[tuple[str, tuple[int, ...]]]:
    keys = conv_keys(f'conv0{suffix}.0', FEATURES, in_channels)
    for block in blocks:
        for index in (0, 2):
            keys += conv_keys(f'res_conv{block}{suffix}.{index}', FEATURES, FEATURES)
    for gate in 'ifgo':
        keys += conv_keys(f'conv_{gate}{suffix}.0', FEATURES, 3 * FEATURES)
    return keys + conv_keys(f'conv{suffix}.0', 3, FEATURES)


PUBLIC_BRN_KEYS = _branch('', 9, range(1, 6)) + _branch('_r', 6, range(1, 4))
RECDERAIN_EXTRA_KEYS = [key for block in (4, 5) for index in (0, 2)
                        for key in conv_keys(f'res_conv{block}_r.{index}', FEATURES, FEATURES)]
