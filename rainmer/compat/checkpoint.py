"""Checkpoint I/O: atomic writes, and resume states that load on CPU under ``weights_only=True``."""
import collections
import os
import os.path as osp
import time

import torch
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.misc import check_resume

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


def load_resume_state(opt: dict) -> dict | None:
    """The state to resume from: ``path.resume_state``, or with ``--auto_resume`` the newest readable one.

    Auto-resume skips (with a warning) a state that cannot be read or whose network file is missing,
    and falls back to the one before it. (Warnings go to the console only: the log file does not exist yet.)
    """
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
        net_path = osp.join(opt['path'].get('models', ''), f"net_g_{osp.basename(path)[:-len(STATE_SUFFIX)]}.pth")
        if opt['path'].get('models') and not osp.isfile(net_path):
            get_root_logger().warning(f'Skipping {path}: its network {net_path} is missing.')
            continue
        try:
            state = load_training_state(path, map_location)
        except RuntimeError as error:
            get_root_logger().warning(f'Skipping unreadable training state: {error}')
            continue
        opt['path']['resume_state'] = path
        check_resume(opt, state['iter'])
        return state
    return None


def patch_checkpoint_io() -> None:
    """Install atomic saving and CPU-capable resume in the toolbox."""
    torch.serialization.add_safe_globals([collections.Counter])
    BaseModel.save_network = save_network
    BaseModel.save_training_state = save_training_state
    import basicsr.train as toolbox_train

    toolbox_train.load_resume_state = load_resume_state
