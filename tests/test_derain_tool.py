"""``rainmer derain`` on tiny untrained networks: mirrored folders and formats at odd sizes, outputs equal to the
network's own forward, refusal to overwrite inputs, public Rainmer checkpoints, tiling (exact for a local network,
within a documented tolerance for Rainmer), --compare, videos, and --gt metrics equal to ``basicsr test``'s."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import csv
import json
import os
import os.path as osp
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from public_rainmer_keys import public_rainmer_shapes
from toolbox_fixtures import run_command, write_yaml

from rainmer.archs.drsformer_arch import DRSformer
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.errors import OptionError
from rainmer.tools import derain
from rainmer.tools.convert_checkpoint import convert_reference_state_dict
from rainmer.tools.derain import restore, to_image, to_tensor
from rainmer.tools.derain_video import VideoSink

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


def _forward(net, image, **kwargs):
    """The network's own output for an image (a path or a BGR array)."""
    image = cv2.imread(image) if isinstance(image, str) else image
    with torch.no_grad():
        return to_image(net(to_tensor(image, torch.device('cpu')), **kwargs))


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


def _write_video(path: str, size: tuple[int, int], fps: float, frames: int = 10, api: int = cv2.CAP_ANY) -> None:
    fourcc = 'MJPG' if path.endswith('.avi') else 'mp4v'
    writer = cv2.VideoWriter(path, api, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), path
    for i in range(frames):
        writer.write(_photo(size[1], size[0], 10 + i))
    writer.release()


def _video_props(path: str) -> tuple[int, int, int, float]:
    capture = cv2.VideoCapture(path)
    count = 0
    while capture.read()[0]:
        count += 1
    props = (count, int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
             capture.get(cv2.CAP_PROP_FPS))
    capture.release()
    return props


def test_videos_keep_frame_count_size_and_rate(workspace, tmp_path):
    videos = tmp_path / 'videos'
    videos.mkdir()
    # OpenCV's FFmpeg writer stores even sizes only: the odd size as MJPG .avi (OpenCV's own writer, whole fps)
    _write_video(str(videos / 'odd.avi'), (163, 121), 12, api=cv2.CAP_OPENCV_MJPEG)
    _write_video(str(videos / 'even.mp4'), (164, 122), 12.5)
    torch.manual_seed(0)
    from basicsr.archs import build_network

    net = build_network(dict(TINY_EDSR)).eval()  # a network whose output is far from its input
    weights = str(tmp_path / 'edsr.pth')
    torch.save({'params': net.state_dict()}, weights)
    out = str(tmp_path / 'out')
    result = _derain([str(videos), '-o', out, '--compare', '--device', 'cpu', '--arch', 'EDSR', '--weights', weights,
                      '--arch-opt', 'num_in_ch=3', 'num_out_ch=3', 'num_feat=8', 'num_block=1', 'upscale=1'],
                     workspace['root'])
    assert result.returncode == 0, result.stderr
    assert 'derained 2 videos (20 frames)' in result.stdout and '20/20' in result.stderr
    for name, (width, height), fps in (('odd.avi', (163, 121), 12), ('even.mp4', (164, 122), 12.5)):
        assert _video_props(osp.join(out, name)) == pytest.approx((10, width, height, fps)), name
        compare = osp.join(out, name.replace('.', '_compare.'))
        assert _video_props(compare) == pytest.approx((10, 2 * width, height, fps)), name
    # the frames are the network's output (up to MJPG's loss)
    frame = cv2.VideoCapture(str(videos / 'odd.avi')).read()[1]
    expected = _forward(net, frame).astype(int)
    restored = cv2.VideoCapture(osp.join(out, 'odd.avi')).read()[1].astype(int)
    assert np.abs(restored - expected).mean() < 6  # measured 3.0 (MJPG)
    assert np.abs(frame - expected).mean() > 30  # measured 60.7: the check tells output from input

    jobs = derain.collect_inputs([str(videos)], False)
    with pytest.raises(derain.DerainError, match='would overwrite the input'):
        derain.check_outputs(jobs, [str(videos)], str(videos), False, False, False)
    with pytest.raises(OptionError, match='--gt measures images'):
        derain.main([str(videos / 'odd.avi'), '-o', out, '--gt', str(videos), '--weights', workspace['experiment']])


def test_odd_sizes_the_writers_cannot_keep_come_with_a_note(tmp_path):
    for name, fps, expected, note in (('odd.mp4', 25, (3, 162, 120, 25), '162x120'),
                                      ('odd.avi', 29.97, (3, 163, 121, 30), '29.97 fps written as 30 fps')):
        notes = []
        path = str(tmp_path / name)
        with VideoSink(path, fps, notes.append) as sink:
            for i in range(3):
                sink.write(_photo(121, 163, i))
        assert len(notes) == 1 and note in notes[0] and path in notes[0], notes
        assert _video_props(path) == pytest.approx(expected), name


# Rainmer's tiles differ from its whole-image output (docs/derain.md): measured on this image with random weights
# (seed 0, tile 96, overlap 32): PSNR 36.1 dB, mean |diff| 2.9 of 255. Asserted with margin:
TILED_RAINMER_MIN_PSNR = 30.0
TILED_RAINMER_MAX_MEAN_DIFF = 6.0


def test_tiled_rainmer_stays_near_its_whole_image_output_with_whole_image_prompts():
    torch.manual_seed(0)
    net = Rainmer(**TINY_RAINMER).eval()
    lq = to_tensor(_photo(241, 177, 0), torch.device('cpu'))
    calls = []
    net.register_forward_pre_hook(lambda module, args, kwargs: calls.append((args[0].shape, kwargs)),
                                  with_kwargs=True)
    with torch.no_grad():
        whole = to_image(restore(net, {'type': 'Rainmer'}, lq, 0, 32)).astype(int)
        tiled = to_image(restore(net, {'type': 'Rainmer'}, lq, 96, 32)).astype(int)
    assert len(calls) == 1 + 4 * 3 and calls[0][0][-2:] == (241, 177) and not calls[0][1]
    prompt_image = F.interpolate(lq, size=(32, 32), mode='bilinear', align_corners=False)
    torch.testing.assert_close(net.resize_query(lq), prompt_image, rtol=0, atol=0)  # the whole-image forward's
    for shape, kwargs in calls[1:]:
        assert max(shape[-2:]) <= 96
        torch.testing.assert_close(kwargs['lq_resize'], prompt_image, rtol=0, atol=0)
    mse = np.mean(((whole - tiled) / 255.0) ** 2)
    assert 10 * np.log10(1 / mse) >= TILED_RAINMER_MIN_PSNR
    assert np.abs(whole - tiled).mean() <= TILED_RAINMER_MAX_MEAN_DIFF


def test_gt_metrics_equal_basicsr_test(tmp_path):
    root = tmp_path / 'Rain13K_test'
    for i, (h, w) in enumerate(((241, 177), (163, 199))):
        clean = _photo(h, w, 20 + i)
        rainy = np.clip(clean.astype(int) + np.random.default_rng(i).normal(0, 12, clean.shape), 0, 255)
        (root / 'target').mkdir(parents=True, exist_ok=True)
        (root / 'input').mkdir(exist_ok=True)
        cv2.imwrite(str(root / 'target' / f'{i:03d}.png'), clean)
        cv2.imwrite(str(root / 'input' / f'{i:03d}.png'), rainy.round().astype(np.uint8))
    torch.manual_seed(0)
    weights = str(tmp_path / 'net_g.pth')
    torch.save({'params': Rainmer(**TINY_RAINMER).state_dict()}, weights)
    metrics = dict(psnr=dict(type='calculate_psnr', crop_border=0, test_y_channel=True),
                   ssim=dict(type='calculate_ssim', crop_border=0, test_y_channel=True),
                   psnr_paper=dict(type='calculate_psnr_rainmer'), ssim_paper=dict(type='calculate_ssim_rainmer'))
    opt = dict(name='tiny_rainmer_test', model_type='RainmerModel', scale=1, num_gpu=0, manual_seed=100,
               datasets=dict(test_1=dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k',
                                         root=str(root), io_backend=dict(type='disk'))),
               network_g=dict(type='Rainmer', **TINY_RAINMER),
               path=dict(pretrain_network_g=weights, param_key_g='params', strict_load_g=True),
               val=dict(save_img=False, metrics=metrics))
    yml = write_yaml(str(tmp_path / 'test.yml'), opt)
    result = run_command(['basicsr', 'test', '-opt', yml], cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = json.loads((tmp_path / 'results' / 'tiny_rainmer_test' / 'metrics.json').read_text())['Rain100L']

    out = str(tmp_path / 'out')  # in this process (one thread, as the subprocess): saves a start-up
    assert derain.main([str(root / 'input'), '-o', out, '--opt', yml, '--gt', str(root / 'target'), '--device',
                        'cpu']) == 0
    with open(osp.join(out, 'metrics.csv')) as f:
        mean = {row['image']: row for row in csv.DictReader(f)}['mean']
    for ours, theirs in (('psnr_y', 'psnr'), ('ssim_y', 'ssim'), ('psnr_rainmer', 'psnr_paper'),
                         ('ssim_rainmer', 'ssim_paper')):
        assert float(mean[ours]) == pytest.approx(expected[theirs], abs=1e-6), ours  # metrics.csv: 6 decimals
