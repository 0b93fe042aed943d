"""Acceptance (issue 14, item 6): generated data in exactly the public download layouts and file names, at odd
sizes, through the real commands: ``rainmer data prepare`` / ``stats`` / ``balance`` -> ``basicsr train`` (tiny
Rainmer, SwinIR, RRDBNet, DRSformer, NeRD-Rain from the shipped configs) -> ``basicsr test`` with both protocols ->
``rainmer compare`` -> ``rainmer analyze``; AllWeather the same way.

The layouts are written here from the public downloads' descriptions, not from the project's fixtures:
- Restormer ``download_data.py --data train-test``: ``train/Rain13K/{input,target}/<n>.jpg`` and
  ``test/<set>/{input,target}/<n>.png``, moved under ``datasets/`` as docs/datasets.md says;
- GT-RAIN: ``GT-RAIN_{train,val,test}/<scene>/<scene>-R-NNN.png`` and one ``<scene>-C-000.png`` per scene;
- GTAV-NightRain: ``set<k>/{train,test}/{rainy,gt}``, rainy ``NNNN_KK.png``, clean ``NNNN.png``;
- TransWeather: ``allweather.txt`` of ``./input/<name>`` lines, images under ``input/`` and ``gt/``; the test
  folder's ``snowtest100k_L.txt``, ``test1.txt``, ``raindroptesta.txt`` in the same format.
"""
import csv
import json
import math
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from data_fixtures import clean_image, rainy_image
from toolbox_fixtures import REPO_ROOT, run_command, write_yaml

from rainmer.options import force_option, load_yaml

SIZES = [(177, 241), (224, 320), (199, 163)]  # (h, w): 241x177, 320x224, 163x199; none a multiple of 8 or 4
MIXED_TEST_SETS = ['Rain100L', 'Rain100H', 'Test100', 'Test1200', 'Test2800']  # Restormer's test download
METRICS = {'psnr', 'ssim', 'psnr_paper', 'ssim_paper'}

# where docs/datasets.md puts each download
RAIN13K_TRAIN = 'datasets/train/Rain13K'
RAIN13K_TEST = 'datasets/test'
GTRAIN = 'datasets/GT-Rain'
GTAV = 'datasets/GTAV-NightRain'
GTAV_BALANCE = 'datasets/GTAV-balance'
ALLWEATHER = 'datasets/allweather'
ALLWEATHER_TEST = 'datasets/allweather/test'
ALLWEATHER_TEST_LISTS = {'Snow100K-L': 'snowtest100k_L.txt', 'Outdoor-Rain': 'test1.txt',
                         'RainDrop': 'raindroptesta.txt'}
ANALYSIS = 'datasets/analysis'
ANALYSIS_SETS = ['Rain200H', 'Rain800', 'DDN_1', 'DDN_5']

COMMON_TRAIN = ['num_gpu=0', 'train:total_iter=2', 'datasets:train:gt_size=32', 'datasets:train:resize_size=32',
                'datasets:train:batch_size_per_gpu=2', 'datasets:train:num_worker_per_gpu=0',
                'logger:print_freq=1', 'logger:save_checkpoint_freq=2', 'logger:use_tb_logger=false', 'val:val_freq=2']
TINY = {  # --force_yml entries that shrink each shipped network_g
    'Rainmer': ['network_g:dim=8', 'network_g:base_dim=16', 'network_g:num_blocks=[1,1,1,1]',
                'network_g:heads=[1,1,1,1]', 'network_g:prompt_size=32'],
    'SwinIR': ['network_g:img_size=32', 'network_g:depths=[1]', 'network_g:embed_dim=12', 'network_g:num_heads=[2]'],
    'DRSformer': ['network_g:dim=8', 'network_g:num_blocks=[1,1,1,1]', 'network_g:heads=[1,1,1,1]'],
    'NeRDRain': ['network_g:dim=8', 'network_g:num_blocks=[1,1,1]', 'network_g:heads=[1,1,1]'],
    'RRDBNet': [],  # written below from swinir_mixed.yml: no shipped config
}
RRDBNET = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=1, num_feat=8, num_block=1, num_grow_ch=4)
# model -> (shipped training config, shipped test config)
MODELS = {
    'Rainmer': ('rainmer_mixed.yml', 'rainmer_mixed_test.yml'),
    'SwinIR': ('swinir_mixed.yml', 'swinir_mixed_test.yml'),
    'RRDBNet': ('swinir_mixed.yml', 'swinir_mixed_test.yml'),
    'DRSformer': ('drsformer_mixed.yml', 'drsformer_mixed_test.yml'),
    'NeRDRain': ('nerdrain_mixed.yml', 'nerdrain_mixed_test.yml'),
}
AMOUNTS = (0.003, 0.01, 0.05)  # streak amounts: rain densities in all three GTAV-balance bins
SIZE_GROUP = {'GT-Rain': 'GT-RAIN_test', 'GTAV-NightRain': 'GTAV_test'}  # test set name -> group in the sizes
TRAIN_EXTRA = {'Rainmer': ['train:archive_size=4']}


def _option(*parts: str) -> str:
    return osp.join(REPO_ROOT, 'options', *parts)


def _shipped(*parts: str) -> dict:
    return json.loads(json.dumps(load_yaml(_option(*parts))))


def _write(path: str, img: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img), path


def _pair(root: str, lq: str, gt: str, seed: int, size, night: bool = False) -> None:
    clean = clean_image(seed, *size)
    if night:
        clean = clean // 3
    _write(osp.join(root, gt), clean)
    _write(osp.join(root, lq), rainy_image(clean, seed, AMOUNTS[seed % 3]))


def _size(i: int):
    return SIZES[i % len(SIZES)]


def build_public_tree(root: str) -> dict:
    """Every download in its public layout under ``root/datasets``; returns the input sizes by result key."""
    sizes = {}
    seed = 0

    def pair(folder, lq, gt, key, size, night=False):
        nonlocal seed
        seed += 1
        _pair(osp.join(root, folder), lq, gt, seed, size, night)
        sizes[key] = size

    # Restormer: train/Rain13K (JPEG, equal names), test/<set> (PNG, equal names)
    for i in range(3):
        pair(RAIN13K_TRAIN, f'input/{i + 1}.jpg', f'target/{i + 1}.jpg', f'Rain13K/{i + 1}', _size(i))
    for j, name in enumerate(MIXED_TEST_SETS):
        for i in range(2 if name == 'Rain100L' else 1):
            pair(f'{RAIN13K_TEST}/{name}', f'input/{i + 1}.png', f'target/{i + 1}.png', f'{name}/{i + 1}',
                 _size(i + j))
    # GT-RAIN: <split>/<scene>/<scene>-R-NNN.png and <scene>-C-000.png (scene names as released: '_' and '-')
    for split, scenes, frames in (('train', ['Gurutto_1-2', 'Oinari_0-0'], 2), ('val', ['Table_1-0'], 2),
                                  ('test', ['Winter_0-1'], 1)):
        for s, scene in enumerate(scenes):
            folder = f'{GTRAIN}/GT-RAIN_{split}/{scene}'
            clean = clean_image(500 + seed + s, *_size(s + 1))
            _write(osp.join(root, folder, f'{scene}-C-000.png'), clean)
            for k in range(frames):
                seed += 1
                _write(osp.join(root, folder, f'{scene}-R-{k:03d}.png'), rainy_image(clean, seed, AMOUNTS[seed % 3]))
                sizes[f'GT-RAIN_{split}/{scene}-R-{k:03d}'] = _size(s + 1)
    # GTAV-NightRain: set<k>/<split>/rainy/NNNN_KK.png, set<k>/<split>/gt/NNNN.png (names repeat across sets)
    for split, sets, scenes, frames in (('train', 2, 2, 2), ('test', 1, 1, 2)):
        for s in range(1, sets + 1):
            for n in range(scenes):
                clean = clean_image(700 + seed, *_size(n)) // 3
                _write(osp.join(root, GTAV, f'set{s}', split, 'gt', f'{n:04d}.png'), clean)
                for k in range(frames):
                    seed += 1
                    _write(osp.join(root, GTAV, f'set{s}', split, 'rainy', f'{n:04d}_{k:02d}.png'),
                           rainy_image(clean, seed, AMOUNTS[seed % 3]))
                    sizes[f'GTAV_{split}/set{s}_{n:04d}_{k:02d}'] = _size(n)
    # TransWeather AllWeather: allweather.txt of ./input/<name>; clean images under gt/ with the same name
    names = ['im_0001_s80_a04.png', 'beautiful_smile_00001.jpg', '0_rain.png', 'im_0002_s95_a06.png']
    for i, name in enumerate(names):
        pair(ALLWEATHER, f'input/{name}', f'gt/{name}', f'allweather/{osp.splitext(name)[0]}', _size(i))
    _list(osp.join(root, ALLWEATHER, 'allweather.txt'), names)
    test_names = {'Snow100K-L': ['beautiful_smile_00101.jpg'], 'Outdoor-Rain': ['im_0101_s85_a05.png'],
                  'RainDrop': ['101_rain.png', '102_rain.png']}
    for i, (name, files) in enumerate(test_names.items()):
        for j, file in enumerate(files):
            pair(ALLWEATHER_TEST, f'input/{file}', f'gt/{file}', f'{name}/{osp.splitext(file)[0]}', _size(i + j))
        _list(osp.join(root, ALLWEATHER_TEST, ALLWEATHER_TEST_LISTS[name]), files)
    # the analysis sets as docs/datasets.md links them: Rain200H and Rain800 as <root>/{input,target} with equal
    # names; DDN type k as <root>/rainy/<i>_<k>.jpg with <root>/gt/<i>.jpg (DDN's rainy_image and ground_truth)
    for j, name in enumerate(ANALYSIS_SETS):
        for i in range(2):
            if name.startswith('DDN_'):
                k = name.split('_')[1]
                pair(f'{ANALYSIS}/{name}', f'rainy/{i + 1}_{k}.jpg', f'gt/{i + 1}.jpg', f'{name}/{i + 1}_{k}',
                     _size(i + j))
            else:
                pair(f'{ANALYSIS}/{name}', f'input/{i + 1}.png', f'target/{i + 1}.png', f'{name}/{i + 1}',
                     _size(i + j))
    return sizes


def _list(path: str, names: list[str]) -> None:
    with open(path, 'w') as f:
        f.write(''.join(f'./input/{name}\n' for name in names))


def _together(root, commands: list[list[str]], workers: int = 2) -> list:
    """Run this venv's console commands two at a time (2 cores); CompletedProcess objects in order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda args: run_command(args, cwd=str(root)), commands))


def _output(result) -> str:
    return result.stdout + result.stderr


def _ok(result) -> str:
    assert result.returncode == 0, f'{result.args}\n' + _output(result)[-4000:]
    return _output(result)


def _train_command(root, model: str) -> list[str]:
    train_config, _ = MODELS[model]
    if model == 'RRDBNet':
        opt = _shipped(train_config)
        opt.update(name='RRDBNet_mixed', network_g=dict(RRDBNET))
        config = write_yaml(str(root / 'rrdbnet_mixed.yml'), opt)
    else:
        config = _option(train_config)
    return ['basicsr', 'train', '-opt', config, '--force_yml', *COMMON_TRAIN, *TINY[model], *TRAIN_EXTRA.get(model, [])]


def _test_command(root, model: str) -> list[str]:
    _, test_config = MODELS[model]
    if model == 'RRDBNet':
        opt = _shipped('test', test_config)
        opt.update(name='RRDBNet_mixed_test', network_g=dict(RRDBNET))
        opt['path']['pretrain_network_g'] = 'experiments/RRDBNet_mixed/models/net_g_latest.pth'
        config = write_yaml(str(root / 'rrdbnet_mixed_test.yml'), opt)
    else:
        config = _option('test', test_config)
    return ['basicsr', 'test', '-opt', config, '--force_yml', 'num_gpu=0', 'val:pbar=false', *TINY[model]]


def _experiment(model: str) -> str:
    return 'RRDBNet_mixed' if model == 'RRDBNet' else _shipped(MODELS[model][0])['name']


@pytest.fixture(scope='module')
def public(tmp_path_factory):
    """The tree, then every documented preparation step; returns (root, sizes, {step: CompletedProcess})."""
    root = tmp_path_factory.mktemp('public')
    sizes = build_public_tree(str(root))
    steps = {
        'prepare Rain13K': ['rainmer', 'data', 'prepare', 'rain13k', RAIN13K_TRAIN, '--quiet'],
        'prepare GT-Rain': ['rainmer', 'data', 'prepare', 'gtrain', f'{GTRAIN}/GT-RAIN_train', '--quiet'],
        'stats Rain13K': ['rainmer', 'data', 'stats', 'rain13k', RAIN13K_TRAIN, '--name', 'Rain13K',
                          '--out', 'density_stats'],
        'stats GT-Rain': ['rainmer', 'data', 'stats', 'gtrain', f'{GTRAIN}/GT-RAIN_train', '--name', 'GT-Rain',
                          '--out', 'density_stats'],
        'prepare AllWeather': ['rainmer', 'data', 'prepare', 'allweather', '--list-file',
                               f'{ALLWEATHER}/allweather.txt', '--quiet'],
        'prepare GTAV test': ['rainmer', 'data', 'prepare', 'gtav', GTAV, '--split', 'test', '--quiet'],
    }
    results = dict(zip(steps, _together(root, list(steps.values()))))
    results['balance GTAV'] = run_command(
        ['rainmer', 'data', 'balance', 'gtav', GTAV, '--split', 'train', '--crop', '64', '--seed', '0', '--reference',
         'density_stats/Rain13K_density.csv', 'density_stats/GT-Rain_density.csv', '--out', GTAV_BALANCE, '--quiet'],
        cwd=str(root))
    return root, sizes, results


@pytest.fixture(scope='module')
def trained(public):
    root = public[0]
    models = list(MODELS)
    allweather = ['basicsr', 'train', '-opt', _option('rainmer_allweather.yml'), '--force_yml', *COMMON_TRAIN,
                  *TINY['Rainmer'], 'train:archive_size=4']
    results = _together(root, [_train_command(root, model) for model in models] + [allweather])
    return dict(zip(models + ['Rainmer_allweather'], results))


@pytest.fixture(scope='module')
def tested(public, trained):
    root = public[0]
    models = list(MODELS)
    allweather = ['basicsr', 'test', '-opt', _option('test', 'rainmer_allweather_test.yml'), '--force_yml',
                  'num_gpu=0', 'val:pbar=false', *TINY['Rainmer']]
    results = _together(root, [_test_command(root, model) for model in models] + [allweather])
    return dict(zip(models + ['Rainmer_allweather'], results))


def _lmdb_keys(folder) -> list[str]:
    text = (folder / 'lq.lmdb' / 'meta_info.txt').read_text().split('\n')
    return sorted(osp.splitext(line.split(' ')[0])[0] for line in text if line.strip())


def test_prepare_stats_and_balance_read_the_public_layouts(public):
    root, _, results = public
    for step, result in results.items():
        _ok(result)
        print(step, _output(result)[-300:])
    assert _lmdb_keys(root / f'{RAIN13K_TRAIN}_lmdb') == ['1', '2', '3']
    assert _lmdb_keys(root / f'{GTRAIN}/GT-RAIN_train_lmdb') == [
        'Gurutto_1-2-R-000', 'Gurutto_1-2-R-001', 'Oinari_0-0-R-000', 'Oinari_0-0-R-001']
    assert _lmdb_keys(root / f'{ALLWEATHER}_allweather_lmdb') == [
        '0_rain', 'beautiful_smile_00001', 'im_0001_s80_a04', 'im_0002_s95_a06']
    assert _lmdb_keys(root / f'{GTAV}_test_lmdb') == ['set1_0000_00', 'set1_0000_01']
    assert (root / GTAV_BALANCE / 'selection.csv').is_file() and _lmdb_keys(root / GTAV_BALANCE)
    for name in ('Rain13K', 'GT-Rain'):
        assert (root / 'density_stats' / f'{name}_density.csv').is_file()


@pytest.mark.parametrize('model', [*MODELS, 'Rainmer_allweather'])
def test_shipped_config_trains_on_the_public_layouts(public, trained, model):
    root = public[0]
    log = _ok(trained[model])
    name = 'Rainmer_allweather' if model == 'Rainmer_allweather' else _experiment(model)
    assert 'l_pix: ' in log
    assert 'Validation ' in log
    assert (root / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('model', [*MODELS, 'Rainmer_allweather'])
def test_basicsr_test_reports_both_protocols_at_the_input_size(public, tested, model):
    root, sizes, _ = public
    log = _ok(tested[model])
    name = 'Rainmer_allweather_test' if model == 'Rainmer_allweather' else f'{_experiment(model)}_test'
    metrics = json.loads((root / 'results' / name / 'metrics.json').read_text())
    if model == 'Rainmer_allweather':
        expected = {'Snow100K-L': ['beautiful_smile_00101'], 'Outdoor-Rain': ['im_0101_s85_a05'],
                    'RainDrop': ['101_rain', '102_rain']}
    else:
        expected = {group: [k.split('/')[1] for k in sizes if k.split('/')[0] == group] for group in MIXED_TEST_SETS}
        expected['GT-Rain'] = ['Winter_0-1-R-000']
        # the balanced test crops written by `rainmer data balance` (the paper's column), at their crop size
        crops = sorted((root / GTAV_BALANCE / 'test' / 'rainy').glob('*.png'))
        assert crops
        expected['GTAV-balance'] = [crop.stem for crop in crops]
        sizes.update({f'GTAV-balance/{crop.stem}': cv2.imread(str(crop)).shape[:2] for crop in crops})
        expected['GTAV-NightRain'] = ['set1_0000_00', 'set1_0000_01']  # the full-size test split
    assert list(metrics) == list(expected)
    for dataset, keys in expected.items():  # every image once (BasicSR's names are the pair keys)
        assert sorted(keys) == sorted(f.name[:-len(f'_{dataset}.png')] for f in (
            root / 'results' / name / 'visualization' / dataset).glob('*.png')), dataset
    for values in metrics.values():
        assert set(values) == METRICS
        assert all(np.isfinite(v) for v in values.values())
    assert '| average |' in log
    for dataset, keys in expected.items():
        for key in keys:
            path = root / 'results' / name / 'visualization' / dataset / f'{key}_{dataset}.png'
            image = cv2.imread(str(path))
            assert image is not None, path
            size = sizes[f'{SIZE_GROUP.get(dataset, dataset)}/{key}']
            assert image.shape == (*size, 3), (path, image.shape, size)


def _tiny_test_option_file(root, model: str) -> str:
    """The shipped test config with the tiny network written in (what ``--force_yml`` gave ``basicsr test``)."""
    if model == 'RRDBNet':
        return str(root / 'rrdbnet_mixed_test.yml')
    opt = load_yaml(_option('test', MODELS[model][1]))
    for entry in TINY[model]:
        force_option(opt, entry)
    return write_yaml(str(root / f'tiny_{MODELS[model][1]}'), json.loads(json.dumps(opt)))


def _check_comparison(root, out: str, labels: list[str]) -> None:
    with open(root / out / 'comparison.csv', newline='') as f:
        rows = {row['model']: row for row in csv.DictReader(f)}
    assert list(rows) == labels
    for model, label in zip(MODELS, labels):
        tested_metrics = json.loads((root / 'results' / f'{_experiment(model)}_test' / 'metrics.json').read_text())
        assert len(tested_metrics) == len(MIXED_TEST_SETS) + 3
        for dataset, values in tested_metrics.items():
            for metric, value in values.items():
                got = float(rows[label][f'{dataset}_{metric}'])
                if metric.endswith('_paper'):  # float output: equal up to the rounding of another thread count
                    assert math.isclose(got, value, rel_tol=1e-6), (model, dataset, metric)
                else:
                    assert got == value, (model, dataset, metric)
    table = (root / out / 'comparison.md').read_text()
    assert ('| model | Rain100L | Rain100H | Test100 | Test1200 | Test2800 | GT-Rain | GTAV-balance | GTAV-NightRain '
            '| average |') in table


def test_compare_over_the_tested_option_files(public, tested):
    """Every network of the comparison on every odd-size set, both protocols: the numbers of ``basicsr test``."""
    root = public[0]
    for result in tested.values():
        _ok(result)
    models = [_tiny_test_option_file(root, model) for model in MODELS]
    log = _ok(run_command(['rainmer', 'compare', *models, '--out', 'cmp_tests', '--size', '32', '--repeat', '1',
                           '--num-gpu', '0'], cwd=str(root)))
    assert 'written: ' in log
    _check_comparison(root, 'cmp_tests', [_experiment(model) for model in MODELS])


def test_compare_over_the_experiment_folders(public, tested):
    """``rainmer compare experiments/<name>``, as its help documents, for models trained with ``--force_yml``."""
    root = public[0]
    for result in tested.values():
        _ok(result)
    models = [f'experiments/{_experiment(model)}' for model in MODELS]
    log = _ok(run_command(['rainmer', 'compare', *models, '--test-opt', _option('test', 'rainmer_mixed_test.yml'),
                           '--out', 'cmp', '--size', '32', '--repeat', '1', '--num-gpu', '0'], cwd=str(root)))
    assert 'written: ' in log
    _check_comparison(root, 'cmp', [_experiment(model) for model in MODELS])


@pytest.mark.parametrize('config, groups', [
    ('rainmer_mixed_analysis.yml', ANALYSIS_SETS + ['GT-Rain', 'GTAV-balance']),
    ('rainmer_allweather_analysis.yml', ['Snow', 'Rain', 'RainDrop']),
], ids=['mixed', 'allweather'])
def test_analyze_on_the_documented_datasets(public, trained, config, groups):
    root = public[0]
    _ok(trained['Rainmer_allweather' if 'allweather' in config else 'Rainmer'])
    name = _shipped('analyze', config)['name']
    result = run_command(['rainmer', 'analyze', '-opt', _option('analyze', config), '--num-samples', '2', '--quiet',
                          '--force_yml', 'num_gpu=0', 'analysis:num_worker=0', *TINY['Rainmer']], cwd=str(root))
    log = _ok(result)
    assert 'Wrote ' in log
    out = root / 'results' / name / 'analysis'
    relationship = json.loads((out / 'relationship.json').read_text())
    assert relationship['datasets'] == groups
    assert set(relationship['spaces']) == {'chromatic', 'degradation'}
    assert (out / 'chromatic_umap.png').is_file()
