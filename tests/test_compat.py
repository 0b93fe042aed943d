"""The compatibility layer: each BasicSR 1.4.2 defect on today's stack, fixed without touching the toolbox."""
import builtins
import os
import warnings

import basicsr
import basicsr.utils.dist_util as dist_util
import pytest
import torch
from basicsr.archs import build_network
from basicsr.models.lr_scheduler import MultiStepRestartLR
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

import rainmer.compat
from rainmer.compat import checkpoint, distributed, targets
from rainmer.compat.model import get_optimizer, setup_schedulers
from rainmer.compat.registry import UnknownNameError
from rainmer.compat.torchvision_shim import TorchvisionMismatchError, check_torchvision
from rainmer.errors import UserError
from rainmer.options import OptionError, force_option
from rainmer.utils.registry import SCHEDULER_REGISTRY


def test_import_basicsr_works_and_functional_tensor_is_provided():
    import basicsr.data.degradations as degradations
    from torchvision.transforms.functional_tensor import rgb_to_grayscale

    image = torch.rand(1, 3, 8, 8)
    assert torch.equal(degradations.rgb_to_grayscale(image), rgb_to_grayscale(image))


def test_plugin_classes_are_registered_on_import():
    from rainmer import archs, data, losses, models

    registries = {archs: ARCH_REGISTRY, data: DATASET_REGISTRY, losses: LOSS_REGISTRY, models: MODEL_REGISTRY}
    for package, registry in registries.items():
        for module in package._modules:
            defined = [name for name, obj in vars(module).items()
                       if isinstance(obj, type) and obj.__module__ == module.__name__ and name in registry]
            assert defined, f'{module.__name__} registers nothing in {registry._name}'
            for name in defined:
                assert registry.get(name) is getattr(module, name)
    assert 'SwinIR' in ARCH_REGISTRY and 'SRModel' in MODEL_REGISTRY  # the toolbox's own entries stay


def test_unknown_type_names_the_closest_match_and_the_registered_names():
    with pytest.raises(UnknownNameError) as info:
        build_network({'type': 'SwinIr'})
    message = str(info.value)
    assert "Unknown arch type 'SwinIr'. Did you mean 'SwinIR'?" in message
    assert 'RRDBNet' in message and 'EDSR' in message
    assert isinstance(info.value, KeyError)  # callers catching the toolbox's KeyError still work


def test_torchvision_build_mismatch_says_what_to_reinstall(monkeypatch):
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == 'torchvision':
            raise RuntimeError('operator torchvision::nms does not exist')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', failing_import)
    with pytest.raises(TorchvisionMismatchError) as info:
        check_torchvision()
    assert 'pip install --force-reinstall torch torchvision' in str(info.value)
    assert torch.__version__ in str(info.value)


def test_distributed_backend_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    assert distributed.resolve_backend(None) == 'gloo'
    assert distributed.resolve_backend('gloo') == 'gloo'
    with pytest.warns(UserWarning, match="'nccl' needs CUDA"):
        assert distributed.resolve_backend('nccl') == 'gloo'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert distributed.resolve_backend(None) == 'nccl'
    assert distributed.resolve_backend('gloo') == 'gloo'  # dist_params.backend overrides


class _Model:
    """The parts of BaseModel that the patched methods use."""

    def __init__(self, tmp_path, scheduler_opt):
        self.opt = {'train': {'scheduler': scheduler_opt}, 'path': {'training_states': str(tmp_path)}}
        net = torch.nn.Linear(3, 2)
        self.optimizers = [get_optimizer(self, 'AdamW', net.parameters(), 1e-3, weight_decay=0.01)]
        self.schedulers = []
        net(torch.ones(1, 3)).sum().backward()
        self.optimizers[0].step()


def test_optimizers_by_torch_name_and_schedulers_from_the_registry(tmp_path):
    model = _Model(tmp_path, {'type': 'CosineAnnealingRestartCyclicLR', 'periods': [2, 4],
                               'restart_weights': [1, 1], 'eta_mins': [1e-3, 0]})
    assert isinstance(model.optimizers[0], torch.optim.AdamW)
    setup_schedulers(model)
    assert type(model.schedulers[0]) is SCHEDULER_REGISTRY.get('CosineAnnealingRestartCyclicLR')
    assert model.opt['train']['scheduler']['type'] == 'CosineAnnealingRestartCyclicLR'  # options left intact
    with pytest.raises(UnknownNameError, match="Did you mean 'AdamW'"):
        get_optimizer(model, 'Adamw', [torch.nn.Parameter(torch.ones(1))], 1e-3)


def test_resume_state_with_toolbox_scheduler_loads_on_cpu_with_weights_only(tmp_path):
    model = _Model(tmp_path, {'type': 'MultiStepLR', 'milestones': [1, 2], 'gamma': 0.5})
    setup_schedulers(model)
    assert isinstance(model.schedulers[0], MultiStepRestartLR)
    checkpoint.save_training_state(model, epoch=3, current_iter=7)
    state = checkpoint.load_training_state(str(tmp_path / '7.state'))
    assert state['epoch'] == 3 and state['iter'] == 7
    assert state['schedulers'][0]['milestones'] == model.schedulers[0].state_dict()['milestones']
    saved_exp_avg = model.optimizers[0].state_dict()['state'][0]['exp_avg']
    assert torch.equal(state['optimizers'][0]['state'][0]['exp_avg'], saved_exp_avg)
    assert state['optimizers'][0]['state'][0]['exp_avg'].device.type == 'cpu'


def test_atomic_save_leaves_the_previous_file_intact_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / 'net.pth')
    checkpoint.atomic_torch_save({'w': torch.ones(3)}, path)

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b'truncated')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', crash_midway)
    with pytest.raises(OSError):
        checkpoint.atomic_torch_save({'w': torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['net.pth']


def test_auto_resume_skips_an_unreadable_newest_state(tmp_path):
    states, models = tmp_path / 'training_states', tmp_path / 'models'
    states.mkdir()
    models.mkdir()
    for it in (2, 4):
        torch.save({'params': {}}, models / f'net_g_{it}.pth')
    checkpoint.atomic_torch_save({'epoch': 0, 'iter': 2, 'optimizers': [], 'schedulers': []}, str(states / '2.state'))
    (states / '4.state').write_bytes(b'not a checkpoint')
    opt = {'name': 'x', 'auto_resume': True, 'num_gpu': 0, 'network_g': {},
           'path': {'training_states': str(states), 'models': str(models), 'resume_state': None}}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        state = checkpoint.load_resume_state(opt)
    assert state['iter'] == 2
    assert opt['path']['resume_state'].endswith('2.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_2.pth')


def test_force_yml_sets_existing_keys_and_rejects_unknown_ones():
    opt = {'train': {'total_iter': 10, 'optim_g': {'lr': 1e-3}}}
    force_option(opt, 'train:total_iter=20')
    force_option(opt, 'train:optim_g:lr=2e-4')
    assert opt['train']['total_iter'] == 20 and opt['train']['optim_g']['lr'] == '2e-4'
    force_option(opt, 'train:optim_g:lr=!!float 2e-4')
    assert opt['train']['optim_g']['lr'] == pytest.approx(2e-4)
    with pytest.raises(OptionError, match="'train:total_iters' does not exist"):
        force_option(opt, 'train:total_iters=5')


def test_one_lmdb_can_back_several_file_clients(tmp_path):
    import lmdb
    from basicsr.utils import FileClient

    path = str(tmp_path / 'x.lmdb')
    env = lmdb.open(path, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b'a', b'payload')
    env.close()
    clients = [FileClient('lmdb', db_paths=[path], client_keys=['lq']) for _ in range(2)]
    assert [c.get('a', 'lq') for c in clients] == [b'payload', b'payload']


@pytest.mark.parametrize('target', targets.TARGETS, ids='.'.join)
def test_every_compat_target_exists_in_the_installed_basicsr(target):
    assert targets.resolve(*target) is not None
    assert targets.toolbox_version() in targets.TESTED_VERSIONS


def test_a_missing_target_stops_the_compat_layer_with_one_line(monkeypatch):
    monkeypatch.delattr(dist_util, 'init_dist')
    monkeypatch.setattr(rainmer.compat, '_applied', False)
    with pytest.raises(targets.ToolboxVersionError) as info:
        rainmer.compat.apply_toolbox_compat()
    assert isinstance(info.value, UserError)
    assert str(info.value) == (f'basicsr.utils.dist_util.init_dist: not found in the installed BasicSR '
                               f'{basicsr.__version__}; rainmer patches BasicSR 1.4.2: pip install basicsr==1.4.2')


def test_an_untested_basicsr_version_warns_once(monkeypatch):
    monkeypatch.setattr(basicsr, '__version__', '1.5.0')
    monkeypatch.setattr(targets, '_warned_versions', set())
    with pytest.warns(UserWarning, match=r'BasicSR 1\.5\.0 is untested with rainmer \(tested: 1\.4\.2\)'):
        targets.check_toolbox()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        targets.check_toolbox()


def test_wrapped_registry_lookup_keeps_the_toolbox_fallback_without_its_print(capsys):
    from basicsr.archs.srvgg_arch import SRVGGNetCompact

    assert ARCH_REGISTRY.get('SRVGGNetCompact') is SRVGGNetCompact  # registered as SRVGGNetCompact_basicsr
    assert ARCH_REGISTRY.get('SwinIR').__name__ == 'SwinIR'
    assert capsys.readouterr().out == ''


def test_wrapped_get_optimizer_builds_adam_through_the_toolbox(monkeypatch):
    from rainmer.compat import model

    calls = []
    original = model._toolbox_get_optimizer
    monkeypatch.setattr(model, '_toolbox_get_optimizer', lambda *args, **kwargs: calls.append(args[1]) or
                        original(*args, **kwargs))
    params = [torch.nn.Parameter(torch.ones(1))]
    assert type(get_optimizer(None, 'Adam', params, 1e-3)) is torch.optim.Adam
    assert type(get_optimizer(None, 'SGD', params, 1e-3, momentum=0.9)) is torch.optim.SGD  # the toolbox refuses
    assert calls == ['Adam', 'SGD']


def test_launcher_pytorch_without_torchrun_is_one_line_saying_what_to_run(tmp_path, monkeypatch):
    from toolbox_fixtures import run_command, swinir_train_options, write_noisy_pairs, write_yaml

    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)

    lq, gt = write_noisy_pairs(str(tmp_path / 'data'))
    path = write_yaml(str(tmp_path / 'train.yml'), swinir_train_options('launcher', lq, gt))
    result = run_command(['basicsr', 'train', '-opt', path, '--launcher', 'pytorch'], cwd=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'error: --launcher pytorch: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set; start the run with torchrun, '
        'e.g. `torchrun --nproc_per_node=2 -m rainmer.train -opt X.yml --launcher pytorch`, or drop --launcher for '
        'one process']
