"""Dataset relationship scores: the mean cosine similarity between the representations of two datasets."""
from collections.abc import Sequence

import numpy as np


def unit_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); all-zero rows stay zero (their cosine with anything is 0)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def relationship_matrix(groups: Sequence[np.ndarray]) -> np.ndarray:
    """Relationship score of every pair of datasets, [G, G], symmetric, in [-1, 1].

    ``score(A, B)`` is the mean of ``cos(a, b)`` over all pairs ``a`` in A and ``b`` in B. On the diagonal
    the pairs of an image with itself are left out (they would add ``1/n`` of similarity 1), so
    ``score(A, A)`` is the mean similarity between distinct images of A; it is NaN for a set of one image.

    Uses ``sum_ab cos(a, b) = <sum_a a/|a|, sum_b b/|b|>``: linear in the number of images.

    Args:
        groups: One array [n_g, ...] per dataset (rows are flattened).
    """
    units = [unit_rows(g) for g in groups]
    sums = [u.sum(axis=0) for u in units]
    size = len(units)
    matrix = np.empty((size, size), dtype=np.float64)
    for i in range(size):
        for j in range(i, size):
            total = float(sums[i] @ sums[j])
            if i == j:
                n = len(units[i])
                self_pairs = float(np.sum(units[i] * units[i]))
                score = (total - self_pairs) / (n * (n - 1)) if n > 1 else np.nan
            else:
                score = total / (len(units[i]) * len(units[j]))
            matrix[i, j] = matrix[j, i] = score
    return np.clip(matrix, -1.0, 1.0)
