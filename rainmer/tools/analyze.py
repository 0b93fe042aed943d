"""``rainmer analyze -opt X.yml``: multi-view representation analysis of a trained encoder.

Samples up to N images per dataset (seeded), extracts every representation space with the trained encoder
and writes, under ``results/<name>/analysis`` (or ``--out``): ``embeddings.npz``, per space a relationship
matrix (``<space>_relationship.csv``/``.png``, all spaces in ``relationship.json``) and a UMAP projection
onto the sphere (``<space>_umap.png``/``.csv``). See docs/analysis.md.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from rainmer.plugins import load_plugins

load_plugins()

from rainmer.analysis.pipeline import run_analysis  # noqa: E402
from rainmer.options import OptionError, force_option, load_yaml  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='rainmer analyze', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', '--opt', dest='opt', required=True,
                        help='analysis or test option YAML: network_g, path.pretrain_network_g, datasets, [analysis]')
    parser.add_argument('--network-opt', metavar='YML',
                        help='take network_g from this option file (e.g. the training config) instead')
    parser.add_argument('--checkpoint', metavar='PTH', help='trained weights (overrides path.pretrain_network_g)')
    parser.add_argument('--out', metavar='DIR', help='output folder (default: results/<name>/analysis)')
    parser.add_argument('--num-samples', type=int, metavar='N',
                        help='images per dataset at most (overrides analysis.num_samples; 0: all)')
    parser.add_argument('--seed', type=int, help='sampling and UMAP seed (overrides analysis.seed)')
    parser.add_argument('--device', help="'cpu', 'cuda', 'cuda:1', ... (default: cuda when available and "
                                         'num_gpu is not 0)')
    parser.add_argument('--no-umap', action='store_true', help='skip the UMAP projections (no umap-learn needed)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY:SUB=VALUE',
                        help='override existing options, e.g. analysis:num_samples=100')
    return parser


def resolve_options(args: argparse.Namespace) -> dict:
    """The option dict after ``--force_yml``, ``--network-opt``, ``--checkpoint``, ``--num-samples``, ``--seed``."""
    opt = load_yaml(args.opt)
    for entry in args.force_yml or []:
        force_option(opt, entry)
    if args.network_opt:
        network_opt = load_yaml(args.network_opt)
        if 'network_g' not in network_opt:
            raise OptionError(f'--network-opt: {args.network_opt} has no network_g')
        opt['network_g'] = network_opt['network_g']
    if args.checkpoint:
        opt['path'] = dict(opt.get('path') or {}, pretrain_network_g=args.checkpoint)
    analysis = dict(opt.get('analysis') or {})
    if args.num_samples is not None:
        if args.num_samples < 0:
            raise OptionError('--num-samples: expected a non-negative number')
        analysis['num_samples'] = args.num_samples
    if args.seed is not None:
        analysis['seed'] = args.seed
    opt['analysis'] = analysis
    opt.setdefault('name', osp.splitext(osp.basename(args.opt))[0])
    return opt


def choose_device(opt: dict, requested: str | None) -> str:
    if requested:
        if requested.startswith('cuda') and not torch.cuda.is_available():
            raise OptionError(f'--device {requested}: CUDA is not available on this machine')
        return requested
    return 'cuda' if torch.cuda.is_available() and opt.get('num_gpu', 'auto') != 0 else 'cpu'


def analyze(args: argparse.Namespace) -> dict[str, str]:
    opt = resolve_options(args)
    out_dir = args.out or osp.join(os.getcwd(), 'results', str(opt['name']), 'analysis')
    written = run_analysis(opt, out_dir, device=choose_device(opt, args.device), umap=not args.no_umap,
                           progress=not args.quiet)
    print(f'Wrote {len(written)} files to {out_dir}')
    return written


def main(argv: list[str] | None = None) -> int:
    """``rainmer analyze ...``; user errors print one line and return 2."""
    from rainmer.errors import run_guarded

    return run_guarded(analyze, build_parser().parse_args(argv), returns_code=False)


if __name__ == '__main__':
    sys.exit(main())
