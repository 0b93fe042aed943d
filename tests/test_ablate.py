"""`rainmer ablate` end to end at a tiny size (2 variants, 1 seed, 2 iterations, photographs of odd sizes): the table,
the chart and the grid; numbers equal to what `basicsr test` logged for the same checkpoints; a rerun retrains
nothing. Plus the option files of every variant (the comparison roster's too) and the roster's networks and report,
checked without training."""
import csv
import glob
import os
import re

import cv2
import numpy as np
import pytest
import torch
from toolbox_fixtures import REPO_ROOT, run_command

from rainmer.option_check import check_options
from rainmer.options import load_yaml
from rainmer.tools.ablate import build_parser
from rainmer.tools.ablate import main as ablate_main
from rainmer.tools.ablate_options import (
    ALL_VARIANTS,
    PROMPTIR_PROMPT_DIMS,
    RAINMER_ONLY_TRAIN_KEYS,
    ROSTER_VARIANTS,
    VARIANTS,
    ablation_test_options,
    ablation_train_options,
    network_options,
    parse_variants,
    sizes_for,
)
from rainmer.tools.ablate_report import (
    GROUPS,
    bar_chart,
    cost_table,
    mean_std,
    metric_table,
    network_cost,
    summarise,
    variant_colour,
    write_grid,
)

VARIANTS_RUN = ('rainmer', 'swinir')
ARGS = ['--variants', ','.join(VARIANTS_RUN), '--seeds', '1', '--iters', '2', '--scale', '0.34']
METRICS = ('psnr', 'ssim', 'psnr_paper', 'ssim_paper')


def _write_photographs(folder) -> None:
    """Three photographs of odd sizes (241x177 and 177x241): two held out, one to train on."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(177, 241), (241, 177), (177, 241)]):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        image = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(9 * xx * yy + i)], axis=-1) * 90 + 120
        image = (image + rng.integers(0, 30, (h, w, 3))).clip(0, 255).astype(np.uint8)
        cv2.rectangle(image, (20 + 10 * i, 30), (90, 120), (30, 200, 60), -1)
        cv2.imwrite(str(folder / f'photo{i}.png'), image)


def _check(result) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope='module')
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp('ablate')
    _write_photographs(root / 'photos')
    out = root / 'out'
    output = _check(run_command(['rainmer', 'ablate', '--photos', 'photos', '--out', 'out', *ARGS], cwd=str(root)))
    return root, out, output


def _csv(path) -> list[dict]:
    with open(path, encoding='utf-8', newline='') as f:
        return list(csv.DictReader(f))


def _logged_metrics(out, name: str) -> dict[str, dict[str, float]]:
    """The table `basicsr test` wrote to its log: set -> metric -> value (4 decimals)."""
    (log,) = glob.glob(str(out / 'results' / f'{name}_test' / f'test_{name}_test_*.log'))
    text = open(log, encoding='utf-8').read()
    assert f'experiments/{name}/models/net_g_latest.pth' in text  # the trained network
    lines = text.split(f'Metrics of {name}_test:\n', 1)[1].splitlines()
    header = [cell.strip() for cell in lines[0].strip('|').split('|')]
    table = {}
    for line in lines[2:]:
        if not line.startswith('|'):
            break
        cells = [cell.strip() for cell in line.strip('|').split('|')]
        table[cells[0]] = {metric: float(value) for metric, value in zip(header[1:], cells[1:])}
    return table


def test_writes_the_table_the_chart_and_the_grid(ablation):
    _, out, output = ablation
    text = (out / 'results.md').read_text(encoding='utf-8')
    for expected in ('| rainy input |', '| rainmer |', '| swinir |', "BasicSR's protocol", "paper's protocol",
                     'GFLOPs (16x16)', 's / iteration', '![', 'results.png', 'grid.png'):
        assert expected in text, expected
    assert text in output  # printed too
    rows = _csv(out / 'results.csv')
    assert [(r['variant'], r['domain']) for r in rows] == [(v, g) for v in ('rainy input', *VARIANTS_RUN)
                                                           for g in GROUPS]
    for row in rows[len(GROUPS):]:
        assert 0 < float(row['psnr_mean']) < 60 and 0 < float(row['ssim_paper_mean']) <= 1
        assert row['psnr_std'] == '' and row['seeds'] == '1'  # one seed: no standard deviation
        assert int(row['params']) > 0 and int(row['flops']) > 0 and float(row['sec_per_iter_mean']) > 0

    chart = cv2.imread(str(out / 'results.png'))
    assert chart is not None and chart.shape[0] > 300 and chart.shape[1] > 300


def test_grid_columns_hold_what_their_labels_say(ablation):
    _, out, _ = ablation
    grid = cv2.imread(str(out / 'grid.png'))
    columns, rows, gap, header = 2 + len(VARIANTS_RUN), 3, 4, 28  # rainy, variants, clean; one row per domain
    panel = (grid.shape[1] - (columns - 1) * gap) // columns
    assert grid.shape[:2] == (header + rows * (panel + gap), columns * panel + (columns - 1) * gap)
    for c in range(columns):  # a label above every column, inside its width
        assert (grid[:header, c * (panel + gap) + 2:c * (panel + gap) + panel - 2] < 128).any(), c
    day = sorted(glob.glob(str(out / 'data' / 'val' / 'day' / 'input' / '*_v0.png')))[0]
    stem = os.path.splitext(os.path.basename(day))[0]
    expected = [cv2.imread(str(out / 'results' / f'ablate_{v}_seed0_test' / 'visualization' / 'day'
                               / f'{stem}_derained.png')) for v in VARIANTS_RUN]
    expected.append(cv2.imread(day.replace(f'{os.sep}input{os.sep}', f'{os.sep}target{os.sep}')))
    for c, image in enumerate(expected, 1):  # the day row: the centre crop of each variant's output, then clean
        h, w = image.shape[:2]
        side = min(h, w, 128)
        crop = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        crop = cv2.resize(crop, (panel, panel), interpolation=cv2.INTER_NEAREST)
        x = c * (panel + gap)
        np.testing.assert_array_equal(grid[header:header + panel, x:x + panel], crop)


def test_numbers_are_those_basicsr_test_reported(ablation):
    _, out, _ = ablation
    runs = _csv(out / 'runs.csv')
    summary = {(r['variant'], r['domain']): r for r in _csv(out / 'results.csv')}
    assert {(r['variant'], r['domain']) for r in runs} == {(v, g) for v in VARIANTS_RUN for g in GROUPS}
    for variant in VARIANTS_RUN:
        logged = _logged_metrics(out, f'ablate_{variant}_seed0')
        for row in (r for r in runs if r['variant'] == variant):
            for metric in METRICS:
                value = float(row[metric])
                assert abs(value - logged[row['domain']][metric]) <= 5.1e-5, (variant, row['domain'], metric)
                assert float(summary[(variant, row['domain'])][f'{metric}_mean']) == value


def test_rerun_retrains_nothing_and_other_options_are_refused(ablation, capsys):
    root, out, _ = ablation
    watched = sorted(glob.glob(str(out / 'experiments' / '*' / 'models' / '*.pth')) +
                     glob.glob(str(out / 'results' / '*' / 'metrics.json')))
    assert len(watched) >= 2 * len(VARIANTS_RUN)
    before = {path: os.stat(path).st_mtime_ns for path in watched}
    results = (out / 'results.csv').read_text()
    output = _check(run_command(['rainmer', 'ablate', '--photos', 'photos', '--out', 'out', *ARGS], cwd=str(root)))
    for variant in VARIANTS_RUN:
        assert f'{variant} seed 0: test results exist, not retrained' in output
    assert 'basicsr train' not in output
    assert {path: os.stat(path).st_mtime_ns for path in watched} == before
    assert (out / 'results.csv').read_text() == results

    other = [arg if arg != '2' else '3' for arg in ARGS]  # --iters 3
    code = ablate_main(['--photos', str(root / 'photos'), '--out', str(out), *other])
    err = capsys.readouterr().err
    assert code == 2 and re.search(r'^error: .*ran with other options.*--out', err, re.M), err
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- without training
def test_every_variant_trains_on_the_same_data_with_the_same_recipe():
    sizes = sizes_for(1.0)
    options = {v: ablation_train_options(v, 0, 'data', sizes) for v in VARIANTS}
    reference = options['rainmer']
    for variant, opt in options.items():
        check_options(opt)  # every key is read by what it configures
        check_options(ablation_test_options(variant, 0, 'data', sizes))
        assert opt['datasets'] == reference['datasets'] and opt['manual_seed'] == 0
        assert opt['train']['total_iter'] == sizes.iters == 600
        common = {k: v for k, v in reference['train'].items() if k not in RAINMER_ONLY_TRAIN_KEYS}
        assert {k: v for k, v in opt['train'].items() if k not in RAINMER_ONLY_TRAIN_KEYS} == common
    assert options['baseline']['network_g']['views'] == [] and options['baseline']['network_g']['local_fusion'] is False
    assert options['no_chromatic']['network_g']['views'] == ['degradation', 'detail']
    assert options['no_degradation']['network_g']['views'] == ['chromatic']
    assert options['drsformer']['model_type'] == options['swinir']['model_type'] == 'DerainModel'
    assert sizes.crop % options['swinir']['network_g']['window_size'] == 0


DEFAULT_VARIANTS = ('rainmer', 'no_chromatic', 'no_degradation', 'baseline', 'drsformer', 'swinir')


def test_default_variants_are_the_six_of_the_ablation():
    assert tuple(VARIANTS) == DEFAULT_VARIANTS
    assert parse_variants(build_parser().parse_args([]).variants) == list(DEFAULT_VARIANTS)
    assert list(ALL_VARIANTS) == [*DEFAULT_VARIANTS, 'restormer', 'promptir', 'prenet', 'brn', 'rcdnet', 'idt']
    assert parse_variants('idt,rainmer,rcdnet') == ['idt', 'rainmer', 'rcdnet']


@pytest.mark.parametrize('variant', ROSTER_VARIANTS)
def test_roster_variant_differs_from_rainmer_only_in_network_model_and_objective(variant):
    """The same data, recipe and schedule as the rainmer variant; the network, model and loss of
    options/<variant>_mixed.yml."""
    sizes = sizes_for(1.0)
    reference = ablation_train_options('rainmer', 0, 'data', sizes)
    opt = ablation_train_options(variant, 0, 'data', sizes)
    test_opt = ablation_test_options(variant, 0, 'data', sizes)
    check_options(opt)
    check_options(test_opt)
    config = load_yaml(os.path.join(REPO_ROOT, 'options', f'{variant}_mixed.yml'))
    assert opt['model_type'] == test_opt['model_type'] == config['model_type']
    assert opt['network_g'] == test_opt['network_g'] and opt['network_g']['type'] == config['network_g']['type']
    assert opt['train']['pixel_opt'] == config['train']['pixel_opt'] and 'ssim_opt' not in opt['train']
    assert 'ssim_opt' not in config['train']

    def shared(options: dict) -> dict:
        options = {k: v for k, v in options.items() if k not in ('name', 'model_type', 'network_g')}
        options['train'] = {k: v for k, v in options['train'].items()
                            if k not in (*RAINMER_ONLY_TRAIN_KEYS, 'pixel_opt', 'ssim_opt')}
        return options

    assert shared(opt) == shared(reference)  # data, crop, iterations, optimiser, schedule, logging, seed
    reference_test = ablation_test_options('rainmer', 0, 'data', sizes)
    assert test_opt['path'].pop('pretrain_network_g') == f'experiments/ablate_{variant}_seed0/models/net_g_latest.pth'
    reference_test['path'].pop('pretrain_network_g')
    for options in (test_opt, reference_test):  # the same held-out pairs and metrics
        for key in ('name', 'model_type', 'network_g'):
            options.pop(key)
    assert test_opt == reference_test


@pytest.fixture(scope='module')
def rainmer_flops():
    return network_cost('rainmer', sizes_for(1.0))[1]


@pytest.mark.parametrize('variant', ROSTER_VARIANTS)
def test_roster_network_restores_a_crop_at_about_rainmers_cost(variant, rainmer_flops):
    from basicsr.utils.registry import ARCH_REGISTRY

    from rainmer.plugins import load_plugins
    from rainmer.utils.benchmarking import flop_counter

    load_plugins()
    sizes = sizes_for(1.0)
    opt = dict(network_options(variant, sizes))
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get(opt.pop('type'))(**opt).eval()
    x = torch.rand(1, 3, sizes.crop, sizes.crop)
    counter = flop_counter()
    with torch.no_grad(), counter:
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert 0.8 < counter.get_total_flops() / rainmer_flops < 1.25  # docs/ablation.md
    if variant == 'promptir':  # scaled from the public prompt channels
        from rainmer.archs.promptir_arch import PROMPT_DIMS

        assert PROMPTIR_PROMPT_DIMS == PROMPT_DIMS


def test_report_tells_every_variant_apart(tmp_path):
    """Table rows, bar colours and grid columns for all twelve variants."""
    variants = list(ALL_VARIANTS)
    assert len({variant_colour(v) for v in variants}) == len(variants)
    rainy = {g: {m: 0.5 for m in METRICS} for g in GROUPS}
    runs = [dict(variant=v, seed=0, sec_per_iter=0.1, metrics={g: {m: 0.6 + 0.01 * i for m in METRICS}
                                                                 for g in GROUPS}) for i, v in enumerate(variants)]
    summary = summarise(runs)
    table = metric_table(summary, rainy, 'psnr', 'ssim') + cost_table(summary, {v: (1, 1) for v in variants},
                                                                        sizes_for(1.0))
    for variant in variants:
        assert f'| {variant} |' in table and ALL_VARIANTS[variant] in table
    chart = cv2.imread(bar_chart(summary, rainy, str(tmp_path / 'results.png')))
    assert chart is not None and chart.shape[1] > 300

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (len(variants) + 2, 3))
    for domain in ('day', 'heavy', 'night'):  # rainy input, every variant's output, clean: one colour each
        paths = [tmp_path / 'data' / 'val' / domain / 'input' / 'a_v0.png',
                 *(tmp_path / 'results' / f'ablate_{v}_seed0_test' / 'visualization' / domain / 'a_v0_derained.png'
                   for v in variants), tmp_path / 'data' / 'val' / domain / 'target' / 'a_v0.png']
        for path, colour in zip(paths, colours):
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((24, 24, 3), colour, np.uint8))
    grid = cv2.imread(write_grid(str(tmp_path), variants, 0, str(tmp_path / 'grid.png')))
    columns, gap, header = len(variants) + 2, 4, 28
    panel = (grid.shape[1] - (columns - 1) * gap) // columns
    assert grid.shape[:2] == (header + 3 * (panel + gap), columns * panel + (columns - 1) * gap)
    for c, colour in enumerate(colours):
        x = c * (panel + gap)
        assert (grid[:header, x + 2:x + panel - 2] < 128).any(), c  # its label
        np.testing.assert_array_equal(grid[header + panel // 2, x + panel // 2], colour)  # below the domain name


def test_scale_multiplies_iterations_crop_and_width():
    base, big = sizes_for(1.0), sizes_for(4.0)
    assert (big.iters, big.crop, big.dim, big.prompt_size) == (4 * base.iters, 4 * base.crop, 4 * base.dim,
                                                               4 * base.prompt_size)
    tiny = sizes_for(0.34, iters=2)
    assert tiny.iters == 2 and tiny.crop % tiny.window_size == 0


def test_costs_follow_what_each_variant_removes():
    sizes = sizes_for(0.34)
    params = {v: network_cost(v, sizes)[0] for v in VARIANTS}
    assert params['baseline'] < params['no_degradation'] < params['rainmer']
    assert params['baseline'] < params['no_chromatic'] < params['rainmer']


def test_mean_and_sample_standard_deviation():
    assert mean_std([1.0]) == (1.0, None)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)


@pytest.mark.parametrize('argv, message', [
    (['--variants', 'rainmer,unet'], '--variants: unet: choose among rainmer, no_chromatic'),
    (['--seeds', '0'], '--seeds: 0 must be at least 1'),
    (['--scale', '0'], '--scale: 0.0 must be a positive number'),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, message):
    assert parse_variants('swinir, rainmer,swinir') == ['swinir', 'rainmer']
    assert ablate_main(['--out', str(tmp_path / 'out'), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {message}') and len(err.strip().splitlines()) == 1, err
