"""``rainmer demo``: an end-to-end run on data generated on the spot (no downloads).

Interim version (foundation issue): noisy/clean pairs from smooth generated images, a small toolbox
SwinIR trained through ``basicsr train`` on CPU, then ``basicsr test`` and the metric table.
"""
import argparse
import os
import os.path as osp
import sys

import cv2
import numpy as np
import yaml

from rainmer.cli import basicsr_main


def write_pairs(root: str, count: int, size: int, seed: int) -> tuple[str, str]:
    """Smooth colour images and noisy copies as ``root/{lq,gt}/NNNN.png``."""
    rng = np.random.default_rng(seed)
    lq_dir, gt_dir = osp.join(root, 'lq'), osp.join(root, 'gt')
    os.makedirs(lq_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        freq, phase = rng.uniform(2, 8, size=2), rng.uniform(0, np.pi, size=3)
        clean = np.stack([0.5 + 0.4 * np.sin(freq[0] * xx + freq[1] * yy + p) for p in phase], axis=-1)
        noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1)
        cv2.imwrite(osp.join(gt_dir, f'{i:04d}.png'), (clean * 255).round().astype(np.uint8))
        cv2.imwrite(osp.join(lq_dir, f'{i:04d}.png'), (noisy * 255).round().astype(np.uint8))
    return lq_dir, gt_dir


def demo_options(name: str, train: tuple[str, str], val: tuple[str, str], iters: int) -> dict:
    network = dict(type='SwinIR', upscale=1, in_chans=3, img_size=32, window_size=8, img_range=1.0, depths=[2],
                   embed_dim=24, num_heads=[2], mlp_ratio=2, upsampler='', resi_connection='1conv')
    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True))
    dataset = dict(type='PairedImageDataset', io_backend=dict(type='disk'))
    return dict(
        name=name, model_type='SRModel', scale=1, num_gpu=0, manual_seed=0,
        datasets=dict(train=dict(dataset, name='demo_train', dataroot_lq=train[0], dataroot_gt=train[1], gt_size=32,
                                 use_hflip=True, use_rot=True, num_worker_per_gpu=0, batch_size_per_gpu=4),
                      val=dict(dataset, name='demo_val', dataroot_lq=val[0], dataroot_gt=val[1])),
        network_g=network, path=dict(pretrain_network_g=None, resume_state=None),
        train=dict(optim_g=dict(type='AdamW', lr=2e-3, weight_decay=0), total_iter=iters,
                   scheduler=dict(type='CosineAnnealingRestartLR', periods=[iters], eta_min=1e-5),
                   pixel_opt=dict(type='L1Loss', loss_weight=1.0)),
        val=dict(val_freq=iters, save_img=False, metrics=metrics),
        logger=dict(print_freq=max(1, iters // 10), save_checkpoint_freq=iters, use_tb_logger=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='rainmer demo', description=__doc__)
    parser.add_argument('--out', default='demo_output', help='folder for data, experiments and results')
    parser.add_argument('--iters', type=int, default=300, help='training iterations')
    args = parser.parse_args(argv)
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    train = write_pairs(osp.join(out, 'data', 'train'), count=16, size=48, seed=0)
    val = write_pairs(osp.join(out, 'data', 'val'), count=4, size=48, seed=1)
    opt = demo_options('demo_swinir', train, val, args.iters)
    train_yml = osp.join(out, 'demo_train.yml')
    with open(train_yml, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    os.chdir(out)
    code = basicsr_main(['train', '-opt', train_yml, '--force_yml', f'train:total_iter={args.iters}'])
    if code:
        return code
    test_opt = dict(opt, name='demo_swinir_test', datasets=dict(test_1=dict(opt['datasets']['val'], name='demo_val')),
                    path=dict(pretrain_network_g=osp.join(out, 'experiments', 'demo_swinir', 'models',
                                                          'net_g_latest.pth')))
    test_yml = osp.join(out, 'demo_test.yml')
    with open(test_yml, 'w', encoding='utf-8') as f:
        yaml.safe_dump(test_opt, f, sort_keys=False)
    code = basicsr_main(['test', '-opt', test_yml])
    print(f'\nDemo finished: metrics in {osp.join(out, "results", "demo_swinir_test", "metrics.md")}')
    return code


if __name__ == '__main__':
    sys.exit(main())
