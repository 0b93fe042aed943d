"""A tiny Rainmer training set-up on generated LMDB data, shared by the model and option tests."""
import copy
import os.path as osp

from data_fixtures import make_gtrain, make_rain13k
from toolbox_fixtures import run_command

TINY_RAINMER = dict(type='Rainmer', dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1], prompt_size=32)
SIZE = 32  # crop and resize size


def prepare_tiny_lmdb(root: str) -> dict:
    """Two generated sources written as LMDB by ``rainmer data prepare``; returns their roots."""
    syn = make_rain13k(osp.join(root, 'Rain13K', 'train'), n=4, seed=0)
    real = make_gtrain(osp.join(root, 'GT-Rain', 'train'), scenes=2, frames=2)
    for layout, folder in (('rain13k', syn), ('gtrain', real)):
        result = run_command(['rainmer', 'data', 'prepare', layout, folder, '--quiet'], cwd=root)
        assert result.returncode == 0, result.stdout + result.stderr
    return {'syn': syn, 'real': real}


def tiny_rainmer_options(name: str, roots: dict, total_iter: int = 4, save_freq: int = 2) -> dict:
    sources = [dict(name='synthetic', type='rain13k', root=roots['syn'], io_backend=dict(type='lmdb')),
               dict(name='real', type='gtrain', root=roots['real'], io_backend=dict(type='lmdb'))]
    return dict(
        name=name, model_type='RainmerModel', scale=1, num_gpu=0, manual_seed=100,
        datasets=dict(
            train=dict(name='tiny_mix', type='MixedRainDataset', sources=sources, gt_size=SIZE, resize_size=SIZE,
                       use_hflip=True, use_rot=False, small_images='pad', use_shuffle=True, num_worker_per_gpu=0,
                       batch_size_per_gpu=2, dataset_enlarge_ratio=1),
            val=dict(name='tiny_val', type='MixedRainDataset', sources=copy.deepcopy(sources))),
        network_g=dict(TINY_RAINMER),
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(
            optim_g=dict(type='AdamW', lr=3e-4, weight_decay=0, betas=[0.9, 0.999]),
            optim_encoder=dict(type='AdamW', lr=3e-4, weight_decay=0.01, betas=[0.9, 0.999]),
            scheduler=dict(type='CosineAnnealingRestartCyclicLR', periods=[2, 4], restart_weights=[1, 1],
                           eta_mins=[3e-4, 1e-6]),
            total_iter=total_iter, warmup_iter=-1, accumulate_grad_step=1, grad_clip_norm=0.01, n_neg=2,
            archive_size=6,
            pixel_opt=dict(type='CharbonnierLoss', loss_weight=1.0, reduction='mean', eps=1e-6),
            ssim_opt=dict(type='SSIMLoss', loss_weight=0.1),
            chromatic_opt=dict(type='InfoNCELoss', loss_weight=0.1),
            degradation_detail_opt=dict(type='InfoNCELoss', loss_weight=0.1)),
        val=dict(val_freq=save_freq, save_img=False, metrics=dict(
            psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True))),
        logger=dict(print_freq=1, save_checkpoint_freq=save_freq, use_tb_logger=True),
    )
