"""``rainmer compare`` on tiny models trained from the shipped comparison configs: its table equals ``basicsr test``."""
import csv
import json
import math
import os.path as osp
from concurrent.futures import ThreadPoolExecutor

import cv2
import pytest
import torch
from data_fixtures import make_rain13k
from toolbox_fixtures import REPO_ROOT, run_command, write_yaml

from rainmer.options import load_yaml
from rainmer.tools import compare
from rainmer.tools.compare import ModelResult, bar_chart, markdown_table

TINY_NETWORKS = {
    'nerdrain_mixed.yml': dict(type='NeRDRain', dim=8, num_blocks=[1, 1, 1], heads=[1, 1, 1]),
    'drsformer_mixed.yml': dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1]),
}
TEST_SETS = {'SetA': 2, 'SetB': 1}


def _shipped(*parts: str) -> dict:
    return json.loads(json.dumps(load_yaml(osp.join(REPO_ROOT, 'options', *parts))))


def _tiny_train_options(config: str, root: str) -> dict:
    """The shipped config with generated disk data, a tiny network and 2 iterations."""
    opt = _shipped(config)
    opt['name'] = opt['name'].replace('_mixed', '_tiny')
    opt['num_gpu'] = 0
    train = opt['datasets']['train']
    train['sources'] = [dict(name='synthetic', type='rain13k', root=osp.join(root, 'train'),
                             io_backend=dict(type='disk'))]
    train.update(gt_size=32, resize_size=32, batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt['datasets']['val'] = dict(name='SetA', type='PairedRainTestDataset', layout='rain13k',
                                  root=osp.join(root, 'test', 'SetA'), io_backend=dict(type='disk'))
    opt['network_g'] = dict(TINY_NETWORKS[config])
    opt['train'].update(total_iter=2, accumulate_grad_step=1, warmup_iter=-1)
    opt['train']['scheduler'].update(periods=[1, 1])
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    return opt


def _tiny_test_options(train_opt: dict, root: str) -> dict:
    opt = _shipped('test', 'nerdrain_mixed_test.yml')
    opt.update(name=train_opt['name'] + '_test', model_type=train_opt['model_type'], num_gpu=0,
               network_g=train_opt['network_g'])
    opt['datasets'] = {f'test_{i}': dict(name=name, type='PairedRainTestDataset', layout='rain13k',
                                         root=osp.join(root, 'test', name), io_backend=dict(type='disk'))
                       for i, name in enumerate(TEST_SETS, start=1)}
    opt['path']['pretrain_network_g'] = f"experiments/{train_opt['name']}/models/net_g_latest.pth"
    opt['val'].update(save_img=False, pbar=False)
    return opt


def _run_together(root, commands: list[list[str]]) -> list[str]:
    """Run this venv's console commands side by side (start-up dominates these tiny runs); outputs in order."""
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda args: run_command(args, cwd=str(root)), commands))
    for result in results:
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return [result.stdout + result.stderr for result in results]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Two tiny models trained and tested by the toolbox's commands; returns the folder and their test metrics."""
    root = tmp_path_factory.mktemp('compare')
    make_rain13k(str(root / 'train'), n=4, h=32, w=32)
    for seed, (name, count) in enumerate(TEST_SETS.items()):
        make_rain13k(str(root / 'test' / name), n=count, h=40, w=44, seed=10 * (seed + 1))  # not multiples of 16
    train_opts = [_tiny_train_options(config, str(root)) for config in TINY_NETWORKS]
    test_opts = [_tiny_test_options(opt, str(root)) for opt in train_opts]
    train_logs = _run_together(root, [['basicsr', 'train', '-opt', write_yaml(str(root / f"{opt['name']}.yml"), opt)]
                                      for opt in train_opts])
    test_files = {opt['name']: write_yaml(str(root / f"{test['name']}.yml"), test)
                  for opt, test in zip(train_opts, test_opts)}
    _run_together(root, [['basicsr', 'test', '-opt', path] for path in test_files.values()])
    metrics = {opt['name']: json.loads((root / 'results' / test['name'] / 'metrics.json').read_text())
               for opt, test in zip(train_opts, test_opts)}
    return root, metrics, test_files, dict(zip(test_files, train_logs))


def test_nerdrain_mixed_trains_as_written_with_every_loss_term(trained):
    """The shipped NeRD-Rain config (data swapped for generated pairs, network shrunk) through `basicsr train`."""
    root, _, _, logs = trained
    log = logs['NeRDRain_tiny']
    for term in ('l_pix', 'l_fft', 'l_edge', 'l_inr', 'l_total'):
        assert f'{term}: ' in log
    assert 'Validation SetA' in log
    saved = torch.load(root / 'experiments' / 'NeRDRain_tiny' / 'models' / 'net_g_latest.pth', weights_only=True)
    assert 'params' in saved and 'INR.imnet.layers.0.weight' in saved['params']


def test_compare_table_equals_separate_basicsr_test_runs(trained, monkeypatch):
    root, metrics, test_files, _ = trained
    monkeypatch.chdir(root)
    # a released-style NeRD-Rain checkpoint: DataParallel keys under 'state_dict', next to other entries
    params = torch.load(root / 'experiments' / 'NeRDRain_tiny' / 'models' / 'net_g_latest.pth',
                        weights_only=True)['params']
    torch.save({'epoch': 3, 'state_dict': {f'module.{k}': v for k, v in params.items()}}, root / 'released.pth')
    models = ['experiments/NeRDRain_tiny', 'experiments/DRSformer_tiny', f"{test_files['NeRDRain_tiny']}=released.pth"]
    code = compare.main([*models, '--test-opt', test_files['DRSformer_tiny'], '--out', 'cmp', '--size', '32',
                         '--repeat', '1', '--num-gpu', '0'])
    assert code == 0

    with open(root / 'cmp' / 'comparison.csv', newline='') as f:
        rows = {row['model']: row for row in csv.DictReader(f)}
    assert list(rows) == ['NeRDRain_tiny', 'DRSformer_tiny', 'NeRDRain_tiny_2']
    expected = {**metrics, 'NeRDRain_tiny_2': metrics['NeRDRain_tiny']}
    for model, per_set in expected.items():
        assert list(per_set) == list(TEST_SETS)
        for name, values in per_set.items():
            for metric, value in values.items():
                if metric.endswith('_paper'):  # on the float output: the in-process run rounds differently
                    assert math.isclose(float(rows[model][f'{name}_{metric}']), value, rel_tol=1e-6), (model, metric)
                else:  # on the uint8 output: equal
                    assert float(rows[model][f'{name}_{metric}']) == value, (model, name, metric)
        for metric in ('psnr', 'ssim'):
            mean = sum(v[metric] for v in per_set.values()) / len(per_set)
            assert math.isclose(float(rows[model][f'average_{metric}']), mean, rel_tol=1e-12)
    for model in rows:
        assert int(rows[model]['params']) > 0 and int(rows[model]['flops']) > 0
        assert float(rows[model]['latency_ms']) > 0
    assert int(rows['NeRDRain_tiny']['params']) == int(rows['NeRDRain_tiny_2']['params'])

    table = (root / 'cmp' / 'comparison.md').read_text()
    assert '| model | SetA | SetB | average | params (M) | GFLOPs (32x32) |' in table
    psnr_a, ssim_a = metrics['DRSformer_tiny']['SetA']['psnr'], metrics['DRSformer_tiny']['SetA']['ssim']
    assert f'| DRSformer_tiny | {psnr_a:.2f} / {ssim_a:.4f} / ' in table  # then the paper-protocol pair
    chart = cv2.imread(str(root / 'cmp' / 'comparison.png'))
    assert chart is not None and chart.shape[0] > 100
    assert (root / 'cmp' / 'options' / 'DRSformer_tiny.yml').is_file()  # the exact config of every row


def test_flops_match_a_hand_count():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert compare.count_flops(conv, torch.rand(1, 3, 16, 16)) == 2 * 3 * 8 * 9 * 16 * 16


def test_a_model_without_a_network_file_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    opt = _shipped('test', 'nerdrain_mixed_test.yml')
    opt_file = write_yaml(str(tmp_path / 'x_test.yml'), opt)
    assert compare.main([opt_file]) == 2
    assert 'no network file found' in capsys.readouterr().err


@pytest.mark.parametrize('use_matplotlib', [True, False], ids=['matplotlib', 'opencv'])
def test_bar_chart_backends(tmp_path, use_matplotlib):
    if use_matplotlib:
        pytest.importorskip('matplotlib')
    results = [ModelResult('A', {'Rain100L': {'psnr': 36.4, 'ssim': 0.967}, 'GT-Rain': {'psnr': 23.2, 'ssim': 0.66}},
                           params=10, flops=20, latency_ms=1.0),
               ModelResult('B', {'Rain100L': {'psnr': 35.1, 'ssim': 0.960}}, params=5)]
    path = str(tmp_path / 'chart.png')
    assert bar_chart(results, path, use_matplotlib=use_matplotlib) == ('matplotlib' if use_matplotlib else 'opencv')
    image = cv2.imread(path)
    assert image is not None and image.shape[0] >= 2 * 200  # one panel per metric
    table = markdown_table(results, 256, 'CPU')
    assert '| B | 35.10 / 0.9600 | - | 35.10 / 0.9600 | 0.00 | - | - |' in table
