"""Mixture of experts (MoEs / MEFC of DRSformer): a weight generator and 4 stages of 8 experts.

The module tree mirrors the public state-dict keys (``layers.0.ca_fc.*``, ``layers.1.preprocess.op.0``,
``layers.1._ops.<stage>._ops.<expert>.op.<i>``, ``layers.1._ops.<stage>._out.0``), so checkpoints of
DRSformer and Rainmer load unchanged. Every expert is a small conv stack with its own parameters.

The fast variants (:class:`FusedExpertStage`, :class:`FastExpertStages`; :mod:`rainmer.archs.fast`) give the same
output from those same parameters (so state-dict keys and gradients are the per-expert ones) with fewer
full-resolution passes:

* every expert's last pointwise conv is linear and followed by its softmax weight and the stage's ``_out`` 1x1
  conv, so it is folded into ``_out``: the stage output is ``sum_e w_e (W_out[:, e] @ P_e) z_e``, accumulated
  by batched matmuls (per-image weights; no concatenation of the 8 expert outputs, no scaling pass);
* the 1x1 depthwise convs of ``sep_conv_1x1`` are per-channel scales, folded into the neighbouring matrices;
* depthwise convs keep their own kernel sizes: on CPU their cost grows with the taps, so zero-padding them into one
  grouped conv was slower than separate calls (see docs/speed.md); they are fastest on channels_last inputs.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rainmer.archs.modules.depthwise import depthwise_module
from rainmer.archs.modules.fastpath import fast_variant
from rainmer.archs.modules.ops import add_relu, conv1x1_per_image, conv_relu

EXPERTS = ('sep_conv_1x1', 'sep_conv_3x3', 'sep_conv_5x5', 'sep_conv_7x7',
           'dil_conv_3x3', 'dil_conv_5x5', 'dil_conv_7x7', 'avg_pool_3x3')
NUM_STAGES = 4


class SeparableConvExpert(nn.Module):
    """dw kxk -> pw 1x1 -> ReLU -> dw kxk -> pw 1x1 (no bias)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.op = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilatedConvExpert(nn.Module):
    """dw kxk with dilation 2 -> pw 1x1 (no bias)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size - 1, dilation=2, groups=channels,
                      bias=False),
            nn.Conv2d(channels, channels, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


def build_expert(name: str, channels: int) -> nn.Module:
    """One expert from its name in :data:`EXPERTS`."""
    kind, kernel = name.rsplit('_', 1)
    kernel_size = int(kernel.split('x')[0])
    if kind == 'sep_conv':
        return SeparableConvExpert(channels, kernel_size)
    if kind == 'dil_conv':
        return DilatedConvExpert(channels, kernel_size)
    if kind == 'avg_pool':
        return nn.AvgPool2d(kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)
    raise ValueError(f'Unknown expert {name!r}.')


class ExpertWeightGenerator(nn.Module):
    """GAP -> linear (C -> 2*S*E) -> ReLU -> linear (-> S*E) -> softmax over the E experts of each stage.

    The public DRSformer stores these layers as ``nn.Linear`` ([out, in]) and the public Rainmer backbone as
    1x1 convolutions ([out, in, 1, 1]); both are the same map, and both layouts load here.
    """

    def __init__(self, channels: int, num_stages: int = NUM_STAGES, num_experts: int = len(EXPERTS)) -> None:
        super().__init__()
        self.num_stages = num_stages
        self.num_experts = num_experts
        hidden = 2 * num_stages * num_experts
        self.ca_fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, num_stages * num_experts))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.ca_fc(x.mean(dim=(2, 3)))
        return logits.view(-1, self.num_stages, self.num_experts).softmax(dim=-1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 (torch's signature)
        for name in ('ca_fc.0.weight', 'ca_fc.2.weight'):
            weight = state_dict.get(prefix + name)
            if weight is not None and weight.dim() == 4:  # 1x1 conv layout -> linear layout
                state_dict[prefix + name] = weight.flatten(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _ConvReLU(nn.Module):
    """conv1x1 (no bias) -> ReLU, stored under ``op`` like the public code."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ExpertStage(nn.Module):
    """All experts on one input, each scaled by its weight, concatenated, then conv1x1 (E*C -> C) + ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self._ops = nn.ModuleList(build_expert(name, channels) for name in EXPERTS)
        self._out = nn.Sequential(nn.Conv2d(channels * len(EXPERTS), channels, 1, bias=False), nn.ReLU())

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """weights: [B, E] (softmax over experts)."""
        scaled = [expert(x) * weights[:, index, None, None, None] for index, expert in enumerate(self._ops)]
        return self._out(torch.cat(scaled, dim=1))


@fast_variant(ExpertStage)
class FusedExpertStage(ExpertStage):
    """:class:`ExpertStage` with the last pointwise convs folded into ``_out`` (see the module docs)."""

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        channels = x.shape[1]
        out_weight = self._out[0].weight.flatten(1)  # [C, E*C]
        out = None
        for index, expert in enumerate(self._ops):
            mix = out_weight[:, index * channels:(index + 1) * channels]
            if isinstance(expert, SeparableConvExpert):
                dw1, pw1, _, dw2, pw2 = expert.op
                first, second = pw1.weight.flatten(1), pw2.weight.flatten(1)
                feat = _depthwise_or_scale(x, dw1)
                if dw1.kernel_size[0] == 1:
                    first = first * dw1.weight.flatten()[None, :]
                feat = conv_relu(feat, first.to(feat.dtype))
                mix = mix @ second
                if dw2.kernel_size[0] == 1:
                    mix = mix * dw2.weight.flatten()[None, :]
                else:
                    feat = depthwise_module(dw2, feat)
            elif isinstance(expert, DilatedConvExpert):
                feat = depthwise_module(expert.op[0], x)
                mix = mix @ expert.op[1].weight.flatten(1)
            else:
                feat = expert(x)
            scaled = (weights[:, index, None, None] * mix).to(feat.dtype)  # [B, C, C]
            out = conv1x1_per_image(feat, scaled, accumulate=out)
        return F.relu(out, inplace=True)


def _depthwise_or_scale(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A depthwise conv, or nothing for a 1x1 one (its per-channel scale is folded by the caller)."""
    return x if conv.kernel_size[0] == 1 else depthwise_module(conv, x)


class ExpertStages(nn.Module):
    """conv1x1 + ReLU, then S residual expert stages: ``F = ReLU(stage(F) + F)``."""

    def __init__(self, channels: int, num_stages: int = NUM_STAGES) -> None:
        super().__init__()
        self.preprocess = _ConvReLU(channels)
        self._ops = nn.ModuleList(ExpertStage(channels) for _ in range(num_stages))

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """weights: [B, S, E]."""
        x = self.preprocess(x)
        for index, stage in enumerate(self._ops):
            x = F.relu(stage(x, weights[:, index]) + x)
        return x


@fast_variant(ExpertStages)
class FastExpertStages(ExpertStages):
    """:class:`ExpertStages` with the ReLUs fused into the preprocess conv and the residual sums (oneDNN)."""

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        x = conv_relu(x, self.preprocess.op[0].weight)
        for index, stage in enumerate(self._ops):
            x = add_relu(stage(x, weights[:, index]), x)
        return x


class MixtureOfExperts(nn.Module):
    """MoEs / MEFC block: expert weights from the input, then the residual expert stages."""

    def __init__(self, dim: int, num_stages: int = NUM_STAGES) -> None:
        super().__init__()
        self.layers = nn.ModuleList([ExpertWeightGenerator(dim, num_stages), ExpertStages(dim, num_stages)])

    def forward(self, x: Tensor) -> Tensor:
        weight_generator, stages = self.layers
        return stages(x, weight_generator(x))
