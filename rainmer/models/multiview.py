"""Positives and negatives of Rainmer's multi-view contrastive learning (docs/method.md, "Multi-view contrastive
learning").

Pure tensor code: everything runs on the device of the inputs, under ``torch.no_grad``, and all randomness comes
from an explicit ``torch.Generator`` (random numbers are drawn on the generator's device, then moved), so a run is
reproducible and, with the generator state and :meth:`NegativeArchive.state_dict` saved, resumable.

Inputs of one batch, all in [0, 1]:
    lq_r, gt_r: [B, 3, h, w], the whole rainy / clean image resized (128x128 in the paper);
    gt: [B, 3, H, W], the clean training crop.

Views (each with one positive key and ``n_neg`` negatives):
    chromatic:   key = flip(gt_r); negatives = flip(clamp(lq_r * (m_neg + 1e-5) / (m_cur + 1e-5))) for the n_neg
                 archived channel means m_neg farthest (L1) from m_cur = mean(lq_r).
    degradation: key = flip(lq_r); negatives = flip(clamp(gt_r + layer)) for the n_neg archived rain layers whose
                 singular-value spectra are farthest (L1) from this image's.
    detail:      key = lq_r; negatives = flip(GaussianBlur(gt)), kernel 11, sigma ~ U[0.5, 2] per negative.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rainmer.archs.modules.encoder import VIEWS

MEAN_EPS = 1e-5


@dataclass
class RainStatistics:
    """What the archive keeps of each image: channel means of lq_r, rain layer and its spectra."""
    means: Tensor  # [B, 3]
    layers: Tensor  # [B, 3, h, w], clamp(lq_r - gt_r, 0, 1)
    spectra: Tensor  # [B, 3, spectrum_size], singular values per channel, descending


def rain_statistics(lq_r: Tensor, gt_r: Tensor, spectrum_size: int = 32) -> RainStatistics:
    """Channel means, rain layers and their per-channel singular values (layer resized, nearest, as the reference)."""
    layers = (lq_r - gt_r).clamp(0, 1)
    spectra = torch.linalg.svdvals(F.interpolate(layers, size=(spectrum_size, spectrum_size)))
    return RainStatistics(means=lq_r.mean(dim=(-2, -1)), layers=layers, spectra=spectra)


class NegativeArchive:
    """Ring buffer of the statistics of recent images, where chromatic and degradation negatives come from.

    Fill it with :meth:`prefill` from the first batches, then call :meth:`update` with every batch after its
    negatives are drawn (:func:`build_multiview_batch` does so). Entry ``i`` of the buffers is valid for ``i < len``.

    Args:
        size (int): Number of entries. Default: 256.
        spectrum_size (int): Side of the resized rain layer whose singular values are kept. Default: 32.
    """

    def __init__(self, size: int = 256, spectrum_size: int = 32):
        if size <= 0:
            raise ValueError(f'size must be positive, got {size}.')
        self.size = size
        self.spectrum_size = spectrum_size
        self.position = 0  # next slot to write
        self.count = 0  # number of valid entries
        self.means: Tensor | None = None
        self.layers: Tensor | None = None
        self.spectra: Tensor | None = None

    def __len__(self) -> int:
        return self.count

    @property
    def is_full(self) -> bool:
        return self.count == self.size

    def statistics(self, lq_r: Tensor, gt_r: Tensor) -> RainStatistics:
        return rain_statistics(lq_r, gt_r, self.spectrum_size)

    def prefill(self, lq_r: Tensor, gt_r: Tensor, stats: RainStatistics | None = None) -> bool:
        """Add the batch while there is room (the rest is dropped); return whether the archive is full."""
        stats = stats if stats is not None else self.statistics(lq_r, gt_r)
        room = self.size - self.count
        if room > 0:
            self._write(RainStatistics(stats.means[:room], stats.layers[:room], stats.spectra[:room]))
        return self.is_full

    def update(self, lq_r: Tensor, gt_r: Tensor, stats: RainStatistics | None = None) -> None:
        """Write the batch at the ring position, overwriting the oldest entries once full."""
        self._write(stats if stats is not None else self.statistics(lq_r, gt_r))

    @torch.no_grad()
    def _write(self, stats: RainStatistics) -> None:
        num = stats.means.shape[0]
        if num > self.size:
            raise ValueError(f'Batch of {num} does not fit an archive of {self.size}.')
        if self.layers is None:
            self.means = stats.means.new_zeros(self.size, *stats.means.shape[1:])
            self.layers = stats.layers.new_zeros(self.size, *stats.layers.shape[1:])
            self.spectra = stats.spectra.new_zeros(self.size, *stats.spectra.shape[1:])
        elif stats.layers.shape[1:] != self.layers.shape[1:]:
            raise ValueError(f'Rain layers of shape {tuple(stats.layers.shape[1:])} do not match the archived '
                             f'{tuple(self.layers.shape[1:])}.')
        slots = (self.position + torch.arange(num, device=self.layers.device)) % self.size
        self.means[slots] = stats.means.to(self.means)
        self.layers[slots] = stats.layers.to(self.layers)
        self.spectra[slots] = stats.spectra.to(self.spectra)
        self.position = (self.position + num) % self.size
        self.count = min(self.count + num, self.size)

    def to(self, device: torch.device | str) -> 'NegativeArchive':
        """Move the buffers to ``device`` (in place); return self."""
        if self.layers is not None:
            self.means, self.layers, self.spectra = (t.to(device) for t in (self.means, self.layers, self.spectra))
        return self

    def state_dict(self) -> dict[str, int | Tensor]:
        """Plain ints and tensors, loadable with ``torch.load(weights_only=True)``."""
        state: dict[str, int | Tensor] = {
            'size': self.size, 'spectrum_size': self.spectrum_size, 'position': self.position, 'count': self.count}
        if self.layers is not None:
            state.update(means=self.means, layers=self.layers, spectra=self.spectra)
        return state

    def load_state_dict(self, state: dict[str, int | Tensor]) -> None:
        self.size = int(state['size'])
        self.spectrum_size = int(state['spectrum_size'])
        self.position = int(state['position'])
        self.count = int(state['count'])
        if 'layers' in state:
            self.means, self.layers, self.spectra = (state[k].clone() for k in ('means', 'layers', 'spectra'))
        else:
            self.means = self.layers = self.spectra = None


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U[0, 1) drawn on the generator's device (CPU without one), returned on ``device``."""
    source = generator.device if generator is not None else torch.device('cpu')
    return torch.rand(shape, generator=generator, device=source).to(device)


def random_flip(images: Tensor, generator: torch.Generator | None = None, per_sample: bool = True) -> Tensor:
    """Flip [..., C, H, W] images horizontally and vertically, each with probability 1/2.

    With ``per_sample`` every image (every index of the leading dimensions) gets its own flips; otherwise one draw
    flips the whole tensor, which is what the reference's torchvision transform does to a batch.
    """
    leading = tuple(images.shape[:-3]) if per_sample else ()
    flips = _uniform((2, *leading), generator, images.device) < 0.5
    horizontal = flips[0].reshape(*leading, 1, 1, 1)
    vertical = flips[1].reshape(*leading, 1, 1, 1)
    images = torch.where(horizontal, images.flip(-1), images)
    return torch.where(vertical, images.flip(-2), images)


def farthest_entries(current: Tensor, archived: Tensor, n_neg: int) -> Tensor:
    """Indices [B, n_neg] of the archived rows farthest in L1 from each current row, farthest first."""
    if archived.shape[0] < n_neg:
        raise ValueError(f'The archive holds {archived.shape[0]} entries, fewer than n_neg={n_neg}.')
    distances = (current.unsqueeze(1) - archived.unsqueeze(0)).abs().flatten(2).sum(dim=2)
    return distances.topk(n_neg, dim=1).indices


def chromatic_negatives(lq_r: Tensor, archive_means: Tensor, n_neg: int, generator: torch.Generator | None = None,
                        clamp: bool = True, per_sample_flip: bool = True) -> tuple[Tensor, Tensor]:
    """Negatives [B, n_neg, 3, h, w]: lq_r recoloured to the farthest archived channel means; and their indices.

    ``clamp=False`` keeps values outside [0, 1], so the negatives' channel means equal the chosen entries
    (up to the 1e-5 guard).
    """
    current = lq_r.mean(dim=(-2, -1))
    indices = farthest_entries(current, archive_means, n_neg)
    scale = (archive_means[indices] + MEAN_EPS) / (current.unsqueeze(1) + MEAN_EPS)  # [B, n_neg, 3]
    negatives = random_flip(scale[..., None, None] * lq_r.unsqueeze(1), generator, per_sample_flip)
    return (negatives.clamp(0, 1) if clamp else negatives), indices


def degradation_negatives(gt_r: Tensor, spectra: Tensor, archive_layers: Tensor, archive_spectra: Tensor, n_neg: int,
                          generator: torch.Generator | None = None,
                          per_sample_flip: bool = True) -> tuple[Tensor, Tensor]:
    """Negatives [B, n_neg, 3, h, w]: gt_r plus the archived rain layers with the farthest spectra; and indices."""
    indices = farthest_entries(spectra, archive_spectra, n_neg)
    negatives = (gt_r.unsqueeze(1) + archive_layers[indices]).clamp(0, 1)
    return random_flip(negatives, generator, per_sample_flip), indices


def gaussian_blur(images: Tensor, sigmas: Tensor, kernel_size: int = 11) -> Tensor:
    """Blur each [C, H, W] image of [N, C, H, W] with its own sigma [N]: one grouped conv, reflect padding.

    Same kernel as torchvision's ``gaussian_blur`` (isotropic, sampled at integer offsets, normalised).
    """
    num, channels, height, width = images.shape
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - (kernel_size - 1) / 2
    profiles = torch.exp(-0.5 * (offsets / sigmas.to(images).unsqueeze(1))**2)
    profiles = profiles / profiles.sum(dim=1, keepdim=True)  # [N, K]
    kernels = (profiles.unsqueeze(2) * profiles.unsqueeze(1)).repeat_interleave(channels, dim=0)  # [N*C, K, K]
    pad = kernel_size // 2
    padded = F.pad(images.reshape(1, num * channels, height, width), (pad, pad, pad, pad), mode='reflect')
    return F.conv2d(padded, kernels.unsqueeze(1), groups=num * channels).reshape(num, channels, height, width)


def detail_negatives(gt: Tensor, n_neg: int, generator: torch.Generator | None = None,
                     sigma_range: tuple[float, float] = (0.5, 2.0), kernel_size: int = 11,
                     per_sample_flip: bool = True) -> tuple[Tensor, Tensor]:
    """Negatives [B, n_neg, 3, H, W]: blurred, randomly flipped copies of the gt crop; and their sigmas [B, n_neg]."""
    batch = gt.shape[0]
    low, high = sigma_range
    sigmas = low + (high - low) * _uniform((batch, n_neg), generator, gt.device)
    copies = gt.unsqueeze(1).expand(-1, n_neg, -1, -1, -1).reshape(batch * n_neg, *gt.shape[1:])
    blurred = gaussian_blur(copies, sigmas.flatten(), kernel_size).reshape(batch, n_neg, *gt.shape[1:])
    return random_flip(blurred, generator, per_sample_flip), sigmas


@dataclass
class MultiViewBatch:
    """Keys [B, 3, h, w] and negatives [B, n_neg, 3, h, w] per view, plus what was drawn (for logs and tests)."""
    keys: dict[str, Tensor]
    negatives: dict[str, Tensor]
    statistics: RainStatistics
    chromatic_indices: Tensor | None = None  # [B, n_neg] archive entries used
    degradation_indices: Tensor | None = None  # [B, n_neg] archive entries used
    detail_sigmas: Tensor | None = None  # [B, n_neg]


@torch.no_grad()
def build_multiview_batch(lq_r: Tensor, gt_r: Tensor, gt: Tensor, archive: NegativeArchive | None, n_neg: int = 4,
                          generator: torch.Generator | None = None, views: tuple[str, ...] | list[str] = VIEWS,
                          update_archive: bool = True, per_sample_flip: bool = True) -> MultiViewBatch:
    """Keys and negatives of every view in ``views`` for one batch (see the module docstring).

    The archive (needed for chromatic and degradation) is moved to the inputs' device, read, then, with
    ``update_archive``, updated with this batch. ``per_sample_flip=False`` reproduces the reference, which flips
    keys and chromatic/degradation negatives of a whole batch with one draw.
    """
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f'Unknown views {sorted(unknown)}; expected some of {VIEWS}.')
    needs_archive = bool({'chromatic', 'degradation'} & set(views))
    if needs_archive and (archive is None or len(archive) < n_neg):
        raise ValueError(f'Chromatic and degradation views need an archive with at least n_neg={n_neg} entries.')
    spectrum_size = archive.spectrum_size if archive is not None else 32
    stats = rain_statistics(lq_r, gt_r, spectrum_size)
    if archive is not None:
        archive.to(lq_r.device)
    batch = MultiViewBatch(keys={}, negatives={}, statistics=stats)
    valid = archive.count if archive is not None else 0
    if 'chromatic' in views:
        batch.keys['chromatic'] = random_flip(gt_r, generator, per_sample_flip)
        batch.negatives['chromatic'], batch.chromatic_indices = chromatic_negatives(
            lq_r, archive.means[:valid], n_neg, generator, per_sample_flip=per_sample_flip)
    if 'degradation' in views:
        batch.keys['degradation'] = random_flip(lq_r, generator, per_sample_flip)
        batch.negatives['degradation'], batch.degradation_indices = degradation_negatives(
            gt_r, stats.spectra, archive.layers[:valid], archive.spectra[:valid], n_neg, generator, per_sample_flip)
    if 'detail' in views:
        batch.keys['detail'] = lq_r
        # the reference draws a flip per detail negative (its dataset transform), hence always per sample
        crop = gt
        if crop.shape[-2:] != lq_r.shape[-2:]:  # crop size != encoder size (the paper has 128 for both)
            crop = F.interpolate(crop, size=lq_r.shape[-2:], mode='bilinear', align_corners=False)
        batch.negatives['detail'], batch.detail_sigmas = detail_negatives(crop, n_neg, generator)
    if update_archive and archive is not None:
        archive.update(lq_r, gt_r, stats)
    return batch
