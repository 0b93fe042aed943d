"""Data pipeline speed: MixedRainDataset training items per second from disk (JPEG folders) and from LMDB.

Generates ``--images`` rainy/clean pairs of ``--height`` x ``--width`` (Rain13K layout, JPEG like Rain13K) in a
temporary folder, builds the LMDB pair with ``rainmer data prepare``'s code, then times the paper's training items
(random 128 crop + the whole image resized to 128, flips) through a DataLoader with ``--workers`` worker processes
and batches of ``--batch``. With ``--step-seconds`` (a training step's time for that batch, from
``scripts/benchmark.py``) it prints how many times faster the loader delivers than the model consumes.
It also times the start-up check of every pair (``check_data: header`` and ``full``) on both backends.

Example: ``python scripts/benchmark_data.py --images 64 --workers 0 2 --step-seconds 9.5``.
"""
import argparse
import os
import os.path as osp
import shutil
import tempfile
import time

import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from rainmer.data.mixed_rain_dataset import MixedRainDataset
from rainmer.data.pair_check import check_all_pairs
from rainmer.data.pair_source import PairSource
from rainmer.data.prepare import prepare_layout


def write_pairs(root: str, count: int, height: int, width: int) -> str:
    """``root/input/*.jpg`` and ``root/target/*.jpg``: smooth colour images and streaked copies."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for folder in ('input', 'target'):
        os.makedirs(osp.join(root, folder), exist_ok=True)
    for index in range(count):
        clean = np.stack([np.sin(xx / width * rng.uniform(1, 8) + rng.uniform(0, 6)) *
                          np.cos(yy / height * rng.uniform(1, 8)) for _ in range(3)], -1) * 90 + 128
        clean = (clean + rng.normal(0, 8, clean.shape)).clip(0, 255).astype(np.uint8)
        streaks = cv2.dilate((rng.random((height, width)) < 0.01).astype(np.uint8), np.ones((15, 1), np.uint8))
        rainy = (clean.astype(np.int32) + 80 * streaks[..., None]).clip(0, 255).astype(np.uint8)
        name = f'{index:04d}.jpg'
        cv2.imwrite(osp.join(root, 'target', name), clean, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(osp.join(root, 'input', name), rainy, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return root


def dataset(root: str, backend: str, crop: int, resize: int) -> MixedRainDataset:
    """The paper's training items from the JPEG folder (disk) or from the prepared LMDB pair."""
    layout = 'lmdb' if backend == 'lmdb' else 'rain13k'
    source = dict(name='bench', type=layout, root=root, io_backend=dict(type=backend))
    return MixedRainDataset(dict(name='bench', phase='train', sources=[source], gt_size=crop, resize_size=resize,
                                 use_hflip=True, use_rot=False, small_images='pad'))


def items_per_second(data: MixedRainDataset, workers: int, batch: int, epochs: int) -> float:
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    next(iter(loader))  # worker start-up and LMDB opening are not part of the steady rate
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for item in loader:
            count += item['lq'].shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', type=int, default=64)
    parser.add_argument('--height', type=int, default=384, help='Rain13K images are about 300-500 px a side')
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--crop', type=int, default=128)
    parser.add_argument('--resize', type=int, default=128)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--workers', type=int, nargs='+', default=[0])
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--step-seconds', type=float, default=None,
                        help="the model's training-step time for --batch images (scripts/benchmark.py)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix='rainmer_data_bench_')
    os.environ['RAINMER_CACHE_DIR'] = osp.join(work, 'cache')  # each dataset below is checked once, not cached away
    try:
        root = write_pairs(osp.join(work, 'Rain13K', 'train'), args.images, args.height, args.width)
        prepare_layout('rain13k', root=root, out_dir=osp.join(work, 'lmdb'), progress=False, log=lambda _: None)
        lmdb_root = osp.join(work, 'lmdb')
        consumed = args.batch / args.step_seconds if args.step_seconds else None
        print(f'{args.images} pairs of {args.width}x{args.height} JPEG; crop {args.crop}, resize {args.resize}, '
              f'batch {args.batch}' + (f'; model consumes {consumed:.2f} images/s' if consumed else ''))
        print('| backend | workers | images/s | x model consumption |')
        print('|---|---|---|---|')
        for workers in args.workers:
            for backend in ('disk', 'lmdb'):
                data = dataset(lmdb_root if backend == 'lmdb' else root, backend, args.crop, args.resize)
                rate = items_per_second(data, workers, args.batch, args.epochs)
                ratio = f'{rate / consumed:.1f}x' if consumed else ''
                print(f'| {backend} | {workers} | {rate:.1f} | {ratio} |')
        print('\n| start-up check | backend | pairs/s |\n|---|---|---|')
        for mode in ('header', 'full'):
            for backend in ('disk', 'lmdb'):
                layout = 'lmdb' if backend == 'lmdb' else 'rain13k'
                source = PairSource(dict(name='bench', type=layout, root=lmdb_root if backend == 'lmdb' else root,
                                         io_backend=dict(type=backend)))
                start = time.perf_counter()
                check_all_pairs(source, mode)
                print(f'| {mode} | {backend} | {len(source) / (time.perf_counter() - start):.0f} |')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
