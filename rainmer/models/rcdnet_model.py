"""RCDNetModel: RCDNet's stage-wise training objective (``RCDNetLoss``) on top of DerainModel."""
from collections import OrderedDict

from basicsr.utils.registry import MODEL_REGISTRY

from rainmer.archs.rcdnet_arch import RCDNet
from rainmer.errors import OptionError
from rainmer.losses.rcdnet_loss import RCDNetLoss
from rainmer.models.derain_model import DerainModel


@MODEL_REGISTRY.register()
class RCDNetModel(DerainModel):
    """Trains :class:`~rainmer.archs.rcdnet_arch.RCDNet` through ``forward(lq, return_stages=True)``.

    ``train`` options as DerainModel's. A ``pixel_opt`` / ``ssim_opt`` of type ``RCDNetLoss`` gets the stage outputs,
    ``gt`` and ``lq`` (the public objective: MSE on ``B0``, every stage's background and rain layer ``lq - gt``
    and the refined background, weights 0.1 / 0.1 / 1 and 1 on the last rain layer); any other loss (and
    ``perceptual_opt``) gets the refined background only. The public scripts (hongwang01/RCDNet ``trainer.py``,
    Rainmer's ``Benchmark/train_rcdnet.py``) use that loss alone, with Adam (lr 1e-3, x0.2 every 25 epochs) and no
    clipping. Validation and testing run ``forward(x)``, as for every restorer.
    """

    def init_training_settings(self):
        bare = self.get_bare_model(self.net_g)
        if not isinstance(bare, RCDNet):
            raise OptionError(f'network_g.type: RCDNetModel trains RCDNet (its stage outputs), not '
                              f'{type(bare).__name__}; use model_type DerainModel for other networks')
        super().init_training_settings()

    def forward_train(self):
        return self.net_g(self.lq, return_stages=True), {}

    def compute_losses(self, output, extras) -> OrderedDict:
        terms = OrderedDict()
        for name, criterion in self.losses.items():
            if isinstance(criterion, RCDNetLoss):
                terms[name] = criterion(output, self.gt, self.lq)
            else:
                terms[name] = criterion(output.image, self.gt)
        if self.cri_perceptual is not None:
            percep, style = self.cri_perceptual(output.image, self.gt)
            if percep is not None:
                terms['l_percep'] = percep
            if style is not None:
                terms['l_style'] = style
        return terms
