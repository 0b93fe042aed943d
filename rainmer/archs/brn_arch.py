"""BRN (TIP 2020, "Single Image Deraining Using Bilateral Recurrent Network"): coupled rain and background RNNs.

Each stage first updates the rain layer ``r``, then the background ``b``, from the rainy image ``y``:

* rain: ``conv0_r`` on ``[y, r]`` (6 channels), a ConvLSTM (gates ``conv_{i,f,g,o}_r``) on
  ``[features, h_r, h]`` with the background's previous hidden state ``h``, three residual blocks, ``conv_r``;
* background: ``conv0`` on ``[y, b, r]`` (9 channels), a ConvLSTM (``conv_{i,f,g,o}``) on ``[features, h, h_r]``
  with the rain branch's new hidden state, five residual blocks, ``conv`` (the image itself, no skip from ``y``).

Both start from ``y`` with zero states; ``recurrent_iter`` stages share their weights. The layout is the BRN of the
public Rainmer code's comparison (``models/BRN.py``, ``configs/brn_config.yaml``: 8 stages): the authors' BRN
(csdwren/RecDerain ``generator.py``) without its ``res_conv4_r`` / ``res_conv5_r``, which that forward never
uses. Released RecDerain checkpoints (which hold them) still load strictly: those two blocks' weights are dropped
on loading (the file is read as a bare state dict, its DataParallel ``module.`` prefix removed). The public
``use_GPU`` flag is gone: states follow the input's device and dtype.
"""
from collections.abc import Sequence
from typing import NamedTuple

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from rainmer.archs.prenet_arch import add_lstm_gates, conv3x3, conv_act, lstm_step, residual_branch, residual_trunk

RECDERAIN_UNUSED_BLOCKS = ('res_conv4_r.', 'res_conv5_r.')  # defined but never used by RecDerain's BRN.forward


class BRNOutputs(NamedTuple):
    """Final background and rain layer with their per-stage lists, in the order of RecDerain's
    ``(x, x_list, r, r_list)``."""

    image: Tensor
    stages: list[Tensor]
    rain: Tensor
    rain_stages: list[Tensor]


def _drop_unused_rain_blocks(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook: forget RecDerain's unused ``res_conv4_r`` / ``res_conv5_r`` weights."""
    for key in [k for k in state_dict if k.startswith(tuple(prefix + name for name in RECDERAIN_UNUSED_BLOCKS))]:
        del state_dict[key]


@ARCH_REGISTRY.register()
class BRN(nn.Module):
    """BRN as the Rainmer comparison builds it: 8 stages, 32 channels (375,526 parameters; RecDerain's file has
    412,518 with the two unused rain blocks).

    ``forward(x)`` returns the last stage's background (any H x W); ``forward(x, return_stages=True)`` returns
    :class:`BRNOutputs` (background, its stages, rain layer, its stages). The public training scripts (RecDerain
    ``train.py`` and Rainmer's ``Benchmark/train_brn.py``) minimise ``-SSIM`` of the final background only (the
    rain-layer MSE is commented out in ``train.py``): ``SSIMLoss`` with weight 1 (``1 - SSIM``, the same gradient).

    Args:
        recurrent_iter: Number of stages (8: both public configs and test scripts; RecDerain's class default is 4).
        channels: Feature width (public: 32, fixed); smaller only for tests.
    """

    def __init__(self, recurrent_iter: int = 8, channels: int = 32) -> None:
        super().__init__()
        self.iteration = recurrent_iter
        self.channels = channels
        # background branch, then rain branch: the public registration order
        self.conv0 = conv_act(9, channels, nn.ReLU())
        for index in range(1, 6):
            self.add_module(f'res_conv{index}', residual_branch(channels))
        add_lstm_gates(self, 3 * channels, channels)
        self.conv = nn.Sequential(conv3x3(channels, 3))
        self.conv0_r = conv_act(6, channels, nn.ReLU())
        for index in range(1, 4):
            self.add_module(f'res_conv{index}_r', residual_branch(channels))
        add_lstm_gates(self, 3 * channels, channels, suffix='_r')
        self.conv_r = nn.Sequential(conv3x3(channels, 3))
        self.register_load_state_dict_pre_hook(_drop_unused_rain_blocks)

    def residual_blocks(self, rain: bool = False) -> Sequence[nn.Module]:
        if rain:
            return [getattr(self, f'res_conv{index}_r') for index in range(1, 4)]
        return [getattr(self, f'res_conv{index}') for index in range(1, 6)]

    def forward(self, x: Tensor, return_stages: bool = False) -> Tensor | BRNOutputs:
        b, _, h, w = x.shape
        hidden, cell, hidden_r, cell_r = (x.new_zeros(b, self.channels, h, w) for _ in range(4))
        out, rain, stages, rain_stages = x, x, [], []
        for _ in range(self.iteration):
            features = self.conv0_r(torch.cat((x, rain), dim=1))
            hidden_r, cell_r = lstm_step(self, torch.cat((features, hidden_r, hidden), dim=1), cell_r, '_r')
            rain = self.conv_r(residual_trunk(self.residual_blocks(rain=True), hidden_r))
            rain_stages.append(rain)
            features = self.conv0(torch.cat((x, out, rain), dim=1))
            hidden, cell = lstm_step(self, torch.cat((features, hidden, hidden_r), dim=1), cell)
            out = self.conv(residual_trunk(self.residual_blocks(), hidden))
            stages.append(out)
        return BRNOutputs(out, stages, rain, rain_stages) if return_stages else out
