"""Peak memory of tiled inference on a large image (default 3840x2160) with the paper-size Rainmer on CPU.

The image is restored as RainmerModel does with ``val.tile``: prompts once from the whole image resized to
128x128, then overlapping tiles blended by :func:`rainmer.models.tiling.tiled_forward`. Prints the process's
resident-set high-water mark (VmHWM: everything, libraries and weights included) and the extra memory over the
resident set before inference. Every tile has the same size, so the peak is reached with the first tile;
``--max-tiles`` stops after that many tiles (the rest are left unrestored) to measure it without the hour a
full 4K image takes on 2 cores.

Example: ``python scripts/benchmark_tiling.py --tile 256 --overlap 32 --max-tiles 4 --threads 2``.
"""
import argparse
import time

import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import torch

from rainmer.archs.fast import is_fast, parse_fast_option
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.models.tiling import tile_starts, tiled_forward
from rainmer.utils.allocator import tune_malloc
from rainmer.utils.benchmarking import proc_status_kib


class _TileBudgetReached(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--height', type=int, default=2160)
    parser.add_argument('--width', type=int, default=3840)
    parser.add_argument('--tile', type=int, default=256)
    parser.add_argument('--overlap', type=int, default=32)
    parser.add_argument('--max-tiles', type=int, default=None, help='stop after this many tiles')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--fast', default='auto', type=parse_fast_option,
                        help="the network's evaluation: auto (fast for fp32 on the CPU), true (fast) or false (plain)")
    parser.add_argument('--malloc', choices=['tuned', 'default'], default='tuned',
                        help="glibc malloc: 'tuned' as 'basicsr test' runs (rainmer/utils/allocator.py) or default")
    args = parser.parse_args()
    if args.malloc == 'tuned':
        tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = Rainmer(fast=args.fast).eval()
    image = torch.rand(1, 3, args.height, args.width)
    total = len(tile_starts(args.height, args.tile, args.overlap)) * len(tile_starts(args.width, args.tile,
                                                                                       args.overlap))
    done = []

    def forward(patch: torch.Tensor) -> torch.Tensor:
        if args.max_tiles is not None and len(done) >= args.max_tiles:
            raise _TileBudgetReached
        done.append(time.perf_counter())
        return net(patch, lq_resize=prompt_image)

    before = proc_status_kib('VmRSS')
    start = time.perf_counter()
    with torch.no_grad():
        prompt_image = net.resize_query(image)
        try:
            tiled_forward(forward, image, args.tile, args.overlap)
        except _TileBudgetReached:
            pass
    seconds = time.perf_counter() - start
    print(f'{args.width}x{args.height}, tile {args.tile}, overlap {args.overlap}: {len(done)} of {total} tiles in '
          f'{seconds:.1f} s ({seconds / max(len(done), 1):.1f} s per tile, threads {torch.get_num_threads()}, '
          f'{"fast" if is_fast(net) else "plain"} evaluation)')
    peak = proc_status_kib('VmHWM')
    print(f'peak resident set (VmHWM) {peak / 2**20:.2f} GiB; '
          f'extra over the {before / 2**20:.2f} GiB before inference: {(peak - before) / 2**20:.2f} GiB')


if __name__ == '__main__':
    main()
