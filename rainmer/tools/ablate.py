"""``rainmer ablate``: the paper's ablation at CPU scale, with seeds, through ``basicsr train`` and ``basicsr test``.

1. photographs (scikit-image's colour samples, as ``rainmer demo``, or ``--photos DIR``) -> ``rainmer data synth``:
   day / heavy / night rain, two photographs held out;
2. per variant and seed, one training option file -> ``basicsr train -opt X --auto_resume``, then
   ``basicsr test -opt Y`` on the held-out pairs of every domain (PSNR/SSIM on Y in BasicSR's protocol and the
   paper's); the pipelines' own logs are in ``experiments/`` and ``results/``, their console output in ``logs/``;
3. ``results.md`` / ``results.csv`` (mean +- std over seeds per domain and on average, seconds per training
   iteration, parameters, FLOPs), ``runs.csv`` (every seed), ``results.png`` (bars with error bars) and
   ``grid.png`` (the same held-out crops restored by every variant).

Default variants: rainmer, no_chromatic, no_degradation, baseline (the paper's ablation), drsformer, swinir. The
comparison roster is selectable too (``--variants rainmer,restormer,prenet``), each network at the ablation's size
with its own loss: restormer, promptir (L1), prenet, brn, idt (negative SSIM), rcdnet (its stage-wise loss).

Resumable: a (variant, seed) whose test results exist is neither trained nor tested again; an interrupted training
(Ctrl-C saves a checkpoint) continues from its last checkpoint when the command is run again. Variants, sizes and
``--scale`` for a GPU: docs/ablation.md.
"""
import argparse
import contextlib
import glob
import json
import os
import os.path as osp
import signal
import sys
import time

import yaml

from rainmer.demo import DOMAINS
from rainmer.errors import UserError
from rainmer.tools.ablate_options import (
    METRICS,
    ROSTER_VARIANTS,
    VARIANTS,
    Sizes,
    ablation_test_options,
    ablation_train_options,
    parse_variants,
    run_name,
    sizes_for,
    weights_path,
)
from rainmer.utils.run_logger import reset_toolbox_logger

DATA = 'data'  # under --out; option files name it relatively, so the folder can move
SYNTH_SEED = 0


class AblationError(UserError):
    """An ablation folder or run that cannot go on as asked."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C / SIGTERM after saving its checkpoint."""


# ---------------------------------------------------------------------------------------------- data
def _synth_settings(photos: str, sizes: Sizes, val: int, per_image: int) -> dict:
    from rainmer.data.layouts import list_images

    if not osp.isdir(photos):
        raise AblationError(f'--photos: {photos} is not a folder; give a folder of photographs')
    stems = sorted(osp.splitext(osp.basename(p))[0] for p in list_images(photos))
    if not stems:
        raise AblationError(f'--photos: no images in {photos}; give a folder of photographs (PNG, JPEG, ...)')
    return dict(seed=SYNTH_SEED, val=val, per_image=per_image, max_side=sizes.max_side, photos=stems)


def _recorded_synth_settings(data: str) -> dict | None:
    path = osp.join(data, 'synth_params.json')
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        params = json.load(f)
    stems = sorted({osp.splitext(osp.basename(r['photo']))[0] for r in params.get('images', [])})
    return dict(seed=params.get('seed'), val=params.get('val'), per_image=params.get('per_image'),
                max_side=params.get('max_side'), photos=stems)


def prepare_data(out: str, photos: str | None, sizes: Sizes, val: int, per_image: int) -> str:
    """``<out>/data``: synthetic rain over the photographs (reused when it was made with the same settings)."""
    from rainmer.data.cli import main as data_main
    from rainmer.demo import write_photographs

    if photos is None:
        photos = osp.join(out, 'photographs')
        write_photographs(photos)
    wanted = _synth_settings(photos, sizes, val, per_image)
    data = osp.join(out, DATA)
    recorded = _recorded_synth_settings(data)
    if recorded is not None:
        differences = ', '.join(f'{key} {recorded.get(key)} (now {value})' for key, value in wanted.items()
                                if recorded.get(key) != value)
        if differences:
            raise AblationError(f'--out {out}: its data was synthesised with other settings: {differences}; use '
                                'another --out, or the same --photos, --max-side, --scale, --val and --per-image')
        print(f'data: reusing {data}')
        return data
    code = data_main(['synth', photos, data, '--seed', str(SYNTH_SEED), '--val', str(val), '--per-image',
                      str(per_image), '--max-side', str(sizes.max_side), '--quiet'])
    if code:
        raise AblationError(f'rainmer data synth {photos} {data} failed (exit {code}, message above); fix the '
                            'photographs or --val and run again')
    return data


# ---------------------------------------------------------------------------------------------- runs
def _plain(opt: dict) -> dict:
    return yaml.safe_load(yaml.safe_dump(opt, sort_keys=False))


def write_options(path: str, opt: dict, what: str) -> str:
    """Write ``opt``; an existing file must hold the same options (a finished run is never mixed with new ones)."""
    opt = _plain(opt)
    if osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            if yaml.safe_load(f) != opt:
                raise AblationError(f'{path}: {what} ran with other options (another --scale, --iters or '
                                    'version); use another --out, or delete this file with its experiment and '
                                    'results to redo it')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def tested(out: str, variant: str, seed: int) -> bool:
    """Whether ``results/<name>_test/metrics.json`` holds every metric of every domain."""
    path = osp.join(out, 'results', f'{run_name(variant, seed)}_test', 'metrics.json')
    if not osp.isfile(path):
        return False
    with open(path, encoding='utf-8') as f:
        metrics = json.load(f)
    return all(set(METRICS) <= set(metrics.get(domain, {})) for domain in DOMAINS)


@contextlib.contextmanager
def _captured(log_path: str):
    """Console output of one pipeline run appended to ``log_path``; the toolbox logger fresh before and after."""
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, 'a', encoding='utf-8') as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        reset_toolbox_logger()
        try:
            yield log
        finally:
            reset_toolbox_logger()


def run_basicsr(command: str, option_file: str, out: str, log_path: str, extra: tuple[str, ...] = ()) -> None:
    """``basicsr <command> -opt <option_file>`` (:func:`rainmer.cli.basicsr_main`, as ``rainmer demo``) in ``out``,
    its console output appended to ``log_path``. A training stopped by Ctrl-C / SIGTERM saves a checkpoint and
    raises :class:`Interrupted`."""
    from rainmer.cli import basicsr_main

    cwd = os.getcwd()
    os.chdir(out)  # experiments/, results/ and tb_logger/ go here
    try:
        with _captured(log_path) as log:
            print(f'\n$ basicsr {command} -opt {option_file} {" ".join(extra)}', file=log, flush=True)
            code = basicsr_main([command, '-opt', option_file, *extra])
    finally:
        os.chdir(cwd)
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        raise Interrupted(log_path)
    if code:
        with open(log_path, encoding='utf-8', errors='replace') as f:
            sys.stderr.write(''.join(f.readlines()[-15:]))
        raise AblationError(f'basicsr {command} -opt {option_file} failed (exit {code}); its output is in {log_path}')


def run_one(out: str, variant: str, seed: int, sizes: Sizes, label: str) -> None:
    """Train (or continue training) and test one (variant, seed), skipping what is done."""
    name = run_name(variant, seed)
    train_yml = write_options(osp.join(out, 'options', f'{name}.yml'),
                              ablation_train_options(variant, seed, DATA, sizes), f'{variant} seed {seed}')
    test_yml = write_options(osp.join(out, 'options', f'{name}_test.yml'),
                             ablation_test_options(variant, seed, DATA, sizes), f'{variant} seed {seed} (test)')
    if tested(out, variant, seed):
        print(f'{label} {variant} seed {seed}: test results exist, not retrained')
        return
    if osp.isfile(osp.join(out, weights_path(variant, seed))):
        print(f'{label} {variant} seed {seed}: trained earlier')
    else:
        start = time.time()
        again = ', continuing from its last checkpoint' if glob.glob(
            osp.join(out, 'experiments', name, 'training_states', '*.state')) else ''
        print(f'{label} {variant} seed {seed}: basicsr train ({sizes.iters} iterations{again})...', flush=True)
        run_basicsr('train', train_yml, out, osp.join(out, 'logs', f'{name}_train.log'), ('--auto_resume',))
        print(f'{label} {variant} seed {seed}: trained in {time.time() - start:.0f} s', flush=True)
    run_basicsr('test', test_yml, out, osp.join(out, 'logs', f'{name}_test.log'))
    print(f'{label} {variant} seed {seed}: tested', flush=True)


class _TermAsInterrupt:
    """SIGTERM handled as Ctrl-C while the ablation runs (a training run handles both itself: it saves a checkpoint
    and stops)."""

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='rainmer ablate', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='ablation', help='folder for data, experiments, results and the report '
                        '(default ablation)')
    parser.add_argument('--photos', help="folder of photographs (default: scikit-image's colour samples)")
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help=f"comma-separated variants, in report order (default: {', '.join(VARIANTS)}); also "
                        f"the comparison roster: {', '.join(ROSTER_VARIANTS)} (docs/ablation.md)")
    parser.add_argument('--seeds', type=int, default=3, help='training seeds per variant: 0..N-1 (default 3)')
    parser.add_argument('--scale', type=float, default=1.0, help='multiplies iterations, crop, width and prompt '
                        'size (default 1: about an hour for 6 variants x 3 seeds on a 2-core CPU)')
    parser.add_argument('--iters', type=int, help='training iterations of batch 4 (default 600 x --scale)')
    parser.add_argument('--max-side', type=int, help='photographs are downscaled to this longer side '
                        '(default 4 training crops: 192 at scale 1)')
    parser.add_argument('--val', type=int, default=2, help='photographs held out for testing (default 2)')
    parser.add_argument('--per-image', type=int, default=2, help='rainy versions per photograph and domain '
                        '(default 2)')
    parser.add_argument('--grid-images', type=int, default=1, help='held-out images per domain in grid.png '
                        '(default 1)')
    return parser


def ablate(args: argparse.Namespace) -> int:
    """Run (or continue) the ablation and write its report; returns the exit status."""
    from rainmer.tools.ablate_report import write_report

    variants = parse_variants(args.variants)
    if args.seeds < 1:
        raise AblationError(f'--seeds: {args.seeds} must be at least 1')
    for flag, value in (('--val', args.val), ('--per-image', args.per_image), ('--grid-images', args.grid_images)):
        if value < 1:
            raise AblationError(f'{flag}: {value} must be at least 1')
    sizes = sizes_for(args.scale, args.iters, args.max_side)
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    prepare_data(out, osp.abspath(args.photos) if args.photos else None, sizes, args.val, args.per_image)
    runs = [(variant, seed) for seed in range(args.seeds) for variant in variants]
    print(f'{len(variants)} variants x {args.seeds} seeds, {sizes.iters} iterations of batch 4, crop {sizes.crop}, '
          f'width {sizes.dim}; folder {out}', flush=True)
    try:
        with _TermAsInterrupt():
            for k, (variant, seed) in enumerate(runs, 1):
                run_one(out, variant, seed, sizes, f'[{k}/{len(runs)}]')
    except (KeyboardInterrupt, Interrupted) as stop:
        where = f' (log: {stop})' if isinstance(stop, Interrupted) else ''
        print(f'interrupted{where}: run the same command again to continue; finished runs are kept and an '
              'interrupted training resumes from its last checkpoint', file=sys.stderr)
        return 130
    paths = write_report(out, variants, list(range(args.seeds)), sizes, grid_images=args.grid_images)
    print(open(paths['md'], encoding='utf-8').read())
    print('written: ' + ', '.join(paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``rainmer ablate [--variants a,b] [--seeds N] [--scale F] [--iters N] [--photos DIR] [--out DIR]``"""
    from rainmer.errors import run_guarded

    return run_guarded(ablate, build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())

