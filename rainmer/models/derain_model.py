"""DerainModel: the toolbox's SRModel with what every deraining network needs, whatever its architecture.

SwinIR, RRDBNet, DRSformer, NeRD-Rain, Rainmer and user networks train and test through this one class:

* validation/test at any image size: reflect-padded to the multiple the network needs and cropped back
  (:func:`size_multiple`), optionally in overlapping tiles; AMP (bf16/fp16) for training and validation;
* gradient accumulation (the scheduler steps once per optimiser step), gradient clipping;
* a divergence guard: a non-finite loss or gradient skips the optimiser step and is logged; too many in a row stop
  the run with one line; a network with non-finite weights is never saved;
* metrics per source when a validation set mixes several (e.g. Rain13K + GT-Rain + GTAV).

A variant overrides :meth:`forward_train` (the network's training output and any extras) and
:meth:`compute_losses` (the named loss terms); see ``RainmerModel`` and ``NeRDRainModel``.
"""
import contextlib
import inspect
import math
import os.path as osp
from collections import OrderedDict, defaultdict

import torch
import torch.nn.functional as F
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from rainmer.errors import OptionError, UserError
from rainmer.models.tiling import tiled_forward
from rainmer.option_check import SRMODEL_TRAIN_KEYS, SRMODEL_VAL_KEYS

# the input multiple of toolbox networks that do not pad themselves, from their network_g options
TOOLBOX_SIZE_MULTIPLES = {
    'SwinIR': lambda opt: int(opt['window_size']),  # window attention on the LR input
    'RRDBNet': lambda opt: {1: 4, 2: 2}.get(int(opt['scale']), 1),  # pixel-unshuffle before the trunk
}
AMP_DTYPES = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16, 'fp16': torch.float16, 'float16': torch.float16}


class DivergenceError(UserError):
    """Training produced non-finite losses or gradients too many steps in a row."""


class ImageSizeError(UserError):
    """The network cannot run on an image of this size, even padded to its size multiple."""


def _with_defaults(network_opt: dict) -> dict:
    """``network_g`` options completed with the arch constructor's defaults."""
    arch = ARCH_REGISTRY.get(network_opt['type'])
    defaults = {name: param.default for name, param in inspect.signature(arch.__init__).parameters.items()
                if param.default is not inspect.Parameter.empty}
    return {**defaults, **network_opt}


def size_multiple(net: nn.Module, network_opt: dict | None = None, override: int | None = None) -> int:
    """The multiple H and W of the network's input must have: ``override`` (``val.pad_multiple``), else what the
    network declares (a ``size_multiple`` attribute), else the toolbox rule for its type, else 1 (any size; the
    project's networks pad themselves)."""
    if override:
        return int(override)
    declared = getattr(net, 'size_multiple', None)
    if declared:
        return int(declared)
    if network_opt and network_opt.get('type') in TOOLBOX_SIZE_MULTIPLES:
        return TOOLBOX_SIZE_MULTIPLES[network_opt['type']](_with_defaults(network_opt))
    return 1


def pad_and_crop(forward, x: Tensor, multiple: int, scale: int = 1) -> Tensor:
    """``forward`` on x reflect-padded (bottom/right) to a multiple of ``multiple``, output cropped to ``scale`` x
    x's size. Images too small to reflect are padded by replication."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return forward(x)[..., :h * scale, :w * scale]


def restore_image(net: nn.Module, lq: Tensor, multiple: int, scale: int = 1, tile: int = 0,
                  overlap: int = 32) -> Tensor:
    """``net``'s output for a whole image of any size: padded to ``multiple`` and cropped back, in overlapping tiles
    when its longer side exceeds ``tile`` (0: never); a network taking ``lq_resize`` (Rainmer's prompts) gets the
    whole image resized as its prompt input, not one per tile."""
    if not tile or max(lq.shape[-2:]) <= tile:
        return pad_and_crop(net, lq, multiple, scale)
    if scale != 1:
        raise OptionError(f'val.tile: tiled restoration needs scale 1 (the model has scale {scale})')
    kwargs = {}
    if 'lq_resize' in inspect.signature(net.forward).parameters:
        size = getattr(net, 'prompt_size', 128)
        kwargs['lq_resize'] = F.interpolate(lq, size=(size, size), mode='bilinear', align_corners=False)
    return tiled_forward(lambda patch: pad_and_crop(lambda x: net(x, **kwargs), patch, multiple), lq, tile, overlap)


def amp_dtype(opt: dict) -> torch.dtype | None:
    """The autocast dtype of an options section: None unless ``use_amp``; ``amp_dtype`` bf16 (default) or fp16."""
    if not opt.get('use_amp', False):
        return None
    name = str(opt.get('amp_dtype', 'bf16')).lower()
    if name not in AMP_DTYPES:
        raise OptionError(f"amp_dtype: '{name}' is not one of bf16, fp16")
    return AMP_DTYPES[name]


def to_float(value):
    """fp32 copies of the tensors in a tensor, a (named) tuple, a list or a dict; other values as they are."""
    if isinstance(value, Tensor):
        return value.float()
    if isinstance(value, dict):
        return {key: to_float(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, '_fields'):
        return type(value)(*(to_float(item) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_float(item) for item in value)
    return value


@MODEL_REGISTRY.register()
class DerainModel(SRModel):
    """Any restoration network on deraining data (see the module docs).

    ``train`` options beyond SRModel's: ``ssim_opt`` (a loss on the restored image, e.g. ``SSIMLoss``),
    ``accumulate_grad_step`` (1), ``grad_clip_norm`` (~: no clipping), ``max_nonfinite_steps`` (10),
    ``use_amp`` / ``amp_dtype`` (bf16 | fp16; fp16 on CUDA scales the loss with a GradScaler).
    ``val`` options beyond SRModel's: ``pad_multiple`` (override of the network's size multiple),
    ``tile: {size, overlap}``, ``use_amp`` / ``amp_dtype``.
    """

    TRAIN_KEYS = frozenset({'ssim_opt', 'accumulate_grad_step', 'grad_clip_norm', 'max_nonfinite_steps', 'use_amp',
                            'amp_dtype'})
    VAL_KEYS = frozenset({'pad_multiple', 'tile', 'use_amp', 'amp_dtype'})
    LOSS_TERMS = (('pixel_opt', 'l_pix'), ('ssim_opt', 'l_ssim'))  # (train option, logged name), summed
    DEFAULT_GRAD_CLIP_NORM = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.OPTION_KEYS = _option_keys(cls)

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.accumulate_grad_step = int(train_opt.get('accumulate_grad_step', 1))
        if self.accumulate_grad_step < 1:
            raise OptionError(f'train.accumulate_grad_step: {self.accumulate_grad_step} must be >= 1')
        self.grad_clip_norm = train_opt.get('grad_clip_norm', self.DEFAULT_GRAD_CLIP_NORM)
        self.max_nonfinite_steps = int(train_opt.get('max_nonfinite_steps', 10))
        self.nonfinite_steps = 0
        self.amp_dtype = amp_dtype(train_opt)
        use_scaler = self.amp_dtype == torch.float16 and self.device.type == 'cuda'
        self.grad_scaler = torch.amp.GradScaler('cuda') if use_scaler else None
        super().init_training_settings()  # EMA, SRModel's losses, optimisers, schedulers

    def build_losses(self) -> None:
        """``self.losses``: logged name -> loss module, for every configured entry of :attr:`LOSS_TERMS`."""
        self.losses = OrderedDict()
        for key, name in self.LOSS_TERMS:
            loss_opt = self.opt['train'].get(key)
            if loss_opt is not None:
                self.losses[name] = build_loss(loss_opt).to(self.device)
        if 'l_pix' not in self.losses and self.cri_perceptual is None:
            raise OptionError(f'train.pixel_opt is required for {type(self).__name__}')

    def setup_optimizers(self):
        self.build_losses()  # after SRModel's cri_pix/cri_perceptual, before the optimisers
        super().setup_optimizers()

    def clipped_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradient norm ``grad_clip_norm`` bounds (all trainable ones)."""
        return [p for p in self.net_g.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ training
    def update_learning_rate(self, current_iter, warmup_iter=-1):
        """Step the schedulers once per optimiser step (iteration i uses the lr of step (i-1)//accumulation)."""
        optimiser_step = (current_iter - 1) // self.accumulate_grad_step + 1
        if current_iter > 1 and (current_iter - 1) % self.accumulate_grad_step == 0:
            for scheduler in self.schedulers:
                scheduler.step()
        if optimiser_step < warmup_iter:
            self._set_lr([[v / warmup_iter * optimiser_step for v in group] for group in self._get_init_lr()])

    def forward_train(self):
        """The network's training output and extras for :meth:`compute_losses` (override in a variant)."""
        return self.net_g(self.lq), {}

    def compute_losses(self, output, extras) -> OrderedDict:
        """Named loss terms of one batch (override in a variant); their sum is minimised."""
        terms = OrderedDict()
        for name, criterion in self.losses.items():
            terms[name] = criterion(output, self.gt)
        if self.cri_perceptual is not None:
            percep, style = self.cri_perceptual(output, self.gt)
            if percep is not None:
                terms['l_percep'] = percep
            if style is not None:
                terms['l_style'] = style
        return terms

    def optimize_parameters(self, current_iter):
        micro_step = (current_iter - 1) % self.accumulate_grad_step
        step_now = micro_step == self.accumulate_grad_step - 1
        if micro_step == 0:
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
        ddp_accumulating = isinstance(self.net_g, DistributedDataParallel) and not step_now
        with self.net_g.no_sync() if ddp_accumulating else contextlib.nullcontext():
            with self.autocast(self.amp_dtype):
                self.output, extras = self.forward_train()
            if self.amp_dtype is not None:  # losses in fp32
                self.output, extras = to_float(self.output), to_float(extras)
            terms = self.compute_losses(self.output, extras)
            total = sum(terms.values())
            loss = total / self.accumulate_grad_step
            (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()
        if step_now:
            self._step(current_iter, terms)
        terms['l_total'] = total
        self.log_dict = self.reduce_loss_dict({k: v.detach() for k, v in terms.items()})

    def _step(self, current_iter: int, terms: OrderedDict) -> None:
        """Unscale, check, clip and step every optimiser, then update the EMA network."""
        if self.grad_scaler is not None:
            for optimizer in self.optimizers:
                self.grad_scaler.unscale_(optimizer)
        if not self._finite_step(current_iter, terms):
            if self.grad_scaler is not None:
                self.grad_scaler.update()  # lowers the scale after an overflow
            return
        if self.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(self.clipped_parameters(), self.grad_clip_norm)
        for optimizer in self.optimizers:
            if self.grad_scaler is not None:
                self.grad_scaler.step(optimizer)
            else:
                optimizer.step()
        if self.grad_scaler is not None:
            self.grad_scaler.update()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _finite_step(self, current_iter: int, terms: OrderedDict) -> bool:
        """The divergence guard: False (and gradients dropped) when a loss term or a gradient is not finite."""
        grads = [p.grad for group in self.optimizers for g in group.param_groups for p in g['params']
                 if p.grad is not None]
        finite = all(torch.isfinite(v).all() for v in terms.values())
        if finite and grads:
            finite = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        if finite:
            self.nonfinite_steps = 0
            return True
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None and all(torch.isfinite(v).all() for v in terms.values()):
            return False  # fp16 overflow in the gradients: GradScaler's normal skip, not a divergence
        self.nonfinite_steps += 1
        values = ', '.join(f'{name}: {float(value.detach()):.4g}' for name, value in terms.items())
        get_root_logger().warning(f'iter {current_iter}: non-finite loss or gradient ({values}); optimiser step '
                                  f'skipped ({self.nonfinite_steps}/{self.max_nonfinite_steps} in a row).')
        if self.nonfinite_steps >= self.max_nonfinite_steps:
            raise DivergenceError(
                f'training diverged at iter {current_iter}: {self.nonfinite_steps} optimiser steps in a row had a '
                f'non-finite loss or gradient ({values}); lower train.optim_g.lr, set train.grad_clip_norm, or '
                f'resume from an earlier checkpoint (train.max_nonfinite_steps sets the limit).')
        return False

    # ------------------------------------------------------------------ state
    def extra_training_state(self) -> dict:
        """Saved with optimisers and schedulers (see rainmer/compat/checkpoint.py)."""
        state = {'nonfinite_steps': self.nonfinite_steps}
        if self.grad_scaler is not None:
            state['grad_scaler'] = self.grad_scaler.state_dict()
        return state

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        self.nonfinite_steps = int(resume_state.get('nonfinite_steps', 0))
        if self.grad_scaler is not None and 'grad_scaler' in resume_state:
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])

    def save_network(self, net, net_label, current_iter, param_key='params'):
        """Refuse to write non-finite weights: a checkpoint is never poisoned by a diverged run."""
        for one in net if isinstance(net, list) else [net]:
            bad = [name for name, tensor in self.get_bare_model(one).state_dict().items()
                   if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
            if bad:
                raise DivergenceError(f'not saving {net_label} at iter {current_iter}: {len(bad)} tensors hold '
                                      f'non-finite values (first: {bad[0]}); resume from an earlier checkpoint.')
        super().save_network(net, net_label, current_iter, param_key)

    # ------------------------------------------------------------------ inference
    def autocast(self, dtype: torch.dtype | None):
        """Autocast on this model's device with ``dtype`` (disabled for None: fp32)."""
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def restore(self, net: nn.Module, lq: Tensor) -> Tensor:
        """The network's output for a whole image of any size: padded to its size multiple and cropped back, in
        tiles when ``val.tile`` asks for it (prompt networks get the whole image as their prompt input)."""
        bare = self.get_bare_model(net)
        val_opt = self.opt.get('val') or {}
        multiple = size_multiple(bare, self.opt.get('network_g'), val_opt.get('pad_multiple'))
        tile = val_opt.get('tile') or {}
        return restore_image(bare, lq, multiple, int(self.opt.get('scale', 1)), tile.get('size', 0),
                             tile.get('overlap', 32))

    def _restore_checked(self, net: nn.Module, lq: Tensor) -> Tensor:
        """:meth:`restore`, with a size the network cannot run turned into one line naming the size and multiple."""
        try:
            return self.restore(net, lq)
        except (RuntimeError, AssertionError) as error:  # shape errors, and the toolbox's size asserts
            if 'out of memory' in str(error).lower():
                raise
            bare = self.get_bare_model(net)
            val_opt = self.opt.get('val') or {}
            multiple = size_multiple(bare, self.opt.get('network_g'), val_opt.get('pad_multiple'))
            h, w = lq.shape[-2:]
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ImageSizeError(
                f'{type(bare).__name__} cannot restore a {h}x{w} image padded to a multiple of {multiple} '
                f'({h + -h % multiple}x{w + -w % multiple}): {reason}; set val.pad_multiple to the multiple the '
                f'network needs (or give the class a size_multiple attribute)') from error

    def test(self):
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad(), self.autocast(amp_dtype(self.opt.get('val') or {})):
            self.output = self._restore_checked(net, self.lq).float()
        net.train(was_training)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """SRModel's validation, plus metrics per source when the set mixes sources."""
        dataset = dataloader.dataset
        dataset_name = dataset.opt['name']
        metrics_opt = (self.opt.get('val') or {}).get('metrics')
        source_names = [getattr(s, 'name', str(i)) for i, s in enumerate(getattr(dataset, 'sources', []))]
        sums, per_source, counts = defaultdict(float), defaultdict(lambda: defaultdict(float)), defaultdict(int)
        if metrics_opt:
            self._initialize_best_metric_results(dataset_name)
        pbar = tqdm(total=len(dataloader), unit='image') if self.opt['val'].get('pbar', False) else None
        for val_data in dataloader:
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            self.feed_data(val_data)
            self.test()
            data = self.metric_data(self.get_current_visuals())
            sr_img = data['img']
            del self.lq, self.output
            if hasattr(self, 'gt'):
                del self.gt
            if save_img:
                self._save_image(sr_img, dataset_name, img_name, current_iter)
            source = int(val_data['source'][0]) if 'source' in val_data else None
            if metrics_opt and 'img2' in data:
                counts[source] += 1
                for name, opt_ in metrics_opt.items():
                    value = calculate_metric(data, opt_)
                    sums[name] += value
                    per_source[source][name] += value
            if pbar is not None:
                pbar.update(1)
                pbar.set_description(f'Test {img_name}')
        if pbar is not None:
            pbar.close()
        if not metrics_opt:
            return
        total = sum(counts.values())
        if total == 0:
            raise OptionError(f'val.metrics: {dataset_name} has no ground-truth images to compare with; remove '
                              f'val.metrics to restore only, or give the dataset its ground truth')
        self.metric_results = {name: value / max(total, 1) for name, value in sums.items()}
        for name, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, name, value, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        if len(per_source) > 1:
            self._log_per_source(dataset_name, per_source, counts, source_names, current_iter, tb_logger)

    @staticmethod
    def metric_data(visuals: dict) -> dict:
        """What every metric gets (``calculate_metric(data, opt)``): BasicSR's ``img`` / ``img2`` (uint8 HWC BGR from
        ``tensor2img``, which clamps to [0, 1] and rounds) and, for the paper-protocol metrics, ``img_float`` /
        ``img2_float``: the same tensors clamped to [0, 1] as HWC RGB float64 arrays, before any quantisation.
        BasicSR's own metrics swallow the float keys in ``**kwargs``. The ``img2*`` keys only when there is a ``gt``."""
        data = {}
        for key, name in (('img', 'result'), ('img2', 'gt')):
            if name in visuals:
                tensor = visuals[name].detach().cpu()
                data[key] = tensor2img([tensor])
                data[f'{key}_float'] = tensor.squeeze(0).double().clamp(0, 1).permute(1, 2, 0).numpy()
        return data

    def _save_image(self, image, dataset_name: str, img_name: str, current_iter) -> None:
        suffix = self.opt['val'].get('suffix') or (current_iter if self.opt['is_train'] else dataset_name)
        folder = img_name if self.opt['is_train'] else dataset_name
        imwrite(image, osp.join(self.opt['path']['visualization'], folder, f'{img_name}_{suffix}.png'))

    def _log_per_source(self, dataset_name, per_source, counts, source_names, current_iter, tb_logger) -> None:
        self.metric_results_per_source = {}
        lines = [f'Validation {dataset_name} per source']
        for source in sorted(per_source, key=lambda s: -1 if s is None else s):
            label = source_names[source] if source is not None and source < len(source_names) else str(source)
            values = {name: value / counts[source] for name, value in per_source[source].items()}
            self.metric_results_per_source[label] = values
            lines.append(f'\t {label} ({counts[source]} images): ' +
                         ', '.join(f'{name}: {value:.4f}' for name, value in values.items()))
            if tb_logger:
                for name, value in values.items():
                    if math.isfinite(value):
                        tb_logger.add_scalar(f'metrics/{dataset_name}/{label}/{name}', value, current_iter)
        get_root_logger().info('\n'.join(lines))


def _option_keys(model_class: type) -> dict[str, frozenset[str]]:
    """Every ``train`` and ``val`` key a model class reads (checked by rainmer/option_check.py)."""
    return {'train': SRMODEL_TRAIN_KEYS | model_class.TRAIN_KEYS, 'val': SRMODEL_VAL_KEYS | model_class.VAL_KEYS}


DerainModel.OPTION_KEYS = _option_keys(DerainModel)
