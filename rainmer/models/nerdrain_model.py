"""NeRDRainModel: NeRD-Rain's multi-scale objective (docs/method.md#nerd-rain) on top of DerainModel."""
import inspect
from collections import OrderedDict

from basicsr.utils.registry import MODEL_REGISTRY

from rainmer.errors import OptionError
from rainmer.losses.nerdrain_loss import gaussian_pyramid
from rainmer.models.derain_model import DerainModel

SCALE_TERMS = (('pixel_opt', 'l_pix'), ('fft_opt', 'l_fft'), ('edge_opt', 'l_edge'))  # on each restored scale
INR_TERM = ('inr_opt', 'l_inr')  # on the INR outputs at 1/2 and 1/4


@MODEL_REGISTRY.register()
class NeRDRainModel(DerainModel):
    """Trains a network whose ``forward(x, multiscale=True)`` returns ``NeRDRainOutputs`` (NeRDRain, NeRDRainS).

    Targets are the Gaussian pyramid of ``gt`` (full, 1/2, 1/4). ``train`` options:

    - ``pixel_opt`` (required), ``fft_opt``, ``edge_opt``: applied to the restored image at every scale and summed
      (NeRD-Rain: ``CharbonnierLoss`` eps 1e-6 weight 1, ``FFTLoss`` 0.01, ``EdgeLoss`` 0.05);
    - ``inr_opt``: applied to the INR outputs at 1/2 and 1/4 against the targets there (``L1Loss`` 0.1);
    - the rest as DerainModel (``grad_clip_norm`` ~ by default: NeRD-Rain does not clip).

    Validation and testing run ``forward(x)`` (the full-size image), exactly as for the other restorers.
    """

    TRAIN_KEYS = DerainModel.TRAIN_KEYS | {'fft_opt', 'edge_opt', 'inr_opt'}
    LOSS_TERMS = (*SCALE_TERMS, INR_TERM)

    def init_training_settings(self):
        bare = self.get_bare_model(self.net_g)
        if 'multiscale' not in inspect.signature(bare.forward).parameters:
            raise OptionError(f'network_g.type: NeRDRainModel needs a network with forward(x, multiscale=True) '
                              f'(NeRDRain, NeRDRainS), not {type(bare).__name__}')
        super().init_training_settings()

    def forward_train(self):
        return self.net_g(self.lq, multiscale=True), {}

    def compute_losses(self, output, extras) -> OrderedDict:
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
