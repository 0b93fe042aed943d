"""NeRD-Rain's losses and NeRDRainModel: the multi-scale objective term by term, the schedule, and learning."""
import copy
import json
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from basicsr.losses import build_loss
from basicsr.models import build_model
from toolbox_fixtures import REPO_ROOT

from rainmer.losses.nerdrain_loss import EdgeLoss, FFTLoss, gaussian_pyramid, laplacian
from rainmer.options import load_yaml

TINY_NET = dict(type='NeRDRain', dim=8, num_blocks=[1, 1, 1], heads=[1, 1, 1])


# ------------------------------------------------------------------------------------------------ losses
def test_fft_loss_is_the_mean_modulus_of_the_spectrum_difference():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 8, 6), torch.rand(2, 3, 8, 6)
    spectrum = torch.fft.fft2(x) - torch.fft.fft2(y)
    expected = torch.sqrt(spectrum.real ** 2 + spectrum.imag ** 2).mean()
    torch.testing.assert_close(FFTLoss()(x, y), expected)
    torch.testing.assert_close(build_loss({'type': 'FFTLoss', 'loss_weight': 0.01})(x, y), 0.01 * expected)
    assert FFTLoss()(x, x) == 0


def test_edge_loss_compares_laplacians_with_charbonnier():
    torch.manual_seed(0)
    x, y = torch.rand(1, 3, 16, 12), torch.rand(1, 3, 16, 12)
    expected = torch.sqrt((laplacian(x) - laplacian(y)) ** 2 + 1e-6).mean()
    torch.testing.assert_close(EdgeLoss()(x, y), expected)
    torch.testing.assert_close(build_loss({'type': 'EdgeLoss', 'loss_weight': 0.05})(x, y), 0.05 * expected)
    assert math.isclose(float(EdgeLoss()(x, x)), 1e-3, rel_tol=1e-5)  # sqrt(eps)
    flat_detail = laplacian(torch.full((1, 3, 16, 16), 0.3))  # no detail inside a flat image (replicate borders
    assert flat_detail[..., 2:-2, 2:-2].abs().max() < 1e-6  # of the zero-inserted copy leave some at the edges)


def test_gaussian_pyramid_halves_with_floor_and_keeps_flat_images():
    flat = torch.full((1, 3, 37, 30), 0.25)
    levels = gaussian_pyramid(flat, 3)
    assert [tuple(t.shape[-2:]) for t in levels] == [(37, 30), (18, 15), (9, 7)]
    assert all(torch.allclose(t, torch.full_like(t, 0.25)) for t in levels)
    ramp = torch.linspace(0, 1, 16).expand(1, 1, 16, 16)
    torch.testing.assert_close(gaussian_pyramid(ramp, 2)[1][0, 0, 4, 2:6],  # interior: blur keeps a linear ramp
                               F.avg_pool2d(ramp, 2)[0, 0, 4, 2:6])


# ------------------------------------------------------------------------------------------------ model
def _model_options(**train) -> dict:
    """The shipped config's train block on a tiny network, ready for build_model."""
    opt = json.loads(json.dumps(load_yaml(osp.join(REPO_ROOT, 'options', 'nerdrain_mixed.yml'))))
    opt.update(num_gpu=0, is_train=True, dist=False, rank=0, world_size=1, network_g=dict(TINY_NET))
    opt['path'].update(models='unused', training_states='unused', visualization='unused')
    opt['train'].update(accumulate_grad_step=1, **train)
    return opt


@pytest.fixture
def batch():
    torch.manual_seed(1)
    gt = torch.rand(2, 3, 32, 32)
    return {'lq': (gt + 0.3 * torch.rand_like(gt)).clamp(0, 1), 'gt': gt}


def test_loss_terms_are_the_papers_objective(batch):
    torch.manual_seed(0)
    model = build_model(_model_options())
    model.feed_data(batch)
    model.optimize_parameters(1)
    logged = model.log_dict

    # recompute with the weights before the step: rebuild with the same seed
    torch.manual_seed(0)
    fresh = build_model(_model_options())
    with torch.no_grad():
        out = fresh.net_g(batch['lq'], multiscale=True)
    targets = gaussian_pyramid(batch['gt'], 3)
    scales = list(zip((out.full, out.half, out.quarter), targets))
    expected = {
        'l_pix': sum(torch.sqrt((p - t) ** 2 + 1e-6).mean() for p, t in scales),
        'l_fft': 0.01 * sum(FFTLoss()(p, t) for p, t in scales),
        'l_edge': 0.05 * sum(EdgeLoss()(p, t) for p, t in scales),
        'l_inr': 0.1 * (F.l1_loss(out.inr_half, targets[1]) + F.l1_loss(out.inr_quarter, targets[2])),
    }
    expected['l_total'] = sum(expected.values())
    assert list(logged) == list(expected)
    for name, value in expected.items():
        assert logged[name] == pytest.approx(float(value), rel=1e-5), name
    assert model.grad_clip_norm is None and type(model.optimizer_g).__name__ == 'Adam'


def test_warm_up_then_cosine_to_the_minimum():
    model = build_model(_model_options(warmup_iter=4, scheduler=dict(
        type='CosineAnnealingRestartCyclicLR', periods=[4, 8], restart_weights=[1, 1], eta_mins=[1e-4, 1e-6])))
    lrs = []
    for it in range(1, 13):
        model.update_learning_rate(it, warmup_iter=4)
        lrs.append(model.get_current_learning_rate()[0])
    assert lrs[:4] == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4])
    assert lrs[4] == pytest.approx(1e-4)  # iteration i runs at scheduler step i - 1, the end of the warm-up cycle
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(1e-6 + (1e-4 - 1e-6) * (1 + math.cos(math.pi * 7 / 8)) / 2)


def test_the_loss_decreases_on_a_tiny_run(batch):
    torch.manual_seed(0)
    model = build_model(_model_options(optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.999])))
    totals = []
    for it in range(1, 9):
        model.feed_data(batch)
        model.optimize_parameters(it)
        totals.append(float(model.log_dict['l_total']))
    assert totals[-1] < 0.9 * totals[0]
    assert sum(totals[-3:]) < sum(totals[:3])


def test_validation_runs_the_full_size_output_like_any_restorer(batch):
    model = build_model(_model_options())
    model.feed_data({'lq': batch['lq'][:1, :, :30, :27]})
    model.test()
    assert model.output.shape == (1, 3, 30, 27)


def test_a_network_without_multiscale_outputs_is_refused():
    opt = _model_options()
    opt['network_g'] = dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1])
    with pytest.raises(ValueError, match='multiscale'):
        build_model(copy.deepcopy(opt))


def test_shipped_configs_share_rainmer_mixed_data_and_validation():
    def load(*parts):
        return json.loads(json.dumps(load_yaml(osp.join(REPO_ROOT, 'options', *parts))))

    nerd, rainmer = load('nerdrain_mixed.yml'), load('rainmer_mixed.yml')
    for key in ('datasets', 'val', 'manual_seed', 'logger'):
        assert nerd[key] == rainmer[key], key
    assert nerd['train']['total_iter'] == rainmer['train']['total_iter']
    assert nerd['train']['accumulate_grad_step'] == rainmer['train']['accumulate_grad_step']
    train = nerd['train']
    assert train['optim_g']['type'] == 'Adam' and train['optim_g']['lr'] == 1e-4
    assert train['scheduler']['eta_mins'] == [1e-4, 1e-6] and sum(train['scheduler']['periods']) == 300000
    assert train['scheduler']['periods'][0] == train['warmup_iter']
    weights = {k: train[k]['loss_weight'] for k in ('pixel_opt', 'fft_opt', 'edge_opt', 'inr_opt')}
    assert weights == {'pixel_opt': 1.0, 'fft_opt': 0.01, 'edge_opt': 0.05, 'inr_opt': 0.1}
    test_opt, rainmer_test = load('test', 'nerdrain_mixed_test.yml'), load('test', 'rainmer_mixed_test.yml')
    assert test_opt['datasets'] == rainmer_test['datasets'] and test_opt['val'] == rainmer_test['val']
    assert test_opt['network_g'] == nerd['network_g']
