"""RainmerModel: the paper's multi-view contrastive training inside the toolbox's SRModel."""
import contextlib
import inspect
import os.path as osp
from collections import OrderedDict, defaultdict

import torch
import torch.nn.functional as F
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from rainmer.archs.modules.contrastive import degradation_detail_logits
from rainmer.models.multiview import NegativeArchive, build_multiview_batch
from rainmer.models.tiling import tiled_forward

LOSS_TERMS = (  # option key in `train`, logged name
    ('pixel_opt', 'l_pix'),
    ('ssim_opt', 'l_ssim'),
    ('chromatic_opt', 'l_chromatic'),
    ('degradation_detail_opt', 'l_degradation_detail'),
)


@MODEL_REGISTRY.register()
class RainmerModel(SRModel):
    """Rainmer's training (DESIGN.md 4-5) driven by YAML; validation/testing as SRModel plus tiles and per-source
    metrics.

    ``train`` options beyond SRModel's: ``optim_encoder`` (the representation encoder's optimiser; the backbone
    uses ``optim_g``), ``ssim_opt``, ``chromatic_opt``, ``degradation_detail_opt`` (losses), ``n_neg`` (4),
    ``archive_size`` (256), ``accumulate_grad_step`` (1), ``grad_clip_norm`` (0.01, backbone only; ~ to disable).
    The scheduler steps once per optimiser step, so its periods count optimiser steps while ``total_iter``
    counts batches (``total_iter = accumulate_grad_step x optimiser steps``).
    ``use_amp`` (False) with ``amp_dtype`` (``bf16`` | ``fp16``; bf16 by default): forward passes under autocast,
    losses in fp32; fp16 on CUDA scales the loss with a GradScaler (clipping after unscaling).
    ``val`` options beyond SRModel's: ``tile: {size, overlap}`` for large images, ``use_amp`` / ``amp_dtype``.
    """

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.accumulate_grad_step = int(train_opt.get('accumulate_grad_step', 1))
        if self.accumulate_grad_step < 1:
            raise ValueError('train.accumulate_grad_step must be >= 1')
        self.grad_clip_norm = train_opt.get('grad_clip_norm', 0.01)
        self.n_neg = int(train_opt.get('n_neg', 4))
        self.amp_dtype = _amp_dtype(train_opt)
        use_scaler = self.amp_dtype == torch.float16 and self.device.type == 'cuda'
        self.grad_scaler = torch.amp.GradScaler('cuda') if use_scaler else None
        net = self.get_bare_model(self.net_g)
        self.views = tuple(getattr(net, 'views', ()))
        self.archive = NegativeArchive(int(train_opt.get('archive_size', 256))) if self.views else None
        self.view_generator = torch.Generator(device=self.device)
        self.view_generator.manual_seed(int(self.opt.get('manual_seed') or 0) + int(self.opt.get('rank', 0)))
        super().init_training_settings()  # EMA, pixel loss, optimisers, schedulers

    def _build_losses(self) -> None:
        self.losses = OrderedDict()
        for key, name in LOSS_TERMS:
            loss_opt = self.opt['train'].get(key)
            if loss_opt is not None and (key in ('pixel_opt', 'ssim_opt') or self.views):
                self.losses[name] = build_loss(loss_opt).to(self.device)
        if 'l_pix' not in self.losses:
            raise ValueError('train.pixel_opt is required for RainmerModel')

    def setup_optimizers(self):
        self._build_losses()
        self.cri_pix = self.losses['l_pix']  # SRModel's checks expect it
        train_opt = self.opt['train']
        net = self.get_bare_model(self.net_g)
        encoder = getattr(net, 'query_encoder', None)
        encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        backbone_params, encoder_params = [], []
        for param in net.parameters():
            if not param.requires_grad:
                continue
            (encoder_params if id(param) in encoder_ids else backbone_params).append(param)
        self.backbone_params = backbone_params
        optim_g = dict(train_opt['optim_g'])
        self.optimizer_g = self.get_optimizer(optim_g.pop('type'), backbone_params, **optim_g)
        self.optimizers.append(self.optimizer_g)
        if encoder_params:
            optim_e = dict(train_opt.get('optim_encoder') or train_opt['optim_g'])
            self.optimizer_encoder = self.get_optimizer(optim_e.pop('type'), encoder_params, **optim_e)
            self.optimizers.append(self.optimizer_encoder)

    def before_training(self, train_loader) -> None:
        """Fill the archive of negatives from the first batches (called by the pipeline on a fresh start)."""
        if self.archive is None or self.archive.is_full:
            return
        logger = get_root_logger()
        logger.info(f'Pre-filling the archive of negatives ({self.archive.size} entries)...')
        while not self.archive.is_full:
            before = len(self.archive)
            for batch in train_loader:
                if self.archive.prefill(batch['lq_resize'].to(self.device), batch['gt_resize'].to(self.device)):
                    break
            if len(self.archive) == before:
                raise ValueError('datasets.train yields no batches to fill the archive of negatives')
        logger.info(f'Archive of negatives filled: {len(self.archive)} entries.')

    # ------------------------------------------------------------------ training
    def feed_data(self, data):
        super().feed_data(data)
        for key in ('lq_resize', 'gt_resize'):
            if key in data:
                setattr(self, key, data[key].to(self.device))

    def update_learning_rate(self, current_iter, warmup_iter=-1):
        """Step the schedulers once per optimiser step (iteration i uses the lr of step (i-1)//accumulation)."""
        optimiser_step = (current_iter - 1) // self.accumulate_grad_step + 1
        if current_iter > 1 and (current_iter - 1) % self.accumulate_grad_step == 0:
            for scheduler in self.schedulers:
                scheduler.step()
        if optimiser_step < warmup_iter:
            self._set_lr([[v / warmup_iter * optimiser_step for v in group] for group in self._get_init_lr()])

    def _forward_train(self):
        if not self.views:
            return self.net_g(self.lq), {}
        if self.archive is None or len(self.archive) < self.n_neg:
            raise RuntimeError('The archive of negatives is empty: the training pipeline must call before_training '
                               '(basicsr train does), or resume from a state that holds it.')
        views = build_multiview_batch(self.lq_resize, self.gt_resize, self.gt, self.archive, n_neg=self.n_neg,
                                      generator=self.view_generator, views=self.views)
        return self.net_g(self.lq, lq_resize=self.lq_resize, keys=views.keys, negatives=views.negatives)

    def _losses(self, output, logits) -> OrderedDict:
        terms = OrderedDict()
        terms['l_pix'] = self.losses['l_pix'](output, self.gt)
        if 'l_ssim' in self.losses:
            terms['l_ssim'] = self.losses['l_ssim'](output, self.gt)
        if 'l_chromatic' in self.losses and 'chromatic' in logits:
            terms['l_chromatic'] = self.losses['l_chromatic'](logits['chromatic'])
        if 'l_degradation_detail' in self.losses:
            joint = degradation_detail_logits(logits)
            if joint is not None:
                terms['l_degradation_detail'] = self.losses['l_degradation_detail'](joint)
        return terms

    def optimize_parameters(self, current_iter):
        micro_step = (current_iter - 1) % self.accumulate_grad_step
        step_now = micro_step == self.accumulate_grad_step - 1
        if micro_step == 0:
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
        ddp_accumulating = isinstance(self.net_g, DistributedDataParallel) and not step_now
        with self.net_g.no_sync() if ddp_accumulating else contextlib.nullcontext():
            with self._autocast(self.amp_dtype):
                self.output, logits = self._forward_train()
            if self.amp_dtype is not None:  # losses in fp32
                self.output, logits = _to_float(self.output), _to_float(logits)
            terms = self._losses(self.output, logits)
            total = sum(terms.values())
            loss = total / self.accumulate_grad_step
            (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()
        if step_now:
            if self.grad_scaler is not None:
                for optimizer in self.optimizers:
                    self.grad_scaler.unscale_(optimizer)
            if self.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(self.backbone_params, self.grad_clip_norm)
            for optimizer in self.optimizers:
                if self.grad_scaler is not None:
                    self.grad_scaler.step(optimizer)
                else:
                    optimizer.step()
            if self.grad_scaler is not None:
                self.grad_scaler.update()
            if self.ema_decay > 0:
                self.model_ema(decay=self.ema_decay)
        terms['l_total'] = total
        self.log_dict = self.reduce_loss_dict({k: v.detach() for k, v in terms.items()})

    # ------------------------------------------------------------------ state
    def extra_training_state(self) -> dict:
        """Saved with optimisers/schedulers (the key encoder is in the network file)."""
        state = {'view_generator': self.view_generator.get_state()}
        if getattr(self, 'grad_scaler', None) is not None:
            state['grad_scaler'] = self.grad_scaler.state_dict()
        if self.archive is not None:
            state['archive'] = self.archive.state_dict()
        return state

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if 'view_generator' in resume_state:
            self.view_generator.set_state(resume_state['view_generator'].cpu()
                                          if self.device.type == 'cpu' else resume_state['view_generator'])
        if self.grad_scaler is not None and 'grad_scaler' in resume_state:
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])
        if self.archive is not None and 'archive' in resume_state:
            self.archive.load_state_dict(resume_state['archive'])

    # ------------------------------------------------------------------ inference
    def _restore(self, net, lq):
        bare = self.get_bare_model(net)
        takes_prompt_image = 'lq_resize' in inspect.signature(bare.forward).parameters
        tile = (self.opt.get('val') or {}).get('tile')
        if not tile or max(lq.shape[-2:]) <= tile['size']:
            return bare(lq)
        kwargs = {}
        if takes_prompt_image:  # one prompt for the whole image, not one per tile
            size = getattr(bare, 'prompt_size', 128)
            kwargs['lq_resize'] = F.interpolate(lq, size=(size, size), mode='bilinear', align_corners=False)
        return tiled_forward(lambda patch: bare(patch, **kwargs), lq, tile['size'], tile.get('overlap', 32))

    def test(self):
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad(), self._autocast(_amp_dtype(self.opt.get('val') or {})):
            self.output = self._restore(net, self.lq).float()
        net.train(was_training)

    def _autocast(self, dtype: torch.dtype | None):
        """Autocast on this model's device with ``dtype`` (disabled for None: fp32)."""
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

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
            visuals = self.get_current_visuals()
            sr_img = tensor2img([visuals['result']])
            gt_img = tensor2img([visuals['gt']]) if 'gt' in visuals else None
            del self.lq, self.output
            if hasattr(self, 'gt'):
                del self.gt
            if save_img:
                self._save_image(sr_img, dataset_name, img_name, current_iter)
            source = int(val_data['source'][0]) if 'source' in val_data else None
            if metrics_opt and gt_img is not None:
                counts[source] += 1
                for name, opt_ in metrics_opt.items():
                    value = calculate_metric({'img': sr_img, 'img2': gt_img}, opt_)
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
        self.metric_results = {name: value / max(total, 1) for name, value in sums.items()}
        for name, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, name, value, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        if len(per_source) > 1:
            self._log_per_source(dataset_name, per_source, counts, source_names, current_iter, tb_logger)

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
                    tb_logger.add_scalar(f'metrics/{dataset_name}/{label}/{name}', value, current_iter)
        get_root_logger().info('\n'.join(lines))


def _to_float(value):
    """fp32 copies of the tensors in a tensor, a (named) tuple, a list or a dict; other values as they are."""
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, dict):
        return {key: _to_float(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, '_fields'):
        return type(value)(*(_to_float(item) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float(item) for item in value)
    return value


def _amp_dtype(opt: dict) -> torch.dtype | None:
    """The autocast dtype of an options section: None unless ``use_amp``; ``amp_dtype`` bf16 (default) or fp16."""
    if not opt.get('use_amp', False):
        return None
    name = str(opt.get('amp_dtype', 'bf16')).lower()
    dtypes = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16, 'fp16': torch.float16, 'float16': torch.float16}
    if name not in dtypes:
        raise ValueError(f'amp_dtype must be bf16 or fp16, got {name!r}')
    return dtypes[name]

