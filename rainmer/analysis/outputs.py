"""Files of an analysis: embeddings NPZ, relationship CSV/JSON/PNG, spherical UMAP CSV/PNG."""
import csv
import json
import os.path as osp
from collections.abc import Mapping, Sequence

import numpy as np

from rainmer.analysis.extract import Embeddings

EMBEDDINGS_FILE = 'embeddings.npz'
RELATIONSHIP_JSON = 'relationship.json'
# titles of the spaces Rainmer's encode gives; other encoders' spaces keep their key
SPACE_TITLES = {'chromatic': 'chromatic', 'degradation': 'detail/degradation', 'detail': 'detail map'}


def space_title(space: str) -> str:
    return SPACE_TITLES.get(space, space)


def relationship_csv(out_dir: str, space: str) -> str:
    return osp.join(out_dir, f'{space}_relationship.csv')


def write_embeddings(path: str, embeddings: Embeddings) -> None:
    """``datasets``, ``labels``, ``paths``, ``spaces`` and one [N, D] float32 array per space."""
    np.savez_compressed(path, datasets=np.asarray(embeddings.datasets, dtype=str), labels=embeddings.labels,
                        paths=np.asarray(embeddings.paths, dtype=str),
                        spaces=np.asarray(list(embeddings.spaces), dtype=str), **embeddings.spaces)


def read_embeddings(path: str) -> Embeddings:
    """The inverse of :func:`write_embeddings` (no pickle needed)."""
    with np.load(path, allow_pickle=False) as data:
        return Embeddings(datasets=[str(name) for name in data['datasets']], labels=data['labels'],
                          paths=[str(p) for p in data['paths']],
                          spaces={str(space): data[str(space)] for space in data['spaces']})


def write_relationship_csv(path: str, matrix: np.ndarray, datasets: Sequence[str]) -> None:
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['dataset', *datasets])
        for name, row in zip(datasets, matrix):
            writer.writerow([name, *(f'{value:.6f}' for value in row)])


def read_relationship_csv(path: str) -> tuple[list[str], np.ndarray]:
    with open(path, newline='', encoding='utf-8') as f:
        rows = list(csv.reader(f))
    return rows[0][1:], np.array([[float(value) for value in row[1:]] for row in rows[1:]])


def write_relationship_json(path: str, matrices: Mapping[str, np.ndarray], embeddings: Embeddings) -> None:
    """All spaces in one file; NaN (a set of one image) is written as null."""
    def clean(matrix: np.ndarray) -> list[list[float | None]]:
        return [[float(v) if np.isfinite(v) else None for v in row] for row in matrix]

    payload = {
        'datasets': embeddings.datasets,
        'counts': embeddings.counts(),
        'score': 'mean cosine similarity over image pairs; diagonal without the pairs of an image with itself',
        'spaces': {space: clean(matrix) for space, matrix in matrices.items()},
    }
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(payload, f, indent=2)


def write_projection_csv(path: str, lonlat: np.ndarray, embeddings: Embeddings) -> None:
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['dataset', 'path', 'longitude', 'latitude'])
        for label, image_path, (lon, lat) in zip(embeddings.labels, embeddings.paths, lonlat):
            writer.writerow([embeddings.datasets[label], image_path, f'{lon:.6f}', f'{lat:.6f}'])


def format_matrix(matrix: np.ndarray, datasets: Sequence[str]) -> str:
    """A plain-text table of a relationship matrix for the console."""
    width = max(8, *(len(name) for name in datasets))
    lines = [' ' * width + ' ' + ' '.join(f'{name[:width]:>{width}}' for name in datasets)]
    for name, row in zip(datasets, matrix):
        lines.append(f'{name:<{width}} ' + ' '.join(f'{value:>{width}.3f}' for value in row))
    return '\n'.join(lines)
