"""Options are checked, never ignored: an unknown key fails with its path and the closest valid name.

:func:`check_options` runs in :func:`rainmer.options.parse_options` once every plugin is registered. It checks

- ``network_g`` / ``network_d``: the parameters of the registered arch's ``__init__`` (not when it takes
  ``**kwargs``);
- ``train`` and ``val``: the model class's own ``OPTION_KEYS`` (``{'train': frozenset, 'val': frozenset}``, complete
  sets), or for BasicSR's ``SRModel`` :data:`SRMODEL_TRAIN_KEYS` / :data:`SRMODEL_VAL_KEYS`; other models are not
  checked. Inside them: loss blocks ``train.*_opt``, optimisers ``train.optim_*``, ``train.scheduler`` and
  ``val.metrics.<name>`` against the parameters of what they build;
- ``datasets.<phase>``: :data:`COMMON_DATASET_KEYS` plus the dataset class's own ``OPTION_KEYS`` (a frozenset),
  or for BasicSR's two :data:`PAIRED_IMAGE_DATASET_KEYS` / :data:`SINGLE_IMAGE_DATASET_KEYS`; other dataset
  classes are not checked.

``OPTION_KEYS`` counts only where a class declares it itself: a subclass that reads more keys than its parent
and declares none is not checked, rather than checked against its parent's keys.
"""
import difflib
import dis
import inspect
from collections.abc import Callable, Iterable, Mapping

import torch

from rainmer.errors import OptionError

# basicsr/models/sr_model.py and base_model.py (init_training_settings, setup_optimizers, setup_schedulers) and the
# train pipelines (basicsr/train.py, rainmer/train.py: total_iter, warmup_iter).
SRMODEL_TRAIN_KEYS = frozenset({
    'total_iter', 'warmup_iter', 'ema_decay', 'optim_g', 'scheduler', 'pixel_opt', 'perceptual_opt'})
# SRModel.nondist_validation, the train pipelines (val_freq, save_img) and the test pipeline (save_img, metrics).
SRMODEL_VAL_KEYS = frozenset({'val_freq', 'save_img', 'suffix', 'metrics', 'pbar'})

# Every dataset: the options file (name, type), parse_options (phase, scale), basicsr/data/__init__.py
# build_dataloader and the prefetchers, and the train pipelines (dataset_enlarge_ratio, prefetch_mode, pin_memory).
# use_shuffle is in every stock BasicSR config (build_dataloader shuffles through the sampler).
COMMON_DATASET_KEYS = frozenset({
    'name', 'type', 'phase', 'scale', 'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio',
    'prefetch_mode', 'num_prefetch_queue', 'pin_memory', 'persistent_workers', 'use_shuffle'})
# basicsr/data/paired_image_dataset.py and single_image_dataset.py (1.4.2), beside the common keys.
PAIRED_IMAGE_DATASET_KEYS = frozenset({
    'dataroot_gt', 'dataroot_lq', 'io_backend', 'meta_info_file', 'filename_tmpl', 'mean', 'std', 'color',
    'gt_size', 'use_hflip', 'use_rot'})
SINGLE_IMAGE_DATASET_KEYS = frozenset({'dataroot_lq', 'io_backend', 'meta_info_file', 'mean', 'std', 'color'})

# BaseModel._initialize_best_metric_results reads ``better`` beside the metric function's parameters.
METRIC_EXTRA_KEYS = frozenset({'type', 'better'})
_NOT_OPTIONS = {'self', 'img', 'img2', 'params', 'optimizer'}


def check_options(opt: dict, path: str | None = None) -> None:
    """Raise :class:`OptionError` for the first option that nothing reads; ``path`` (the YAML) prefixes the message."""
    from basicsr.utils.registry import MODEL_REGISTRY

    prefix = f'{path}: ' if path else ''
    for section, keys in NUMERIC_KEYS.items():
        for key in keys:
            if isinstance(opt.get(section), Mapping) and key in opt[section]:
                error = _number_error(opt[section][key], f'{section}.{key}', prefix)
                if error is not None:
                    raise error
    for key in ('network_g', 'network_d'):
        if isinstance(opt.get(key), Mapping):
            _check_network(opt[key], key, prefix)
    model_class = MODEL_REGISTRY.get(opt['model_type']) if opt.get('model_type') else None
    if model_class is not None:
        for section in ('train', 'val'):
            if isinstance(opt.get(section), Mapping):
                _check_section(opt[section], section, model_class, prefix)
    datasets = opt.get('datasets')
    if isinstance(datasets, Mapping):
        for phase, dataset_opt in datasets.items():
            if isinstance(dataset_opt, Mapping):
                _check_dataset(dataset_opt, f'datasets.{phase}', prefix)


def model_option_keys(model_class: type) -> dict[str, frozenset[str]] | None:
    """The ``train``/``val`` keys a model class accepts, or None when they are not known."""
    from basicsr.models.sr_model import SRModel

    declared = vars(model_class).get('OPTION_KEYS')
    if declared is not None:
        return declared
    if model_class is SRModel:
        return {'train': SRMODEL_TRAIN_KEYS, 'val': SRMODEL_VAL_KEYS}
    return None


def dataset_option_keys(dataset_class: type) -> frozenset[str] | None:
    """Every key a dataset class accepts (with :data:`COMMON_DATASET_KEYS`), or None when they are not known."""
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.data.single_image_dataset import SingleImageDataset

    own = vars(dataset_class).get('OPTION_KEYS')
    if own is None:
        own = {PairedImageDataset: PAIRED_IMAGE_DATASET_KEYS, SingleImageDataset: SINGLE_IMAGE_DATASET_KEYS}.get(
            dataset_class)
    return None if own is None else COMMON_DATASET_KEYS | own


def parameter_names(func: Callable) -> frozenset[str] | None:
    """Named parameters of ``func`` that an option can set; None when it also takes ``**kwargs`` and uses them
    (``**kwargs`` that the body never reads, as SwinIR's, swallow misspelt options: those are checked)."""
    parameters = inspect.signature(func).parameters.values()
    var_keyword = [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    if var_keyword and _reads_local(func, var_keyword[0]):
        return None
    return _named(func)


def _reads_local(func: Callable, name: str) -> bool:
    """Whether ``func``'s bytecode reads its local ``name`` (True when that cannot be told)."""
    try:
        instructions = dis.get_instructions(inspect.unwrap(func))
        return any(i.opname.startswith('LOAD') and i.argval == name for i in instructions)
    except TypeError:
        return True


def _named(func: Callable) -> frozenset[str]:
    return frozenset(p.name for p in inspect.signature(func).parameters.values()
                     if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                     and p.name not in _NOT_OPTIONS)


# numbers the toolbox and the models read from these sections (the blocks that build a class are checked against the
# defaults of its parameters instead)
NUMERIC_KEYS = {
    'train': ('total_iter', 'warmup_iter', 'ema_decay', 'accumulate_grad_step', 'grad_clip_norm',
              'max_nonfinite_steps', 'n_neg', 'archive_size'),
    'val': ('val_freq', 'pad_multiple'),
    'logger': ('print_freq', 'save_checkpoint_freq'),
}


def _number_error(value: object, where: str, prefix: str) -> OptionError | None:
    """An OptionError when ``value`` (read from the YAML at ``where``) is text where a number belongs."""
    if not isinstance(value, str):
        return None
    try:
        float(value)
    except ValueError:
        return OptionError(f"{prefix}{where}: {value!r} is not a number")
    return OptionError(f"{prefix}{where}: {value!r} is read as text (YAML needs a dot in a float: write "
                       f"{value.replace('e', '.0e', 1) if 'e' in value and '.' not in value else value} "
                       f"or !!float {value})")


def _check_numbers(options: Mapping, func: Callable, where: str, prefix: str) -> None:
    """Values of ``func``'s parameters whose default is a number must be numbers, not text."""
    for name, param in inspect.signature(func).parameters.items():
        default = param.default
        if name in options and isinstance(default, (int, float)) and not isinstance(default, bool):
            error = _number_error(options[name], f'{where}.{name}', prefix)
            if error is not None:
                raise error


def _reject_unknown(options: Mapping, valid: Iterable[str], where: str, owner: str, prefix: str) -> None:
    valid = sorted(set(valid))
    for key in options:
        if key in valid:
            continue
        close = difflib.get_close_matches(str(key), valid, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"{owner} accepts: {', '.join(valid)}"
        raise OptionError(f'{prefix}{where}.{key}: unknown option; {hint}')


def _check_network(network_opt: Mapping, where: str, prefix: str) -> None:
    from basicsr.utils.registry import ARCH_REGISTRY

    if 'type' not in network_opt:
        return
    arch = ARCH_REGISTRY.get(network_opt['type'])
    keys = parameter_names(arch.__init__)
    if keys is not None:
        _reject_unknown(network_opt, keys | {'type'}, where, network_opt['type'], prefix)
    _check_numbers(network_opt, arch.__init__, where, prefix)


def _check_section(section_opt: Mapping, section: str, model_class: type, prefix: str) -> None:
    keys = model_option_keys(model_class)
    if keys is None or keys.get(section) is None:
        return
    _reject_unknown(section_opt, keys[section], section, model_class.__name__, prefix)
    if section == 'val':
        if isinstance(section_opt.get('metrics'), Mapping):
            _check_metrics(section_opt['metrics'], prefix)
        return
    for key, block in section_opt.items():
        if not isinstance(block, Mapping) or 'type' not in block:
            continue
        if key.endswith('_opt'):
            built = _loss_class(block['type'])
        elif key.startswith('optim_'):
            built = _optimizer_class(block['type'])
        elif key == 'scheduler':
            built = _scheduler_class(block['type'])
        else:
            continue
        keys = parameter_names(built.__init__)
        if keys is not None:
            _reject_unknown(block, keys | {'type'}, f'train.{key}', built.__name__, prefix)
        _check_numbers(block, built.__init__, f'train.{key}', prefix)


def _check_metrics(metrics: Mapping, prefix: str) -> None:
    """``val.metrics.<name>``: the metric function's named parameters (BasicSR's swallow the rest in ``**kwargs``)."""
    from basicsr.utils.registry import METRIC_REGISTRY

    for name, metric_opt in metrics.items():
        if isinstance(metric_opt, Mapping) and 'type' in metric_opt:
            function = METRIC_REGISTRY.get(metric_opt['type'])
            _reject_unknown(metric_opt, _named(function) | METRIC_EXTRA_KEYS, f'val.metrics.{name}',
                            metric_opt['type'], prefix)


def _check_dataset(dataset_opt: Mapping, where: str, prefix: str) -> None:
    from basicsr.utils.registry import DATASET_REGISTRY

    if 'type' not in dataset_opt:
        return
    dataset_class = DATASET_REGISTRY.get(dataset_opt['type'])
    keys = dataset_option_keys(dataset_class)
    if keys is not None:
        _reject_unknown(dataset_opt, keys, where, dataset_class.__name__, prefix)
    source_keys = getattr(dataset_class, 'SOURCE_OPTION_KEYS', None)
    if source_keys is not None and isinstance(dataset_opt.get('sources'), list):
        for i, source in enumerate(dataset_opt['sources']):
            if isinstance(source, Mapping):
                _reject_unknown(source, source_keys, f'{where}.sources[{i}]', 'a source', prefix)


def _loss_class(name: str) -> type:
    from basicsr.utils.registry import LOSS_REGISTRY

    return LOSS_REGISTRY.get(name)


def _optimizer_class(name: str) -> type:
    from rainmer.compat.model import optimizer_names
    from rainmer.compat.registry import UnknownNameError, unknown_name_message

    if name not in optimizer_names():
        raise UnknownNameError(unknown_name_message('optimizer', name, optimizer_names(), plugin_hint=False))
    return getattr(torch.optim, name)


def _scheduler_class(name: str) -> type:
    from rainmer.utils.registry import SCHEDULER_REGISTRY

    return SCHEDULER_REGISTRY.get(name)
