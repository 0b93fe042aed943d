"""Restormer: public parameter count and state-dict layout, any input size, and a run of `basicsr train|test`."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import json
import os.path as osp

import cv2
import pytest
import torch
import yaml
from basicsr.archs import build_network
from data_fixtures import make_rain13k
from public_restormer_keys import PUBLIC_RESTORMER_PARAMETERS, public_restormer_shapes
from toolbox_fixtures import run_command, write_yaml

from rainmer.archs.fast import to_fast, to_plain
from rainmer.archs.restormer_arch import Restormer
from rainmer.models.derain_model import size_multiple

# the network_g block of the public Deraining/Options/Deraining_Restormer.yml
PUBLIC_NETWORK_G = """
network_g:
  type: Restormer
  inp_channels: 3
  out_channels: 3
  dim: 48
  num_blocks: [4,6,6,8]
  num_refinement_blocks: 4
  heads: [1,2,4,8]
  ffn_expansion_factor: 2.66
  bias: False
  LayerNorm_type: WithBias
  dual_pixel_task: False
"""
TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2])


def layout(network: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in network.state_dict().items()]


@pytest.fixture(scope='module')
def default_network():
    return Restormer(fast=False)


def test_parameter_count_and_layout_equal_the_public_code(default_network):
    assert sum(p.numel() for p in default_network.parameters()) == PUBLIC_RESTORMER_PARAMETERS
    assert layout(default_network) == list(public_restormer_shapes().items())  # names, shapes and order


@pytest.mark.parametrize('options', [
    dict(TINY, bias=True, LayerNorm_type='BiasFree'),
    dict(TINY, inp_channels=6, dual_pixel_task=True, num_refinement_blocks=2),
], ids=['bias-biasfree', 'dual-pixel'])
def test_variant_layouts_equal_the_public_code(options):
    assert layout(Restormer(**options)) == list(public_restormer_shapes(**options).items())


def test_public_option_block_builds_unchanged():
    network = build_network(yaml.safe_load(PUBLIC_NETWORK_G)['network_g'])
    assert isinstance(network, Restormer)
    assert sum(p.numel() for p in network.parameters()) == PUBLIC_RESTORMER_PARAMETERS


def test_public_format_checkpoint_loads_strictly(tmp_path, default_network):
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=generator) for key, shape in public_restormer_shapes().items()}
    path = tmp_path / 'deraining.pth'
    torch.save({'params': state}, path)  # the layout of the released deraining.pth
    default_network.load_state_dict(torch.load(path, weights_only=True)['params'], strict=True)
    loaded = default_network.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_any_size_is_padded_to_a_multiple_of_8():
    network = Restormer(**TINY, fast=False).eval()
    assert network.size_multiple == 8 and size_multiple(network) == 8
    x = torch.rand(2, 3, 37, 45)
    with torch.no_grad():
        out = network(x)
        padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode='reflect')
        torch.testing.assert_close(out, network.restore(padded)[..., :37, :45], rtol=0, atol=0)
        to_fast(network)
        torch.testing.assert_close(network(x), out, rtol=0, atol=1e-5)
        to_plain(network)
        torch.testing.assert_close(network(x), out, rtol=0, atol=0)
    assert out.shape == x.shape


def test_trains_and_tests_at_odd_sizes_through_basicsr(tmp_path):
    """Two iterations of DerainModel with the configs' L1 loss, then `basicsr test` on 41x37 images."""
    train_root = make_rain13k(str(tmp_path / 'train'), n=2, h=45, w=53)
    val_root = make_rain13k(str(tmp_path / 'val'), n=1, h=37, w=41, seed=50)
    network_g = dict(type='Restormer', **TINY)
    val_set = dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k', root=val_root,
                   io_backend=dict(type='disk'))
    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True))
    opt = dict(
        name='restormer_tiny', model_type='DerainModel', scale=1, num_gpu=0, manual_seed=0,
        datasets=dict(train=dict(name='Rain13K', type='PairedImageDataset', dataroot_lq=osp.join(train_root, 'input'),
                                 dataroot_gt=osp.join(train_root, 'target'), filename_tmpl='{}',
                                 io_backend=dict(type='disk'), gt_size=32, use_hflip=True, use_rot=False,
                                 num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1,
                                 prefetch_mode=None),
                      val=val_set),
        network_g=network_g, path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(optim_g=dict(type='AdamW', lr=1e-3, weight_decay=0, betas=[0.9, 0.999]),
                   scheduler=dict(type='CosineAnnealingRestartCyclicLR', periods=[1, 1], restart_weights=[1, 1],
                                  eta_mins=[1e-3, 1e-6]),
                   total_iter=2, warmup_iter=-1, grad_clip_norm=0.01,
                   pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
        val=dict(val_freq=2, save_img=False, metrics=metrics),
        logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False))
    result = run_command(['basicsr', 'train', '-opt', write_yaml(str(tmp_path / 'train.yml'), opt)], cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    weights = tmp_path / 'experiments' / 'restormer_tiny' / 'models' / 'net_g_latest.pth'
    assert weights.is_file()

    test_opt = dict(name='restormer_tiny_test', model_type='DerainModel', scale=1, num_gpu=0, manual_seed=0,
                    datasets=dict(test_1=val_set), network_g=network_g,
                    path=dict(pretrain_network_g=str(weights), strict_load_g=True),
                    val=dict(save_img=True, metrics=metrics))
    result = run_command(['basicsr', 'test', '-opt', write_yaml(str(tmp_path / 'test.yml'), test_opt)],
                         cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = tmp_path / 'results' / 'restormer_tiny_test'
    assert json.loads((results / 'metrics.json').read_text())['Rain100L']['psnr'] > 5
    restored = sorted((results / 'visualization' / 'Rain100L').glob('*.png'))
    assert len(restored) == 1 and cv2.imread(str(restored[0])).shape == (37, 41, 3)
