"""Deterministic mapping of a dataset index to (source, pair) with optional per-source sampling weights.

Without weights the sources are concatenated. With weights ``w_s`` each source gets a contiguous block
of ``n_s`` indices, ``n_s`` proportional to its weight, and index ``start_s + j`` reads pair ``j mod len_s``.
The epoch length is the smallest one in which every pair of every source is reachable:
``N = max_s ceil(len_s / share_s)`` (or ``num_samples`` if given). BasicSR's EnlargedSampler shuffles
indices uniformly, so a source is drawn with probability ``n_s / N`` = its weight share.
"""
import bisect
import math

from rainmer.data.errors import DataError


class SourceIndexMap:
    """Index -> (source, pair) for sources of the given sizes."""

    def __init__(self, lengths: list[int], weights: list[float] | None = None, num_samples: int | None = None):
        if not lengths or min(lengths) <= 0:
            raise DataError('every source needs at least one pair')
        self.lengths = list(lengths)
        if weights is None:
            counts = list(lengths)
        else:
            if len(weights) != len(lengths) or any(w is None or w <= 0 for w in weights):
                raise DataError('sampling weights must be positive numbers, one per source')
            shares = [w / sum(weights) for w in weights]
            total = num_samples or max(math.ceil(n / s - 1e-9) for n, s in zip(lengths, shares))
            counts = _largest_remainder(shares, total)
            if not num_samples:  # guard against float rounding making a pair unreachable
                counts = [max(c, n) for c, n in zip(counts, lengths)]
            if min(counts) == 0:
                raise DataError(f'num_samples {total} is too small to draw from every source')
        self.counts = counts
        self.starts = [sum(counts[:i]) for i in range(len(counts))]
        self.total = sum(counts)

    def __len__(self) -> int:
        return self.total

    def locate(self, index: int) -> tuple[int, int]:
        """(source index, pair index) of dataset index ``index``."""
        if not 0 <= index < self.total:
            raise IndexError(f'index {index} out of range for {self.total} samples')
        source = bisect.bisect_right(self.starts, index) - 1
        return source, (index - self.starts[source]) % self.lengths[source]


def _largest_remainder(shares: list[float], total: int) -> list[int]:
    """Integer counts summing to ``total`` proportional to ``shares``."""
    raw = [s * total for s in shares]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[:total - sum(counts)]:
        counts[i] += 1
    return counts
