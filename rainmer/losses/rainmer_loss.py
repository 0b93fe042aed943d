"""Losses of Rainmer's training objective (docs/method.md#training-objective).

Total loss of the paper: ``Charbonnier(eps=1e-3) + 0.1 * (1 - SSIM) + 0.1 * (L_chromatic + L_degradation+detail)``.

The Charbonnier term needs no new class: BasicSR's ``CharbonnierLoss`` computes ``sqrt(d^2 + eps)``, so the
paper's ``sqrt(d^2 + 1e-3^2)`` is ``{type: CharbonnierLoss, eps: !!float 1e-6}``.
"""

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

_REDUCTIONS = ('none', 'mean', 'sum')


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == 'mean':
        return per_sample.mean()
    if reduction == 'sum':
        return per_sample.sum()
    return per_sample


def gaussian_window(window_size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """Normalised 2-D Gaussian window of shape [window_size, window_size], centred on window_size // 2."""
    offsets = torch.arange(window_size, dtype=torch.float64, device=device) - window_size // 2
    profile = torch.exp(-offsets**2 / (2 * sigma**2))
    profile = profile / profile.sum()
    return torch.outer(profile, profile).to(dtype)


def ssim_map(pred: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5,
             data_range: float = 1.0) -> Tensor:
    """Per-pixel, per-channel SSIM of two [B, C, H, W] images (differentiable).

    Local statistics use a Gaussian window applied to each channel separately with zero padding, so the map has the
    input size; this matches the SSIM loss of the reference training code.
    """
    channels = pred.shape[1]
    window = gaussian_window(window_size, sigma, pred.dtype, pred.device).expand(channels, 1, window_size, window_size)
    pad = window_size // 2

    def local_mean(x: Tensor) -> Tensor:
        return F.conv2d(x, window, padding=pad, groups=channels)

    mu_x, mu_y = local_mean(pred), local_mean(target)
    var_x = local_mean(pred * pred) - mu_x**2
    var_y = local_mean(target * target) - mu_y**2
    cov_xy = local_mean(pred * target) - mu_x * mu_y
    c1 = (0.01 * data_range)**2
    c2 = (0.03 * data_range)**2
    return ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


@LOSS_REGISTRY.register()
class SSIMLoss(nn.Module):
    """``loss_weight * (1 - SSIM(pred, target))``, SSIM averaged over channels and pixels.

    Args:
        loss_weight (float): Weight of the loss. Default: 1.0 (the paper uses 0.1).
        window_size (int): Side of the Gaussian window. Default: 11.
        sigma (float): Standard deviation of the Gaussian window. Default: 1.5.
        data_range (float): Value range of the images (1.0 for [0, 1]). Default: 1.0.
        reduction (str): 'mean' | 'sum' over the batch, or 'none' for one value per image. Default: 'mean'.
    """

    def __init__(self, loss_weight: float = 1.0, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0,
                 reduction: str = 'mean'):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'Unsupported reduction mode: {reduction}. Supported ones are: {_REDUCTIONS}')
        self.loss_weight = loss_weight
        self.window_size = window_size
        self.sigma = sigma
        self.data_range = data_range
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        ssim_per_image = ssim_map(pred, target, self.window_size, self.sigma, self.data_range).mean(dim=(1, 2, 3))
        return self.loss_weight * _reduce(1 - ssim_per_image, self.reduction)


@LOSS_REGISTRY.register()
class InfoNCELoss(nn.Module):
    """Cross-entropy with target class 0 over logits [B, 1+N] (positive first, then the negatives).

    Args:
        loss_weight (float): Weight of the loss. Default: 1.0 (Rainmer's configs use 0.1).
        temperature (float): The logits are divided by it. Default: 1.0.
        reduction (str): 'none' | 'mean' | 'sum' over the batch. Default: 'mean'.
    """

    def __init__(self, loss_weight: float = 1.0, temperature: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'Unsupported reduction mode: {reduction}. Supported ones are: {_REDUCTIONS}')
        self.loss_weight = loss_weight
        self.temperature = temperature
        self.reduction = reduction

    def forward(self, logits: Tensor, **kwargs) -> Tensor:
        targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return self.loss_weight * F.cross_entropy(logits / self.temperature, targets, reduction=self.reduction)

