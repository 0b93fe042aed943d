"""BaseModel fixes: DDP on CPU, optimisers by ``torch.optim`` name, schedulers from a registry."""
import torch
from basicsr.models import lr_scheduler as toolbox_schedulers
from basicsr.models.base_model import BaseModel
from torch.nn.parallel import DistributedDataParallel

from rainmer.compat.registry import UnknownNameError, unknown_name_message
from rainmer.utils.registry import SCHEDULER_REGISTRY

_toolbox_model_to_device = BaseModel.model_to_device
_toolbox_get_optimizer = BaseModel.get_optimizer
_toolbox_validation = BaseModel.validation


def model_to_device(self: BaseModel, net: torch.nn.Module) -> torch.nn.Module:
    """The toolbox's ``model_to_device`` (wrapped); under DDP on CPU, where it would name a CUDA device, DDP
    wraps the model without device ids."""
    if self.opt['dist'] and self.device.type != 'cuda':
        return DistributedDataParallel(net.to(self.device), device_ids=None,
                                       find_unused_parameters=self.opt.get('find_unused_parameters', False))
    return _toolbox_model_to_device(self, net)


def optimizer_names() -> list[str]:
    """Every optimiser class in ``torch.optim``."""
    base = torch.optim.Optimizer
    return sorted(name for name, obj in vars(torch.optim).items()
                  if isinstance(obj, type) and issubclass(obj, base) and obj is not base)


def get_optimizer(self: BaseModel, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
    """The toolbox's ``get_optimizer`` (wrapped), which only knows Adam; any other ``torch.optim`` class by name."""
    if optim_type not in optimizer_names():
        raise UnknownNameError(unknown_name_message('optimizer', optim_type, optimizer_names(), plugin_hint=False))
    try:
        return _toolbox_get_optimizer(self, optim_type, params, lr, **kwargs)
    except NotImplementedError:  # raised before it touches ``params``
        return getattr(torch.optim, optim_type)(params, lr, **kwargs)


def setup_schedulers(self: BaseModel) -> None:
    """One scheduler per optimiser, built from ``train.scheduler`` through :data:`SCHEDULER_REGISTRY`.

    Replaces the toolbox's method, which knows two names and pops ``type`` out of the options."""
    scheduler_opt = dict(self.opt['train']['scheduler'])
    scheduler_class = SCHEDULER_REGISTRY.get(scheduler_opt.pop('type'))
    for optimizer in self.optimizers:
        self.schedulers.append(scheduler_class(optimizer, **scheduler_opt))


def register_toolbox_schedulers() -> None:
    """Put the toolbox's own schedulers (and its 'MultiStepLR' alias) in the registry."""
    for name, scheduler_class in (('MultiStepLR', toolbox_schedulers.MultiStepRestartLR),
                                  ('MultiStepRestartLR', toolbox_schedulers.MultiStepRestartLR),
                                  ('CosineAnnealingRestartLR', toolbox_schedulers.CosineAnnealingRestartLR)):
        if name not in SCHEDULER_REGISTRY:
            SCHEDULER_REGISTRY._do_register(name, scheduler_class)


def validation(self: BaseModel, dataloader, current_iter, tb_logger, save_img: bool = False) -> None:
    """Validate with the bare networks: under DDP only rank 0 validates, and a DDP forward there would
    start a buffer broadcast that no other rank joins (a hang or a crash)."""
    wrapped = {name: net for name, net in vars(self).items() if isinstance(net, DistributedDataParallel)}
    for name, net in wrapped.items():
        setattr(self, name, net.module)
    try:
        _toolbox_validation(self, dataloader, current_iter, tb_logger, save_img)
    finally:
        for name, net in wrapped.items():
            setattr(self, name, net)


def patch_base_model() -> None:
    """Install the fixes above on the toolbox's ``BaseModel`` (every model inherits them)."""
    register_toolbox_schedulers()
    BaseModel.model_to_device = model_to_device
    BaseModel.get_optimizer = get_optimizer
    BaseModel.setup_schedulers = setup_schedulers
    BaseModel.validation = validation
