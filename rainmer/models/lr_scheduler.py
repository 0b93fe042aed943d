"""DRSformer's cyclic cosine schedule, which BasicSR 1.4.2 lacks (docs/method.md#optimisation)."""
import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import _LRScheduler

from rainmer.utils.registry import SCHEDULER_REGISTRY


@SCHEDULER_REGISTRY.register()
class CosineAnnealingRestartCyclicLR(_LRScheduler):
    """Cosine annealing with restarts, each cycle with its own minimum learning rate.

    Cycle ``i`` covers iterations ``(c_{i-1}, c_i]`` where ``c_i = periods[0] + ... + periods[i]`` (``c_{-1} = 0``,
    iteration 0 belongs to cycle 0). Within it::

        lr = eta_mins[i] + restart_weights[i] * (base_lr - eta_mins[i]) * (1 + cos(pi * (t - c_{i-1}) / periods[i])) / 2

    Rainmer: ``periods=[92000, 208000], restart_weights=[1, 1], eta_mins=[3e-4, 1e-6]`` with base lr 3e-4, i.e. a
    constant 3e-4 for 92k iterations, then a cosine decay to 1e-6. Iterations past the last cycle keep its final lr
    (DRSformer's version fails there).

    Args:
        optimizer (Optimizer): Wrapped optimizer.
        periods (list[int]): Length of each cycle, in iterations.
        restart_weights (list[float]): Scale of the cosine amplitude in each cycle. Default: [1].
        eta_mins (list[float]): Minimum lr of each cycle. Default: [0].
        last_epoch (int): Index of the last iteration (-1 to start). Default: -1.
    """

    def __init__(self, optimizer: Optimizer, periods: Sequence[int], restart_weights: Sequence[float] = (1, ),
                 eta_mins: Sequence[float] = (0, ), last_epoch: int = -1):
        self.periods = [int(p) for p in periods]
        self.restart_weights = [float(w) for w in restart_weights]
        self.eta_mins = [float(e) for e in eta_mins]
        if not len(self.periods) == len(self.restart_weights) == len(self.eta_mins):
            raise ValueError('periods, restart_weights and eta_mins must have the same length.')
        if any(p <= 0 for p in self.periods):
            raise ValueError(f'periods must be positive, got {self.periods}.')
        self.cumulative_period = [sum(self.periods[:i + 1]) for i in range(len(self.periods))]
        super().__init__(optimizer, last_epoch)

    def cycle_index(self, iteration: int) -> int:
        """Index of the cycle that contains ``iteration`` (the last one past the end)."""
        for index, end in enumerate(self.cumulative_period):
            if iteration <= end:
                return index
        return len(self.cumulative_period) - 1

    def get_lr(self) -> list[float]:
        index = self.cycle_index(self.last_epoch)
        start = self.cumulative_period[index] - self.periods[index]
        progress = min((self.last_epoch - start) / self.periods[index], 1.0)
        weight, eta_min = self.restart_weights[index], self.eta_mins[index]
        return [
            eta_min + weight * 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * progress))
            for base_lr in self.base_lrs
        ]
