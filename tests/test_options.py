"""The shipped option files: registered types, the paper's recipe, identical comparisons, and runs as written."""
import copy
import glob
import json
import os
import os.path as osp
import re
import shlex

import pytest
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY
from data_fixtures import make_documented_tree, make_gtav, make_gtrain, make_rain13k
from toolbox_fixtures import REPO_ROOT, run_command

from rainmer.option_check import check_options, dataset_option_keys
from rainmer.options import load_yaml
from rainmer.utils.registry import SCHEDULER_REGISTRY

OPTIONS = sorted(glob.glob(osp.join(REPO_ROOT, 'options', '**', '*.yml'), recursive=True))
TRAIN_OPTIONS = [p for p in OPTIONS if osp.dirname(p) == osp.join(REPO_ROOT, 'options')]
MIXED_COMPARISONS = ['swinir_mixed.yml', 'drsformer_mixed.yml']


def _option(name: str) -> dict:
    return json.loads(json.dumps(load_yaml(osp.join(REPO_ROOT, 'options', name))))


@pytest.mark.parametrize('path', OPTIONS, ids=[osp.relpath(p, REPO_ROOT) for p in OPTIONS])
def test_every_type_in_the_option_files_is_registered(path):
    opt = load_yaml(path)
    if 'model_type' not in opt:  # analysis configs
        return
    assert opt['model_type'] in MODEL_REGISTRY
    assert opt['network_g']['type'] in ARCH_REGISTRY
    for dataset in opt['datasets'].values():
        assert dataset['type'] in DATASET_REGISTRY
    for key, value in (opt.get('train') or {}).items():
        if key.endswith('_opt') and value:
            assert value['type'] in LOSS_REGISTRY, key
    if opt.get('train'):
        assert opt['train']['scheduler']['type'] in SCHEDULER_REGISTRY


@pytest.mark.parametrize('path', OPTIONS, ids=[osp.relpath(p, REPO_ROOT) for p in OPTIONS])
def test_every_option_file_passes_the_option_check(path):
    opt = load_yaml(path)
    check_options(opt, path)
    for dataset in opt['datasets'].values():  # every shipped dataset's keys are known, so they were checked
        assert dataset_option_keys(DATASET_REGISTRY.get(dataset['type'])) is not None


def test_rainmer_mixed_is_the_papers_recipe():
    opt = _option('rainmer_mixed.yml')
    train = opt['train']
    assert opt['manual_seed'] == 100 and opt['model_type'] == 'RainmerModel'
    assert opt['datasets']['train']['batch_size_per_gpu'] == 4 and opt['datasets']['train']['gt_size'] == 128
    assert [s['name'] for s in opt['datasets']['train']['sources']] == ['Rain13K', 'GT-Rain', 'GTAV-balance']
    assert all(s['io_backend']['type'] == 'lmdb' for s in opt['datasets']['train']['sources'])
    assert opt['datasets']['val']['layout'] == 'gtrain'
    assert train['accumulate_grad_step'] == 2 and train['total_iter'] == 2 * 300000
    assert train['optim_g']['lr'] == 3e-4 and train['optim_encoder']['weight_decay'] == 0.01
    assert train['scheduler']['periods'] == [92000, 208000] and train['scheduler']['eta_mins'] == [3e-4, 1e-6]
    assert train['grad_clip_norm'] == 0.01 and train['n_neg'] == 4 and train['archive_size'] == 256
    assert train['pixel_opt']['eps'] == 1e-6 and train['ssim_opt']['loss_weight'] == 0.1
    net = build_network(copy.deepcopy(opt['network_g']))
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 35_823_296
    assert sum(p.numel() for p in net.parameters()) == 36_764_832


@pytest.mark.parametrize('name', MIXED_COMPARISONS)
def test_comparison_configs_differ_from_rainmer_only_in_the_network(name):
    """Same data, schedule, image losses and validation through DerainModel; RainmerModel's own keys only in
    rainmer_mixed.yml."""
    from basicsr.utils.registry import MODEL_REGISTRY

    rainmer, other = _option('rainmer_mixed.yml'), _option(name)
    assert rainmer['model_type'] == 'RainmerModel' and other['model_type'] == 'DerainModel'
    rainmer_only = MODEL_REGISTRY.get('RainmerModel').TRAIN_KEYS - MODEL_REGISTRY.get('DerainModel').TRAIN_KEYS
    assert rainmer_only & set(rainmer['train']) and not rainmer_only & set(other['train'])
    for key in rainmer_only:
        rainmer['train'].pop(key, None)
    for opt in (rainmer, other):
        for key in ('name', 'network_g', 'model_type'):
            opt.pop(key)
    assert other == rainmer


# The comparison roster with the method's own objective: (config, reference, the train keys allowed to differ,
# the model class). Data, schedule, clipping, validation and logging are the reference's.
OWN_LOSS_COMPARISONS = [
    ('restormer_mixed.yml', 'rainmer_mixed.yml', 'L1Loss', 'DerainModel'),
    ('promptir_mixed.yml', 'rainmer_mixed.yml', 'L1Loss', 'DerainModel'),
    ('prenet_mixed.yml', 'rainmer_mixed.yml', 'SSIMLoss', 'DerainModel'),
    ('brn_mixed.yml', 'rainmer_mixed.yml', 'SSIMLoss', 'DerainModel'),
    ('idt_mixed.yml', 'rainmer_mixed.yml', 'SSIMLoss', 'DerainModel'),
    ('rcdnet_mixed.yml', 'rainmer_mixed.yml', 'RCDNetLoss', 'RCDNetModel'),
    ('restormer_allweather.yml', 'rainmer_allweather.yml', 'L1Loss', 'DerainModel'),
    ('promptir_allweather.yml', 'rainmer_allweather.yml', 'L1Loss', 'DerainModel'),
]


@pytest.mark.parametrize('name, reference, loss, model', OWN_LOSS_COMPARISONS, ids=[c[0] for c in OWN_LOSS_COMPARISONS])
def test_roster_configs_differ_from_rainmer_only_in_the_network_and_its_objective(name, reference, loss, model):
    from basicsr.utils.registry import MODEL_REGISTRY

    rainmer, other = _option(reference), _option(name)
    assert other['model_type'] == model and other['train']['pixel_opt']['type'] == loss
    rainmer_only = MODEL_REGISTRY.get('RainmerModel').TRAIN_KEYS - MODEL_REGISTRY.get('DerainModel').TRAIN_KEYS
    for opt in (rainmer, other):
        for key in ('name', 'network_g', 'model_type', 'find_unused_parameters'):
            opt.pop(key, None)
        for key in (*rainmer_only, 'pixel_opt', 'ssim_opt'):
            opt['train'].pop(key, None)
    assert other == rainmer


@pytest.mark.parametrize('path', [p for p in OPTIONS if '/test/' in p], ids=osp.basename)
def test_test_configs_use_their_training_configs_network(path):
    test_opt = load_yaml(path)
    train_name = osp.basename(path).replace('_test.yml', '.yml')
    assert test_opt['network_g'] == load_yaml(osp.join(REPO_ROOT, 'options', train_name))['network_g']
    assert test_opt['path']['pretrain_network_g'] == f"experiments/{test_opt['name'][:-5]}/models/net_g_latest.pth"


TINY = ['network_g:dim=8', 'network_g:base_dim=16', 'network_g:num_blocks=[1,1,1,1]', 'network_g:heads=[1,1,1,1]',
        'network_g:prompt_size=32']


def test_rainmer_mixed_trains_and_tests_as_written_on_prepared_data(tmp_path):
    """Data prepared where the README says, then the shipped configs with only sizes shrunk."""
    def run(*args):
        result = run_command(list(args), cwd=str(tmp_path))
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        return result.stdout + result.stderr

    make_rain13k(str(tmp_path / 'datasets/train/Rain13K'), n=2)
    make_gtrain(str(tmp_path / 'datasets/GT-Rain/GT-RAIN_train'), scenes=1, frames=2)
    make_gtrain(str(tmp_path / 'datasets/GT-Rain/GT-RAIN_val'), scenes=1, frames=1, seed=7)
    make_gtav(str(tmp_path / 'datasets/GTAV-NightRain'), sets=1, scenes=2, frames=1)
    make_gtav(str(tmp_path / 'datasets/GTAV-NightRain'), sets=1, split='test', scenes=1, frames=1, seed=5)
    run('rainmer', 'data', 'prepare', 'rain13k', 'datasets/train/Rain13K', '--quiet')
    run('rainmer', 'data', 'prepare', 'gtrain', 'datasets/GT-Rain/GT-RAIN_train', '--quiet')
    run('rainmer', 'data', 'balance', 'gtav', 'datasets/GTAV-NightRain', '--shares', '0.5', '0.25', '--crop', '32',
        '--out', 'datasets/GTAV-balance', '--quiet')
    output = run('basicsr', 'train', '-opt', osp.join(REPO_ROOT, 'options', 'rainmer_mixed.yml'), '--force_yml',
                 *TINY, 'train:total_iter=2', 'train:archive_size=4', 'datasets:train:gt_size=32',
                 'datasets:train:resize_size=32', 'datasets:train:batch_size_per_gpu=2',
                 'datasets:train:num_worker_per_gpu=0', 'logger:save_checkpoint_freq=2', 'val:val_freq=2')
    assert 'Validation GT-Rain' in output
    assert (tmp_path / 'experiments/Rainmer_mixed/models/net_g_latest.pth').is_file()

    for name in ('Rain100L', 'Rain100H', 'Test100', 'Test1200', 'Test2800'):
        make_rain13k(str(tmp_path / 'datasets/test' / name), n=1, seed=len(name))
    make_gtrain(str(tmp_path / 'datasets/GT-Rain/GT-RAIN_test'), scenes=1, frames=1, seed=9)
    output = run('basicsr', 'test', '-opt', osp.join(REPO_ROOT, 'options', 'test', 'rainmer_mixed_test.yml'),
                 '--force_yml', *TINY)
    metrics = json.loads((tmp_path / 'results/Rainmer_mixed_test/metrics.json').read_text())
    assert list(metrics) == ['Rain100L', 'Rain100H', 'Test100', 'Test1200', 'Test2800', 'GT-Rain', 'GTAV-balance',
                            'GTAV-NightRain']
    assert all(set(values) == {'psnr', 'ssim', 'psnr_paper', 'ssim_paper'} for values in metrics.values())
    assert '| average |' in output


def _documented_commands() -> list[list[str]]:
    """The ``rainmer data`` lines of docs/datasets.md's "All at once" block."""
    text = open(osp.join(REPO_ROOT, 'docs', 'datasets.md'), encoding='utf-8').read()
    block = re.search(r'### All at once\n.*?```\n(.*?)```', text, re.S).group(1)
    return [shlex.split(line)[2:] for line in block.splitlines() if line.startswith('rainmer data ')]


NETWORKS_WITH_FAST = ('Rainmer', 'DRSformer', 'NeRDRain', 'NeRDRainS')


@pytest.mark.parametrize('path', OPTIONS, ids=[osp.relpath(p, REPO_ROOT) for p in OPTIONS])
def test_shipped_networks_carry_the_fast_switch(path):
    net = load_yaml(path)['network_g']
    if net['type'] in NETWORKS_WITH_FAST:
        assert net['fast'] == 'auto'


def test_every_shipped_config_starts_on_the_documented_tree(tmp_path, monkeypatch):
    """The public downloads' layouts and names at odd sizes, the docs' prepare commands as written (smaller crop),
    then every dataset of every shipped config is built and yields a pair."""
    from basicsr.data import build_dataset

    from rainmer.data.cli import main as data_main

    monkeypatch.chdir(tmp_path)
    make_documented_tree('datasets')
    commands = _documented_commands()
    assert [c[:2] for c in commands] == [['prepare', 'rain13k'], ['prepare', 'gtrain'], ['stats', 'rain13k'],
                                         ['stats', 'gtrain'], ['balance', 'gtav'], ['prepare', 'allweather']]
    for argv in commands:
        argv = ['64' if i and argv[i - 1] == '--crop' else a for i, a in enumerate(argv)]
        assert data_main(argv + ['--quiet']) == 0, argv
    assert sorted(os.listdir('datasets/GTAV-balance/test/rainy'))[0].endswith('_set1.png')
    for path in OPTIONS:
        opt = load_yaml(path)
        for key, dataset_opt in opt['datasets'].items():
            dataset_opt = dict({'name': key}, **copy.deepcopy(dataset_opt), scale=1,
                               phase=key.split('_')[0] if 'model_type' in opt else 'test')
            if dataset_opt['phase'] == 'train':
                dataset_opt.update(gt_size=32, resize_size=32)
            dataset = build_dataset(dataset_opt)
            assert len(dataset) > 0, (path, key)
            item = dataset[0]
            assert item['lq'].shape[0] == 3 and item['lq'].shape == item['gt'].shape, (path, key)


def test_the_experiment_folder_keeps_the_options_with_the_overrides_applied(tmp_path):
    """Tools that rebuild a run from its folder (rainmer compare) must see --force_yml's values, not the YAML's."""
    from rainmer.options import copy_options_file

    source = osp.join(REPO_ROOT, 'options', 'rainmer_mixed.yml')
    copied = copy_options_file(source, str(tmp_path), ['network_g:dim=8', 'train:total_iter=10'])
    opt = load_yaml(copied)
    assert opt['network_g']['dim'] == 8 and opt['train']['total_iter'] == 10
    assert opt['network_g']['num_blocks'] == load_yaml(source)['network_g']['num_blocks']
    assert opt['train']['scheduler']['eta_mins'] == [3e-4, 1e-6]  # floats survive the round trip
