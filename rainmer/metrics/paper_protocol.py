"""The Rainmer paper's evaluation protocol as BasicSR metrics: ``calculate_psnr_rainmer``, ``calculate_ssim_rainmer``.

The paper's table was computed by the public Rainmer code (``evaluation.py`` called from ``test.py``), which differs
from BasicSR's ``calculate_psnr`` / ``calculate_ssim`` in three ways (docs/metrics.md):

* it measures the network's **float** output clamped to [0, 1], not the uint8 image saved to disk; the ground truth
  is the uint8 file divided by 255;
* Y is BT.601 luma ``16 + 255 * (0.256789 R + 0.504129 G + 0.097906 B)`` for R, G, B in [0, 1] (the public code's
  six-digit weights, i.e. 65.481, 128.553, 24.966 over 255), data range 255;
* SSIM first average-pools both Y images by ``f = max(1, round(min(H, W) / 256))`` (kernel f, stride f, no padding,
  trailing rows/columns dropped; Python's round, so 1.5 -> 2 and 2.5 -> 2), then takes the mean of the SSIM map
  with an 11x11 Gaussian window (sigma 1.5), VALID convolution, K1 0.01, K2 0.03, on Y / 255.

Both functions take BasicSR's metric arguments: ``img`` / ``img2`` (uint8 HWC BGR from ``tensor2img``) and the
options of the YAML block. ``DerainModel.nondist_validation`` also passes ``img_float`` / ``img2_float`` (HWC RGB
float arrays in [0, 1]); without them (e.g. from BasicSR's ``SRModel``) the metrics fall back to ``img / 255``
flipped to RGB, which measures the quantised output instead of the float one.
"""
from __future__ import annotations

import numpy as np
from basicsr.utils.registry import METRIC_REGISTRY

# the public code's Y weights, per unit of R, G, B in 0..255 (65.481 / 255, 128.553 / 255, 24.966 / 255 rounded)
Y_WEIGHTS = (0.256789, 0.504129, 0.097906)
Y_OFFSET = 16.0
DATA_RANGE = 255.0
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
POOL_BASE = 256


def paper_image(img: np.ndarray | None, img_float: np.ndarray | None, crop_border: int = 0) -> np.ndarray:
    """The HWC RGB float64 image in [0, 1] that the protocol measures: ``img_float`` when given, else the uint8 BGR
    ``img`` / 255 flipped to RGB; ``crop_border`` pixels cut from each side."""
    if img_float is not None:
        rgb = np.asarray(img_float, dtype=np.float64)
    elif img is not None:
        rgb = np.asarray(img, dtype=np.float64)[..., ::-1] / 255.0
    else:
        raise ValueError('the Rainmer metrics need img (uint8 BGR) or img_float (float RGB in [0, 1])')
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'the Rainmer metrics measure HWC colour images, got shape {rgb.shape}')
    if crop_border:
        rgb = rgb[crop_border:-crop_border, crop_border:-crop_border]
    return rgb


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma in 16..235 of an HWC RGB image in [0, 1], with the public code's weights."""
    return Y_OFFSET + (rgb * DATA_RANGE) @ np.asarray(Y_WEIGHTS, dtype=np.float64)


def pool_factor(height: int, width: int) -> int:
    """The public code's average-pooling factor: ``max(1, round(min(H, W) / 256))`` with Python's round."""
    return max(1, round(min(height, width) / POOL_BASE))


def average_pool(y: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks (stride f, no padding): the trailing ``H % f`` rows and ``W % f`` columns are dropped."""
    if f <= 1:
        return y
    h, w = y.shape[0] // f, y.shape[1] // f
    return y[:h * f, :w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def _gaussian_1d() -> np.ndarray:
    coords = np.arange(WINDOW_SIZE, dtype=np.float64) - (WINDOW_SIZE - 1) / 2.0
    g = np.exp(-coords ** 2 / (2 * WINDOW_SIGMA ** 2))
    return g / g.sum()  # the normalised 2-D window is the outer product of this with itself


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """VALID correlation with the separable window ``outer(g, g)``."""
    n = len(g)
    rows = sum(g[k] * x[k:x.shape[0] - n + 1 + k] for k in range(n))
    return sum(g[k] * rows[:, k:x.shape[1] - n + 1 + k] for k in range(n))


def ssim_y(y: np.ndarray, y2: np.ndarray) -> float:
    """The protocol's SSIM of two Y images in 0..255 (pooling included)."""
    f = pool_factor(*y.shape)
    x1, x2 = average_pool(y / DATA_RANGE, f), average_pool(y2 / DATA_RANGE, f)
    if min(x1.shape) < WINDOW_SIZE:
        raise ValueError(f'SSIM needs at least {WINDOW_SIZE}x{WINDOW_SIZE} pixels after pooling, got {x1.shape}')
    g = _gaussian_1d()
    c1, c2 = K1 ** 2, K2 ** 2
    mu1, mu2 = _filter_valid(x1, g), _filter_valid(x2, g)
    var1 = _filter_valid(x1 * x1, g) - mu1 ** 2
    var2 = _filter_valid(x2 * x2, g) - mu2 ** 2
    cov = _filter_valid(x1 * x2, g) - mu1 * mu2
    ssim_map = (2 * mu1 * mu2 + c1) * (2 * cov + c2) / ((mu1 ** 2 + mu2 ** 2 + c1) * (var1 + var2 + c2))
    return float(ssim_map.mean())


def psnr_y(y: np.ndarray, y2: np.ndarray) -> float:
    """PSNR of two Y images in 0..255 (data range 255); ``inf`` when they are equal."""
    mse = float(np.mean(((y - y2) / DATA_RANGE) ** 2))
    return float('inf') if mse == 0 else -10.0 * np.log10(mse)


def _check_y(test_y_channel, metric: str) -> None:
    if not test_y_channel:
        raise ValueError(f'calculate_{metric}_rainmer always measures Y (the paper protocol): test_y_channel must be '
                         f'true; use calculate_{metric} for RGB')


@METRIC_REGISTRY.register()
def calculate_psnr_rainmer(img=None, img2=None, crop_border: int = 0, test_y_channel: bool = True, **kwargs) -> float:
    """PSNR on Y of the float images, as the Rainmer paper (data range 255).

    Args:
        img, img2: uint8 HWC BGR images (BasicSR's ``tensor2img``), used only without the float images.
        crop_border: pixels cut from each side before measuring (the paper: 0).
        test_y_channel: accepted for BasicSR-style blocks; must be true (this metric always measures Y).
        **kwargs: ``img_float`` / ``img2_float``, HWC RGB float arrays in [0, 1] (the clamped network output and
            the ground truth), passed by ``DerainModel``; any other key (``input_order``...) is ignored.
    """
    _check_y(test_y_channel, 'psnr')
    return psnr_y(*_y_pair(img, img2, crop_border, kwargs))


@METRIC_REGISTRY.register()
def calculate_ssim_rainmer(img=None, img2=None, crop_border: int = 0, test_y_channel: bool = True, **kwargs) -> float:
    """SSIM on Y of the float images, as the Rainmer paper: average-pooled by ``max(1, round(min(H, W) / 256))``,
    11x11 Gaussian window (sigma 1.5), VALID convolution, K1 0.01, K2 0.03. Arguments as
    :func:`calculate_psnr_rainmer`; the pooling factor is taken after ``crop_border``."""
    _check_y(test_y_channel, 'ssim')
    return ssim_y(*_y_pair(img, img2, crop_border, kwargs))


def _y_pair(img, img2, crop_border: int, kwargs: dict):
    """Y of the output and of the ground truth as the metrics measure them (float images when given)."""
    out = paper_image(img, kwargs.get('img_float'), crop_border)
    gt = paper_image(img2, kwargs.get('img2_float'), crop_border)
    if out.shape != gt.shape:
        raise ValueError(f'image shapes differ: {out.shape} and {gt.shape}')
    return rgb_to_y(out), rgb_to_y(gt)
