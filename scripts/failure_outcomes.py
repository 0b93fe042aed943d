"""Re-run the failure table of docs/failures.md: what a user sees for each mistake, through the real commands.

    python scripts/failure_outcomes.py [--out /tmp/failure_outcomes]

Each case builds the public Rain13K layout (JPEG train pairs at 241x177, a PNG Rain100L test set at 163x199) in
its own folder, spoils one thing, runs ``basicsr train|test`` with a tiny network in a subprocess and reports the
exit status and the last line on stderr (or, for a run that handles the problem, the log line that says so).
Prints a Markdown table; takes a few minutes on 2 CPU cores.
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
from collections.abc import Callable

import cv2
import numpy as np
import torch
import yaml

BIN = osp.dirname(sys.executable)
TINY = dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1])
TINY_RAINMER = dict(type='Rainmer', dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1],
                    ffn_expansion_factor=2.0, prompt_size=32)


def _image(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.clip(np.stack([0.5 + 0.4 * np.sin(5 * xx + 3 * yy + p) for p in rng.uniform(0, 3, 3)], -1) * 255,
                   0, 255).astype(np.uint8)


def write_public_data(root: str) -> None:
    """``datasets/train/Rain13K/{input,target}/*.jpg`` (6 pairs) and ``datasets/test/Rain100L`` (2 PNG pairs)."""
    for folder, count, ext, (h, w) in (('train/Rain13K', 6, '.jpg', (177, 241)), ('test/Rain100L', 2, '.png',
                                                                                    (199, 163))):
        for i in range(count):
            clean = _image(i, h, w)
            rainy = np.clip(clean.astype(int) + np.random.default_rng(i).integers(0, 60, clean.shape), 0, 255)
            for sub, img in (('target', clean), ('input', rainy.astype(np.uint8))):
                os.makedirs(osp.join(root, 'datasets', folder, sub), exist_ok=True)
                cv2.imwrite(osp.join(root, 'datasets', folder, sub, f'{i}{ext}'), img)


def train_options(name: str, **changes) -> dict:
    source = dict(name='Rain13K', type='rain13k', root='datasets/train/Rain13K', io_backend=dict(type='disk'))
    opt = dict(
        name=name, model_type='DerainModel', scale=1, num_gpu=0, manual_seed=0,
        datasets=dict(
            train=dict(name='Rain13K', type='MixedRainDataset', sources=[source], gt_size=32, resize_size=32,
                       use_hflip=True, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=2,
                       dataset_enlarge_ratio=1, prefetch_mode=None),
            val=dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k', root='datasets/test/Rain100L')),
        network_g=dict(TINY), path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(optim_g=dict(type='Adam', lr=1e-3), scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                   total_iter=4, warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0)),
        val=dict(val_freq=4, save_img=False, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0))),
        logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False))
    for path, value in changes.items():
        node = opt
        keys = path.split('.')
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return opt


def test_options(name: str, weights: str, **dataset) -> dict:
    test_set = dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k', root='datasets/test/Rain100L')
    test_set.update(dataset)
    return dict(name=name, model_type='DerainModel', scale=1, num_gpu=0, datasets=dict(test_1=test_set),
                network_g=dict(TINY), path=dict(pretrain_network_g=weights, strict_load_g=True),
                val=dict(save_img=False, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=0))))


def run(root: str, command: str, opt: dict, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = osp.join(root, f"{opt['name']}.yml")
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    full_env = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    return subprocess.run([osp.join(BIN, 'basicsr'), command, '-opt', path, *flags], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=600)


def outcome(result: subprocess.CompletedProcess, handled_marker: str | None = None) -> str:
    """The last stderr line (an error), or the log line with ``handled_marker``; 'traceback!' if there was one."""
    output = result.stdout + result.stderr
    if 'Traceback' in result.stderr:
        return f'{result.returncode} | traceback! ' + result.stderr.strip().splitlines()[-1]
    if handled_marker:
        lines = [line.split(': ', 1)[-1] for line in output.splitlines() if handled_marker in line]
        if lines:
            return f'{result.returncode} | {lines[0]}'
    lines = result.stderr.strip().splitlines()
    return f'{result.returncode} | {lines[-1] if lines else "(nothing)"}'


def _spoil(path: str, kind: str) -> None:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if kind == 'missing':
        os.remove(path)
    elif kind == 'size':
        cv2.imwrite(path, img[:-3])
    elif kind == 'gray':
        cv2.imwrite(path, img[..., 0])
    elif kind == '16bit':
        cv2.imwrite(osp.splitext(path)[0] + '.png', img.astype(np.uint16) * 257)
        os.remove(path) if not path.endswith('.png') else None
    elif kind == 'rgba':
        cv2.imwrite(osp.splitext(path)[0] + '.png', np.dstack([img, img[..., :1]]))
        os.remove(path) if not path.endswith('.png') else None
    elif kind == 'cut':
        content = open(path, 'rb').read()
        open(path, 'wb').write(content[:len(content) // 2])


def cases() -> list[tuple[str, Callable[[str], str]]]:
    """(what the user did, function of a prepared folder returning the outcome)."""
    rows = []

    def data_case(kind: str, command: str, folder: str = 'input'):
        def case(root: str) -> str:
            if command == 'train':
                _spoil(osp.join(root, f'datasets/train/Rain13K/{folder}/3.jpg'), kind)
                return outcome(run(root, 'train', train_options('bad_data')), handled_marker='without a rainy')
            weights = _tiny_weights(root)
            _spoil(osp.join(root, 'datasets/test/Rain100L/target/1.png'), kind)
            return outcome(run(root, 'test', test_options('bad_data_test', weights)))
        return case

    rows.append(('missing clean partner (basicsr train)', data_case('missing', 'train', 'target')))
    rows.append(('clean image without its rainy partner (basicsr train)', data_case('missing', 'train')))
    for kind, label in (('size', 'size mismatch'), ('gray', 'grayscale image'),
                        ('16bit', '16-bit image'), ('rgba', 'RGBA image'), ('cut', 'truncated JPEG/PNG')):
        rows.append((f'{label} (basicsr train)', data_case(kind, 'train')))
    rows.append(('truncated PNG (basicsr test)', data_case('cut', 'test')))
    rows.append(('16-bit ground truth (basicsr test)', data_case('16bit', 'test')))
    rows += [
        ('one bad image among good ones, `skip_bad: true`', _skip_bad),
        ('corrupt LMDB value', lambda root: _lmdb_case(root, 'corrupt')),
        ('key in meta_info but not in the LMDB', lambda root: _lmdb_case(root, 'missing')),
        ('missing dataset folder', lambda root: outcome(run(root, 'train', train_options(
            'no_folder', **{'datasets.train.sources': [dict(name='X', type='rain13k', root='datasets/nope')]})))),
        ('empty dataset folder', _empty_folder),
        ('`lr: 1e6` (the loss becomes NaN)', _diverge),
        ('`lr: abc`', lambda root: outcome(run(root, 'train', train_options('lr_abc', **{'train.optim_g.lr': 'abc'})))),
        ('`--force_yml train:total_iter=abc`', lambda root: outcome(run(
            root, 'train', train_options('force_abc'), '--force_yml', 'train:total_iter=abc'))),
        ('`pretrain_network_g` of another width', _other_width),
        ('`pretrain_network_g` of another architecture', _other_arch),
        ('truncated `.pth` as `pretrain_network_g`', _truncated_pretrain),
        ('truncated `net_g_N.pth` next to a readable `N.state`, `--auto_resume`', _fallback),
        ('`--launcher pytorch` without torchrun', lambda root: outcome(run(
            root, 'train', train_options('launcher'), '--launcher', 'pytorch'))),
        ('`basicsr test` without ground truth, `val.metrics` left in', _no_ground_truth),
        ('`resize_size` different from `prompt_size`', _resize_size),
    ]
    return rows


def _tiny_weights(root: str, network: dict | None = None, name: str = 'tiny.pth') -> str:
    import rainmer  # noqa: F401  (before basicsr: the compat layer; registers the archs)

    # isort: split
    from basicsr.archs import build_network

    path = osp.join(root, name)
    torch.save({'params': build_network(dict(network or TINY)).state_dict()}, path)
    return path


def _skip_bad(root: str) -> str:
    _spoil(osp.join(root, 'datasets/train/Rain13K/input/3.jpg'), 'cut')
    opt = train_options('skip_bad', **{'datasets.train.skip_bad': True})
    return outcome(run(root, 'train', opt), handled_marker='leaving out')


def _lmdb_case(root: str, damage: str) -> str:
    import lmdb

    prepared = subprocess.run([osp.join(BIN, 'rainmer'), 'data', 'prepare', 'rain13k', 'datasets/train/Rain13K'],
                              cwd=root, capture_output=True, text=True)
    if prepared.returncode:
        return 'prepare failed: ' + prepared.stderr.strip().splitlines()[-1]
    env = lmdb.open(osp.join(root, 'datasets/train/Rain13K_lmdb', 'lq.lmdb' if damage == 'corrupt' else 'gt.lmdb'),
                    map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.put(b'2', b'\x89PNG\r\n\x1a\ncut') if damage == 'corrupt' else txn.delete(b'2')
    env.close()
    source = dict(name='Rain13K', type='rain13k', root='datasets/train/Rain13K', io_backend=dict(type='lmdb'))
    return outcome(run(root, 'train', train_options('lmdb', **{'datasets.train.sources': [source]})))


def _empty_folder(root: str) -> str:
    os.makedirs(osp.join(root, 'datasets/empty/input'))
    os.makedirs(osp.join(root, 'datasets/empty/target'))
    source = dict(name='X', type='rain13k', root='datasets/empty')
    return outcome(run(root, 'train', train_options('empty', **{'datasets.train.sources': [source]})))


def _diverge(root: str) -> str:
    opt = train_options('diverge', **{'train.optim_g.lr': 1e6, 'train.total_iter': 40,
                                      'logger.save_checkpoint_freq': 1})
    line = outcome(run(root, 'train', opt))
    poisoned = 0
    for name in os.listdir(osp.join(root, 'experiments/diverge/models')):
        state = torch.load(osp.join(root, 'experiments/diverge/models', name), weights_only=True)['params']
        poisoned += any(not torch.isfinite(t).all() for t in state.values())
    return f'{line} ({poisoned} non-finite checkpoints written)'


def _other_width(root: str) -> str:
    weights = _tiny_weights(root, dict(TINY, dim=16), 'dim16.pth')
    return outcome(run(root, 'test', test_options('width', weights)))


def _other_arch(root: str) -> str:
    weights = _tiny_weights(root, dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1,
                                       num_grow_ch=4, scale=1), 'rrdb.pth')
    return outcome(run(root, 'test', test_options('arch', weights)))


def _truncated_pretrain(root: str) -> str:
    weights = _tiny_weights(root)
    content = open(weights, 'rb').read()
    open(weights, 'wb').write(content[:len(content) // 3])
    return outcome(run(root, 'test', test_options('cut_pth', weights)))


def _fallback(root: str) -> str:
    opt = train_options('fallback')
    run(root, 'train', opt)
    newest = osp.join(root, 'experiments/fallback/models/net_g_4.pth')
    content = open(newest, 'rb').read()
    open(newest, 'wb').write(content[:len(content) // 3])
    open(newest + '.partial-999999', 'wb').write(b'half')
    opt['train']['total_iter'] = 6
    result = run(root, 'train', opt, '--auto_resume')
    logs = [osp.join(root, 'experiments/fallback', n) for n in os.listdir(osp.join(root, 'experiments/fallback'))
            if n.endswith('.log')]
    newest_log = open(max(logs, key=os.path.getmtime)).read()
    said = outcome(result, handled_marker='falls back')
    return (f'{said}; the log continues to iter 6: {"iter:       6," in newest_log}; stale partial removed: '
            f'{not osp.exists(newest + ".partial-999999")}')


def _no_ground_truth(root: str) -> str:
    weights = _tiny_weights(root)
    opt = test_options('no_gt', weights)
    opt['datasets']['test_1'] = dict(name='photos', type='SingleImageDataset',
                                     dataroot_lq='datasets/test/Rain100L/input', io_backend=dict(type='disk'))
    return outcome(run(root, 'test', opt))


def _resize_size(root: str) -> str:
    opt = train_options('resize', **{'model_type': 'RainmerModel', 'network_g': dict(TINY_RAINMER),
                                     'datasets.train.resize_size': 48})
    opt['train'].update(chromatic_opt=dict(type='InfoNCELoss', loss_weight=0.1),
                        degradation_detail_opt=dict(type='InfoNCELoss', loss_weight=0.1))
    return outcome(run(root, 'train', opt))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='failure_outcomes', help='work folder (replaced)')
    parser.add_argument('--only', help='run only the cases whose label contains this text')
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    print('| what the user did | exit | what the user sees |\n|---|---|---|')
    for i, (label, case) in enumerate(cases()):
        if args.only and args.only not in label:
            continue
        root = osp.abspath(osp.join(args.out, f'case{i:02d}'))
        write_public_data(root)
        env_before = dict(os.environ)
        said = case(root)
        os.environ.clear()
        os.environ.update(env_before)
        print(f'| {label} | {said} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
