"""The paper's evaluation protocol (calculate_psnr_rainmer / calculate_ssim_rainmer) against a plain re-implementation,
against BasicSR's metrics, and through DerainModel's validation (docs/metrics.md)."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import glob
import math
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.metrics import calculate_metric, calculate_psnr, calculate_ssim
from basicsr.models import build_model
from basicsr.utils import tensor2img
from basicsr.utils.registry import METRIC_REGISTRY
from data_fixtures import make_rain13k

from rainmer.metrics import calculate_psnr_rainmer, calculate_ssim_rainmer
from rainmer.metrics.paper_protocol import Y_WEIGHTS, pool_factor
from rainmer.models.derain_model import DerainModel
from rainmer.options import load_yaml

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PSNR = dict(type='calculate_psnr', crop_border=0, test_y_channel=True)
SSIM = dict(type='calculate_ssim', crop_border=0, test_y_channel=True)


# ---- a separate, plain re-implementation of the protocol (loops, explicit window) ----

def reference_y(rgb):
    """Y in 0..255 of an RGB image in [0, 1]: the public code's weights on 0..255 values, plus 16."""
    r, g, b = rgb[..., 0] * 255.0, rgb[..., 1] * 255.0, rgb[..., 2] * 255.0
    return 0.256789 * r + 0.504129 * g + 0.097906 * b + 16.0


def reference_psnr(out, gt):
    mse = np.mean((reference_y(out) / 255.0 - reference_y(gt) / 255.0) ** 2)
    return 10.0 * math.log10(1.0 / mse)


def reference_pool(x, f):
    rows, cols = x.shape[0] // f, x.shape[1] // f
    pooled = np.empty((rows, cols))
    for i in range(rows):
        for j in range(cols):
            pooled[i, j] = x[i * f:(i + 1) * f, j * f:(j + 1) * f].mean()
    return pooled


def reference_window():
    window = np.empty((11, 11))
    for i in range(11):
        for j in range(11):
            window[i, j] = math.exp(-((i - 5) ** 2 + (j - 5) ** 2) / (2 * 1.5 ** 2))
    return window / window.sum()


def reference_valid_conv(x, window):
    h, w = x.shape[0] - 10, x.shape[1] - 10
    out = np.zeros((h, w))
    for di in range(11):
        for dj in range(11):
            out += window[di, dj] * x[di:di + h, dj:dj + w]
    return out


def reference_ssim(out, gt):
    x, y = reference_y(out) / 255.0, reference_y(gt) / 255.0
    f = max(1, round(min(x.shape) / 256))
    if f > 1:
        x, y = reference_pool(x, f), reference_pool(y, f)
    window = reference_window()
    mx, my = reference_valid_conv(x, window), reference_valid_conv(y, window)
    sxx = reference_valid_conv(x * x, window) - mx * mx
    syy = reference_valid_conv(y * y, window) - my * my
    sxy = reference_valid_conv(x * y, window) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = (2 * mx * my + c1) / (mx * mx + my * my + c1) * (2 * sxy + c2) / (sxx + syy + c2)
    return ssim_map.mean()


# ---- generated photographs ----

def photograph(h, w, seed=0):
    """A photo-like RGB image in [0, 1] on the uint8 grid (as a ground truth read from a PNG): smooth colour regions,
    fine texture and a bright band with sharp edges."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((h // 16, w // 16, 3)), (w, h), interpolation=cv2.INTER_CUBIC)
    texture = cv2.GaussianBlur(rng.random((h, w, 3)), (0, 0), 1.0)
    img = 0.7 * base + 0.3 * texture
    img[h // 3:h // 2] += 0.2
    return np.round(np.clip(img, 0, 1) * 255) / 255


def restored(gt, seed=1):
    """A blurred, noisy float restoration clamped to [0, 1] (what the network output looks like)."""
    rng = np.random.default_rng(seed)
    return np.clip(cv2.GaussianBlur(gt, (0, 0), 1.2) + rng.normal(0, 0.03, gt.shape), 0, 1)


def to_uint8_bgr(rgb):
    """What tensor2img makes of an RGB float image: rounded, BGR."""
    return np.round(rgb[..., ::-1] * 255).astype(np.uint8)


def test_metrics_are_registered_and_the_y_weights_are_bt601():
    assert METRIC_REGISTRY.get('calculate_psnr_rainmer') is calculate_psnr_rainmer
    assert METRIC_REGISTRY.get('calculate_ssim_rainmer') is calculate_ssim_rainmer
    # the public code's six-digit weights are BasicSR's 65.481, 128.553, 24.966 (per unit in [0, 1]) over 255
    assert np.allclose(np.array(Y_WEIGHTS) * 255, [65.481, 128.553, 24.966], atol=3e-4)


def test_pool_factor_uses_pythons_round():
    assert [pool_factor(n, 1000) for n in (100, 383, 384, 400, 639, 640, 641, 896, 1080)] == [1, 1, 2, 2, 2, 2, 3, 4, 4]


def test_paper_protocol_on_a_large_blurred_noisy_photograph_matches_the_reference_and_differs_from_basicsr():
    gt = photograph(400, 600)
    out = restored(gt)
    data = dict(img=to_uint8_bgr(out), img2=to_uint8_bgr(gt), img_float=out, img2_float=gt)
    ssim_paper = calculate_metric(data, dict(type='calculate_ssim_rainmer'))
    psnr_paper = calculate_metric(data, dict(type='calculate_psnr_rainmer'))
    assert ssim_paper == pytest.approx(reference_ssim(out, gt), abs=1e-10)
    assert psnr_paper == pytest.approx(reference_psnr(out, gt), abs=1e-9)
    ssim_basicsr = calculate_metric(data, SSIM)  # BasicSR's own metric ignores the float keys
    assert ssim_basicsr == calculate_ssim(data['img'], data['img2'], crop_border=0, test_y_channel=True)
    assert ssim_paper - ssim_basicsr > 0.05  # pooling by 2 (min side 400) averages the noise away
    assert calculate_metric(data, PSNR) == calculate_psnr(data['img'], data['img2'], crop_border=0, test_y_channel=True)


@pytest.mark.parametrize('h, w', [(383, 500), (200, 260)])
def test_below_a_384_shorter_side_the_paper_ssim_is_basicsrs_on_the_same_uint8_images(h, w):
    gt = photograph(h, w, seed=h)
    out = restored(gt, seed=w)
    img, img2 = to_uint8_bgr(out), to_uint8_bgr(gt)
    out8, gt8 = img[..., ::-1] / 255.0, img2[..., ::-1] / 255.0  # the same uint8 images as floats
    ssim_basicsr = calculate_ssim(img, img2, crop_border=0, test_y_channel=True)
    assert calculate_ssim_rainmer(img, img2, img_float=out8, img2_float=gt8) == pytest.approx(ssim_basicsr, abs=1e-6)
    assert calculate_ssim_rainmer(img, img2) == pytest.approx(ssim_basicsr, abs=1e-6)  # fallback: img / 255, RGB
    assert calculate_ssim_rainmer(img, img2, img_float=out8, img2_float=gt8) == pytest.approx(
        reference_ssim(out8, gt8), abs=1e-10)
    psnr_basicsr = calculate_psnr(img, img2, crop_border=0, test_y_channel=True)
    assert calculate_psnr_rainmer(img, img2) == pytest.approx(psnr_basicsr, abs=1e-4)


def test_psnr_on_the_float_output_differs_from_the_uint8_one_as_quantisation_predicts():
    gt = np.clip(photograph(64, 80), 2 / 255, 253 / 255)  # nothing is clamped by the offsets below
    y_per_level = sum(Y_WEIGHTS)  # a +1/255 offset on R, G and B moves Y by this much
    for offset, rounded in ((0.3, 0), (0.7, 1)):
        out = gt + offset / 255
        img, img2 = to_uint8_bgr(out), to_uint8_bgr(gt)
        float_psnr = calculate_psnr_rainmer(img, img2, img_float=out, img2_float=gt)
        uint8_psnr = calculate_psnr_rainmer(img, img2)
        assert float_psnr == pytest.approx(20 * math.log10(255 / (offset * y_per_level)), abs=1e-6)
        if rounded == 0:  # the offset rounds away: the uint8 images are equal
            assert uint8_psnr == math.inf and calculate_psnr(img, img2, crop_border=0) == math.inf
        else:  # it rounds up to one level: 20 log10(1 / 0.7) dB below the float PSNR
            assert uint8_psnr == pytest.approx(20 * math.log10(255 / y_per_level), abs=1e-6)
            assert float_psnr - uint8_psnr == pytest.approx(20 * math.log10(1 / offset), abs=1e-6)


def test_crop_border_and_test_y_channel_options():
    gt = photograph(120, 140)
    out = restored(gt)
    cropped = calculate_ssim_rainmer(None, None, crop_border=4, img_float=out, img2_float=gt)
    assert cropped == pytest.approx(reference_ssim(out[4:-4, 4:-4], gt[4:-4, 4:-4]), abs=1e-10)
    assert calculate_psnr_rainmer(None, None, crop_border=4, test_y_channel=True, input_order='HWC', img_float=out,
                                  img2_float=gt) == pytest.approx(reference_psnr(out[4:-4, 4:-4], gt[4:-4, 4:-4]))
    with pytest.raises(ValueError, match='test_y_channel must be true'):
        calculate_psnr_rainmer(None, None, test_y_channel=False, img_float=out, img2_float=gt)


def test_metric_data_carries_the_float_images_of_the_tensors():
    torch.manual_seed(0)
    result = torch.rand(1, 3, 21, 34) * 1.2 - 0.1  # a network output a little outside [0, 1]
    gt = torch.rand(1, 3, 21, 34)
    data = DerainModel.metric_data({'lq': gt, 'result': result, 'gt': gt})
    assert set(data) == {'img', 'img2', 'img_float', 'img2_float'}
    expected = result[0].double().clamp(0, 1).permute(1, 2, 0).numpy()
    assert data['img_float'].dtype == np.float64 and np.array_equal(data['img_float'], expected)  # RGB, HWC
    assert np.array_equal(data['img2_float'], gt[0].double().permute(1, 2, 0).numpy())
    assert np.array_equal(data['img'], tensor2img([result])) and np.array_equal(data['img2'], tensor2img([gt]))
    assert np.array_equal(to_uint8_bgr(data['img_float']), data['img'])  # the same image, BGR uint8
    assert set(DerainModel.metric_data({'lq': gt, 'result': result})) == {'img', 'img_float'}  # no ground truth


def test_validation_measures_the_float_output(tmp_path):
    """DerainModel.nondist_validation with an output 0.3 levels above the ground truth: uint8 rounds it away."""
    root = make_rain13k(str(tmp_path / 'Rain100L'), n=2)
    metrics = dict(psnr=PSNR, ssim=SSIM, psnr_paper=dict(type='calculate_psnr_rainmer'),
                   ssim_paper=dict(type='calculate_ssim_rainmer'))
    opt = dict(name='metrics', model_type='DerainModel', scale=1, num_gpu=0, is_train=False, dist=False, rank=0,
               world_size=1, network_g=dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=1, num_feat=4,
                                            num_block=1, num_grow_ch=4),
               path=dict(pretrain_network_g=None, strict_load_g=True, visualization=str(tmp_path)),
               val=dict(save_img=False, metrics=metrics))
    model = build_model(opt)
    model.test = lambda: setattr(model, 'output', model.gt + 0.3 / 255)
    dataset = build_dataset(dict(name='Rain100L', type='PairedRainTestDataset', layout='rain13k', root=root,
                                 io_backend=dict(type='disk'), phase='val', scale=1))
    loader = build_dataloader(dataset, dict(phase='val', num_worker_per_gpu=0), num_gpu=0, dist=False)
    model.nondist_validation(loader, current_iter='test', tb_logger=None, save_img=False)
    results = model.metric_results
    assert results['psnr'] == math.inf and results['ssim'] == pytest.approx(1.0)  # the uint8 images are equal
    assert results['psnr_paper'] == pytest.approx(20 * math.log10(255 / (0.3 * sum(Y_WEIGHTS))), abs=1e-3)
    assert 0.999 < results['ssim_paper'] < 1.0


def test_every_test_config_reports_both_protocols():
    files = sorted(glob.glob(osp.join(REPO_ROOT, 'options', 'test', '*.yml')))
    assert files
    for path in files:
        metrics = load_yaml(path)['val']['metrics']
        assert metrics['psnr']['type'] == 'calculate_psnr' and metrics['ssim']['type'] == 'calculate_ssim', path
        assert metrics['psnr_paper'] == {'type': 'calculate_psnr_rainmer'}, path
        assert metrics['ssim_paper'] == {'type': 'calculate_ssim_rainmer'}, path
