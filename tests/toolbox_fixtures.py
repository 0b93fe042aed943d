"""Tiny generated data and option files for end-to-end runs of the toolbox's pipelines, and the checks every
network of the roster shares (public checkpoints, padding, a tiny `basicsr train|test` run)."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import copy
import json
import os
import os.path as osp
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from basicsr.models.base_model import BaseModel
from data_fixtures import make_rain13k

from rainmer.archs.fast import to_fast, to_plain
from rainmer.models.derain_model import size_multiple
from rainmer.options import load_yaml

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def write_noisy_pairs(root: str, count: int = 4, size: int = 24, seed: int = 0) -> tuple[str, str]:
    """Write ``count`` smooth clean images and noisy copies as ``root/{gt,lq}/NNNN.png``."""
    rng = np.random.default_rng(seed)
    gt_dir, lq_dir = osp.join(root, 'gt'), osp.join(root, 'lq')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        phase = rng.uniform(0, np.pi, size=3)
        clean = np.stack([0.5 + 0.4 * np.sin(4 * xx + 3 * yy + p) for p in phase], axis=-1)
        noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
        cv2.imwrite(osp.join(gt_dir, f'{i:04d}.png'), (clean * 255).round().astype(np.uint8))
        cv2.imwrite(osp.join(lq_dir, f'{i:04d}.png'), (noisy * 255).round().astype(np.uint8))
    return lq_dir, gt_dir


def tiny_swinir() -> dict:
    return dict(type='SwinIR', upscale=1, in_chans=3, img_size=16, window_size=4, img_range=1.0, depths=[1],
                embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler='', resi_connection='1conv')


def paired_dataset(name: str, lq: str, gt: str, phase: str) -> dict:
    opt = dict(name=name, type='PairedImageDataset', dataroot_lq=lq, dataroot_gt=gt, io_backend=dict(type='disk'))
    if phase == 'train':
        opt.update(gt_size=16, use_hflip=True, use_rot=True, num_worker_per_gpu=0, batch_size_per_gpu=2,
                   dataset_enlarge_ratio=1, prefetch_mode=None)
    return opt


def swinir_train_options(name: str, lq: str, gt: str, total_iter: int = 4, save_freq: int = 2) -> dict:
    """A stock-style SRModel config (AdamW, MultiStepLR) on the tiny pairs."""
    return dict(
        name=name, model_type='SRModel', scale=1, num_gpu=0, manual_seed=0,
        datasets=dict(train=paired_dataset('toy_train', lq, gt, 'train'), val=paired_dataset('toy_val', lq, gt, 'val')),
        network_g=tiny_swinir(),
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(optim_g=dict(type='AdamW', lr=2e-3, weight_decay=0, betas=[0.9, 0.99]),
                   scheduler=dict(type='MultiStepLR', milestones=[3], gamma=0.5),
                   total_iter=total_iter, warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0)),
        val=dict(val_freq=save_freq, save_img=False, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0,
                                                                            test_y_channel=False))),
        logger=dict(print_freq=1, save_checkpoint_freq=save_freq, use_tb_logger=True),
        dist_params=dict(backend='gloo', port=29500),
    )


def swinir_test_options(name: str, lq: str, gt: str, weights: str) -> dict:
    return dict(
        name=name, model_type='SRModel', scale=1, num_gpu=0, manual_seed=0,
        datasets=dict(test_1=paired_dataset('toy_test', lq, gt, 'test')),
        network_g=tiny_swinir(),
        path=dict(pretrain_network_g=weights, strict_load_g=True),
        val=dict(save_img=True, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True))),
    )


def shipped_options(*path: str) -> dict:
    """The shipped option file ``options/<path>`` as plain dicts and lists."""
    return json.loads(json.dumps(load_yaml(osp.join(REPO_ROOT, 'options', *path))))


def write_yaml(path: str, opt: dict) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def run_command(args: list[str], cwd: str, timeout: int = 600, extra_env: dict | None = None):
    """Run a console command of this venv (e.g. ['basicsr', 'train', ...]) and return the CompletedProcess."""
    bindir = osp.dirname(sys.executable)
    executable = osp.join(bindir, args[0]) if osp.exists(osp.join(bindir, args[0])) else args[0]
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', **(extra_env or {}))
    return subprocess.run([executable, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------------ the roster's checks
PSNR_Y = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True))


def state_layout(net: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Names, shapes and order of ``net``'s state dict."""
    return [(key, tuple(value.shape)) for key, value in net.state_dict().items()]


def assert_public_layout(net: torch.nn.Module, parameters: int, layout) -> None:
    """``net`` has the public code's parameter count and its state dict the names, shapes and order of ``layout``
    (key -> shape, or (key, shape) pairs)."""
    assert sum(p.numel() for p in net.parameters()) == parameters
    assert state_layout(net) == list(layout.items() if isinstance(layout, Mapping) else layout)


def random_state(layout, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint of ``layout`` (key -> shape, or (key, shape) pairs) with random values (positive BN variances,
    integer batch counters)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in (layout.items() if isinstance(layout, Mapping) else layout):
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(7)
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def assert_checkpoint_loads_strictly(net: torch.nn.Module, saved: dict, path, expected: dict,
                                     param_key: str | None = None) -> None:
    """Save ``saved`` (a released checkpoint's layout) at ``path``, load it strictly into ``net`` through BasicSR's
    ``load_network`` (what ``path.pretrain_network_g`` with ``param_key_g`` does) and check that every tensor of
    ``net`` is the one of ``expected`` (the bare state dict it should read)."""
    torch.save(saved, path)
    BaseModel.load_network(object.__new__(BaseModel), net, str(path), strict=True, param_key=param_key)
    loaded = net.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key], value) for key, value in expected.items())


def assert_pads_to_a_multiple_of_8(network: torch.nn.Module) -> None:
    """``network`` (a plain one) restores any size as the reflect-padded multiple of 8, cropped back, and its fast
    path gives the same within float error."""
    network.eval()
    assert network.size_multiple == 8 and size_multiple(network) == 8
    x = torch.rand(2, 3, 37, 45)
    with torch.no_grad():
        out = network(x)
        padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode='reflect')
        torch.testing.assert_close(out, network.restore(padded)[..., :37, :45], rtol=0, atol=0)
        to_fast(network)
        torch.testing.assert_close(network(x), out, rtol=0, atol=1e-5)
        to_plain(network)
        torch.testing.assert_close(network(x), out, rtol=0, atol=0)
    assert out.shape == x.shape


def cyclic_cosine_train(**entries) -> dict:
    """Restormer's deraining optimiser and schedule (AdamW, cyclic cosine, gradient clipping) at a tiny run's learning
    rate, with ``entries`` (the losses, ...) added: a ``train`` section for :func:`rain13k_train_options`."""
    return dict(optim_g=dict(type='AdamW', lr=1e-3, weight_decay=0, betas=[0.9, 0.999]),
                scheduler=dict(type='CosineAnnealingRestartCyclicLR', periods=[1, 1], restart_weights=[1, 1],
                               eta_mins=[1e-3, 1e-6]),
                grad_clip_norm=0.01, **entries)


def rain13k_train_options(name: str, network_g: dict, train_root: str, val_root: str, *, train: dict,
                          model_type: str = 'DerainModel', gt_size: int = 32, metrics: dict = PSNR_Y,
                          total_iter: int = 2) -> dict:
    """``model_type`` training ``network_g`` with the ``train`` section (optimiser, schedule, losses; no warm-up
    unless it says) for ``total_iter`` iterations on the public Rain13K layout (Restormer's download: input/ and
    target/, same names) at ``train_root``, then validating on ``val_root`` (the same layout) as Rain100L."""
    return copy.deepcopy(dict(
        name=name, model_type=model_type, scale=1, num_gpu=0, manual_seed=0,
        datasets=dict(
            train=dict(name='Rain13K', type='PairedImageDataset', dataroot_lq=osp.join(train_root, 'input'),
                       dataroot_gt=osp.join(train_root, 'target'), filename_tmpl='{}', io_backend=dict(type='disk'),
                       gt_size=gt_size, use_hflip=True, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=2,
                       dataset_enlarge_ratio=1, prefetch_mode=None),
            val=dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k', root=val_root,
                     io_backend=dict(type='disk'))),
        network_g=network_g,
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train={'warmup_iter': -1, **train, 'total_iter': total_iter},
        val=dict(val_freq=total_iter, save_img=True, metrics=metrics),
        logger=dict(print_freq=1, save_checkpoint_freq=total_iter, use_tb_logger=False),
    ))


def train_and_test_tiny(tmp_path, name: str, network_g: dict, *, train: dict, model_type: str = 'DerainModel',
                        test_model_type: str | None = None, train_size: tuple[int, int] = (41, 37),
                        test_size: tuple[int, int] = (41, 37), train_images: int = 2, test_images: int = 1,
                        gt_size: int = 32, metrics: dict = PSNR_Y) -> Path:
    """Two iterations of ``model_type`` training ``network_g`` with the ``train`` section through `basicsr train` on
    Rain13K-layout images of ``train_size`` (h, w) in ``gt_size`` crops, validating on Rain100L images of
    ``test_size``; then `basicsr test` of its latest checkpoint through ``test_model_type`` (default: the same), whose
    ``metrics`` must all be reported and whose restored images keep their size. Returns the test's results folder."""
    tmp_path = Path(tmp_path)
    train_root = make_rain13k(str(tmp_path / 'Datasets/train/Rain13K'), n=train_images, h=train_size[0],
                              w=train_size[1])
    val_root = make_rain13k(str(tmp_path / 'Datasets/test/Rain100L'), n=test_images, h=test_size[0], w=test_size[1],
                            seed=50)
    opt = rain13k_train_options(name, network_g, train_root, val_root, train=train, model_type=model_type,
                                gt_size=gt_size, metrics=metrics)
    result = run_command(['basicsr', 'train', '-opt', write_yaml(str(tmp_path / 'train.yml'), opt)], cwd=str(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert 'l_pix:' in output and 'Validation Rain100L' in output, output[-3000:]
    weights = tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth'
    assert weights.is_file()

    test_opt = dict(name=f'{name}_test', model_type=test_model_type or model_type, scale=1, num_gpu=0, manual_seed=0,
                    datasets=dict(test_1=opt['datasets']['val']), network_g=network_g,
                    path=dict(pretrain_network_g=str(weights), strict_load_g=True),
                    val=dict(save_img=True, metrics=metrics))
    result = run_command(['basicsr', 'test', '-opt', write_yaml(str(tmp_path / 'test.yml'), test_opt)],
                         cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = tmp_path / 'results' / f'{name}_test'
    scores = json.loads((results / 'metrics.json').read_text())['Rain100L']
    assert set(scores) == set(metrics) and scores['psnr'] > 5, scores
    restored = sorted((results / 'visualization' / 'Rain100L').glob('*.png'))
    assert len(restored) == test_images and all(cv2.imread(str(p)).shape == (*test_size, 3) for p in restored)
    return results
