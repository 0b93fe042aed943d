import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.losses import build_loss
from skimage.metrics import structural_similarity

from rainmer.archs.modules.contrastive import contrastive_logits, degradation_detail_logits, merge_logits
from rainmer.losses.rainmer_loss import (
    InfoNCELoss,
    SSIMLoss,
    gaussian_window,
    ssim_map,
)


def _image_pair(seed: int = 0, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = F.avg_pool2d(torch.rand(2, 3, size + 4, size + 4, generator=gen), 5, stride=1)  # smooth-ish content
    pred = (target + 0.1 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    return pred.double(), target.double()


def test_ssim_matches_skimage_away_from_borders():
    pred, target = _image_pair()
    margin = 5  # skimage averages the map over the interior only; zero padding affects a 5-pixel border here
    ours = ssim_map(pred, target)[..., margin:-margin, margin:-margin]
    for b in range(pred.shape[0]):
        expected = structural_similarity(
            pred[b].permute(1, 2, 0).numpy(), target[b].permute(1, 2, 0).numpy(), channel_axis=2, data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[b].mean().item() == pytest.approx(expected, abs=1e-6)


def test_ssim_loss_value_weight_and_gradient():
    pred, target = _image_pair(1)
    pred.requires_grad_(True)
    loss = build_loss({'type': 'SSIMLoss', 'loss_weight': 0.1})
    value = loss(pred, target)
    assert value.item() == pytest.approx(0.1 * (1 - ssim_map(pred, target).mean().item()), rel=1e-9)
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert SSIMLoss()(target, target).item() == pytest.approx(0.0, abs=1e-9)
    per_image = SSIMLoss(reduction='none')(pred.detach(), target)
    assert per_image.shape == (2, ) and per_image.mean().item() == pytest.approx(value.item() / 0.1, rel=1e-9)


def test_basicsr_charbonnier_with_squared_eps_is_the_paper_loss():
    gen = torch.Generator().manual_seed(2)
    pred, target = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen)
    target[0, 0, :4] = pred[0, 0, :4]  # include zero differences, where eps matters most
    loss = build_loss({'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'eps': 1e-6})
    expected = torch.sqrt((pred - target)**2 + 1e-3**2).mean()
    assert loss(pred, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_infonce_equals_hand_computation():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 0.5, 3.0]])
    hand = [-math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.0) + math.exp(-1.0))),
            -math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(0.5) + math.exp(3.0)))]
    loss = build_loss({'type': 'InfoNCELoss', 'loss_weight': 0.1})
    assert loss(logits).item() == pytest.approx(0.1 * sum(hand) / 2, rel=1e-6)
    tempered = InfoNCELoss(temperature=0.5, reduction='none')(logits)
    assert tempered.tolist() == pytest.approx(
        [F.cross_entropy(2 * logits[i:i + 1], torch.zeros(1, dtype=torch.long)).item() for i in range(2)], rel=1e-6)


def test_infonce_is_lowest_when_positive_equals_query():
    gen = torch.Generator().manual_seed(3)
    query = torch.randn(1, 16, generator=gen)
    negatives = torch.randn(1, 4, 16, generator=gen)
    loss = InfoNCELoss()
    best = loss(contrastive_logits(query, query, negatives))
    for _ in range(20):
        other = torch.randn(1, 16, generator=gen)
        assert loss(contrastive_logits(query, other, negatives)) > best
    # scaling the positive does not change anything: projections are normalised
    assert loss(contrastive_logits(query, 3 * query, negatives)).item() == pytest.approx(best.item(), rel=1e-6)


def test_contrastive_logits_on_maps_are_mean_cosine_over_locations():
    gen = torch.Generator().manual_seed(4)
    query, key = torch.randn(2, 8, 4, 4, generator=gen), torch.randn(2, 8, 4, 4, generator=gen)
    negatives = torch.randn(2, 3, 8, 4, 4, generator=gen)
    logits = contrastive_logits(query, key, negatives)
    assert logits.shape == (2, 4)
    assert torch.allclose(logits[:, 0], F.cosine_similarity(query, key, dim=1).mean(dim=(1, 2)), atol=1e-6)
    for i in range(3):
        expected = F.cosine_similarity(query, negatives[:, i], dim=1).mean(dim=(1, 2))
        assert torch.allclose(logits[:, 1 + i], expected, atol=1e-6)


def test_contrastive_terms_as_configured_merge_degradation_and_detail():
    """``chromatic_opt`` and ``degradation_detail_opt`` (two InfoNCELoss, weight 0.1) on the per-view logits."""
    gen = torch.Generator().manual_seed(5)
    logits = {view: torch.randn(3, 5, generator=gen) for view in ('chromatic', 'degradation', 'detail')}
    merged = merge_logits(logits['degradation'], logits['detail'])
    assert merged.shape == (3, 9)
    assert torch.equal(merged[:, 0], logits['degradation'][:, 0] + logits['detail'][:, 0])
    assert torch.equal(merged[:, 5:], logits['detail'][:, 1:])
    assert torch.equal(degradation_detail_logits(logits), merged)
    assert torch.equal(degradation_detail_logits({'degradation': logits['degradation']}), logits['degradation'])
    chromatic = build_loss({'type': 'InfoNCELoss', 'loss_weight': 0.1})
    degradation_detail = build_loss({'type': 'InfoNCELoss', 'loss_weight': 0.1})
    zeros = torch.zeros(3, dtype=torch.long)
    expected = F.cross_entropy(logits['chromatic'], zeros) + F.cross_entropy(merged, zeros)
    total = chromatic(logits['chromatic']) + degradation_detail(degradation_detail_logits(logits))
    assert total.item() == pytest.approx(0.1 * expected.item(), rel=1e-6)


def test_ssim_window_is_normalised_gaussian():
    window = gaussian_window(11, 1.5, torch.float64)
    assert window.sum().item() == pytest.approx(1.0)
    one_d = np.exp(-(np.arange(11) - 5)**2 / (2 * 1.5**2))
    assert np.allclose(window.numpy(), np.outer(one_d, one_d) / one_d.sum()**2)
