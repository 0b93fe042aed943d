"""BRN: the public parameter count, keys and checkpoints, rain/background stages, and `basicsr train|test`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import json
import os.path as osp

import cv2
import pytest
import torch
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from data_fixtures import make_rain13k
from public_brn_keys import PUBLIC_BRN_KEYS, PUBLIC_BRN_PARAMETERS, RECDERAIN_BRN_PARAMETERS, RECDERAIN_EXTRA_KEYS
from toolbox_fixtures import REPO_ROOT, run_command, write_yaml

from rainmer.archs.brn_arch import BRN
from rainmer.options import load_yaml

TINY = dict(type='BRN', recurrent_iter=2, channels=8)


def _random_state(keys) -> dict:
    torch.manual_seed(0)
    return {key: torch.randn(shape) for key, shape in keys}


def test_parameter_count_and_keys_are_the_public_ones():
    net = BRN()
    assert sum(p.numel() for p in net.parameters()) == PUBLIC_BRN_PARAMETERS
    assert [(key, tuple(value.shape)) for key, value in net.state_dict().items()] == PUBLIC_BRN_KEYS
    assert PUBLIC_BRN_PARAMETERS + sum(torch.Size(s).numel() for _, s in RECDERAIN_EXTRA_KEYS) == \
        RECDERAIN_BRN_PARAMETERS


def test_rainmer_and_recderain_checkpoints_load_strictly_through_basicsr(tmp_path):
    """Rainmer's train_brn.py saves the bare state dict; RecDerain's train.py a DataParallel one (``module.``) that
    also holds the unused ``res_conv4_r`` / ``res_conv5_r`` (dropped on loading). Both: ``param_key_g: ~``."""
    state = _random_state(PUBLIC_BRN_KEYS)
    recderain = {f'module.{key}': value for key, value in {**state, **_random_state(RECDERAIN_EXTRA_KEYS)}.items()}
    for name, saved in (('rainmer.pth', state), ('net_latest.pth', recderain)):
        torch.save(saved, tmp_path / name)
        net = BRN()
        BaseModel.load_network(object.__new__(BaseModel), net, str(tmp_path / name), strict=True, param_key=None)
        assert all(torch.equal(net.state_dict()[key], value) for key, value in state.items())


def test_only_the_unused_rain_blocks_are_forgiven():
    state = BRN(channels=8).state_dict()
    with pytest.raises(RuntimeError, match='res_conv6_r'):
        BRN(channels=8).load_state_dict({**state, 'res_conv6_r.0.bias': torch.zeros(8)})
    with pytest.raises(RuntimeError, match='Missing key'):
        BRN(channels=8).load_state_dict({k: v for k, v in state.items() if not k.startswith('res_conv3_r.')})


@pytest.mark.parametrize('size', [(41, 37), (5, 3)])
def test_any_size_and_the_stage_outputs(size):
    torch.manual_seed(0)
    net = build_network(dict(TINY, recurrent_iter=3)).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
        image, stages, rain, rain_stages = net(x, return_stages=True)
    assert out.shape == rain.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(image, out) and stages[-1] is image and rain_stages[-1] is rain
    assert len(stages) == len(rain_stages) == 3


def test_the_first_rain_stage_does_not_depend_on_the_background_branch():
    """Stage 1's rain layer sees only [y, y] and zero states: background weights cannot change it."""
    torch.manual_seed(0)
    net = BRN(recurrent_iter=1, channels=8).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        before = net(x, return_stages=True)
        torch.nn.init.normal_(net.conv_i[0].weight)
        torch.nn.init.normal_(net.res_conv5[0].bias)
        after = net(x, return_stages=True)
    assert torch.equal(before.rain, after.rain) and not torch.equal(before.image, after.image)


def test_trains_and_tests_at_an_odd_size_through_basicsr(tmp_path):
    """The shipped options/brn_mixed.yml train section (its SSIM objective) on a tiny BRN, two iterations."""
    train_root = make_rain13k(str(tmp_path / 'train'), n=2, h=41, w=37)
    val_root = make_rain13k(str(tmp_path / 'val'), n=1, h=41, w=37, seed=50)
    shipped = json.loads(json.dumps(load_yaml(osp.join(REPO_ROOT, 'options', 'brn_mixed.yml'))))
    assert shipped['train']['pixel_opt'] == {'type': 'SSIMLoss', 'loss_weight': 1.0}
    val_set = dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k', root=val_root,
                   io_backend=dict(type='disk'))
    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True))
    opt = dict(
        name='brn', model_type=shipped['model_type'], scale=1, num_gpu=0, manual_seed=0, network_g=TINY,
        datasets=dict(
            train=dict(name='Rain13K', type='PairedImageDataset', dataroot_lq=osp.join(train_root, 'input'),
                       dataroot_gt=osp.join(train_root, 'target'), filename_tmpl='{}', io_backend=dict(type='disk'),
                       gt_size=32, use_hflip=True, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=2,
                       dataset_enlarge_ratio=1, prefetch_mode=None),
            val=val_set),
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(shipped['train'], total_iter=2, accumulate_grad_step=1),
        val=dict(val_freq=2, save_img=False, metrics=metrics),
        logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False))
    result = run_command(['basicsr', 'train', '-opt', write_yaml(str(tmp_path / 'train.yml'), opt)], cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    weights = tmp_path / 'experiments' / 'brn' / 'models' / 'net_g_latest.pth'
    assert weights.is_file()

    test_opt = dict(name='brn_test', model_type=opt['model_type'], scale=1, num_gpu=0, network_g=TINY,
                    datasets=dict(test_1=val_set), path=dict(pretrain_network_g=str(weights), strict_load_g=True),
                    val=dict(save_img=True, metrics=metrics))
    result = run_command(['basicsr', 'test', '-opt', write_yaml(str(tmp_path / 'test.yml'), test_opt)],
                         cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = tmp_path / 'results' / 'brn_test'
    assert json.loads((results / 'metrics.json').read_text())['Rain100L']['psnr'] > 5
    restored = sorted((results / 'visualization' / 'Rain100L').glob('*.png'))
    assert len(restored) == 1 and cv2.imread(str(restored[0])).shape == (41, 37, 3)
