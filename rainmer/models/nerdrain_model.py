"""NeRDRainModel: NeRD-Rain's multi-scale objective inside the toolbox trainer, with RainmerModel's recipe plumbing
(per-optimiser-step scheduler, warm-up, gradient accumulation, tiled validation with per-source metrics)."""
import inspect
from collections import OrderedDict

from basicsr.losses import build_loss
from basicsr.utils.registry import MODEL_REGISTRY

from rainmer.losses.nerdrain_loss import gaussian_pyramid
from rainmer.models.rainmer_model import RainmerModel

SCALE_TERMS = (('pixel_opt', 'l_pix'), ('fft_opt', 'l_fft'), ('edge_opt', 'l_edge'))  # on each restored scale
INR_TERM = ('inr_opt', 'l_inr')  # on the INR outputs at 1/2 and 1/4


@MODEL_REGISTRY.register()
class NeRDRainModel(RainmerModel):
    """Trains a network whose ``forward(x, multiscale=True)`` returns ``NeRDRainOutputs`` (NeRDRain, NeRDRainS).

    Targets are the Gaussian pyramid of ``gt`` (full, 1/2, 1/4). ``train`` options:

    - ``pixel_opt`` (required), ``fft_opt``, ``edge_opt``: applied to the restored image at every scale and summed
      (NeRD-Rain: ``CharbonnierLoss`` eps 1e-6 weight 1, ``FFTLoss`` 0.01, ``EdgeLoss`` 0.05);
    - ``inr_opt``: applied to the INR outputs at 1/2 and 1/4 against the targets there (``L1Loss`` 0.1);
    - ``grad_clip_norm``: default ``~`` (NeRD-Rain does not clip); ``accumulate_grad_step`` as RainmerModel.

    Validation and testing run ``forward(x)`` (the full-size image), exactly as for the other restorers.
    """

    def init_training_settings(self):
        bare = self.get_bare_model(self.net_g)
        if 'multiscale' not in inspect.signature(bare.forward).parameters:
            raise ValueError(f'NeRDRainModel needs a network with forward(x, multiscale=True) (NeRDRain, NeRDRainS); '
                             f'got {type(bare).__name__}')
        super().init_training_settings()
        self.grad_clip_norm = self.opt['train'].get('grad_clip_norm')

    def _build_losses(self) -> None:
        self.losses = OrderedDict()
        for key, name in (*SCALE_TERMS, INR_TERM):
            loss_opt = self.opt['train'].get(key)
            if loss_opt is not None:
                self.losses[name] = build_loss(loss_opt).to(self.device)
        if 'l_pix' not in self.losses:
            raise ValueError('train.pixel_opt is required for NeRDRainModel')

    def _forward_train(self):
        return self.net_g(self.lq, multiscale=True), {}

    def _losses(self, output, logits) -> OrderedDict:
        targets = gaussian_pyramid(self.gt, 3)
        restored = (output.full, output.half, output.quarter)
        terms = OrderedDict()
        for _, name in SCALE_TERMS:
            if name in self.losses:
                terms[name] = sum(self.losses[name](pred, target) for pred, target in zip(restored, targets))
        if INR_TERM[1] in self.losses:
            criterion = self.losses[INR_TERM[1]]
            terms[INR_TERM[1]] = criterion(output.inr_half, targets[1]) + criterion(output.inr_quarter, targets[2])
        return terms
