"""PReNet: the public parameter count, keys and checkpoints, stage outputs, and a run through `basicsr train|test`."""
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
from public_prenet_keys import PUBLIC_PRENET_KEYS, PUBLIC_PRENET_PARAMETERS
from toolbox_fixtures import REPO_ROOT, run_command, write_yaml

from rainmer.archs.prenet_arch import PReNet
from rainmer.options import load_yaml

TINY = dict(type='PReNet', recurrent_iter=2, channels=8)


def test_parameter_count_and_keys_are_the_public_ones():
    net = PReNet()
    assert sum(p.numel() for p in net.parameters()) == PUBLIC_PRENET_PARAMETERS
    assert [(key, tuple(value.shape)) for key, value in net.state_dict().items()] == PUBLIC_PRENET_KEYS


def test_a_released_checkpoint_loads_strictly_through_basicsr(tmp_path):
    """train_PReNet.py saves the bare ``state_dict()`` (net_latest.pth): ``param_key_g: ~``."""
    torch.manual_seed(0)
    state = {key: torch.randn(shape) for key, shape in PUBLIC_PRENET_KEYS}
    torch.save(state, tmp_path / 'net_latest.pth')
    net = PReNet()
    BaseModel.load_network(object.__new__(BaseModel), net, str(tmp_path / 'net_latest.pth'), strict=True,
                           param_key=None)
    assert all(torch.equal(net.state_dict()[key], value) for key, value in state.items())


@pytest.mark.parametrize('size', [(41, 37), (5, 3)])
def test_any_size_and_the_stage_outputs(size):
    torch.manual_seed(0)
    net = build_network(dict(TINY, recurrent_iter=3)).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
        image, stages = net(x, return_stages=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert len(stages) == 3 and stages[-1] is image and torch.equal(image, out)
    assert all(stage.shape == x.shape for stage in stages)


def test_one_stage_is_the_rainy_image_plus_the_lstm_residual():
    """Stage 1 sees [y, y] and zero LSTM states, so c = i * g and h = o * tanh(c)."""
    torch.manual_seed(0)
    net = PReNet(recurrent_iter=1, channels=8).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        features = torch.cat((net.conv0(torch.cat((x, x), 1)), torch.zeros(1, 8, 9, 11)), 1)
        cell = net.conv_i(features) * net.conv_g(features)
        h = net.conv_o(features) * torch.tanh(cell)
        for block in net.residual_blocks():
            h = torch.relu(block(h) + h)
        torch.testing.assert_close(net(x), net.conv(h) + x)


def test_trains_and_tests_at_an_odd_size_through_basicsr(tmp_path):
    """The shipped options/prenet_mixed.yml train section (its SSIM objective) on a tiny PReNet, two iterations."""
    train_root = make_rain13k(str(tmp_path / 'train'), n=2, h=41, w=37)
    val_root = make_rain13k(str(tmp_path / 'val'), n=1, h=41, w=37, seed=50)
    shipped = json.loads(json.dumps(load_yaml(osp.join(REPO_ROOT, 'options', 'prenet_mixed.yml'))))
    assert shipped['train']['pixel_opt'] == {'type': 'SSIMLoss', 'loss_weight': 1.0}
    val_set = dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k', root=val_root,
                   io_backend=dict(type='disk'))
    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True))
    opt = dict(
        name='prenet', model_type=shipped['model_type'], scale=1, num_gpu=0, manual_seed=0, network_g=TINY,
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
    weights = tmp_path / 'experiments' / 'prenet' / 'models' / 'net_g_latest.pth'
    assert weights.is_file()

    test_opt = dict(name='prenet_test', model_type=opt['model_type'], scale=1, num_gpu=0, network_g=TINY,
                    datasets=dict(test_1=val_set), path=dict(pretrain_network_g=str(weights), strict_load_g=True),
                    val=dict(save_img=True, metrics=metrics))
    result = run_command(['basicsr', 'test', '-opt', write_yaml(str(tmp_path / 'test.yml'), test_opt)],
                         cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = tmp_path / 'results' / 'prenet_test'
    assert json.loads((results / 'metrics.json').read_text())['Rain100L']['psnr'] > 5
    restored = sorted((results / 'visualization' / 'Rain100L').glob('*.png'))
    assert len(restored) == 1 and cv2.imread(str(restored[0])).shape == (41, 37, 3)
