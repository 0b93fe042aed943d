import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import io
import math

import pytest
import torch

from rainmer.models.lr_scheduler import CosineAnnealingRestartCyclicLR
from rainmer.utils.registry import SCHEDULER_REGISTRY

PERIODS, WEIGHTS, ETA_MINS, BASE_LR = [92000, 208000], [1, 1], [3e-4, 1e-6], 3e-4


def _scheduler(**kwargs) -> CosineAnnealingRestartCyclicLR:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    opts = {'periods': PERIODS, 'restart_weights': WEIGHTS, 'eta_mins': ETA_MINS, **kwargs}
    return CosineAnnealingRestartCyclicLR(optimizer, **opts)


def _lr_at(iteration: int, **kwargs) -> float:
    scheduler = _scheduler(**kwargs)
    scheduler.last_epoch = iteration  # what `iteration` calls of step() lead to
    return scheduler.get_lr()[0]


def _hand(iteration: int, periods=PERIODS, weights=WEIGHTS, eta_mins=ETA_MINS) -> float:
    start = 0
    for period, weight, eta_min in zip(periods, weights, eta_mins):
        if iteration <= start + period:
            return eta_min + weight * (BASE_LR - eta_min) * (1 + math.cos(math.pi * (iteration - start) / period)) / 2
        start += period
    raise AssertionError('past the schedule')


def test_registered():
    assert SCHEDULER_REGISTRY.get('CosineAnnealingRestartCyclicLR') is CosineAnnealingRestartCyclicLR


def test_rainmer_schedule_is_constant_then_cosine():
    for iteration in (0, 1, 5000, 46000, 91999, 92000):
        assert _lr_at(iteration) == pytest.approx(3e-4, rel=1e-12)
    assert _lr_at(92000 + 104000) == pytest.approx((3e-4 + 1e-6) / 2, rel=1e-12)
    assert _lr_at(300000) == pytest.approx(1e-6, rel=1e-12)
    assert _lr_at(400000) == pytest.approx(1e-6, rel=1e-12)  # past the end: stays at the last minimum


@pytest.mark.parametrize('iteration', [0, 3, 9, 10, 11, 17, 25, 30, 31, 45, 50])
def test_matches_hand_formula_with_restarts(iteration):
    opts = {'periods': [10, 20, 20], 'restart_weights': [1, 0.5, 0.25], 'eta_mins': [1e-5, 1e-6, 0.0]}
    assert _lr_at(iteration, **opts) == pytest.approx(_hand(iteration, *opts.values()), rel=1e-12)


def test_stepping_follows_the_formula_and_state_round_trips():
    opts = {'periods': [10, 20], 'restart_weights': [1, 0.5], 'eta_mins': [1e-5, 1e-7]}
    scheduler = _scheduler(**opts)
    optimizer = scheduler.optimizer
    for iteration in range(1, 13):  # BasicSR steps once per iteration
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]['lr'] == pytest.approx(_hand(iteration, *opts.values()), rel=1e-12)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = _scheduler(periods=[1], restart_weights=[1], eta_mins=[0])
    resumed.load_state_dict(state)
    for iteration in range(13, 31):
        for sched in (scheduler, resumed):
            sched.optimizer.step()
            sched.step()
        expected = _hand(iteration, *opts.values())
        assert scheduler.optimizer.param_groups[0]['lr'] == pytest.approx(expected, rel=1e-12)
        assert resumed.optimizer.param_groups[0]['lr'] == pytest.approx(expected, rel=1e-12)


def test_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        _scheduler(periods=[10, 20], restart_weights=[1], eta_mins=[0, 0])
