"""UMAP onto the unit sphere (``output_metric='haversine'``) and the longitude/latitude of the result."""
import warnings
from collections.abc import Mapping

import numpy as np

from rainmer.analysis.errors import AnalysisError, require

UMAP_DEFAULTS = {'n_neighbors': 15, 'min_dist': 0.1, 'metric': 'cosine'}


def spherical_to_lonlat(embedding: np.ndarray) -> np.ndarray:
    """UMAP haversine coordinates [N, 2] (radians, unbounded) -> [N, 2] (longitude, latitude) in degrees.

    UMAP's spherical optimisation (its haversine gradient) treats the first coordinate as the polar angle
    theta from the north pole and the second as the azimuth phi: the point is
    ``(sin theta cos phi, sin theta sin phi, cos theta)``. Going through that point puts the result in
    longitude [-180, 180] and latitude [-90, 90] however far the optimiser wandered.
    """
    theta, phi = embedding[:, 0], embedding[:, 1]
    xyz = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    longitude = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    latitude = np.degrees(np.arcsin(np.clip(xyz[:, 2], -1.0, 1.0)))
    return np.stack([longitude, latitude], axis=1)


def project_to_sphere(features: np.ndarray, seed: int = 0, options: Mapping | None = None) -> np.ndarray:
    """UMAP of ``features`` [N, D] onto the unit sphere, as [N, 2] (longitude, latitude) in degrees.

    Args:
        features: Representations, one row per image (flattened).
        seed: UMAP's ``random_state`` (reproducible, single-threaded optimisation).
        options: Extra ``umap.UMAP`` arguments; defaults :data:`UMAP_DEFAULTS` (cosine input metric).
            ``n_neighbors`` is capped at N - 1.
    """
    umap = require('umap', 'umap-learn', 'The UMAP projection (skip it with --no-umap)')
    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    if len(features) < 4:
        raise AnalysisError(f'UMAP needs at least 4 images in all, got {len(features)}')
    kwargs = {**UMAP_DEFAULTS, **dict(options or {})}
    kwargs['n_neighbors'] = int(min(kwargs['n_neighbors'], len(features) - 1))
    for fixed in ('output_metric', 'n_components', 'random_state'):
        if fixed in kwargs:
            raise AnalysisError(f'analysis.umap.{fixed} is fixed by the spherical projection; remove it')
    try:
        reducer = umap.UMAP(output_metric='haversine', n_components=2, random_state=seed, **kwargs)
    except TypeError as error:
        raise AnalysisError(f'analysis.umap: {error}') from error
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # n_jobs overridden by random_state; spectral init fallbacks
        embedding = reducer.fit_transform(features)
    return spherical_to_lonlat(np.asarray(embedding, dtype=np.float64))
