"""RCDNet's stage-wise objective: MSE on every stage's background and rain layer.

Both public training scripts compute the same loss: the authors' ``trainer.py`` (hongwang01/RCDNet, ``--loss
1*MSE``, ``nn.MSELoss`` mean) and the Rainmer comparison's ``Benchmark/train_rcdnet.py`` (``loss_func``,
``F.mse_loss``). With the network's ``(B0, [B_1..B_S, B], [R_1..R_S])``, the ground truth ``gt`` and the rain layer
``lq - gt``::

    0.1 MSE(B0, gt) + 0.1 sum_s MSE(B_s, gt) + MSE(B, gt) + 0.1 sum_s MSE(R_s, lq - gt) + 0.9 MSE(R_S, lq - gt)

(the last stage's rain layer weighs 1 in all). Both scripts train on 0-255 pixel values, so their loss is 255^2
times this one on the toolbox's [0, 1] images; Adam, the optimiser of both, is invariant to that factor but for
its ``eps``, and ``loss_weight: 65025`` restores their scale exactly.
"""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

_REDUCTIONS = ('mean', 'sum')


@LOSS_REGISTRY.register()
class RCDNetLoss(nn.Module):
    """The public RCDNet loss on :class:`~rainmer.archs.rcdnet_arch.RCDNetOutputs` (``forward(outputs, gt, lq)``).

    Args:
        loss_weight: Multiplies the whole sum (1.0).
        stage_weight: Weight of ``B0``, of each stage's ``B_s`` and of each stage's ``R_s`` (public 0.1).
        last_rain_weight: Extra weight of the last stage's rain layer (public 0.9).
        reduction: 'mean' (public) | 'sum' of each squared-error term.
    """

    def __init__(self, loss_weight: float = 1.0, stage_weight: float = 0.1, last_rain_weight: float = 0.9,
                 reduction: str = 'mean') -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'RCDNetLoss: unsupported reduction {reduction!r}; supported: {_REDUCTIONS}')
        self.loss_weight = loss_weight
        self.stage_weight = stage_weight
        self.last_rain_weight = last_rain_weight
        self.reduction = reduction

    def forward(self, outputs, target: Tensor, lq: Tensor) -> Tensor:
        if not all(hasattr(outputs, name) for name in ('image', 'initial', 'stages', 'rain_stages')):
            raise TypeError(f'RCDNetLoss needs the stage outputs of RCDNet (forward(x, return_stages=True)), not '
                            f'{type(outputs).__name__}: use model_type RCDNetModel')
        rain = lq - target

        def mse(pred: Tensor, truth: Tensor) -> Tensor:
            return F.mse_loss(pred, truth, reduction=self.reduction)

        stages = mse(outputs.initial, target) + sum(mse(b, target) for b in outputs.stages)
        stages = stages + sum(mse(r, rain) for r in outputs.rain_stages)
        total = (self.stage_weight * stages + mse(outputs.image, target)
                 + self.last_rain_weight * mse(outputs.rain_stages[-1], rain))
        return self.loss_weight * total
