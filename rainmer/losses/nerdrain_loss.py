"""NeRD-Rain's loss terms: frequency (FFT) L1, Laplacian-edge Charbonnier, and the Gaussian target pyramid.

The objective (docs/method.md#nerd-rain), for the restored images ``y_s`` and targets ``t_s`` at scales 1, 1/2, 1/4
and the INR outputs at 1/2 and 1/4::

    sum_s [Charbonnier(y_s, t_s) + 0.01 FFT(y_s, t_s) + 0.05 Edge(y_s, t_s)] + 0.1 sum L1(inr_s, t_s)
"""
import torch
import torch.nn.functional as F
from basicsr.losses.loss_util import weighted_loss
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

_REDUCTIONS = ('none', 'mean', 'sum')
_PYRAMID_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)  # binomial 5-tap, /16 per axis
_EDGE_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)


def _separable_kernel(taps: tuple[float, ...], channels: int, like: Tensor) -> Tensor:
    line = torch.tensor(taps, dtype=like.dtype, device=like.device)
    line = line / line.sum()
    return (line[:, None] * line[None, :]).expand(channels, 1, len(taps), len(taps))


def _blur(img: Tensor, taps: tuple[float, ...], mode: str) -> Tensor:
    """Depthwise 5x5 filter with ``mode`` padding (output size = input size)."""
    pad = len(taps) // 2
    padded = F.pad(img, (pad, pad, pad, pad), mode=mode)
    return F.conv2d(padded, _separable_kernel(taps, img.shape[1], img), groups=img.shape[1])


def pyramid_down(img: Tensor) -> Tensor:
    """Half-size image: 5x5 binomial blur (reflect borders), then bilinear resize to (H//2, W//2)."""
    h, w = img.shape[-2:]
    mode = 'reflect' if min(h, w) > 2 else 'replicate'
    return F.interpolate(_blur(img, _PYRAMID_TAPS, mode), size=(h // 2, w // 2), mode='bilinear',
                         align_corners=False)


def gaussian_pyramid(img: Tensor, levels: int = 3) -> list[Tensor]:
    """``[img, down(img), down(down(img)), ...]`` (``levels`` entries), as NeRD-Rain builds its targets."""
    pyramid = [img]
    for _ in range(levels - 1):
        pyramid.append(pyramid_down(pyramid[-1]))
    return pyramid


def laplacian(img: Tensor) -> Tensor:
    """Band-pass detail: the image minus its blurred, 2x decimated and re-expanded copy (replicate borders)."""
    blurred = _blur(img, _EDGE_TAPS, 'replicate')
    expanded = torch.zeros_like(blurred)
    expanded[..., ::2, ::2] = blurred[..., ::2, ::2] * 4
    return img - _blur(expanded, _EDGE_TAPS, 'replicate')


@weighted_loss
def _fft_l1(pred: Tensor, target: Tensor) -> Tensor:
    return (torch.fft.fft2(pred.float()) - torch.fft.fft2(target.float())).abs()


@weighted_loss
def _charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    return torch.sqrt((pred - target) ** 2 + eps)


class _WeightedLoss(nn.Module):
    def __init__(self, loss_weight: float, reduction: str) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'Unsupported reduction mode: {reduction}. Supported ones are: {_REDUCTIONS}')
        self.loss_weight = loss_weight
        self.reduction = reduction


@LOSS_REGISTRY.register()
class FFTLoss(_WeightedLoss):
    """L1 distance of the 2-D Fourier spectra: ``mean |FFT2(pred) - FFT2(target)|`` (complex modulus), per channel.

    Args:
        loss_weight (float): Default: 1.0 (NeRD-Rain: 0.01).
        reduction (str): 'none' | 'mean' | 'sum'. Default: 'mean'.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean') -> None:
        super().__init__(loss_weight, reduction)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None, **kwargs) -> Tensor:
        return self.loss_weight * _fft_l1(pred, target, weight, reduction=self.reduction)


@LOSS_REGISTRY.register()
class EdgeLoss(_WeightedLoss):
    """Charbonnier distance of the Laplacians (:func:`laplacian`): ``sqrt((L(pred) - L(target))^2 + eps)``.

    Args:
        loss_weight (float): Default: 1.0 (NeRD-Rain: 0.05).
        reduction (str): 'none' | 'mean' | 'sum'. Default: 'mean'.
        eps (float): Added inside the square root like BasicSR's ``CharbonnierLoss``; the default 1e-6 is
            NeRD-Rain's 1e-3 squared.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', eps: float = 1e-6) -> None:
        super().__init__(loss_weight, reduction)
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None, **kwargs) -> Tensor:
        return self.loss_weight * _charbonnier(laplacian(pred), laplacian(target), weight, eps=self.eps,
                                               reduction=self.reduction)
