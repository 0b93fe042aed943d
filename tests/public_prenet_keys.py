"""State-dict keys and shapes of the public PReNet at its defaults, in the public order.

Source: csdwren/PReNet ``networks.py``, class ``PReNet(recurrent_iter=6, use_GPU=True)``; the public Rainmer code's
``models/PReNet.py`` (Schizophreni/Rainmer) has the same modules. Generated once from the public network and
written here from its layout: every module is a ``Sequential`` whose 3x3 convs (with bias) sit at index 0 (conv +
activation) or 0 and 2 (the residual blocks' conv-ReLU-conv-ReLU).
"""

PUBLIC_PRENET_PARAMETERS = 168_963
FEATURES = 32


def conv_keys(name: str, out_channels: int, in_channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f'{name}.weight', (out_channels, in_channels, 3, 3)), (f'{name}.bias', (out_channels,))]


def public_prenet_keys() -> list[tuple[str, tuple[int, ...]]]:
    keys = conv_keys('conv0.0', FEATURES, 6)
    for block in range(1, 6):
        for index in (0, 2):
            keys += conv_keys(f'res_conv{block}.{index}', FEATURES, FEATURES)
    for gate in 'ifgo':
        keys += conv_keys(f'conv_{gate}.0', FEATURES, 2 * FEATURES)
    return keys + conv_keys('conv.0', 3, FEATURES)


PUBLIC_PRENET_KEYS = public_prenet_keys()
