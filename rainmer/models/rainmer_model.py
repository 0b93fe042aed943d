"""RainmerModel: the paper's multi-view contrastive training on top of DerainModel.

It adds only what Rainmer needs beyond any deraining network: the contrastive views (keys and negatives from an
archive of recent batches, docs/method.md#multi-view-contrastive-learning), their loss terms, and a second optimiser
for the representation encoder (docs/method.md#optimisation).
"""
from collections import OrderedDict

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from rainmer.archs.modules.contrastive import degradation_detail_logits
from rainmer.errors import OptionError, UserError
from rainmer.models.derain_model import DerainModel
from rainmer.models.multiview import NegativeArchive, build_multiview_batch


@MODEL_REGISTRY.register()
class RainmerModel(DerainModel):
    """Rainmer's training driven by YAML; validation and testing are DerainModel's.

    ``train`` options beyond DerainModel's: ``optim_encoder`` (the representation encoder's optimiser; the backbone
    uses ``optim_g``), ``chromatic_opt`` and ``degradation_detail_opt`` (the contrastive terms, e.g. ``InfoNCELoss``
    with weight 0.1), ``n_neg`` (4), ``archive_size`` (256); ``grad_clip_norm`` defaults to 0.01 and applies to the
    backbone only. The scheduler steps once per optimiser step, so its periods count optimiser steps while
    ``total_iter`` counts batches (``total_iter = accumulate_grad_step x optimiser steps``).
    """

    TRAIN_KEYS = DerainModel.TRAIN_KEYS | {'optim_encoder', 'chromatic_opt', 'degradation_detail_opt', 'n_neg',
                                           'archive_size'}
    LOSS_TERMS = (*DerainModel.LOSS_TERMS, ('chromatic_opt', 'l_chromatic'),
                  ('degradation_detail_opt', 'l_degradation_detail'))
    IMAGE_TERMS = ('l_pix', 'l_ssim')  # losses of the restored image; the others take contrastive logits
    DEFAULT_GRAD_CLIP_NORM = 0.01

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.n_neg = int(train_opt.get('n_neg', 4))
        self.views = tuple(getattr(self.get_bare_model(self.net_g), 'views', ()))
        self._check_prompt_size()
        self.archive = NegativeArchive(int(train_opt.get('archive_size', 256))) if self.views else None
        self.view_generator = torch.Generator(device=self.device)
        self.view_generator.manual_seed(int(self.opt.get('manual_seed') or 0) + int(self.opt.get('rank', 0)))
        super().init_training_settings()

    def _check_prompt_size(self) -> None:
        """The dataset's whole-image resize must be the size the query encoder is built for."""
        resize = ((self.opt.get('datasets') or {}).get('train') or {}).get('resize_size')
        prompt_size = getattr(self.get_bare_model(self.net_g), 'prompt_size', None)
        if self.views and resize is not None and prompt_size is not None and int(resize) != int(prompt_size):
            raise OptionError(f'datasets.train.resize_size ({resize}) differs from network_g.prompt_size '
                              f'({prompt_size}): the views and the prompts are computed at one size; set both alike')

    def build_losses(self) -> None:
        super().build_losses()
        if not self.views:  # a network without views (baseline, any toolbox network) has no contrastive terms
            for name in ('l_chromatic', 'l_degradation_detail'):
                self.losses.pop(name, None)

    def setup_optimizers(self):
        """``optim_g`` for the backbone, ``optim_encoder`` (default: ``optim_g``'s settings) for the query encoder."""
        self.build_losses()
        train_opt = self.opt['train']
        net = self.get_bare_model(self.net_g)
        encoder = getattr(net, 'query_encoder', None)
        encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        backbone_params, encoder_params = [], []
        for param in net.parameters():
            if param.requires_grad:
                (encoder_params if id(param) in encoder_ids else backbone_params).append(param)
        self.backbone_params = backbone_params
        optim_g = dict(train_opt['optim_g'])
        self.optimizer_g = self.get_optimizer(optim_g.pop('type'), backbone_params, **optim_g)
        self.optimizers.append(self.optimizer_g)
        if encoder_params:
            optim_e = dict(train_opt.get('optim_encoder') or train_opt['optim_g'])
            self.optimizer_encoder = self.get_optimizer(optim_e.pop('type'), encoder_params, **optim_e)
            self.optimizers.append(self.optimizer_encoder)

    def clipped_parameters(self):
        return self.backbone_params

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
                raise UserError('datasets.train yields no batches to fill the archive of negatives')
        logger.info(f'Archive of negatives filled: {len(self.archive)} entries.')

    # ------------------------------------------------------------------ training
    def feed_data(self, data):
        super().feed_data(data)
        for key in ('lq_resize', 'gt_resize'):
            if key in data:
                setattr(self, key, data[key].to(self.device))

    def forward_train(self):
        """The restored crop and the contrastive logits of every view (none for a network without views)."""
        if not self.views:
            return self.net_g(self.lq), {}
        if self.archive is None or len(self.archive) < self.n_neg:
            raise RuntimeError('The archive of negatives is empty: the training pipeline must call before_training '
                               '(basicsr train does), or resume from a state that holds it.')
        views = build_multiview_batch(self.lq_resize, self.gt_resize, self.gt, self.archive, n_neg=self.n_neg,
                                      generator=self.view_generator, views=self.views)
        return self.net_g(self.lq, lq_resize=self.lq_resize, keys=views.keys, negatives=views.negatives)

    def compute_losses(self, output, logits) -> OrderedDict:
        terms = OrderedDict((name, self.losses[name](output, self.gt)) for name in self.IMAGE_TERMS
                            if name in self.losses)
        if 'l_chromatic' in self.losses and 'chromatic' in logits:
            terms['l_chromatic'] = self.losses['l_chromatic'](logits['chromatic'])
        if 'l_degradation_detail' in self.losses:
            joint = degradation_detail_logits(logits)
            if joint is not None:
                terms['l_degradation_detail'] = self.losses['l_degradation_detail'](joint)
        return terms

    # ------------------------------------------------------------------ state
    def extra_training_state(self) -> dict:
        """Adds the view generator and the archive (the key encoder is in the network file)."""
        state = super().extra_training_state()
        state['view_generator'] = self.view_generator.get_state()
        if self.archive is not None:
            state['archive'] = self.archive.state_dict()
        return state

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if 'view_generator' in resume_state:
            self.view_generator.set_state(resume_state['view_generator'].cpu()
                                          if self.device.type == 'cpu' else resume_state['view_generator'])
        if self.archive is not None and 'archive' in resume_state:
            self.archive.load_state_dict(resume_state['archive'])
