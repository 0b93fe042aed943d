"""``rainmer data prepare|stats|balance|synth``: from downloaded folders to what the trainer reads.

Run as ``rainmer data ...`` or ``python -m rainmer.data.cli ...``. User errors print one line naming
the file or option and exit with status 1 (2 for bad command lines), without a traceback.
"""
import argparse
import os.path as osp
import sys
from collections.abc import Sequence

from rainmer.data.errors import DataError
from rainmer.data.layouts import LAYOUTS, default_lmdb_dir
from rainmer.errors import UserError

PROG = 'rainmer data'


def _add_dataset_args(parser: argparse.ArgumentParser, layouts: Sequence[str]) -> None:
    parser.add_argument('layout', choices=layouts, help='dataset layout (see docs/datasets.md)')
    parser.add_argument('root', nargs='?', help='dataset folder (rain13k, gtrain, gtav; allweather: list entries '
                        'are relative to it)')
    parser.add_argument('--lq', help='paired_folder: folder of rainy images')
    parser.add_argument('--gt', help='paired_folder: folder of clean images')
    parser.add_argument('--split', default='train', help='gtav: the set*/<split> folders to read (default train)')
    parser.add_argument('--list-file', help='allweather: TransWeather list file of input/... paths')
    parser.add_argument('--skip-bad', action='store_true', help='leave out bad pairs instead of stopping')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


def _source_opt(args: argparse.Namespace, lmdb: bool = False) -> dict:
    opt = dict(name=getattr(args, 'name', None) or args.layout, type=args.layout, root=args.root,
               dataroot_lq=args.lq, dataroot_gt=args.gt, split=args.split, list_file=args.list_file,
               io_backend={'type': 'lmdb' if lmdb or args.layout == 'lmdb' else 'disk'})
    return {k: v for k, v in opt.items() if v is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description='Prepare, inspect, balance and synthesise deraining '
                                     'datasets (docs/datasets.md).')
    sub = parser.add_subparsers(dest='command', required=True)

    prep = sub.add_parser('prepare', help='validate every pair and build lq.lmdb + gt.lmdb (BasicSR format)')
    _add_dataset_args(prep, LAYOUTS)
    prep.add_argument('--out', help='output folder for lq.lmdb and gt.lmdb (default: <root>_lmdb, '
                      '<root>_<split>_lmdb for gtav, <root>_<list name>_lmdb for allweather)')
    prep.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0-9',
                      help='PNG compression of the stored images (default 1, as BasicSR)')
    prep.add_argument('--force', action='store_true', help='rebuild even if a finished build exists')

    stats = sub.add_parser('stats', help='rain density per pair: CSV and histogram PNG')
    _add_dataset_args(stats, LAYOUTS + ('lmdb',))
    stats.add_argument('--lmdb', action='store_true', help='read the LMDBs written by prepare for this layout')
    stats.add_argument('--name', help='dataset name for the output files (default: the layout)')
    stats.add_argument('--out', default='density_stats', help='output folder (default density_stats)')
    stats.add_argument('--crop', type=int, help='measure non-overlapping crops of this size instead of pairs')
    stats.add_argument('--bins', type=int, default=10, help='histogram bins (default 10)')
    stats.add_argument('--max-density', type=float, default=0.4, help='histogram range end (default 0.4)')

    bal = sub.add_parser('balance', help="GTAV-balance: crops resampled to the reference sets' density mix")
    _add_dataset_args(bal, ('gtav', 'rain13k', 'paired_folder', 'gtrain', 'allweather', 'lmdb'))
    bal.add_argument('--lmdb', action='store_true', help='read the LMDBs written by prepare for this layout')
    bal.add_argument('--out', required=True, help='output folder, e.g. datasets/GTAV-balance')
    ref = bal.add_mutually_exclusive_group(required=True)
    ref.add_argument('--reference', nargs='+', metavar='CSV', help='density CSVs of the reference sets '
                     '(rainmer data stats of the synthetic set and of GT-Rain)')
    ref.add_argument('--shares', nargs=2, type=float, metavar=('LOW', 'MID'),
                     help='target shares of the [0, 0.04] and (0.04, 0.08] bins')
    bal.add_argument('--crop', type=int, default=512, help='crop size (default 512)')
    bal.add_argument('--seed', type=int, default=0, help='sampling seed (default 0)')
    bal.add_argument('--format', default='lmdb', choices=('lmdb', 'folder', 'list'),
                     help='lmdb: lq.lmdb/gt.lmdb; folder: input/ and target/ PNGs; list: selection.csv only')
    bal.add_argument('--force', action='store_true', help='rebuild even if a finished build exists')
    bal.add_argument('--test-split', default='test', help='gtav: also balance the set*/<this split> crops the same '
                     'way into <out>/test/{rainy,gt} (NNNN_KK_setN.png, clean NNNN_setN.png; default test)')
    bal.add_argument('--no-test', action='store_true', help='gtav: do not write the balanced test crops')

    syn = sub.add_parser('synth', help='synthetic rain (day, heavy, night) on a folder of clean photographs')
    syn.add_argument('clean_dir', help='folder of clean photographs')
    syn.add_argument('out', help='output folder (<out>/train/<domain>/{input,target})')
    syn.add_argument('--seed', type=int, default=0, help='seed (default 0); same seed, same images')
    syn.add_argument('--domains', default='day,heavy,night', help='comma-separated subset of day,heavy,night')
    syn.add_argument('--per-image', type=int, default=1, help='rainy variants per photograph and domain')
    syn.add_argument('--val', type=float, default=0, help='photographs held out for validation: a count, or a '
                     'fraction below 1 (written to <out>/val)')
    syn.add_argument('--max-side', type=int, help='downscale photographs whose longer side exceeds this')
    syn.add_argument('--density', nargs=2, type=float, metavar=('MIN', 'MAX'), help='streak seeds per pixel')
    syn.add_argument('--angle', nargs=2, type=float, metavar=('MIN', 'MAX'), help='streak angle from vertical, deg')
    syn.add_argument('--length', nargs=2, type=float, metavar=('MIN', 'MAX'), help='streak length in pixels')
    syn.add_argument('--force', action='store_true', help='overwrite an earlier synth output in OUT')
    syn.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def _print_source_snippet(name: str, lq_lmdb: str, gt_lmdb: str) -> None:
    print('options entry (a MixedRainDataset source):')
    print(f'  - name: {name}\n    type: lmdb\n    dataroot_lq: {lq_lmdb}\n    dataroot_gt: {gt_lmdb}\n'
          '    io_backend: {type: lmdb}')


def cmd_prepare(args: argparse.Namespace) -> int:
    from rainmer.data.prepare import prepare_layout
    outcome = prepare_layout(args.layout, root=args.root, dataroot_lq=args.lq, dataroot_gt=args.gt, split=args.split,
                             list_file=args.list_file, out_dir=args.out, compress_level=args.compress_level,
                             skip_bad=args.skip_bad, force=args.force, progress=not args.quiet)
    if not outcome.already_done:
        skipped = f', {outcome.skipped_bad} bad pair(s) left out (see bad_pairs.txt)' if outcome.skipped_bad else ''
        print(f'wrote {outcome.lq_lmdb} and {outcome.gt_lmdb}: {outcome.pairs} pairs{skipped}')
    _print_source_snippet(args.layout, outcome.lq_lmdb, outcome.gt_lmdb)
    return 0


def _source(args: argparse.Namespace):
    from rainmer.data.pair_source import PairSource
    return PairSource(_source_opt(args, lmdb=getattr(args, 'lmdb', False)), where=args.layout)


def cmd_stats(args: argparse.Namespace) -> int:
    from rainmer.data.rain_stats import run_stats
    name = args.name or (osp.basename(osp.normpath(args.root)) if args.root else args.layout)
    result = run_stats(_source(args), args.out, name, crop=args.crop, bins=args.bins, max_density=args.max_density,
                       skip_bad=args.skip_bad, progress=not args.quiet)
    print(f'{name}: {int(result.counts.sum())} {"crops" if args.crop else "pairs"}, mean density {result.mean:.4f}')
    for i, count in enumerate(result.counts):
        print(f'  [{result.edges[i]:.3f}, {result.edges[i + 1]:.3f}): {int(count)}')
    low, mid, high = result.shares
    print(f'  shares: <=0.04 {low:.3f}, (0.04, 0.08] {mid:.3f}, >0.08 {high:.3f}')
    print(f'wrote {result.csv_path} and {result.png_path}')
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    from rainmer.data.balance import run_balance
    from rainmer.data.density import reference_shares
    from rainmer.data.rain_stats import read_density_csv
    if args.reference:
        shares = reference_shares([read_density_csv(path) for path in args.reference])
        target = (float(shares[0]), float(shares[1]))
    else:
        target = (args.shares[0], args.shares[1])
    result = run_balance(_source(args), args.out, target, crop=args.crop, seed=args.seed, fmt=args.format,
                         force=args.force, skip_bad=args.skip_bad, progress=not args.quiet)
    if not result.already_done:
        _report_balance(args, target, result)
    _balance_test_split(args, target)
    return 0


def _balance_test_split(args: argparse.Namespace, target: tuple[float, float]) -> None:
    """GTAV: the test split's crops, balanced to the same shares, as ``<out>/test/{rainy,gt}`` PNGs."""
    import glob

    from rainmer.data.balance import run_balance_test
    from rainmer.data.pair_source import PairSource
    if args.layout != 'gtav' or args.lmdb or args.no_test or args.split == args.test_split or not args.root:
        return
    if not glob.glob(osp.join(glob.escape(args.root), 'set*', args.test_split, 'rainy')):
        print(f'no {osp.join(args.root, "set*", args.test_split, "rainy")} folders: balanced test crops not written')
        return
    opt = dict(_source_opt(args), split=args.test_split, name=f'{args.layout} {args.test_split}')
    out_dir = osp.join(args.out, 'test')
    result = run_balance_test(PairSource(opt, where=args.layout), out_dir, target, crop=args.crop, seed=args.seed,
                              fmt=args.format, force=args.force, skip_bad=args.skip_bad, progress=not args.quiet)
    if not result.already_done:
        fmt = ', '.join(f'{v:.3f}' for v in result.shares_after)
        where = '' if args.format == 'list' else f', {osp.join(out_dir, "rainy")} and {osp.join(out_dir, "gt")}'
        print(f'test split: selected {result.selected} of {result.candidates} crops; shares now {fmt}')
        print(f'wrote {osp.join(out_dir, "selection.csv")}{where}')


def _report_balance(args: argparse.Namespace, target: tuple[float, float], result) -> None:
    fmt = ', '.join(f'{v:.3f}' for v in result.shares_after)
    print(f'target shares of [0, 0.04], (0.04, 0.08]: {target[0]:.3f}, {target[1]:.3f}')
    print(f'selected {result.selected} of {result.candidates} crops; shares now {fmt} (<=0.04, mid, >0.08)')
    print(f'wrote {osp.join(args.out, "selection.csv")}' + {
        'lmdb': f', {osp.join(args.out, "lq.lmdb")} and {osp.join(args.out, "gt.lmdb")}',
        'folder': f', {osp.join(args.out, "input")} and {osp.join(args.out, "target")}', 'list': ''}[args.format])


def cmd_synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rainmer.data.synth_folder import synth_folder
    from rainmer.data.synth_rain import StreakRanges
    ranges = StreakRanges()
    for field in ('density', 'angle', 'length'):
        value = getattr(args, field)
        if value is not None:
            if value[0] > value[1]:
                raise DataError(f'--{field}: MIN {value[0]} is larger than MAX {value[1]}')
            ranges = replace(ranges, **{field: tuple(value)})
    domains = tuple(d.strip() for d in args.domains.split(',') if d.strip())
    outcome = synth_folder(args.clean_dir, args.out, seed=args.seed, domains=domains, per_image=args.per_image,
                           val=args.val, max_side=args.max_side, ranges=ranges, force=args.force,
                           progress=not args.quiet)
    for split, per_domain in outcome.counts.items():
        for domain, count in per_domain.items():
            print(f'wrote {count} pairs to {osp.join(args.out, split, domain)}/{{input,target}}')
    print(f'parameters in {osp.join(args.out, "synth_params.json")}')
    return 0


COMMANDS = {'prepare': cmd_prepare, 'stats': cmd_stats, 'balance': cmd_balance, 'synth': cmd_synth}


def main(argv: list[str] | None = None) -> int:
    """Run one ``rainmer data`` subcommand; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage and the error
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except UserError as err:  # DataError and every other error the user can fix
        print(f'{PROG} {args.command}: error: {err}', file=sys.stderr)
    except OSError as err:
        print(f'{PROG} {args.command}: error: {err.filename or ""}: {err.strerror or err}', file=sys.stderr)
    except KeyboardInterrupt:
        print(f'{PROG} {args.command}: interrupted; rerun the same command to start again', file=sys.stderr)
        return 130
    return 1


__all__ = ['main', 'build_parser', 'default_lmdb_dir']

if __name__ == '__main__':
    sys.exit(main())
