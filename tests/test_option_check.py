"""Options are checked, never ignored: an unknown key fails with its path and the closest valid name."""
import copy
import re

import pytest
import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY
from toolbox_fixtures import run_command, swinir_train_options, write_noisy_pairs, write_yaml

from rainmer.option_check import SRMODEL_TRAIN_KEYS, SRMODEL_VAL_KEYS, check_options
from rainmer.options import OptionError

RAIN_TEST_SET = dict(name='SetA', type='PairedRainTestDataset', layout='rain13k', root='datasets/SetA',
                     source_id=0, io_backend=dict(type='disk'))
MIXED_TRAIN_SET = dict(name='mix', type='MixedRainDataset', gt_size=32, resize_size=32, use_hflip=True,
                       sources=[dict(name='a', type='rain13k', root='datasets/a')], batch_size_per_gpu=2)


def _options() -> dict:
    opt = swinir_train_options('check', 'data/lq', 'data/gt')
    opt['network_g'] = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=8)
    opt['datasets'].update(val_2=dict(RAIN_TEST_SET), val_3=copy.deepcopy(MIXED_TRAIN_SET))
    return opt


def _with(opt: dict, path: str, value=1) -> dict:
    opt = copy.deepcopy(opt)
    *parents, key = path.split('.')
    node = opt
    for parent in parents:
        node = node[int(parent)] if isinstance(node, list) else node[parent]
    node[key] = value
    return opt


# (misspelt option, the valid name it should suggest)
MISSPELT = [
    ('network_g.num_blok', 'num_block'),                        # RRDBNet.__init__
    ('train.total_iterz', 'total_iter'),                        # SRModel / the train pipeline
    ('train.pixel_opt.loss_weigth', 'loss_weight'),             # L1Loss.__init__
    ('train.optim_g.weight_decy', 'weight_decay'),              # torch.optim.AdamW
    ('train.scheduler.milestone', 'milestones'),                # MultiStepRestartLR
    ('val.save_imgs', 'save_img'),                              # SRModel.validation / the pipelines
    ('val.metrics.psnr.test_y_chanel', 'test_y_channel'),      # calculate_psnr
    ('datasets.train.use_hflp', 'use_hflip'),                   # PairedImageDataset
    ('datasets.train.batch_size_per_gpus', 'batch_size_per_gpu'),  # build_dataloader
    ('datasets.val_2.max_pair', 'max_pairs'),                   # PairedRainTestDataset
    ('datasets.val_3.resize_sise', 'resize_size'),              # MixedRainDataset
    ('datasets.val_3.sources.0.wieght', 'weight'),              # an entry of MixedRainDataset's sources
]


def test_the_base_options_pass():
    check_options(_options(), 'x.yml')


@pytest.mark.parametrize('path,suggestion', MISSPELT, ids=[m[0] for m in MISSPELT])
def test_an_unknown_option_fails_with_its_path_and_the_closest_name(path, suggestion):
    with pytest.raises(OptionError) as info:
        check_options(_with(_options(), path), 'x.yml')
    shown = path.replace('.sources.0.', '.sources[0].')
    assert str(info.value) == f"x.yml: {shown}: unknown option; did you mean '{suggestion}'?"


# (option, text where a number belongs, the message's tail)
NOT_NUMBERS = [
    ('train.optim_g.lr', '3e-4', "'3e-4' is read as text (YAML needs a dot in a float: write 3.0e-4 or !!float 3e-4)"),
    ('train.optim_g.lr', 'abc', "'abc' is not a number"),
    ('train.total_iter', 'abc', "'abc' is not a number"),                # the train pipeline
    ('train.pixel_opt.loss_weight', 'one', "'one' is not a number"),    # L1Loss.__init__
    ('network_g.num_feat', '8x', "'8x' is not a number"),                # RRDBNet.__init__
    ('logger.print_freq', 'often', "'often' is not a number"),
]


@pytest.mark.parametrize('path,value,tail', NOT_NUMBERS, ids=[f'{n[0]}={n[1]}' for n in NOT_NUMBERS])
def test_text_where_a_number_belongs_fails_with_its_path(path, value, tail):
    opt = _with(_options(), path, value)
    with pytest.raises(OptionError) as info:
        check_options(opt, 'x.yml')
    assert str(info.value) == f'x.yml: {path}: {tail}'


def test_without_a_close_name_the_valid_names_are_listed():
    with pytest.raises(OptionError, match=r'^train\.zzz: unknown option; SRModel accepts: ema_decay, optim_g, '):
        check_options(_with(_options(), 'train.zzz'))


def test_a_checked_network_d_and_networks_taking_kwargs(monkeypatch):
    opt = _with(_options(), 'network_d', dict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=8, input_sise=64))
    with pytest.raises(OptionError, match=r"network_d\.input_sise: unknown option; did you mean 'input_size'"):
        check_options(opt)

    class KwargsArch(torch.nn.Module):  # options beyond the named ones go on to a block: not checkable here
        def __init__(self, width=8, **kwargs):
            super().__init__()
            self.block = dict(**kwargs)

    monkeypatch.setitem(ARCH_REGISTRY._obj_map, 'KwargsArch', KwargsArch)
    check_options(_with(_options(), 'network_g', dict(type='KwargsArch', anything=1)))
    swinir = dict(type='SwinIR', upscale=1, window_size=8, embed_dim=12, depths=[1], num_heads=[2], img_sise=32)
    with pytest.raises(OptionError, match=r"network_g\.img_sise: unknown option; did you mean 'img_size'"):
        check_options(_with(_options(), 'network_g', swinir))  # SwinIR's **kwargs swallow it unread


def test_models_are_checked_against_their_own_option_keys_only(monkeypatch):
    class DeclaringModel(SRModel):
        OPTION_KEYS = {'train': SRMODEL_TRAIN_KEYS | {'grad_clip_norm'}, 'val': SRMODEL_VAL_KEYS | {'tile'}}

    class InheritingModel(DeclaringModel):  # may read more than its parent: not checked
        pass

    for model in (DeclaringModel, InheritingModel):
        monkeypatch.setitem(MODEL_REGISTRY._obj_map, model.__name__, model)
    opt = _with(_with(_options(), 'model_type', 'DeclaringModel'), 'train.grad_clip_norm', 0.01)
    check_options(_with(opt, 'val.tile', None))
    with pytest.raises(OptionError, match=r"^train\.grad_clip_nrm: unknown option; did you mean 'grad_clip_norm'"):
        check_options(_with(opt, 'train.grad_clip_nrm'))
    with pytest.raises(OptionError, match=r"^train\.optim_g\.lrr: unknown option; did you mean 'lr'"):
        check_options(_with(opt, 'train.optim_g.lrr'))
    check_options(_with(_with(opt, 'model_type', 'InheritingModel'), 'train.grad_clip_nrm'))


def test_unknown_dataset_classes_and_sections_are_not_checked(monkeypatch):
    class OwnDataset(torch.utils.data.Dataset):
        def __init__(self, opt):
            self.opt = opt

    monkeypatch.setitem(DATASET_REGISTRY._obj_map, 'OwnDataset', OwnDataset)
    opt = _with(_options(), 'datasets.val', dict(name='own', type='OwnDataset', anything=1))
    check_options(_with(opt, 'logger.anything'))


def test_unknown_types_fail_with_the_closest_registered_name():
    with pytest.raises(KeyError, match="Did you mean 'AdamW'"):
        check_options(_with(_options(), 'train.optim_g.type', 'Adamw'))
    with pytest.raises(KeyError, match="Did you mean 'L1Loss'"):
        check_options(_with(_options(), 'train.pixel_opt.type', 'L1loss'))


def test_srmodel_keys_cover_what_the_toolbox_reads():
    import inspect

    import basicsr.models.base_model as base_model
    import basicsr.models.sr_model as sr_model
    import basicsr.train as toolbox_train

    source = ''.join(inspect.getsource(module) for module in (sr_model, base_model, toolbox_train))
    train = set(re.findall(r"(?:train_opt|opt\['train'\])(?:\.get\(|\[)'(\w+)'", source))
    val = set(re.findall(r"""opt\[['"]val['"]\](?:\.get\(|\[)['"](\w+)['"]""", source))
    assert train and val
    assert train <= SRMODEL_TRAIN_KEYS and val <= SRMODEL_VAL_KEYS


def test_basicsr_train_with_an_unknown_option_exits_2_with_one_line(tmp_path):
    write_noisy_pairs(str(tmp_path / 'data'))
    yml = write_yaml(str(tmp_path / 'typo.yml'), _with(swinir_train_options('typo', 'data/lq', 'data/gt'),
                                                         'train.total_iterz', 4))
    result = run_command(['basicsr', 'train', '-opt', yml], cwd=str(tmp_path))
    assert result.returncode == 2
    expected = f"error: {yml}: train.total_iterz: unknown option; did you mean 'total_iter'?"
    assert result.stderr.splitlines() == [expected]
    assert not (tmp_path / 'experiments').exists()
