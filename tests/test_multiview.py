import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import io

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from rainmer.models.multiview import (
    NegativeArchive,
    build_multiview_batch,
    chromatic_negatives,
    detail_negatives,
    gaussian_blur,
    rain_statistics,
    random_flip,
)

SIZE = 16  # stands for 128


def _images(batch: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(lq, gt) pairs with varied colour casts and rain, so archive distances differ."""
    gen = torch.Generator().manual_seed(seed)
    cast = 0.2 + 0.6 * torch.rand(batch, 3, 1, 1, generator=gen)
    gt = (cast * torch.rand(batch, 3, size, size, generator=gen)).clamp(0, 1)
    rain = (torch.rand(batch, 1, size, size, generator=gen) > 0.8) * torch.rand(batch, 1, 1, 1, generator=gen)
    return (gt + rain).clamp(0, 1), gt


def _filled_archive(size: int = 12, batch: int = 4) -> NegativeArchive:
    archive = NegativeArchive(size=size)
    seed = 100
    while not archive.prefill(*_images(batch, seed)):
        seed += 1
    return archive


def _flip_variants(image: torch.Tensor) -> list[torch.Tensor]:
    return [image, image.flip(-1), image.flip(-2), image.flip(-1).flip(-2)]


def _equal_up_to_flip(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6) -> bool:
    return any(torch.allclose(actual, variant, atol=atol) for variant in _flip_variants(expected))


def test_statistics_are_means_layers_and_spectra():
    lq, gt = _images(2, 0)
    stats = rain_statistics(lq, gt)
    assert torch.allclose(stats.means, lq.mean(dim=(2, 3)))
    assert torch.equal(stats.layers, (lq - gt).clamp(0, 1))
    resized = F.interpolate(stats.layers, size=(32, 32))  # nearest, as the reference
    assert stats.spectra.shape == (2, 3, 32)
    assert torch.allclose(stats.spectra, torch.linalg.svdvals(resized))
    lq, gt = _images(1, 1, size=128)  # the paper's size: nearest resizing keeps every 4th pixel
    layer = (lq - gt).clamp(0, 1)
    expected = torch.linalg.svdvals(layer[..., ::4, ::4])
    assert torch.allclose(rain_statistics(lq, gt).spectra, expected, atol=1e-5)


def test_prefill_then_ring_update_order_and_wrap_around():
    archive = NegativeArchive(size=6)
    assert len(archive) == 0 and not archive.is_full
    batches = [_images(4, seed) for seed in range(4)]
    assert not archive.prefill(*batches[0])
    assert archive.prefill(*batches[1])  # only 2 of the 4 fit; the rest is dropped
    means = [lq.mean(dim=(2, 3)) for lq, _ in batches]
    assert archive.is_full and archive.position == 0
    assert torch.allclose(archive.means, torch.cat([means[0], means[1][:2]]))
    archive.update(*batches[2])  # overwrites slots 0..3
    assert archive.position == 4
    assert torch.allclose(archive.means, torch.cat([means[2], means[1][:2]]))
    archive.update(*batches[3])  # slots 4, 5, then wraps to 0, 1
    assert archive.position == 2
    assert torch.allclose(archive.means, torch.cat([means[3][2:], means[2][2:], means[3][:2]]))
    lq3, gt3 = batches[3]
    assert torch.equal(archive.layers[0], (lq3[2] - gt3[2]).clamp(0, 1))
    assert torch.allclose(archive.spectra[:2], rain_statistics(lq3, gt3).spectra[2:])


def test_state_dict_round_trip_with_weights_only_load():
    archive = _filled_archive()
    archive.update(*_images(4, 7))
    buffer = io.BytesIO()
    torch.save({'archive': archive.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)['archive']
    restored = NegativeArchive(size=1)
    restored.load_state_dict(state)
    assert (restored.size, restored.position, restored.count) == (archive.size, archive.position, archive.count)
    for name in ('means', 'layers', 'spectra'):
        assert torch.equal(getattr(restored, name), getattr(archive, name))
    batch = _images(4, 8)
    archive.update(*batch)
    restored.update(*batch)
    assert torch.equal(restored.layers, archive.layers) and restored.position == archive.position
    empty = NegativeArchive()
    empty.load_state_dict(NegativeArchive(size=5).state_dict())
    assert empty.size == 5 and empty.layers is None


def test_chromatic_negatives_take_the_farthest_means_exactly():
    archive = _filled_archive()
    lq, _ = _images(3, 42)
    negatives, indices = chromatic_negatives(lq, archive.means, 4, torch.Generator().manual_seed(0), clamp=False)
    assert negatives.shape == (3, 4, 3, SIZE, SIZE) and indices.shape == (3, 4)
    current = lq.mean(dim=(2, 3))
    distances = (current[:, None] - archive.means[None]).abs().sum(-1)  # [3, archive]
    for b in range(3):
        chosen = distances[b, indices[b]]
        others = distances[b, [i for i in range(archive.size) if i not in indices[b].tolist()]]
        assert chosen.min() >= others.max()
        # unclamped, the recoloured image has exactly the archived means (up to the 1e-5 guard)
        assert torch.allclose(negatives[b].mean(dim=(2, 3)), archive.means[indices[b]], atol=1e-5)
        for i in range(4):
            scale = (archive.means[indices[b, i]] + 1e-5) / (current[b] + 1e-5)
            assert _equal_up_to_flip(negatives[b, i], scale[:, None, None] * lq[b])
    clamped, same = chromatic_negatives(lq, archive.means, 4, torch.Generator().manual_seed(0))
    assert torch.equal(same, indices) and torch.equal(clamped, negatives.clamp(0, 1))


def test_build_gives_keys_negatives_and_updates_archive_afterwards():
    archive = _filled_archive()
    before = archive.state_dict()
    before = {k: v.clone() if torch.is_tensor(v) else v for k, v in before.items()}
    lq_r, gt_r = _images(2, 50)
    _, gt = _images(2, 51, size=12)  # the crop may have another size than the resized images
    out = build_multiview_batch(lq_r, gt_r, gt, archive, n_neg=4, generator=torch.Generator().manual_seed(1))
    assert set(out.keys) == set(out.negatives) == {'chromatic', 'degradation', 'detail'}
    assert out.keys['chromatic'].shape == (2, 3, SIZE, SIZE)
    assert out.negatives['chromatic'].shape == out.negatives['degradation'].shape == (2, 4, 3, SIZE, SIZE)
    assert out.negatives['detail'].shape == (2, 4, 3, SIZE, SIZE)  # the 12x12 crop resized to the encoder's size
    for b in range(2):
        assert _equal_up_to_flip(out.keys['chromatic'][b], gt_r[b])
        assert _equal_up_to_flip(out.keys['degradation'][b], lq_r[b])
        # degradation: the archived layers (before this batch's update) with the farthest spectra
        spectrum = rain_statistics(lq_r, gt_r).spectra[b]
        distances = (spectrum[None] - before['spectra']).abs().sum(dim=(1, 2))
        chosen = out.degradation_indices[b]
        assert distances[chosen].min() >= distances[[i for i in range(12) if i not in chosen.tolist()]].max()
        for i in range(4):
            expected = (gt_r[b] + before['layers'][chosen[i]]).clamp(0, 1)
            assert _equal_up_to_flip(out.negatives['degradation'][b, i], expected)
            means = before['means'][out.chromatic_indices[b, i]]
            scale = (means + 1e-5) / (lq_r[b].mean(dim=(1, 2)) + 1e-5)
            assert _equal_up_to_flip(out.negatives['chromatic'][b, i], (scale[:, None, None] * lq_r[b]).clamp(0, 1))
    assert torch.equal(out.keys['detail'], lq_r)
    assert torch.all(out.negatives['chromatic'] >= 0) and torch.all(out.negatives['chromatic'] <= 1)
    # afterwards the batch sits at the old ring position
    assert archive.position == (before['position'] + 2) % 12
    assert torch.allclose(archive.means[before['position']:before['position'] + 2], lq_r.mean(dim=(2, 3)))


def test_detail_negatives_are_torchvision_blurs_of_gt():
    _, gt = _images(2, 60, size=24)
    negatives, sigmas = detail_negatives(gt, 3, torch.Generator().manual_seed(2))
    assert negatives.shape == (2, 3, 3, 24, 24)
    assert torch.all((sigmas >= 0.5) & (sigmas <= 2.0))
    high_pass = torch.tensor([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=gt.dtype).expand(3, 1, 3, 3)

    def energy(x: torch.Tensor) -> float:
        return F.conv2d(x[None], high_pass, groups=3).pow(2).mean().item()

    for b in range(2):
        for i in range(3):
            sigma = sigmas[b, i].item()
            reference = TF.gaussian_blur(gt[b], [11, 11], [sigma, sigma])
            assert _equal_up_to_flip(negatives[b, i], reference, atol=1e-5)
            # blurring keeps the mean (exactly only far from borders); flips keep the interior in place
            inner = (slice(None), slice(5, -5), slice(5, -5))
            assert negatives[b, i].mean().item() == pytest.approx(gt[b].mean().item(), abs=1e-2)
            assert negatives[b, i][inner].mean().item() == pytest.approx(gt[b][inner].mean().item(), abs=1e-2)
            assert energy(negatives[b, i]) < 0.5 * energy(gt[b])


def test_gaussian_blur_uses_one_sigma_per_image():
    _, gt = _images(3, 70, size=20)
    sigmas = torch.tensor([0.5, 1.0, 2.0])
    blurred = gaussian_blur(gt, sigmas)
    for n in range(3):
        s = sigmas[n].item()
        assert torch.allclose(blurred[n], TF.gaussian_blur(gt[n], [11, 11], [s, s]), atol=1e-5)


def test_random_flip_per_sample_and_per_batch():
    images = torch.arange(2 * 1000 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 1000, 3, 2, 2)
    flipped = random_flip(images, torch.Generator().manual_seed(3))
    kinds = torch.zeros(4)
    for b in range(2):
        for n in range(1000):
            matches = [torch.equal(flipped[b, n], v) for v in _flip_variants(images[b, n])]
            assert sum(matches) == 1
            kinds[matches.index(True)] += 1
    assert torch.all(kinds > 400)  # each of the 4 flips about a quarter of 2000
    whole = random_flip(images, torch.Generator().manual_seed(3), per_sample=False)
    assert any(torch.equal(whole, v) for v in _flip_variants(images))


def test_same_seed_same_views_and_archive():
    outs, archives = [], []
    for _ in range(2):
        archive = _filled_archive()
        generator = torch.Generator().manual_seed(123)
        lq_r, gt_r = _images(2, 80)
        first = build_multiview_batch(lq_r, gt_r, gt_r, archive, generator=generator)
        second = build_multiview_batch(*_images(2, 81), gt_r, archive, generator=generator)
        outs.append((first, second))
        archives.append(archive)
    for a, b in zip(outs[0], outs[1]):
        for view in a.keys:
            assert torch.equal(a.keys[view], b.keys[view])
            assert torch.equal(a.negatives[view], b.negatives[view])
    assert torch.equal(archives[0].layers, archives[1].layers)
    different = build_multiview_batch(*_images(2, 80), _images(2, 80)[1], _filled_archive(),
                                      generator=torch.Generator().manual_seed(124))
    assert not torch.equal(different.negatives['detail'], outs[0][0].negatives['detail'])


def test_views_subset_and_errors():
    lq_r, gt_r = _images(2, 90)
    only_detail = build_multiview_batch(lq_r, gt_r, gt_r, None, views=['detail'])
    assert set(only_detail.negatives) == {'detail'}
    with pytest.raises(ValueError):
        build_multiview_batch(lq_r, gt_r, gt_r, NegativeArchive(size=8), views=['chromatic'])
    with pytest.raises(ValueError):
        build_multiview_batch(lq_r, gt_r, gt_r, None, views=['colour'])
    partial = NegativeArchive(size=64)
    partial.prefill(*_images(4, 91))
    out = build_multiview_batch(lq_r, gt_r, gt_r, partial, views=['chromatic', 'degradation'])
    assert out.chromatic_indices.max() < 4 and out.degradation_indices.max() < 4  # only valid entries


def test_detail_negatives_take_the_encoders_size_when_the_crop_differs():
    from rainmer.models.multiview import NegativeArchive, build_multiview_batch

    generator = torch.Generator().manual_seed(0)
    lq_r, gt_r, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 48, 48)
    archive = NegativeArchive(size=4)
    archive.prefill(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    views = build_multiview_batch(lq_r, gt_r, gt, archive, n_neg=2, generator=generator)
    assert views.negatives['detail'].shape == (2, 2, 3, 32, 32)
    assert all(v.shape[-2:] == (32, 32) for v in views.keys.values())
