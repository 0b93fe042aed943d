"""End to end through the installed commands: a stock toolbox restorer (SwinIR) trains, resumes and tests on CPU."""
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from toolbox_fixtures import (
    run_command,
    swinir_test_options,
    swinir_train_options,
    write_noisy_pairs,
    write_yaml,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _check(result) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp('toolbox')
    write_noisy_pairs(str(root / 'data'))
    return root


def test_basicsr_help_lists_subcommands_and_registered_names(workdir):
    output = _check(run_command(['basicsr', '--help'], cwd=str(workdir)))
    for expected in ('{train,test}', 'registered archs:', 'SwinIR', 'registered models:', 'SRModel',
                     'registered datasets:', 'PairedImageDataset', 'registered schedulers:',
                     'CosineAnnealingRestartCyclicLR', 'basicsr.plugins'):
        assert expected in output
    train_help = _check(run_command(['basicsr', 'train', '--help'], cwd=str(workdir)))
    for flag in ('-opt', '--launcher', '--auto_resume', '--debug', '--force_yml', '--local_rank'):
        assert flag in train_help


def test_train_then_auto_resume_then_test(workdir):
    opt = swinir_train_options('swinir_toy', 'data/lq', 'data/gt', total_iter=4, save_freq=2)
    train_yml = write_yaml(str(workdir / 'train.yml'), opt)
    _check(run_command(['basicsr', 'train', '-opt', train_yml], cwd=str(workdir)))
    exp = workdir / 'experiments' / 'swinir_toy'
    for name in ('models/net_g_2.pth', 'models/net_g_4.pth', 'models/net_g_latest.pth',
                 'training_states/2.state', 'training_states/4.state'):
        assert (exp / name).is_file(), name
    assert list((workdir / 'tb_logger' / 'swinir_toy').glob('events.out.tfevents.*'))
    saved = torch.load(exp / 'training_states' / '4.state', weights_only=True)

    output = _check(run_command(['basicsr', 'train', '-opt', train_yml, '--auto_resume',
                                 '--force_yml', 'train:total_iter=6'], cwd=str(workdir)))
    assert 'Resuming training from' in output and 'iter 4' in output
    assert 'iter:       5' in output and 'iter:       4,' not in output
    assert (exp / 'models' / 'net_g_6.pth').is_file()
    resumed = torch.load(exp / 'training_states' / '6.state', weights_only=True)
    assert resumed['schedulers'][0]['last_epoch'] == saved['schedulers'][0]['last_epoch'] + 2
    assert resumed['optimizers'][0]['state'][0]['step'] == saved['optimizers'][0]['state'][0]['step'] + 2

    test_yml = write_yaml(str(workdir / 'test.yml'), swinir_test_options(
        'swinir_toy_test', 'data/lq', 'data/gt', str(exp / 'models' / 'net_g_latest.pth')))
    output = _check(run_command(['basicsr', 'test', '-opt', test_yml], cwd=str(workdir)))
    results = workdir / 'results' / 'swinir_toy_test'
    metrics = json.loads((results / 'metrics.json').read_text())
    assert set(metrics) == {'toy_test'} and 5 < metrics['toy_test']['psnr'] < 60
    assert f"{metrics['toy_test']['psnr']:.4f}" in output
    assert len(list((results / 'visualization' / 'toy_test').glob('*.png'))) == 4


def test_unknown_arch_in_config_fails_with_one_clear_line(workdir):
    opt = swinir_train_options('bad_arch', 'data/lq', 'data/gt')
    opt['network_g']['type'] = 'SwinIr'
    result = run_command(['basicsr', 'train', '-opt', write_yaml(str(workdir / 'bad.yml'), opt)], cwd=str(workdir))
    assert result.returncode == 2
    assert "error: Unknown arch type 'SwinIr'. Did you mean 'SwinIR'?" in result.stderr
    assert 'Traceback' not in result.stderr
    missing = run_command(['basicsr', 'test', '-opt', 'nope.yml'], cwd=str(workdir))
    assert missing.returncode == 2 and 'error: -opt: no option file at nope.yml' in missing.stderr


def test_torchrun_two_cpu_processes_with_gloo(workdir):
    opt = swinir_train_options('swinir_ddp', 'data/lq', 'data/gt', total_iter=3, save_freq=3)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    opt['dist_params'] = {'backend': 'nccl', 'port': 29500}  # a stock config's value: falls back to gloo on CPU
    yml = write_yaml(str(workdir / 'ddp.yml'), opt)
    output = _check(run_command(
        ['python', '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}',
         '-m', 'rainmer.train', '-opt', yml, '--launcher', 'pytorch'], cwd=str(workdir)))
    assert 'World size (gpu number): 2' in output
    exp = workdir / 'experiments' / 'swinir_ddp'
    assert (exp / 'models' / 'net_g_3.pth').is_file() and (exp / 'training_states' / '3.state').is_file()
    state = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert not any(key.startswith('module.') for key in state)
    assert osp.isfile(exp / 'ddp.yml')


def test_sigterm_saves_the_current_iteration_and_auto_resume_continues(workdir):
    opt = swinir_train_options('swinir_sigterm', 'data/lq', 'data/gt', total_iter=100000, save_freq=100000)
    opt['val']['val_freq'] = 100000
    yml = write_yaml(str(workdir / 'sigterm.yml'), opt)
    basicsr = osp.join(osp.dirname(sys.executable), 'basicsr')
    process = subprocess.Popen([basicsr, 'train', '-opt', yml], cwd=str(workdir), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    deadline = time.time() + 120
    for line in process.stdout:
        if 'iter:       3,' in line or time.time() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    states = workdir / 'experiments' / 'swinir_sigterm' / 'training_states'
    saved = [int(p.name.split('.')[0]) for p in states.glob('*.state')]
    assert len(saved) == 1 and saved[0] >= 3
    resumed = _check(run_command(['basicsr', 'train', '-opt', yml, '--auto_resume',
                                  '--force_yml', f'train:total_iter={saved[0] + 1}'], cwd=str(workdir)))
    assert f'iter {saved[0]}.' in resumed and f'iter: {saved[0] + 1:>7d},' in resumed


def test_plugins_from_the_entry_point_group_are_registered(workdir):
    site = workdir / 'plugin_site'
    dist_info = site / 'toy_plugin-0.1.dist-info'
    dist_info.mkdir(parents=True)
    (dist_info / 'METADATA').write_text('Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n')
    (dist_info / 'entry_points.txt').write_text('[basicsr.plugins]\ntoy = toy_plugin\n')
    (site / 'toy_plugin.py').write_text(
        'import torch\nfrom basicsr.utils.registry import ARCH_REGISTRY\n\n\n'
        '@ARCH_REGISTRY.register()\nclass ToyPluginNet(torch.nn.Identity):\n    pass\n')
    output = _check(run_command(['basicsr', '--help'], cwd=str(workdir), extra_env={'PYTHONPATH': str(site)}))
    assert 'ToyPluginNet' in output
