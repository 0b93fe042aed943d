"""Distributed initialisation that works without CUDA (gloo) and honours ``dist_params.backend``."""
import os
import subprocess
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rainmer.errors import UserError


class LauncherError(UserError):
    """A distributed launcher asked for without the environment its launcher sets."""


def default_backend() -> str:
    """``nccl`` when CUDA devices are visible, ``gloo`` otherwise."""
    return 'nccl' if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 'gloo'


def resolve_backend(requested: str | None) -> str:
    """The requested backend, or the default; ``nccl`` without CUDA falls back to ``gloo`` with a warning."""
    backend = requested or default_backend()
    if backend == 'nccl' and default_backend() == 'gloo':
        warnings.warn("dist_params.backend 'nccl' needs CUDA, which is not available: using 'gloo'.", stacklevel=3)
        backend = 'gloo'
    return backend


def init_dist(launcher: str, backend: str | None = None, port: int | None = None, **kwargs) -> None:
    """Initialise ``torch.distributed`` for ``launcher`` ('pytorch' or 'slurm').

    ``port`` (stock configs carry ``dist_params: {backend: nccl, port: 29500}``) is used by slurm only;
    torchrun provides MASTER_PORT itself.
    """
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    backend = resolve_backend(backend)
    if launcher == 'pytorch':
        missing = [name for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if name not in os.environ]
        if missing:
            raise LauncherError(f"--launcher pytorch: {', '.join(missing)} not set; start the run with torchrun, e.g. "
                                f"`torchrun --nproc_per_node=2 -m rainmer.train -opt X.yml --launcher pytorch`, "
                                f"or drop --launcher for one process")
        _init_dist_pytorch(backend, **kwargs)
    elif launcher == 'slurm':
        _init_dist_slurm(backend, port=port)
    else:
        raise ValueError(f"Invalid launcher '{launcher}': use 'none', 'pytorch' or 'slurm'.")


def _select_cuda_device(local_rank: int) -> None:
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def _init_dist_pytorch(backend: str, **kwargs) -> None:
    local_rank = int(os.environ.get('LOCAL_RANK', os.environ.get('RANK', 0)))
    _select_cuda_device(local_rank)
    dist.init_process_group(backend=backend, **kwargs)


def _init_dist_slurm(backend: str, port: int | None = None) -> None:
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    num_gpus = max(torch.cuda.device_count(), 1)
    _select_cuda_device(proc_id)
    addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['MASTER_ADDR'] = addr
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['LOCAL_RANK'] = str(proc_id % num_gpus)
    os.environ['RANK'] = str(proc_id)
    dist.init_process_group(backend=backend)


def patch_distributed_init() -> None:
    """Route the toolbox's ``init_dist`` (which hard-codes nccl) to :func:`init_dist`."""
    import basicsr.utils.dist_util as dist_util
    import basicsr.utils.options as options

    dist_util.init_dist = init_dist
    options.init_dist = init_dist
