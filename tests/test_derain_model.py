"""DerainModel: any network at any image size, the divergence guard, through the real `basicsr train|test`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import copy
import os.path as osp

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from data_fixtures import make_rain13k
from toolbox_fixtures import (
    PSNR_Y,
    cyclic_cosine_train,
    rain13k_train_options,
    run_command,
    train_and_test_tiny,
    write_yaml,
)

from rainmer.models.derain_model import DerainModel, DivergenceError, ImageSizeError, pad_and_crop, size_multiple

SWINIR = dict(type='SwinIR', upscale=1, in_chans=3, img_size=32, window_size=8, img_range=1.0, depths=[1],
              embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler='', resi_connection='1conv')
RRDB = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=1, num_feat=8, num_block=1, num_grow_ch=4)


@pytest.mark.parametrize('network_opt, expected', [
    (SWINIR, 8), ({**SWINIR, 'window_size': 4}, 4), (RRDB, 4), ({**RRDB, 'scale': 2}, 2),
    ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3}, 1),  # RRDBNet's default scale 4: no unshuffle
    ({'type': 'DRSformer', 'dim': 8, 'num_blocks': [1, 1, 1, 1], 'heads': [1, 1, 1, 1]}, 1),  # pads itself
])
def test_size_multiple_of_each_network(network_opt, expected):
    net = build_network(copy.deepcopy(network_opt))
    assert size_multiple(net, network_opt) == expected
    assert size_multiple(net, network_opt, override=16) == 16


def test_pad_and_crop_returns_the_input_size_and_leaves_multiples_alone():
    seen = []

    def forward(x):
        seen.append(tuple(x.shape[-2:]))
        return x * 2

    x = torch.rand(1, 3, 241, 177)
    out = pad_and_crop(forward, x, 8)
    assert seen == [(248, 184)] and out.shape == x.shape
    torch.testing.assert_close(out, x * 2)  # the padding is cut away, the image itself untouched
    pad_and_crop(forward, torch.rand(1, 3, 16, 24), 8)
    assert seen[-1] == (16, 24)


def _derain_train() -> dict:
    """The toolbox configs' objective (Charbonnier + 0.1 SSIM) under Restormer's optimiser and schedule."""
    return cyclic_cosine_train(accumulate_grad_step=1,
                               pixel_opt=dict(type='CharbonnierLoss', loss_weight=1.0, eps=1e-6),
                               ssim_opt=dict(type='SSIMLoss', loss_weight=0.1))


@pytest.mark.parametrize('network_g', [SWINIR, RRDB], ids=['SwinIR-window8', 'RRDBNet-scale1'])
def test_toolbox_networks_train_and_test_at_odd_sizes(tmp_path, network_g):
    """SwinIR needs multiples of its window, RRDBNet (scale 1) of its unshuffle factor 4: it trains on 163x199 images
    and validates and tests on 241x177 ones, whose outputs keep their size."""
    metrics = dict(PSNR_Y, ssim=dict(type='calculate_ssim', crop_border=0, test_y_channel=True))
    train_and_test_tiny(tmp_path, f"derain_{network_g['type']}", network_g, train=_derain_train(),
                        train_size=(199, 163), test_size=(177, 241), train_images=3, test_images=2, metrics=metrics)


def _tiny_model(tmp_path, **train) -> DerainModel:
    opt = rain13k_train_options('guard', dict(RRDB), str(tmp_path), str(tmp_path), train=_derain_train())
    opt['train'].update(train)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(models=str(tmp_path), training_states=str(tmp_path), visualization=str(tmp_path))
    torch.manual_seed(0)
    return build_model(opt)


def test_divergence_guard_skips_non_finite_steps_then_stops(tmp_path):
    model = _tiny_model(tmp_path, max_nonfinite_steps=3)
    before = {name: p.detach().clone() for name, p in model.net_g.named_parameters()}
    good = {'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 16, 16)}
    bad = {'lq': good['lq'], 'gt': torch.full((2, 3, 16, 16), float('nan'))}
    for step in (1, 2):
        model.feed_data(bad)
        model.optimize_parameters(step)
        assert model.nonfinite_steps == step
    assert all(torch.equal(p, before[name]) for name, p in model.net_g.named_parameters())  # no step taken
    model.feed_data(good)
    model.optimize_parameters(3)
    assert model.nonfinite_steps == 0  # a finite step resets the count...
    assert any(not torch.equal(p, before[name]) for name, p in model.net_g.named_parameters())  # ...and steps
    model.feed_data(bad)
    for step in (4, 5):
        model.optimize_parameters(step)
    with pytest.raises(DivergenceError, match=r'3 optimiser steps in a row.*max_nonfinite_steps'):
        model.optimize_parameters(6)


def test_non_finite_weights_are_never_saved(tmp_path):
    model = _tiny_model(tmp_path)
    with torch.no_grad():
        next(model.net_g.parameters()).fill_(float('nan'))
    with pytest.raises(DivergenceError, match='non-finite'):
        model.save_network(model.net_g, 'net_g', 7)
    assert not list(tmp_path.glob('net_g_7*'))


def test_a_size_the_network_cannot_run_is_one_line_naming_size_and_multiple(tmp_path):
    """RRDBNet at scale 1 unshuffles by 4; a wrong pad_multiple override of 2 leaves 10x14 unrunnable."""
    model = _tiny_model(tmp_path)
    model.opt['val']['pad_multiple'] = 2
    model.feed_data({'lq': torch.rand(1, 3, 9, 13)})
    expected = r'RRDBNet cannot restore a 9x13 image padded to a multiple of 2 \(10x14\)'
    with pytest.raises(ImageSizeError, match=expected):
        model.test()
    del model.opt['val']['pad_multiple']  # the toolbox rule (4) runs it
    model.test()
    assert model.output.shape == (1, 3, 9, 13)


def _drsformer_test_options(tmp_path, weights: str, dim: int) -> dict:
    val_root = make_rain13k(str(tmp_path / 'Datasets/test/Rain100L'), n=1, h=41, w=37)
    network_g = dict(type='DRSformer', dim=dim, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1])
    return dict(name='load_test', model_type='DerainModel', scale=1, num_gpu=0, manual_seed=0,
                datasets=dict(test_1=dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k',
                                          root=val_root, io_backend=dict(type='disk'))),
                network_g=network_g, path=dict(pretrain_network_g=weights, strict_load_g=True),
                val=dict(save_img=False, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0))))


def test_a_checkpoint_of_other_widths_is_one_line_with_the_key_summary(tmp_path):
    from basicsr.archs import build_network as build

    weights = str(tmp_path / 'dim8.pth')
    torch.save({'params': build(dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1],
                                     heads=[1, 1, 1, 1])).state_dict()}, weights)
    opt = _drsformer_test_options(tmp_path, weights, dim=16)
    result = run_command(['basicsr', 'test', '-opt', write_yaml(str(tmp_path / 'test.yml'), opt)], cwd=str(tmp_path))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]  # the rest is the log
    assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert 'dim8.pth does not fit network_g (DRSformer): 0 missing, 0 unexpected and' in errors[0]
    assert 'patch_embed.proj.weight is [8, 3, 3, 3] in the file but [16, 3, 3, 3] in the network' in errors[0]
    assert result.stderr.strip().splitlines()[-1] == errors[0]


def test_a_truncated_checkpoint_is_one_line_naming_the_file(tmp_path):
    from basicsr.archs import build_network as build

    weights = tmp_path / 'cut.pth'
    torch.save({'params': build(dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1],
                                     heads=[1, 1, 1, 1])).state_dict()}, weights)
    weights.write_bytes(weights.read_bytes()[:2000])
    opt = _drsformer_test_options(tmp_path, str(weights), dim=8)
    opt.update(is_train=False, dist=False, rank=0, world_size=1)
    from rainmer.compat.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match=r'cut\.pth: cannot be read as a PyTorch file'):
        build_model(opt)


def test_metrics_on_a_set_without_ground_truth_is_one_line(tmp_path):
    """basicsr test on rainy photographs only (SingleImageDataset) with val.metrics left in."""
    folder = make_rain13k(str(tmp_path / 'photos'), n=2, h=41, w=37)
    weights = str(tmp_path / 'net.pth')
    network_g = dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1])
    torch.save({'params': build_network(dict(network_g)).state_dict()}, weights)
    opt = dict(name='no_gt', model_type='DerainModel', scale=1, num_gpu=0, manual_seed=0,
               datasets=dict(test_1=dict(name='photos', type='SingleImageDataset',
                                         dataroot_lq=osp.join(folder, 'input'), io_backend=dict(type='disk'))),
               network_g=network_g, path=dict(pretrain_network_g=weights, strict_load_g=True),
               val=dict(save_img=True, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0))))
    result = run_command(['basicsr', 'test', '-opt', write_yaml(str(tmp_path / 'test.yml'), opt)], cwd=str(tmp_path))
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        'error: val.metrics: photos has no ground-truth images to compare with; remove val.metrics to restore only, '
        'or give the dataset its ground truth')
    del opt['val']['metrics']  # restoring only works
    result = run_command(['basicsr', 'test', '-opt', write_yaml(str(tmp_path / 'test.yml'), opt)], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / 'results' / 'no_gt' / 'visualization' / 'photos').glob('*.png'))) == 2


@pytest.mark.parametrize('layout', ['basicsr', 'bare', 'lightning', 'dataparallel', 'public_training_code'])
def test_released_checkpoint_layouts_load_with_the_default_param_key(tmp_path, layout):
    """PReNet/IDT/RCDNet release bare state dicts, PromptIR a Lightning checkpoint (`net.` keys under state_dict)."""
    model = _tiny_model(tmp_path)
    reference = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.net_g.state_dict().items()}
    saved = {'basicsr': {'params': reference}, 'bare': reference,
             'lightning': {'state_dict': {f'net.{k}': v for k, v in reference.items()}, 'epoch': 3,
                           'pytorch-lightning_version': '2.1.0'},
             'dataparallel': {f'module.{k}': v for k, v in reference.items()},
             'public_training_code': {'model': reference, 'epoch': 3}}[layout]
    torch.save(saved, tmp_path / 'released.pth')
    model.load_network(model.net_g, str(tmp_path / 'released.pth'), True, 'params')
    assert all(torch.equal(v, reference[k]) for k, v in model.net_g.state_dict().items())
