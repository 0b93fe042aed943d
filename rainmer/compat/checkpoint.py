"""Checkpoint I/O: atomic writes, resume states that load on CPU under ``weights_only=True``, and network files
that do not load reported in one line."""
import collections
import collections.abc
import os
import os.path as osp
import pickle
import time
import zipfile

import torch
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.misc import check_resume

from rainmer.errors import UserError
from rainmer.utils.rng import capture_rng_states

STATE_SUFFIX = '.state'


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a kill never leaves a truncated file."""
    tmp_path = f'{path}.partial-{os.getpid()}'
    try:
        with open(tmp_path, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if osp.exists(tmp_path):
            os.remove(tmp_path)


def _save_with_retry(obj, path: str, what: str, retries: int = 3) -> None:
    for attempt in range(1, retries + 1):
        try:
            atomic_torch_save(obj, path)
            return
        except OSError as error:
            get_root_logger().warning(f'Cannot save {what} to {path} (attempt {attempt}/{retries}): {error}')
            time.sleep(1)
    get_root_logger().error(f'Gave up saving {what} to {path}; the previous checkpoints are intact.')


@master_only
def save_network(self: BaseModel, net, net_label: str, current_iter: int, param_key='params') -> None:
    """The toolbox's ``save_network`` (same file name and layout), written atomically."""
    suffix = 'latest' if current_iter == -1 else current_iter
    save_path = osp.join(self.opt['path']['models'], f'{net_label}_{suffix}.pth')
    nets = net if isinstance(net, list) else [net]
    param_keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(param_keys):
        raise ValueError('save_network: the lengths of net and param_key differ.')
    save_dict = {}
    for net_, key in zip(nets, param_keys):
        state_dict = self.get_bare_model(net_).state_dict()
        save_dict[key] = {k.removeprefix('module.'): v.cpu() for k, v in state_dict.items()}
    _save_with_retry(save_dict, save_path, 'network')


def training_state(self: BaseModel, epoch: int, current_iter: int) -> dict:
    """Everything needed to resume: epoch, iteration, optimisers, schedulers, RNG states, the model's extras."""
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers],
        'rng': capture_rng_states(),
    }
    extra = getattr(self, 'extra_training_state', None)
    if extra is not None:
        state.update(extra())
    return state


@master_only
def save_training_state(self: BaseModel, epoch: int, current_iter: int) -> None:
    """The toolbox's ``save_training_state``, written atomically, with the model's extra state."""
    if current_iter == -1:
        return
    save_path = osp.join(self.opt['path']['training_states'], f'{current_iter}{STATE_SUFFIX}')
    _save_with_retry(training_state(self, epoch, current_iter), save_path, 'training state')


def resume_map_location(opt: dict):
    """Where resume tensors go: the current CUDA device when training on GPU, the CPU otherwise."""
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def load_training_state(path: str, map_location='cpu') -> dict:
    """Load a resume state with ``weights_only=True`` (the toolbox's schedulers hold a Counter)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise RuntimeError(f'Cannot load the training state {path}: {error}') from error


def _candidate_states(state_dir: str) -> list[str]:
    if not osp.isdir(state_dir):
        return []
    iters = []
    for name in os.listdir(state_dir):
        stem = name[:-len(STATE_SUFFIX)] if name.endswith(STATE_SUFFIX) else ''
        if stem.isdigit():
            iters.append(int(stem))
    return [osp.join(state_dir, f'{it}{STATE_SUFFIX}') for it in sorted(iters, reverse=True)]


def network_files(opt: dict, resume_iter: int) -> list[str]:
    """The network files ``check_resume`` will load for ``resume_iter``: ``net_<x>_<iter>.pth`` per ``network_<x>``."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    return [osp.join(opt['path']['models'], f"net_{key[len('network_'):]}_{resume_iter}.pth")
            for key in opt if key.startswith('network_') and key not in ignored]


def network_file_problem(path: str) -> str:
    """'' when ``path`` loads (``weights_only``) and holds only finite tensors, else why not."""
    if not osp.isfile(path):
        return 'missing'
    try:
        saved = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: BLE001 (any failure to read means the same thing here)
        return f'unreadable ({type(error).__name__})'
    tensors = [t for group in (saved.values() if isinstance(saved, dict) else [saved])
               for t in (group.values() if isinstance(group, dict) else [group]) if isinstance(t, torch.Tensor)]
    bad = sum(1 for t in tensors if t.is_floating_point() and not torch.isfinite(t).all())
    return f'{bad} of {len(tensors)} tensors non-finite' if bad else ''


def load_resume_state(opt: dict, notes: list[str] | None = None) -> dict | None:
    """The state to resume from: ``path.resume_state``, or with ``--auto_resume`` the newest usable one.

    Auto-resume skips an iteration whose training state or network file (any ``network_*``) is missing, unreadable
    or non-finite, and falls back to the one before it; what it skipped goes to ``notes`` (the caller logs them once
    the log file exists: logging here would initialise the toolbox's logger without its file).
    """
    notes = [] if notes is None else notes
    map_location = resume_map_location(opt)
    if not opt.get('auto_resume'):
        path = opt['path'].get('resume_state')
        if not path:
            return None
        if not osp.isfile(path):
            raise FileNotFoundError(f'path.resume_state: no training state at {path}')
        state = load_training_state(path, map_location)
        check_resume(opt, state['iter'])
        return state

    state_dir = opt['path'].get('training_states') or osp.join('experiments', opt['name'], 'training_states')
    for path in _candidate_states(state_dir):
        resume_iter = int(osp.basename(path)[:-len(STATE_SUFFIX)])
        problems = [f'{net_path} is {problem}' for net_path in network_files(opt, resume_iter)
                    if (problem := network_file_problem(net_path))] if opt['path'].get('models') else []
        if problems:
            notes.append(f'Auto-resume skips iter {resume_iter}: {"; ".join(problems)}.')
            continue
        try:
            state = load_training_state(path, map_location)
        except RuntimeError as error:
            notes.append(f'Auto-resume skips iter {resume_iter}: {error}.')
            continue
        if notes:
            notes.append(f'Auto-resume falls back to iter {resume_iter}, the newest whose state and networks load.')
        opt['path']['resume_state'] = path
        check_resume(opt, state['iter'])
        return state
    if notes:
        notes.append('Auto-resume found no usable checkpoint: training starts from scratch.')
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_partials(folders: list[str]) -> list[str]:
    """Delete ``*.partial-<pid>`` files (see :func:`atomic_torch_save`) left by processes that no longer run."""
    removed = []
    for folder in folders:
        if not osp.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            head, sep, pid = name.rpartition('.partial-')
            if sep and head and pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
                os.remove(osp.join(folder, name))
                removed.append(osp.join(folder, name))
    return removed


class CheckpointError(UserError):
    """A network file that cannot be read, or whose tensors do not fit the configured network."""


_LOAD_ERRORS = (RuntimeError, EOFError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)


def network_state(saved, param_key: str | None, path: str) -> tuple[collections.OrderedDict, str]:
    """The network's state dict in a loaded checkpoint, and where it was found.

    ``param_key`` (``params`` / ``params_ema``: BasicSR), else ``params``, else ``state_dict`` (PyTorch Lightning,
    e.g. PromptIR's release; a ``net.``/``model.`` prefix shared by every key is removed), else ``model`` (the public
    Rainmer/DRSformer training code), else the file itself when it is a bare state dict (PReNet, IDT, RCDNet
    releases). ``module.`` and ``_orig_mod.`` prefixes (DataParallel, torch.compile) are removed.
    """
    if not isinstance(saved, collections.abc.Mapping):
        raise CheckpointError(f'{path}: does not hold a state dict')
    candidates = [param_key, 'params', 'state_dict', 'model'] if param_key else []
    where = next((k for k in candidates if isinstance(saved.get(k), collections.abc.Mapping)), None)
    if where is None and not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise CheckpointError(f'{path}: has no network weights under {", ".join(map(repr, candidates))} and is not a '
                              f'bare state dict (it has {", ".join(map(str, list(saved)[:6]))}); set '
                              'path.param_key_g to the entry holding the network')
    state = saved if where is None else saved[where]
    names = list(state)
    for wrapper in ('net.', 'model.'):  # a training framework's attribute holding the network
        if where == 'state_dict' and names and all(name.startswith(wrapper) for name in names):
            names = [name[len(wrapper):] for name in names]
    cleaned = collections.OrderedDict()
    for name, value in zip(names, state.values()):
        for prefix in ('module.', '_orig_mod.'):
            name = name.removeprefix(prefix)
        cleaned[name] = value
    return cleaned, where or 'the whole file'


def load_network(self: BaseModel, net, load_path: str, strict: bool = True, param_key='params') -> None:
    """The toolbox's ``load_network``, reading every checkpoint layout :func:`network_state` knows (so released
    checkpoints of the public codes load as they are); a missing, unreadable or mismatched file is one line that
    names it (instead of a traceback listing hundreds of keys)."""
    if not osp.isfile(load_path):
        raise CheckpointError(f'{load_path}: no network file there (path.pretrain_network_g)')
    bare = self.get_bare_model(net)
    try:
        saved = torch.load(load_path, map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: BLE001 (any failure to read means the same thing to the user)
        raise CheckpointError(describe_load_failure(bare, load_path, param_key, error)) from error
    state, where = network_state(saved, param_key, load_path)
    get_root_logger().info(f'Loading {type(bare).__name__} from {load_path} ({where}).')
    try:
        if not strict:  # a strict load fails on any difference, summarised below (networks may rename public layouts
            self._print_different_keys_loading(bare, state, strict)  # in a load_state_dict pre-hook)
        bare.load_state_dict(state, strict=strict)
    except _LOAD_ERRORS as error:
        raise CheckpointError(describe_load_failure(bare, load_path, param_key, error)) from error


def describe_load_failure(net: torch.nn.Module, load_path: str, param_key: str | None,
                          error: BaseException | None) -> str:
    """One line: why ``load_path`` does not load into ``net`` (unreadable, no such entry, or which keys differ)."""
    try:
        saved = torch.load(load_path, map_location='cpu', weights_only=True)
    except Exception as read_error:  # noqa: BLE001 (any failure to read means the same thing to the user)
        reason = str(read_error).strip().splitlines()[0].split('. ')[0] if str(read_error).strip() else \
            type(read_error).__name__
        return f'{load_path}: cannot be read as a PyTorch file (truncated or another format?): {reason}'
    state, _ = network_state(saved, param_key, load_path)
    return (f'{load_path} does not fit network_g ({type(net).__name__}): '
            f'{key_mismatch(net.state_dict(), state) or f"its tensors do not load ({error})"}; '
            f'was it trained with other network_g options (type, dim, num_blocks, ...)?')


def key_mismatch(own: dict, state: dict) -> str:
    """'' when ``state`` fits ``own`` (a network's state dict) key for key and shape for shape, else a summary:
    counts of missing, unexpected and differently shaped tensors, with an example of each kind."""
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    reshaped = [key for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    if not (missing or unexpected or reshaped):
        return ''
    examples = [f'missing {missing[0]}' if missing else '', f'unexpected {unexpected[0]}' if unexpected else '',
                f'{reshaped[0]} is {list(state[reshaped[0]].shape)} in the file but {list(own[reshaped[0]].shape)} in '
                'the network' if reshaped else '']
    return (f'{len(missing)} missing, {len(unexpected)} unexpected and {len(reshaped)} differently shaped tensors '
            f'(e.g. {", ".join(e for e in examples if e)})')


def patch_checkpoint_io() -> None:
    """Install atomic saving, CPU-capable resume and one-line load errors in the toolbox."""
    torch.serialization.add_safe_globals([collections.Counter])
    BaseModel.load_network = load_network
    BaseModel.save_network = save_network
    BaseModel.save_training_state = save_training_state
    import basicsr.train as toolbox_train

    toolbox_train.load_resume_state = load_resume_state
