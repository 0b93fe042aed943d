"""RCDNet (CVPR 2020, "A Model-driven Deep Neural Network for Single Image Rain Removal"): an unfolded
proximal-gradient solver of a convolutional-dictionary rain model.

The rainy image is modelled as ``O = B + R`` with the rain layer ``R = C (*) M``: 32 rain kernels ``C`` (9x9, one
per colour channel and rain map) convolved with sparse rain maps ``M``. The initialisation runs a background net on
``[O, 3x3 filter of O]`` for ``B0`` and an auxiliary state ``Z``; every stage then takes one gradient step on ``M``
(the rain residual correlated with the kernels, ``conv_transpose2d``) followed by the M-net (residual blocks and a
learned per-map soft threshold), and one on ``B`` (a step of size ``eta_B / 10`` towards ``O - R``) followed by the
B-net on ``[B, Z]``; a last B-net refines the final ``[B, Z]``. The kernels are divided by 10 wherever they are used,
and the first stage's M step uses its own kernels ``c0`` on ``relu(O - B0 - tau)``.

Names, layout and defaults are the RCDNet of the public Rainmer code's comparison (``models/RCDNet.py`` with
``configs/rcdnet_config.yaml``: 17 stages, 4 residual blocks per proximal net, 32 rain maps, 32 ``Z`` channels),
so its checkpoints load strictly. Checkpoints of the authors' code load strictly too, converted while loading
(:func:`convert_public_layout`): hongwang01/RCDNet (``Mainnet``: its released Rain100L/H, Rain1400 and SPA-Data
models) and hongwang01/RCDNet_simple (``RCDNet``). Both public codes feed 0-255 pixel values (their thresholds and
step sizes are set for that range); ``img_range`` scales the toolbox's [0, 1] images in and out.
"""
from collections.abc import MutableMapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

# The 32 initial rain kernels of the public init_kernel.mat / kernel.mat ('C9', 3 x 32 x 9 x 9, the same for the
# three colour channels), stored once as float32 [32, 9, 9] (the public code casts them to float32).
KERNEL_FILE = Path(__file__).with_name('rcdnet_kernel.npy')
KERNEL_PADDING = 4  # 9x9 kernels, output of the input's size
COLORS = 3


def initial_rain_kernels(num_map: int = 32) -> Tensor:
    """The public initial rain kernels as a [3, num_map, 9, 9] tensor (the first ``num_map`` of the 32)."""
    if not KERNEL_FILE.is_file():
        raise FileNotFoundError(f'{KERNEL_FILE}: the RCDNet rain kernels are missing from the rainmer package '
                                f'(package data rainmer/archs/*.npy); reinstall rainmer')
    kernels = torch.from_numpy(np.load(KERNEL_FILE)).float()
    if not 1 <= num_map <= len(kernels):
        raise ValueError(f'RCDNet: num_map must be between 1 and {len(kernels)} (one initial kernel per rain map), '
                         f'not {num_map}')
    return kernels[:num_map].unsqueeze(0).repeat(COLORS, 1, 1, 1)


class RCDNetOutputs(NamedTuple):
    """The refined background, the initial one, and each stage's background ``B_s`` and rain layer ``R_s``
    (s = 1..S): the public ``(B0, ListB, ListR)`` with ``ListB = stages + [image]``."""

    image: Tensor
    initial: Tensor
    stages: list[Tensor]
    rain_stages: list[Tensor]


def residual_blocks(channels: int, num_block: int) -> nn.Sequential:
    """``num_block`` branches conv-BN-ReLU-conv-BN (3x3, bias), applied as ``x <- relu(x + branch(x))``."""
    def branch() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                             nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))

    return nn.Sequential(*(branch() for _ in range(num_block)))


def _residual_trunk(branches: nn.Sequential, x: Tensor) -> Tensor:
    for branch in branches:
        x = torch.relu(x + branch(x))
    return x


class RainMapProx(nn.Module):
    """Proximal net of the rain maps ``M``: residual blocks, then a learned soft threshold per map (init 0.5)."""

    def __init__(self, num_map: int, num_block: int) -> None:
        super().__init__()
        self.layer = residual_blocks(num_map, num_block)
        self.tau = nn.Parameter(torch.full((1, num_map, 1, 1), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(_residual_trunk(self.layer, x) - self.tau)


class BackgroundProx(nn.Module):
    """Proximal net of the background: residual blocks on ``[B, Z]`` (3 + num_channel channels)."""

    def __init__(self, num_channel: int, num_block: int) -> None:
        super().__init__()
        self.layer = residual_blocks(COLORS + num_channel, num_block)

    def forward(self, x: Tensor) -> Tensor:
        return _residual_trunk(self.layer, x)


@ARCH_REGISTRY.register()
class RCDNet(nn.Module):
    """RCDNet with the Rainmer comparison's defaults (2,975,186 parameters; the authors' ``Mainnet`` file has
    3,166,355, with 15 unused copies of the rain kernels, an unused M-net and an unused step size).

    ``forward(x)`` returns the refined background for any H x W (all convolutions are stride 1, 'same' padding);
    ``forward(x, return_stages=True)`` returns :class:`RCDNetOutputs` for the stage-wise loss (``RCDNetLoss``).
    Every output is on the input's scale ([0, 1] for the toolbox).

    Args:
        num_map: Rain maps / kernels (public 32; at most 32, the shipped initial kernels).
        num_channel: Channels of the auxiliary state ``Z`` (public 32).
        num_block: Residual blocks per proximal net (the paper's T, public 4).
        inter_iter: Stages (the paper's S, public 17).
        img_range: The pixel range the network works in: inputs are multiplied by it, outputs divided. 255 (the
            public codes' range, needed by their checkpoints); 1 feeds [0, 1] images unchanged.
    """

    def __init__(self, num_map: int = 32, num_channel: int = 32, num_block: int = 4, inter_iter: int = 17,
                 img_range: float = 255.0) -> None:
        super().__init__()
        if inter_iter < 1:
            raise ValueError(f'RCDNet: inter_iter (stages) must be >= 1, not {inter_iter}')
        self.inter_iter = inter_iter
        self.img_range = float(img_range)
        # registration order = the public state-dict order
        self.m_step = nn.Parameter(torch.ones(inter_iter - 1, 1))  # M step sizes of stages 2..S (/10)
        self.b_step = nn.Parameter(torch.full((inter_iter, 1), 5.0))  # B step sizes of stages 1..S (/10)
        kernels = initial_rain_kernels(num_map)
        self.c0 = nn.Parameter(kernels.clone())  # kernels of the first stage's M step
        self.c = nn.Parameter(kernels.clone())  # kernels of every other use
        self.cz = nn.Parameter(torch.full((num_channel, COLORS, 3, 3), 1.0 / 9))  # filter initialising Z
        self.tau = nn.Parameter(torch.ones(1))  # threshold of the initial rain estimate
        self.proxNet_M_S = nn.Sequential(*(RainMapProx(num_map, num_block) for _ in range(inter_iter)))
        self.proxNet_B_S = nn.Sequential(*(BackgroundProx(num_channel, num_block) for _ in range(inter_iter)))
        self.proxNet_B_0 = BackgroundProx(num_channel, num_block)
        self.proxNet_B_L = BackgroundProx(num_channel, num_block)
        self.register_load_state_dict_pre_hook(_load_public_layouts)

    def _background_step(self, stage: int, o: Tensor, b: Tensor, z: Tensor, r: Tensor) -> Tensor:
        """``[B, Z]`` of ``stage``: a step of size ``b_step / 10`` from ``B`` towards ``O - R``, then the B-net."""
        step = self.b_step[stage] / 10
        return self.proxNet_B_S[stage](torch.cat(((1 - step) * b + step * (o - r), z), dim=1))

    def _unfold(self, o: Tensor) -> RCDNetOutputs:
        """All stages on ``o`` in the network's pixel range."""
        c0, c = self.c0 / 10, self.c / 10
        bz = self.proxNet_B_0(torch.cat((o, F.conv2d(o, self.cz, padding=1)), dim=1))
        b0 = bz[:, :COLORS]
        # stage 1: M from the thresholded initial rain estimate O - B0, correlated with c0
        m = self.proxNet_M_S[0](F.conv_transpose2d(torch.relu(o - b0 - self.tau), c0, padding=KERNEL_PADDING))
        r = F.conv2d(m, c, padding=KERNEL_PADDING)
        bz = self._background_step(0, o, b0, bz[:, COLORS:], r)
        stages, rain_stages = [bz[:, :COLORS]], [r]
        for stage in range(1, self.inter_iter):
            b, z = bz[:, :COLORS], bz[:, COLORS:]
            grad = F.conv_transpose2d(r - (o - b), c, padding=KERNEL_PADDING)  # of ||O - B - R||^2 / 2 w.r.t. M
            m = self.proxNet_M_S[stage](m - self.m_step[stage - 1] / 10 * grad)
            r = F.conv2d(m, c, padding=KERNEL_PADDING)
            bz = self._background_step(stage, o, b, z, r)
            stages.append(bz[:, :COLORS])
            rain_stages.append(r)
        return RCDNetOutputs(self.proxNet_B_L(bz)[:, :COLORS], b0, stages, rain_stages)

    def forward(self, x: Tensor, return_stages: bool = False) -> Tensor | RCDNetOutputs:
        outputs = self._unfold(x * self.img_range)
        if not return_stages:
            return outputs.image / self.img_range
        scale = self.img_range
        return RCDNetOutputs(outputs.image / scale, outputs.initial / scale, [b / scale for b in outputs.stages],
                             [r / scale for r in outputs.rain_stages])


# ---------------------------------------------------------------------------------------------- public layouts
# hongwang01/RCDNet (Mainnet) -> these names; its Xnet / Mnet hold four residual branches resx1..4 / resm1..4.
MAINNET_MODULES = {'xnet.': 'proxNet_B_0.', 'x_stage.': 'proxNet_B_S.', 'm_stage.': 'proxNet_M_S.',
                   'fxnet.': 'proxNet_B_L.'}
MAINNET_UNUSED_STEP, MAINNET_UNUSED_MODULE = 'eta1', 'mnet.'  # defined, never used by Mainnet.forward
# hongwang01/RCDNet_simple (RCDNet) -> these names (its proximal nets already use layer.<k>).
SIMPLE_PARAMETERS = {'etaM_S': 'm_step', 'etaB_S': 'b_step', 'C0': 'c0', 'C': 'c', 'C_z': 'cz'}
SIMPLE_MODULES = {'proxNet_B_last_layer.': 'proxNet_B_L.'}


def _rename_branches(name: str) -> str:
    """``resx3.4.weight`` / ``resm3.4.weight`` (anywhere in ``name``) -> ``layer.2.4.weight``."""
    parts = name.split('.')
    for index, part in enumerate(parts):
        if part[:4] in ('resx', 'resm') and part[4:].isdigit():
            parts[index] = f'layer.{int(part[4:]) - 1}'
    return '.'.join(parts)


def _mainnet_names(state: MutableMapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    first, rest = state.pop(prefix + 'eta2'), state.pop(prefix + 'eta12')
    converted = {'m_step': state.pop(prefix + 'eta11'), 'b_step': torch.cat((first.reshape(1, 1).to(rest), rest)),
                 'c0': state.pop(prefix + 'weight0'), 'c': state.pop(prefix + 'conv')[1].clone(),
                 'cz': state.pop(prefix + 'w_z_f')}
    for key in [k for k in state if k.startswith(prefix)]:
        name, value = key[len(prefix):], state.pop(key)
        if name == MAINNET_UNUSED_STEP or name.startswith(MAINNET_UNUSED_MODULE):
            continue
        module = next((old for old in MAINNET_MODULES if name.startswith(old)), None)
        if module is not None:
            name = _rename_branches(MAINNET_MODULES[module] + name[len(module):])
        converted[name] = value
    return converted


def _simple_names(state: MutableMapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    converted = {}
    for key in [k for k in state if k.startswith(prefix)]:
        name, value = key[len(prefix):], state.pop(key)
        module = next((old for old in SIMPLE_MODULES if name.startswith(old)), None)
        if module is not None:
            name = SIMPLE_MODULES[module] + name[len(module):]
        converted[SIMPLE_PARAMETERS.get(name, name)] = value
    return converted


def convert_public_layout(state: MutableMapping[str, Tensor], prefix: str = '') -> str | None:
    """Rename, in place, the keys under ``prefix`` of an authors'-code checkpoint to this layout.

    ``Mainnet`` (hongwang01/RCDNet): ``eta11`` -> ``m_step``, ``[eta2, eta12]`` -> ``b_step``, ``weight0`` ->
    ``c0``, ``conv[1]`` -> ``c`` (the only slice its forward uses), ``w_z_f`` -> ``cz``, ``xnet`` / ``x_stage`` /
    ``m_stage`` / ``fxnet`` -> ``proxNet_B_0`` / ``proxNet_B_S`` / ``proxNet_M_S`` / ``proxNet_B_L`` with
    ``resx<k>`` / ``resm<k>`` -> ``layer.<k-1>``; the unused ``eta1`` and ``mnet`` are dropped.
    ``RCDNet`` (hongwang01/RCDNet_simple): ``etaM_S``, ``etaB_S``, ``C0``, ``C``, ``C_z``, ``proxNet_B_last_layer``.
    Returns the layout found (``'Mainnet'`` or ``'RCDNet_simple'``), or None: ``state`` is left as it is.
    """
    if prefix + 'weight0' in state:
        layout, converted = 'Mainnet', _mainnet_names(state, prefix)
    elif prefix + 'C0' in state:
        layout, converted = 'RCDNet_simple', _simple_names(state, prefix)
    else:
        return None
    state.update({prefix + name: value for name, value in converted.items()})
    return layout


def _load_public_layouts(module: nn.Module, state_dict: MutableMapping[str, Tensor], prefix: str, *args) -> None:
    """Load pre-hook of :class:`RCDNet`: authors'-code checkpoints are renamed before the strict key check."""
    convert_public_layout(state_dict, prefix)
