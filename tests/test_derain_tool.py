"""``rainmer derain`` on tiny untrained networks: mirrored folders and formats at odd sizes, outputs equal to the
network's own forward, refusal to overwrite inputs, public Rainmer checkpoints, tiling and --compare."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import csv
import os
import os.path as osp
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
from public_rainmer_keys import public_rainmer_shapes
from toolbox_fixtures import run_command, write_yaml

from rainmer.archs.drsformer_arch import DRSformer
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.tools.convert_checkpoint import convert_reference_state_dict
from rainmer.tools.derain import to_image, to_tensor

TINY_DRS = dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1])
TINY_RAINMER = dict(dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2], prompt_size=32)
TINY_EDSR = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=1)  # local: 5 convs


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    smooth = np.stack([0.5 + 0.4 * np.sin(5 * xx + 3 * yy + p) for p in rng.uniform(0, 3, 3)], axis=-1)
    return (np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('derain'))
    photos = osp.join(root, 'photos')
    os.makedirs(osp.join(photos, 'nested', 'deeper'))
    cv2.imwrite(osp.join(photos, 'a.png'), _photo(241, 177, 0))
    cv2.imwrite(osp.join(photos, 'b.jpg'), _photo(163, 199, 1))
    cv2.imwrite(osp.join(photos, 'nested', 'c.png'), _photo(57, 43, 2))
    cv2.imwrite(osp.join(photos, 'nested', 'deeper', 'd.jpg'), _photo(37, 61, 3))
    with open(osp.join(photos, 'notes.txt'), 'w') as f:
        f.write('not an image')
    experiment = osp.join(root, 'experiments', 'tiny_drs')
    os.makedirs(osp.join(experiment, 'models'))
    torch.manual_seed(0)
    net = DRSformer(**{k: v for k, v in TINY_DRS.items() if k != 'type'}).eval()
    torch.save({'params': net.state_dict()}, osp.join(experiment, 'models', 'net_g_4.pth'))
    write_yaml(osp.join(experiment, 'tiny_drs.yml'),
               dict(name='tiny_drs', model_type='DerainModel', scale=1, num_gpu=0, network_g=dict(TINY_DRS)))
    return dict(root=root, photos=photos, experiment=experiment, net=net)


def _derain(args, cwd):
    return run_command(['rainmer', 'derain', *args], cwd=cwd)


def _forward(net, path, **kwargs):
    with torch.no_grad():
        return to_image(net(to_tensor(cv2.imread(path), torch.device('cpu')), **kwargs))


def test_folder_is_mirrored_with_formats_sizes_and_the_networks_output(workspace):
    out = osp.join(workspace['root'], 'out')
    result = _derain([workspace['photos'], '-r', '-o', out, '--weights', workspace['experiment'], '--compare',
                      '--device', 'cpu'], workspace['root'])
    assert result.returncode == 0, result.stderr
    assert 'derained 4 images' in result.stdout and out in result.stdout
    for name in ('a.png', 'b.jpg', 'nested/c.png', 'nested/deeper/d.jpg'):
        source, target = cv2.imread(osp.join(workspace['photos'], name)), cv2.imread(osp.join(out, name))
        assert target is not None and target.shape == source.shape, name
        compare = cv2.imread(osp.join(out, osp.splitext(name)[0] + '_compare.png'))
        assert compare.shape == (source.shape[0], 2 * source.shape[1], 3)
        np.testing.assert_array_equal(compare[:, :source.shape[1]], source)
    assert not osp.exists(osp.join(out, 'notes.txt'))
    for name in ('a.png', 'nested/c.png'):  # lossless outputs: exactly the network's own forward
        np.testing.assert_array_equal(cv2.imread(osp.join(out, name)),
                                      _forward(workspace['net'], osp.join(workspace['photos'], name)))


def test_refuses_to_overwrite_inputs(workspace):
    photos = workspace['photos']
    for args in ([photos, '-o', photos], [photos, '-r', '-o', osp.join(photos, 'nested', 'out')],
                 [osp.join(photos, '*.png'), '-o', photos]):
        result = _derain([*args, '--weights', workspace['experiment']], workspace['root'])
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: ') and photos in lines[0], result.stderr


def test_public_rainmer_checkpoint_restores_without_conversion(workspace, tmp_path):
    generator = torch.Generator().manual_seed(0)
    size = {k: v for k, v in TINY_RAINMER.items() if k != 'prompt_size'}
    public = OrderedDict((key, 0.05 * torch.randn(shape, generator=generator))
                         for key, shape in public_rainmer_shapes(**size).items())
    weights = str(tmp_path / 'rainmer_public.pth')
    torch.save({'state_dict': OrderedDict(('module.' + k, v) for k, v in public.items())}, weights)
    arch_opt = ['dim=8', 'base_dim=16', 'num_blocks=[1,1,1,1]', 'heads=[1,1,2,2]', 'prompt_size=32']
    image = osp.join(workspace['photos'], 'nested', 'c.png')
    out = str(tmp_path / 'out')
    result = _derain([image, '-o', out, '--weights', weights, '--arch', 'Rainmer', '--arch-opt', *arch_opt],
                     workspace['root'])
    assert result.returncode == 0, result.stderr
    net = Rainmer(**TINY_RAINMER, chained_topk=True).eval()
    net.load_state_dict(convert_reference_state_dict(public)[0], strict=True)
    np.testing.assert_array_equal(cv2.imread(osp.join(out, 'c.png')), _forward(net, image))

    result = _derain([image, '-o', out, '--weights', weights, '--arch', 'Rainmer', '--arch-opt', 'dim=16',
                      'base_dim=16', 'num_blocks=[1,1,1,1]', 'heads=[1,1,2,2]'], workspace['root'])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and 'Rainmer' in lines[0] and weights in lines[0], result.stderr


def test_tiles_equal_the_whole_image_for_a_local_network(workspace, tmp_path):
    torch.manual_seed(0)
    from basicsr.archs import build_network

    net = build_network(dict(TINY_EDSR)).eval()
    weights = str(tmp_path / 'edsr.pth')
    torch.save({'state_dict': {'module.' + k: v for k, v in net.state_dict().items()}}, weights)
    image = osp.join(workspace['photos'], 'a.png')
    arch = ['--arch', 'EDSR', '--weights', weights, '--arch-opt', 'num_in_ch=3', 'num_out_ch=3', 'num_feat=8',
            'num_block=1', 'upscale=1']
    gt_dir = str(tmp_path / 'gt')
    os.makedirs(gt_dir)
    cv2.imwrite(osp.join(gt_dir, 'a.png'), _photo(241, 177, 5))
    outputs = {}
    for tile in ('0', '64'):
        out = str(tmp_path / f'tile{tile}')
        gt = ['--gt', gt_dir] if tile == '0' else []
        result = _derain([image, '-o', out, '--tile', tile, '--overlap', '32', *arch, *gt], workspace['root'])
        assert result.returncode == 0, result.stderr
        outputs[tile] = cv2.imread(osp.join(out, 'a.png')).astype(int)
    assert outputs['0'].shape == (241, 177, 3)
    assert np.abs(outputs['0'] - outputs['64']).max() <= 1  # float summation order only
    np.testing.assert_array_equal(outputs['0'], _forward(net, image))

    from basicsr.metrics import calculate_psnr, calculate_ssim

    with open(tmp_path / 'tile0' / 'metrics.csv') as f:
        rows = {row['image']: row for row in csv.DictReader(f)}
    gt_image = cv2.imread(osp.join(gt_dir, 'a.png'))
    restored = outputs['0'].astype(np.uint8)
    assert float(rows['a.png']['psnr_y']) == pytest.approx(calculate_psnr(restored, gt_image, 0, test_y_channel=True),
                                                           abs=1e-4)
    assert float(rows['a.png']['ssim_y']) == pytest.approx(calculate_ssim(restored, gt_image, 0, test_y_channel=True),
                                                           abs=1e-4)
    assert set(rows['mean']) == {'image', 'psnr_y', 'ssim_y', 'psnr_rainmer', 'ssim_rainmer'}
