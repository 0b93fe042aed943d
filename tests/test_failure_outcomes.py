"""What a user sees when things go wrong, through the real `basicsr train` on the public Rain13K layout
(JPEG, 241x177 as downloaded): a diverging run, a bad image among good ones, a truncated checkpoint on resume.
The rows of docs/failures.md."""
import math
import os
import subprocess
import sys

import pytest
import torch
from data_fixtures import make_restormer_datasets
from toolbox_fixtures import run_command, write_yaml

TINY_DRSFORMER = dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1])


def _options(name: str, total_iter: int = 4, save_freq: int = 2, lr: float = 1e-3, **train_set) -> dict:
    source = dict(name='Rain13K', type='rain13k', root='datasets/train/Rain13K', io_backend=dict(type='disk'))
    return dict(
        name=name, model_type='DerainModel', scale=1, num_gpu=0, manual_seed=0,
        datasets=dict(train=dict(name='Rain13K', type='MixedRainDataset', sources=[source], gt_size=32,
                                 resize_size=16, use_hflip=True, use_rot=False, num_worker_per_gpu=0,
                                 batch_size_per_gpu=2, dataset_enlarge_ratio=1, prefetch_mode=None, **train_set)),
        network_g=TINY_DRSFORMER,
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(optim_g=dict(type='Adam', lr=lr, betas=[0.9, 0.999]),
                   scheduler=dict(type='MultiStepLR', milestones=[1000], gamma=0.5),
                   total_iter=total_iter, warmup_iter=-1, max_nonfinite_steps=3,
                   pixel_opt=dict(type='L1Loss', loss_weight=1.0)),
        logger=dict(print_freq=1, save_checkpoint_freq=save_freq, use_tb_logger=False))


@pytest.fixture(scope='module')
def public(tmp_path_factory):
    root = tmp_path_factory.mktemp('failures')
    make_restormer_datasets(str(root / 'datasets'), train=4, test=1)  # train/Rain13K/{input,target}/*.jpg
    return root


def _train(root, opt: dict, *flags: str):
    return run_command(['basicsr', 'train', '-opt', write_yaml(str(root / f"{opt['name']}.yml"), opt), *flags],
                       cwd=str(root))


def _one_error_line(result) -> str:
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith('error: '), result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_a_diverging_run_stops_with_one_line_and_saves_no_non_finite_weights(public):
    result = _train(public, _options('diverge', total_iter=20, save_freq=1, lr=1e30))
    line = _one_error_line(result)
    assert 'optimiser steps in a row' in line and 'max_nonfinite_steps' in line
    assert 'iter 2: non-finite loss or gradient (l_pix: nan); optimiser step skipped (1/3 in a row)' in result.stderr
    for path in (public / 'experiments' / 'diverge' / 'models').glob('*.pth'):
        state = torch.load(path, weights_only=True)['params']
        assert all(torch.isfinite(t).all() for t in state.values()), path


def test_a_bad_image_among_good_ones_fails_at_start_up_or_is_left_out(public):
    bad = public / 'datasets' / 'train' / 'Rain13K' / 'input' / '002.jpg'
    good = bad.read_bytes()
    bad.write_bytes(good[:len(good) // 2])  # a download cut short
    try:
        line = _one_error_line(_train(public, _options('bad_image')))
        assert line == ('error: datasets/train/Rain13K/input/002.jpg: cannot be decoded as an image (unreadable or '
                        'truncated file); 1 bad pair in Rain13K: fix or remove it, or set skip_bad: true in '
                        'datasets.train to leave bad pairs out')
        assert not (public / 'experiments' / 'bad_image' / 'models').is_dir() or not list(
            (public / 'experiments' / 'bad_image' / 'models').iterdir())  # no iteration ran
        result = _train(public, _options('skip_bad', skip_bad=True))
        assert result.returncode == 0, result.stderr[-3000:]
        log = result.stdout + result.stderr
        assert 'Rain13K: leaving out 1 bad pair(s) (skip_bad: true in datasets.train)' in log
        assert 'Number of train images: 3' in log
    finally:
        bad.write_bytes(good)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_auto_resume_falls_back_past_a_truncated_network_and_keeps_logging(public):
    opt = _options('fallback', total_iter=4, save_freq=2)
    assert _train(public, opt).returncode == 0
    exp = public / 'experiments' / 'fallback'
    newest = exp / 'models' / 'net_g_4.pth'
    newest.write_bytes(newest.read_bytes()[:3000])  # killed while copying, say
    stale = exp / 'models' / f'net_g_4.pth.partial-{_dead_pid()}'
    stale.write_bytes(b'half')
    logs_before = set((exp).glob('train_fallback_*.log'))
    result = _train(public, dict(opt, train=dict(opt['train'], total_iter=6)), '--auto_resume')
    assert result.returncode == 0, result.stderr[-3000:]
    assert not stale.exists()
    new_logs = set(exp.glob('train_fallback_*.log')) - logs_before
    assert len(new_logs) == 1
    log = new_logs.pop().read_text()
    assert f'Auto-resume skips iter 4: {newest} is unreadable' in log
    assert 'Auto-resume falls back to iter 2, the newest whose state and networks load.' in log
    assert 'Removed 1 unfinished checkpoint writes of stopped runs' in log
    assert 'Resuming training from' in log and 'iter 2.' in log
    assert 'iter:       3,' in log and 'iter:       6,' in log  # the log goes on after the fallback
    state = torch.load(exp / 'models' / 'net_g_6.pth', weights_only=True)['params']
    assert all(math.isfinite(float(t.float().abs().sum())) for t in state.values())
    assert os.path.getsize(exp / 'models' / 'net_g_4.pth') > 3000  # rewritten by the resumed run


def test_text_given_through_force_yml_names_the_flag(public):
    result = _train(public, _options('force_abc'), '--force_yml', 'train:total_iter=abc')
    assert _one_error_line(result) == (f"error: {public / 'force_abc.yml'} with --force_yml train:total_iter=abc: "
                                       "train.total_iter: 'abc' is not a number")
