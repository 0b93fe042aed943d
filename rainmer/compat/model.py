"""BaseModel fixes: DDP on CPU, optimisers by ``torch.optim`` name, schedulers from a registry."""
import torch
from basicsr.models import lr_scheduler as toolbox_schedulers
from basicsr.models.base_model import BaseModel
from torch.nn.parallel import DataParallel, DistributedDataParallel

from rainmer.compat.registry import UnknownNameError, unknown_name_message
from rainmer.utils.registry import SCHEDULER_REGISTRY


def model_to_device(self: BaseModel, net: torch.nn.Module) -> torch.nn.Module:
    """Move ``net`` to the model's device and wrap it for DDP (CPU or CUDA) or DataParallel."""
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def optimizer_names() -> list[str]:
    """Every optimiser class in ``torch.optim``."""
    base = torch.optim.Optimizer
    return sorted(name for name, obj in vars(torch.optim).items()
                  if isinstance(obj, type) and issubclass(obj, base) and obj is not base)


def get_optimizer(self: BaseModel, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
    """Build any ``torch.optim`` optimiser by class name (the toolbox only knows Adam)."""
    if optim_type not in optimizer_names():
        raise UnknownNameError(unknown_name_message('optimizer', optim_type, optimizer_names(), plugin_hint=False))
    return getattr(torch.optim, optim_type)(params, lr, **kwargs)


def setup_schedulers(self: BaseModel) -> None:
    """One scheduler per optimiser, built from ``train.scheduler`` through :data:`SCHEDULER_REGISTRY`."""
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


_toolbox_validation = BaseModel.validation


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
