"""Command-line flags and YAML options, as the toolbox's ``parse_options`` but usable from any folder.

Differences from BasicSR 1.4.2: experiments/results go under the current folder (not site-packages);
``dist_params`` (e.g. ``backend: gloo``) applies to every launcher; ``--force_yml`` assigns without
``exec``; a config asking for GPUs on a machine without CUDA runs on the CPU with a warning; an option that
nothing reads fails (:mod:`rainmer.option_check`).
"""
import argparse
import os.path as osp
import random
import sys
import time
import warnings

import torch
import yaml
from basicsr.utils import set_random_seed
from basicsr.utils.dist_util import get_dist_info
from basicsr.utils.options import _postprocess_yml_value, ordered_yaml

from rainmer.compat.distributed import init_dist
from rainmer.errors import OptionError  # defined there, still importable from here
from rainmer.option_check import check_options


def add_toolbox_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The toolbox's usual flags: -opt, --launcher, --auto_resume, --debug, --force_yml, --local_rank."""
    parser.add_argument('-opt', '--opt', dest='opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true', help='resume from the newest saved training state')
    parser.add_argument('--debug', action='store_true', help="prefix the name with 'debug_' (frequent logs/saves)")
    parser.add_argument('--local_rank', '--local-rank', dest='local_rank', type=int, default=0,
                        help='set by torch.distributed.launch (torchrun uses LOCAL_RANK instead)')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY:SUB=VALUE',
                        help='override options, e.g. train:total_iter=1000 datasets:train:batch_size_per_gpu=2')
    return parser


def load_yaml(path: str) -> dict:
    """Read an option file, with a clear error for a missing or malformed file."""
    if not osp.isfile(path):
        raise OptionError(f'-opt: no option file at {path}')
    with open(path, encoding='utf-8') as f:
        try:
            opt = yaml.load(f, Loader=ordered_yaml()[0])
        except yaml.YAMLError as error:
            mark = getattr(error, 'problem_mark', None)
            where = f' (line {mark.line + 1}, column {mark.column + 1})' if mark is not None else ''
            problem = getattr(error, 'problem', None) or str(error).splitlines()[0]
            raise OptionError(f'-opt: {path} is not valid YAML{where}: {problem}') from error
    if not isinstance(opt, dict):
        raise OptionError(f'-opt: {path} does not hold a mapping of options')
    return opt


def force_option(opt: dict, entry: str) -> None:
    """Apply one ``--force_yml`` entry ``a:b:c=value`` to existing keys."""
    if '=' not in entry:
        raise OptionError(f"--force_yml: '{entry}' is not of the form key:subkey=value")
    keys, value = (part.strip() for part in entry.split('=', 1))
    node = opt
    path = keys.split(':')
    for depth, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise OptionError(f"--force_yml: option '{':'.join(path[:depth + 1])}' does not exist in the YAML")
        if depth == len(path) - 1:
            node[key] = _postprocess_yml_value(value)
        else:
            node = node[key]


def copy_options_file(opt_file: str, experiments_root: str, force_yml: list[str] | None = None) -> str:
    """The run's option file in its experiment folder, with the ``--force_yml`` overrides applied (the toolbox's copy
    keeps them only in a comment, so a tool reading the folder, e.g. ``rainmer compare``, rebuilt the wrong network).
    """
    opt = load_yaml(opt_file)
    for entry in force_yml or []:
        force_option(opt, entry)
    target = osp.join(experiments_root, osp.basename(opt_file))
    header = f"# GENERATE TIME: {time.asctime()}\n# CMD:\n# {' '.join(sys.argv)}\n"
    if force_yml:
        header += f"# --force_yml applied below: {' '.join(force_yml)}\n"
    with open(target, 'w', encoding='utf-8') as f:
        f.write(header + '\n')
        yaml.dump(opt, f, Dumper=ordered_yaml()[1], default_flow_style=None, sort_keys=False)
    return target


def _resolve_devices(opt: dict) -> None:
    cuda = torch.cuda.is_available()
    if opt.get('num_gpu', 'auto') == 'auto':
        opt['num_gpu'] = torch.cuda.device_count() if cuda else 0
    elif opt['num_gpu'] and not cuda:
        warnings.warn(f"num_gpu: {opt['num_gpu']} but CUDA is not available: running on the CPU.", stacklevel=2)
        opt['num_gpu'] = 0
    if not cuda:
        for dataset_opt in opt.get('datasets', {}).values():
            if isinstance(dataset_opt, dict) and dataset_opt.get('prefetch_mode') == 'cuda':
                warnings.warn("prefetch_mode: cuda needs CUDA: using the plain CPU dataloader.", stacklevel=2)
                dataset_opt['prefetch_mode'] = None


def _set_paths(opt: dict, root_path: str, is_train: bool) -> None:
    if isinstance(opt.get('val'), dict):
        opt['val'].setdefault('suffix', None)  # the toolbox's validation reads it unconditionally
    for phase, dataset in opt.get('datasets', {}).items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = osp.expanduser(dataset[key])
    opt.setdefault('path', {})
    for key, val in opt['path'].items():
        if val is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(val)
    if is_train:
        root = osp.join(root_path, 'experiments', opt['name'])
        opt['path'].update(experiments_root=root, models=osp.join(root, 'models'),
                           training_states=osp.join(root, 'training_states'), log=root,
                           visualization=osp.join(root, 'visualization'))
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        root = osp.join(root_path, 'results', opt['name'])
        opt['path'].update(results_root=root, log=root, visualization=osp.join(root, 'visualization'))


def parse_options(args: argparse.Namespace, root_path: str, is_train: bool) -> dict:
    """Turn parsed flags and the YAML into the toolbox's option dict; initialise distributed mode."""
    opt = load_yaml(args.opt)
    for key in ('name', 'model_type'):
        if key not in opt:
            raise OptionError(f"{args.opt}: the option '{key}' is missing")
    if args.force_yml:
        for entry in args.force_yml:
            force_option(opt, entry)
    check_options(opt, f'{args.opt} with --force_yml {" ".join(args.force_yml)}' if args.force_yml else args.opt)
    _resolve_devices(opt)

    opt['dist'] = args.launcher != 'none'
    if opt['dist']:
        init_dist(args.launcher, **(opt.get('dist_params') or {}))
    opt['rank'], opt['world_size'] = get_dist_info()

    if opt.get('manual_seed') is None:
        opt['manual_seed'] = random.randint(1, 10000)
    set_random_seed(opt['manual_seed'] + opt['rank'])

    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train
    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']
    _set_paths(opt, root_path, is_train)
    return opt
