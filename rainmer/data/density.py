"""Rain density of a pair and the paper's GTAV-balance resampling (docs/method.md#rain-density-and-balancing).

``rho = mean over pixels of max_c |R - B| / (max_c R + max_c B + 1e-3)`` with R, B in [0, 1].
Balancing keeps every crop with ``rho > 0.08`` and samples the bins ``[0, 0.04]`` and ``(0.04, 0.08]``
so that their shares of the result equal the mean shares of those bins in the reference sets
(the synthetic set and GT-Rain).
"""
import numpy as np

from rainmer.data.errors import DataError

BALANCE_EDGES = (0.04, 0.08)


def rain_density(rainy: np.ndarray, clean: np.ndarray) -> float:
    """``rho`` of a uint8 (or [0, 1] float) image pair of the same shape."""
    scale = 255.0 if rainy.dtype == np.uint8 else 1.0
    r, b = rainy.astype(np.float32) / scale, clean.astype(np.float32) / scale
    diff = np.abs(r - b).max(axis=2)
    return float((diff / (r.max(axis=2) + b.max(axis=2) + 1e-3)).mean())


def grid_tiles(height: int, width: int, size: int | None) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping ``size`` tiles of an image (the whole image if no size)."""
    if not size:
        return [(0, 0)]
    return [(top, left) for top in range(0, height - size + 1, size) for left in range(0, width - size + 1, size)]


def bin_shares(densities: np.ndarray, edges: tuple[float, float] = BALANCE_EDGES) -> np.ndarray:
    """Shares of ``[0, e0]``, ``(e0, e1]`` and ``(e1, inf)``."""
    d = np.asarray(densities, np.float64)
    if d.size == 0:
        raise DataError('no densities to bin')
    low, mid = (d <= edges[0]).mean(), ((d > edges[0]) & (d <= edges[1])).mean()
    return np.array([low, mid, 1.0 - low - mid])


def reference_shares(reference_sets: list[np.ndarray], edges: tuple[float, float] = BALANCE_EDGES) -> np.ndarray:
    """Mean of :func:`bin_shares` over the reference sets (each set counts equally)."""
    if not reference_sets:
        raise DataError('balance needs at least one reference set (e.g. the synthetic set and GT-Rain)')
    return np.mean([bin_shares(d, edges) for d in reference_sets], axis=0)


def balance_selection(densities: np.ndarray, shares: tuple[float, float], rng: np.random.Generator,
                      edges: tuple[float, float] = BALANCE_EDGES) -> tuple[np.ndarray, list[str]]:
    """Indices of the kept crops (sorted) and warnings.

    Every crop above ``edges[1]`` is kept; ``n_high / (1 - s_low - s_mid)`` is the size of the result and
    the two low bins are sampled without replacement to ``s_low`` and ``s_mid`` of it (all of a bin is
    kept, with a warning, when it has fewer crops than needed).
    """
    d = np.asarray(densities, np.float64)
    s_low, s_mid = float(shares[0]), float(shares[1])
    if s_low < 0 or s_mid < 0 or s_low + s_mid >= 1:
        raise DataError(f'target shares {s_low:.3f} + {s_mid:.3f} of the low-density bins must be >= 0 and sum < 1')
    low, mid, high = (np.flatnonzero(d <= edges[0]), np.flatnonzero((d > edges[0]) & (d <= edges[1])),
                      np.flatnonzero(d > edges[1]))
    if high.size == 0:
        raise DataError(f'no crop has a rain density above {edges[1]}; nothing to balance around')
    remaining = 1.0 - s_low - s_mid
    if remaining < 1e-6:  # the references hold (almost) no dense rain: no subsampling of the low bins can reach it
        return np.arange(d.size), [f'target shares {s_low:.3f} + {s_mid:.3f} leave no share for densities above '
                                   f'{edges[1]}: keeping every crop']
    total = high.size / remaining
    warnings, chosen = [], [high]
    for indices, share, label in ((low, s_low, f'[0, {edges[0]}]'), (mid, s_mid, f'({edges[0]}, {edges[1]}]')):
        wanted = int(total * share + 1e-9)  # floor, robust to float error (200 / 0.5 * 0.3 -> 120)
        if wanted > indices.size:
            warnings.append(f'bin {label}: {wanted} crops wanted but only {indices.size} exist; keeping all')
            wanted = indices.size
        chosen.append(rng.choice(indices, wanted, replace=False) if wanted else indices[:0])
    return np.sort(np.concatenate(chosen)), warnings


def histogram(densities: np.ndarray, bins: int = 10, max_density: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Counts over ``bins`` equal bins of ``[0, max_density]`` (values above go in the last bin) and the edges."""
    edges = np.linspace(0.0, max_density, bins + 1)
    counts, _ = np.histogram(np.clip(densities, 0, max_density), bins=edges)
    return counts, edges
