"""Sample images per dataset and collect their representations in every space."""
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from rainmer.analysis.encoders import RepresentationEncoder
from rainmer.analysis.errors import AnalysisError

RESERVED_NAMES = ('datasets', 'labels', 'paths', 'spaces')


@dataclass
class Embeddings:
    """Representations of the sampled images: ``spaces[space]`` [N, D] (flattened, unnormalised),
    ``labels`` [N] (index into ``datasets``), ``paths`` [N] (each image's ``lq_path``)."""

    datasets: list[str]
    labels: np.ndarray
    paths: list[str]
    spaces: dict[str, np.ndarray] = field(default_factory=dict)

    def groups(self, space: str) -> list[np.ndarray]:
        """One array per dataset, in ``datasets`` order."""
        return [self.spaces[space][self.labels == index] for index in range(len(self.datasets))]

    def counts(self) -> list[int]:
        return [int(np.sum(self.labels == index)) for index in range(len(self.datasets))]


def sample_indices(size: int, num_samples: int | None, seed: int, position: int) -> list[int]:
    """Up to ``num_samples`` distinct indices of ``range(size)``, sorted; the draw depends only on the seed and
    the dataset's position in the list, so adding datasets after it leaves its sample unchanged."""
    if size == 0:
        return []
    if not num_samples or num_samples >= size:
        return list(range(size))
    rng = np.random.default_rng([int(seed), int(position)])
    return sorted(int(i) for i in rng.choice(size, size=int(num_samples), replace=False))


def _first(batch: list):
    return batch[0]


def _batches(loader: Iterable[dict], image_key: str, encoder: RepresentationEncoder,
             batch_size: int) -> Iterable[tuple[torch.Tensor, list[str]]]:
    """Prepared images stacked up to ``batch_size`` (a batch ends early where the image size changes)."""
    images: list[torch.Tensor] = []
    paths: list[str] = []
    for item in loader:
        if image_key not in item:
            raise AnalysisError(f"analysis.image_key: the dataset items have no '{image_key}' "
                                f"(keys: {', '.join(sorted(item))})")
        image = encoder.prepare(item[image_key])
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield torch.cat(images), paths
            images, paths = [], []
        images.append(image)
        paths.append(str(item.get('lq_path', item.get('gt_path', ''))))
    if images:
        yield torch.cat(images), paths


def choose_spaces(reps: Mapping[str, torch.Tensor], requested: Sequence[str] | None) -> list[str]:
    """The requested spaces (checked), or every vector [B, D] the encoder returns."""
    if requested:
        missing = [space for space in requested if space not in reps]
        if missing:
            raise AnalysisError(f"analysis.spaces: the encoder gives no {', '.join(missing)} "
                                f"(it gives {', '.join(reps) or 'nothing'})")
        spaces = list(requested)
    else:
        spaces = [space for space, rep in reps.items() if rep.dim() == 2]
        if not spaces:
            raise AnalysisError('the encoder returns no vector representation '
                                f"({', '.join(reps) or 'nothing'}); list the spaces in analysis.spaces")
    reserved = [space for space in spaces if space in RESERVED_NAMES]
    if reserved:
        raise AnalysisError(f'analysis.spaces: {reserved} clash with the names of the embeddings file')
    return spaces


def extract_embeddings(encoder: RepresentationEncoder, datasets: Mapping[str, Dataset], *,
                       num_samples: int | None = 500, seed: int = 0, spaces: Sequence[str] | None = None,
                       image_key: str = 'lq', batch_size: int = 16, num_workers: int = 0,
                       progress: bool = True, log: Callable[[str], None] = print) -> Embeddings:
    """Representations of up to ``num_samples`` seeded images of each dataset, in ``datasets`` order."""
    names = list(datasets)
    chosen: list[str] | None = None
    collected: dict[str, list[np.ndarray]] = {}
    labels: list[int] = []
    paths: list[str] = []
    for position, (name, dataset) in enumerate(datasets.items()):
        indices = sample_indices(len(dataset), num_samples, seed, position)
        if not indices:
            raise AnalysisError(f'datasets.{name}: the dataset is empty')
        log(f'{name}: {len(indices)} of {len(dataset)} images')
        loader = DataLoader(Subset(dataset, indices), batch_size=1, shuffle=False, num_workers=num_workers,
                            collate_fn=_first)
        with tqdm(total=len(indices), desc=name, unit='img', disable=not progress, leave=False) as bar:
            for images, batch_paths in _batches(loader, image_key, encoder, batch_size):
                reps = encoder(images)
                if chosen is None:
                    chosen = choose_spaces(reps, spaces)
                for space in chosen:
                    collected.setdefault(space, []).append(reps[space].flatten(1).numpy())
                labels.extend([position] * len(batch_paths))
                paths.extend(batch_paths)
                bar.update(len(batch_paths))
    return Embeddings(datasets=names, labels=np.asarray(labels, dtype=np.int64), paths=paths,
                      spaces={space: np.concatenate(parts).astype(np.float32) for space, parts in collected.items()})
