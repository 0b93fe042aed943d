"""Tiny generated data and option files for end-to-end runs of the toolbox's pipelines."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import yaml

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
