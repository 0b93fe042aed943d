"""PReNet (CVPR 2019): progressive recurrent network for single-image deraining.

One stage maps the rainy image ``y`` and the previous estimate to a new estimate: ``conv0`` (3x3 on their
6-channel concatenation, ReLU), a convolutional LSTM (the gates ``conv_i``, ``conv_f``, ``conv_g``, ``conv_o`` are
3x3 convs on ``[features, h]``), five residual blocks on ``h`` and ``conv`` back to RGB, added to ``y``. The stage
runs ``recurrent_iter`` times with shared weights, starting from ``y`` with zero LSTM states.

Module names are the public ``networks.py`` class ``PReNet`` (csdwren/PReNet), which is also the ``models/PReNet.py``
of the public Rainmer code's comparison (``configs/prenet_config.yaml``: 6 stages), so released checkpoints (bare
state dicts, read as they are) load strictly. The public ``use_GPU`` flag is gone: the LSTM states follow the
input's device and dtype.
"""
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

GATES = ('i', 'f', 'g', 'o')  # LSTM input, forget, cell (tanh) and output gates


class PReNetOutputs(NamedTuple):
    """The final image and every stage's image (``stages[-1] is image``), unpacking like the public ``(x, x_list)``."""

    image: Tensor
    stages: list[Tensor]


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def conv_act(in_channels: int, out_channels: int, act: nn.Module) -> nn.Sequential:
    """``Sequential(conv3x3, act)``: the public layout, weights under ``.0``."""
    return nn.Sequential(conv3x3(in_channels, out_channels), act)


def residual_branch(channels: int) -> nn.Sequential:
    """conv-ReLU-conv-ReLU (weights under ``.0`` and ``.2``); :func:`residual_trunk` adds the skip."""
    return nn.Sequential(conv3x3(channels, channels), nn.ReLU(), conv3x3(channels, channels), nn.ReLU())


def add_lstm_gates(module: nn.Module, in_channels: int, channels: int, suffix: str = '') -> None:
    """Register the gate convs ``conv_{i,f,g,o}{suffix}`` (sigmoid, sigmoid, tanh, sigmoid) on ``module``."""
    for gate in GATES:
        act = nn.Tanh() if gate == 'g' else nn.Sigmoid()
        module.add_module(f'conv_{gate}{suffix}', conv_act(in_channels, channels, act))


def lstm_step(module: nn.Module, inputs: Tensor, c: Tensor, suffix: str = '') -> tuple[Tensor, Tensor]:
    """One ConvLSTM update with the gates of :func:`add_lstm_gates`: ``c' = f c + i g``, ``h' = o tanh(c')``."""
    i, f, g, o = (getattr(module, f'conv_{gate}{suffix}')(inputs) for gate in GATES)
    c = f * c + i * g
    return o * torch.tanh(c), c


def residual_trunk(blocks: Iterable[nn.Module], x: Tensor) -> Tensor:
    """``x <- relu(block(x) + x)`` for each block in turn."""
    for block in blocks:
        x = F.relu(block(x) + x)
    return x


@ARCH_REGISTRY.register()
class PReNet(nn.Module):
    """PReNet with the public defaults: 6 stages, 32 channels (168,963 parameters, any stage count).

    ``forward(x)`` returns the last stage's image (any H x W: all convs are 3x3, stride 1);
    ``forward(x, return_stages=True)`` returns :class:`PReNetOutputs` (final image and the list of stage images,
    as the public forward's ``(x, x_list)``). The public training (``train_PReNet.py``, and the Rainmer comparison's
    ``Benchmark/train_prenet.py``) minimises ``-SSIM`` of the final image only: ``SSIMLoss`` with weight 1
    (``1 - SSIM``, the same gradient).

    Args:
        recurrent_iter: Number of stages (public default 6).
        channels: Feature width (public: 32, fixed); smaller only for tests.
    """

    def __init__(self, recurrent_iter: int = 6, channels: int = 32) -> None:
        super().__init__()
        self.iteration = recurrent_iter
        self.channels = channels
        self.conv0 = conv_act(6, channels, nn.ReLU())
        for index in range(1, 6):
            self.add_module(f'res_conv{index}', residual_branch(channels))
        add_lstm_gates(self, 2 * channels, channels)
        self.conv = nn.Sequential(conv3x3(channels, 3))

    def residual_blocks(self) -> Sequence[nn.Module]:
        return [getattr(self, f'res_conv{index}') for index in range(1, 6)]

    def forward(self, x: Tensor, return_stages: bool = False) -> Tensor | PReNetOutputs:
        b, _, h, w = x.shape
        hidden = x.new_zeros(b, self.channels, h, w)
        cell = x.new_zeros(b, self.channels, h, w)
        out, stages = x, []
        for _ in range(self.iteration):
            features = self.conv0(torch.cat((x, out), dim=1))
            hidden, cell = lstm_step(self, torch.cat((features, hidden), dim=1), cell)
            out = self.conv(residual_trunk(self.residual_blocks(), hidden)) + x
            stages.append(out)
        return PReNetOutputs(out, stages) if return_stages else out
