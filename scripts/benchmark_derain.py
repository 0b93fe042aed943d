"""Throughput and peak memory of ``rainmer derain`` (the real command) with the paper-size Rainmer.

The network is ``Rainmer()`` (the registered arch's defaults: the paper's size) with random weights (seed 0), saved
as a checkpoint; the images are generated (smooth colour fields with noise). Each case is one run of

    rainmer derain INPUTS -o OUT --arch Rainmer --weights rainmer_paper.pth --device cpu [--tile T --overlap O]

in a subprocess with ``OMP_NUM_THREADS=--threads``. Cases (``--cases``):

* ``startup``: one 64x64 image: what the process holds without large activations (libraries, weights);
* ``720p``: a folder of ``--n`` 1280x720 images (tiled by default: the longer side is above 1024);
* ``4k``: one 3840x2160 image, tiled (``--tile``/``--overlap``; the command's default is 512/32).

Peak memory is the subprocess's peak resident set (``ru_maxrss`` from ``os.wait4``: everything, libraries and
weights included). Throughput comes from the command's summary line (restoration only: model loading excluded);
the wall time is the whole command. ``--time-limit S`` stops a case after S seconds: its peak so far is reported
(every tile has the same size, so the tile activations peak at the first tile) and its time is estimated from the
seconds per tile pixel of the cases that finished, marked as an estimate.

Example: ``python scripts/benchmark_derain.py --cases startup 720p 4k --n 2 --threads 2 --time-limit 300``.
"""
import argparse
import os
import os.path as osp
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import cv2
import numpy as np
import torch

from rainmer.archs.rainmer_arch import Rainmer
from rainmer.models.tiling import tile_starts
from rainmer.tools.derain import AUTO_TILE_ABOVE

CASES = {'startup': (64, 64), '720p': (720, 1280), '4k': (2160, 3840)}  # (height, width)
DEFAULT_TILE = 512  # the command's tile size above AUTO_TILE_ABOVE


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A BGR uint8 test photograph: smooth colour waves with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    waves = [0.5 + 0.4 * np.sin(5 * xx + 3 * yy + phase) for phase in rng.uniform(0, 3, 3)]
    image = np.stack(waves, axis=-1) + rng.normal(0, 0.05, (height, width, 3)).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def tiles_of(height: int, width: int, tile: int | None, overlap: int) -> tuple[int, int]:
    """(tiles, pixels run through the network) for one image, as ``rainmer derain`` tiles it."""
    size = tile if tile is not None else (DEFAULT_TILE if max(height, width) > AUTO_TILE_ABOVE else 0)
    if not size or max(height, width) <= size:
        return 1, height * width
    ys, xs = tile_starts(height, size, overlap), tile_starts(width, size, overlap)
    return len(ys) * len(xs), len(ys) * len(xs) * min(size, height) * min(size, width)


def run_case(command: list[str], env: dict, log: str, time_limit: float | None) -> dict:
    """Run the command; returns wall seconds, peak RSS (GiB), whether it finished, and its output."""
    start = time.perf_counter()
    with open(log, 'w', encoding='utf-8') as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        stopped = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time_limit is not None and time.perf_counter() - start > time_limit:
                process.send_signal(signal.SIGTERM)
                pid, status, usage = os.wait4(process.pid, 0)
                stopped = True
                break
            time.sleep(0.2)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    with open(log, encoding='utf-8') as f:
        output = f.read()
    if not stopped and process.returncode != 0:
        raise RuntimeError(f'{shlex.join(command)} failed ({process.returncode}):\n{output[-3000:]}')
    return {'wall': time.perf_counter() - start, 'peak_gib': usage.ru_maxrss / 2 ** 20, 'finished': not stopped,
            'output': output}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', nargs='+', choices=list(CASES), default=['startup', '720p', '4k'])
    parser.add_argument('--n', type=int, default=4, help='1280x720 images in the 720p case (4)')
    parser.add_argument('--tile', type=int, default=None,
                        help=f"--tile of the command (default: the command's, {DEFAULT_TILE} above "
                             f'{AUTO_TILE_ABOVE} px)')
    parser.add_argument('--overlap', type=int, default=32, help='--overlap of the command (32)')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='OMP_NUM_THREADS of the command')
    parser.add_argument('--time-limit', type=float, default=None, metavar='S',
                        help='stop a case after S seconds (its peak memory so far is reported)')
    parser.add_argument('--workdir', default=None, help='keep images, checkpoint, outputs and logs here')
    args = parser.parse_args(argv)

    workdir = args.workdir or tempfile.mkdtemp(prefix='benchmark_derain_')
    os.makedirs(workdir, exist_ok=True)
    torch.manual_seed(0)
    weights = osp.join(workdir, 'rainmer_paper.pth')
    net = Rainmer()
    torch.save({'params': net.state_dict()}, weights)
    parameters = sum(p.numel() for p in net.parameters())
    del net
    rainmer_command = osp.join(osp.dirname(sys.executable), 'rainmer')
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED='1')
    tile_args = ([] if args.tile is None else ['--tile', str(args.tile)]) + ['--overlap', str(args.overlap)]

    load_before = os.getloadavg()[0]
    rows = []
    per_pixel = []  # seconds per pixel run through the network, from finished cases with real work
    for case in args.cases:
        height, width = CASES[case]
        count = args.n if case == '720p' else 1
        folder = osp.join(workdir, case)
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            cv2.imwrite(osp.join(folder, f'{i:03d}.png'), photo(height, width, i))
        command = [rainmer_command, 'derain', folder, '-o', osp.join(workdir, f'{case}_out'), '--arch', 'Rainmer',
                   '--weights', weights, '--device', 'cpu', *tile_args]
        print(f'{case}: {shlex.join(command)}', file=sys.stderr, flush=True)
        result = run_case(command, env, osp.join(workdir, f'{case}.log'), args.time_limit)
        tiles, pixels = tiles_of(height, width, args.tile, args.overlap)
        row = {'case': case, 'inputs': f'{count} x {width}x{height}', 'tiles': tiles, **result}
        summary = re.search(r'derained \d+ images? in ([\d.]+) s', result['output'])
        if result['finished'] and summary:
            seconds = float(summary.group(1))
            row.update(seconds=seconds, estimated=False)
            if case != 'startup':
                per_pixel.append(seconds / (count * pixels))
        elif per_pixel:
            row.update(seconds=float(np.mean(per_pixel)) * count * pixels, estimated=True)
        rows.append(row)
        print(f'{case}: {result["wall"]:.0f} s, peak {result["peak_gib"]:.2f} GiB'
              + ('' if result['finished'] else ' (stopped)'), file=sys.stderr, flush=True)

    print(f'CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; OMP_NUM_THREADS={args.threads}; torch '
          f'{torch.__version__}; paper-size Rainmer ({parameters / 1e6:.2f} M parameters, random weights, seed 0); '
          f'1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n')
    print(f'`python scripts/benchmark_derain.py {shlex.join(sys.argv[1:] if argv is None else argv)}`\n')
    print('| case | images | tiles per image | command wall time | restore time | s/image | images/s | peak RSS |')
    print('|---|---|---|---|---|---|---|---|')
    for row in rows:
        wall = f'{row["wall"]:.1f} s' + ('' if row['finished'] else ' (stopped)')
        if 'seconds' in row:
            mark = ' (est.)' if row['estimated'] else ''
            count = args.n if row['case'] == '720p' else 1
            timing = (f'{row["seconds"]:.1f} s{mark} | {row["seconds"] / count:.1f}{mark} | '
                      f'{count / row["seconds"]:.4f}{mark}')
        else:
            timing = '- | - | -'
        print(f'| {row["case"]} | {row["inputs"]} | {row["tiles"]} | {wall} | {timing} | '
              f'{row["peak_gib"]:.2f} GiB{" (so far)" if not row["finished"] else ""} |')
    print(f'\nderain command per case: `rainmer derain <folder> -o <out> --arch Rainmer --weights rainmer_paper.pth '
          f'--device cpu {shlex.join(tile_args)}`; files and logs in {workdir}')


if __name__ == '__main__':
    main()
