"""IDT: the public parameter count and state-dict layout, any input size through the public crop protocol, and a
tiny instance through the real `basicsr train` / `basicsr test` at odd sizes."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import json
import os.path as osp

import public_idt_keys as public
import pytest
import torch
from basicsr.archs import build_network
from data_fixtures import make_rain13k
from toolbox_fixtures import REPO_ROOT, run_command, write_yaml

from rainmer.archs.idt_arch import IDT, centre_weights, tile_starts
from rainmer.options import load_yaml

TINY = dict(public.PUBLIC_TINY, tile_overlap=16)


def _layout(net: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in net.state_dict().items()]


def test_defaults_have_the_public_parameter_count_and_state_dict_layout():
    expected = public.public_idt_keys()
    assert public.keys_sha256(expected) == public.PUBLIC_DEFAULT_SHA256 and len(expected) == public.PUBLIC_DEFAULT_KEYS
    net = IDT()
    assert sum(p.numel() for p in net.parameters()) == public.PUBLIC_DEFAULT_PARAMETERS
    assert _layout(net) == list(expected.items())  # names, shapes and order


def test_tiny_instance_has_the_public_layout():
    net = IDT(**TINY)
    assert sum(p.numel() for p in net.parameters()) == public.PUBLIC_TINY_PARAMETERS
    assert _layout(net) == list(public.public_idt_keys(**public.PUBLIC_TINY).items())


def test_a_public_format_checkpoint_loads_strictly_through_basicsr(tmp_path):
    """The public train scripts save ``model.state_dict()`` (IDT's own through DataParallel: ``module.`` keys)."""
    from basicsr.models.base_model import BaseModel

    torch.manual_seed(0)
    state = {f'module.{key}': torch.randn(shape) for key, shape in public.public_idt_keys(**public.PUBLIC_TINY).items()}
    torch.save(state, tmp_path / 'net_latest.pth')
    net = IDT(**TINY)
    BaseModel.load_network(object.__new__(BaseModel), net, str(tmp_path / 'net_latest.pth'), strict=True,
                           param_key=None)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[f'module.{key}'])


def test_any_size_runs_the_public_crop_protocol():
    torch.manual_seed(0)
    net = IDT(**TINY).eval()
    x = torch.rand(2, 3, 64, 100)  # crops at columns 0 and 36 (flush with the right edge)
    assert tile_starts(100, 64, 16) == [0, 36] and tile_starts(177, 64, 32) == [0, 32, 64, 96, 113]
    with torch.no_grad():
        square = x[..., :64]
        assert torch.equal(net(square), net.restore(square))
        out = net(x)
        left, right = net.restore(x[..., :64]), net.restore(x[..., 36:])
        torch.testing.assert_close(out[..., :36], left[..., :36])  # covered by one crop only
        torch.testing.assert_close(out[..., 64:], right[..., 28:])
        weight_left, weight_right = centre_weights(64)[:, 36:], centre_weights(64)[:, :28]
        blend = (left[..., 36:] * weight_left + right[..., :28] * weight_right) / (weight_left + weight_right)
        torch.testing.assert_close(out[..., 36:64], blend)
        torch.testing.assert_close(net(x[1:]), out[1:])  # crops of a batch stay apart
        for size in ((41, 37), (13, 90)):  # reflect-padded, then (for the narrow one) replicated
            small = net(torch.rand(1, 3, *size))
            assert small.shape == (1, 3, *size) and torch.isfinite(small).all()


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    net = IDT(**TINY, drop_path_rate=0.0)
    net(torch.rand(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_option_files_build_the_public_network_with_its_ssim_objective():
    opt = load_yaml(osp.join(REPO_ROOT, 'options', 'idt_mixed.yml'))
    train = opt['train']
    assert train['pixel_opt'] == {'type': 'SSIMLoss', 'loss_weight': 1.0} and 'ssim_opt' not in train
    assert opt['datasets']['train']['gt_size'] == opt['network_g']['img_size'] == 128
    net = build_network(dict(opt['network_g']))
    assert isinstance(net, IDT) and sum(p.numel() for p in net.parameters()) == public.PUBLIC_DEFAULT_PARAMETERS
    test_opt = load_yaml(osp.join(REPO_ROOT, 'options', 'test', 'idt_mixed_test.yml'))
    assert test_opt['network_g'] == opt['network_g']


def test_tiny_idt_trains_and_tests_at_odd_sizes(tmp_path):
    """Two iterations on 64x64 crops of 199x163 images (the SSIM objective), then validation and `basicsr test` on
    177x241 images, restored in merged crops to their own size."""
    train_root = make_rain13k(str(tmp_path / 'train'), n=2, h=199, w=163)
    val_root = make_rain13k(str(tmp_path / 'val'), n=1, h=177, w=241, seed=50)
    pairs = dict(type='PairedRainTestDataset', layout='rain13k', io_backend=dict(type='disk'))
    network_g = dict(type='IDT', **TINY)
    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True))
    opt = dict(
        name='idt_tiny', model_type='DerainModel', scale=1, num_gpu=0, manual_seed=0,
        datasets=dict(
            train=dict(name='Rain13K', type='PairedImageDataset', dataroot_lq=osp.join(train_root, 'input'),
                       dataroot_gt=osp.join(train_root, 'target'), filename_tmpl='{}', io_backend=dict(type='disk'),
                       gt_size=64, use_hflip=True, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=2,
                       dataset_enlarge_ratio=1, prefetch_mode=None),
            val=dict(name='Rain100L', root=val_root, **pairs)),
        network_g=network_g,
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(optim_g=dict(type='Adam', lr=1e-4, betas=[0.9, 0.999]),
                   scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.1), total_iter=2, warmup_iter=-1,
                   pixel_opt=dict(type='SSIMLoss', loss_weight=1.0)),
        val=dict(val_freq=2, save_img=False, metrics=metrics),
        logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False),
    )
    result = run_command(['basicsr', 'train', '-opt', write_yaml(str(tmp_path / 'train.yml'), opt)], cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    weights = tmp_path / 'experiments' / 'idt_tiny' / 'models' / 'net_g_latest.pth'
    assert weights.is_file()

    test_opt = dict(name='idt_tiny_test', model_type='DerainModel', scale=1, num_gpu=0, manual_seed=0,
                    datasets=dict(test_1=opt['datasets']['val']), network_g=network_g,
                    path=dict(pretrain_network_g=str(weights), strict_load_g=True),
                    val=dict(save_img=True, metrics=metrics))
    result = run_command(['basicsr', 'test', '-opt', write_yaml(str(tmp_path / 'test.yml'), test_opt)],
                         cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = tmp_path / 'results' / 'idt_tiny_test'
    assert json.loads((results / 'metrics.json').read_text())['Rain100L']['psnr'] > 5
    import cv2
    restored = sorted((results / 'visualization' / 'Rain100L').glob('*.png'))
    assert len(restored) == 1 and cv2.imread(str(restored[0])).shape == (177, 241, 3)


@pytest.mark.parametrize('bad', [dict(img_size=96), dict(depths=[1] * 8), dict(tile_overlap=64)])
def test_invalid_constructor_arguments_fail_with_a_message(bad):
    with pytest.raises(ValueError, match='IDT'):
        IDT(**{**TINY, **bad})
