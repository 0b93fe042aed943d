"""PNG figures: the spherical UMAP as a longitude/latitude scatter and the relationship heatmap."""
from collections.abc import Sequence

import numpy as np

from rainmer.analysis.errors import require


def _figure(size: tuple[float, float]):
    require('matplotlib', 'matplotlib', 'The PNG figures')
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    return Figure(figsize=size, dpi=150, layout='constrained')


def _colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps['tab10' if count <= 10 else 'tab20']
    return [cmap(index % cmap.N) for index in range(count)]


def plot_sphere_scatter(path: str, lonlat: np.ndarray, labels: np.ndarray, datasets: Sequence[str],
                        title: str) -> None:
    """Longitude/latitude scatter of a spherical embedding, one colour per dataset."""
    fig = _figure((7.0, 4.0))
    ax = fig.add_subplot()
    for index, (name, colour) in enumerate(zip(datasets, _colours(len(datasets)))):
        points = lonlat[labels == index]
        ax.scatter(points[:, 0], points[:, 1], s=8, color=colour, alpha=0.75, linewidths=0, label=name)
    ax.set(xlim=(-180, 180), ylim=(-90, 90), xlabel='longitude (degrees)', ylabel='latitude (degrees)', title=title)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-90, 91, 30))
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), markerscale=2, frameon=False, fontsize='small')
    fig.savefig(path)


def colour_scale(matrix: np.ndarray) -> tuple[str, float, float]:
    """(colormap, vmin, vmax): centred on 0 (blue conflict, red cooperation) when the scores change sign,
    otherwise a one-hue scale over their range so that small differences between positive scores show."""
    finite = matrix[np.isfinite(matrix)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    if low < 0 < high:
        limit = max(-low, high)
        return 'coolwarm', -limit, limit
    if high - low < 1e-6:
        low, high = low - 0.5e-6, high + 0.5e-6
    return ('Reds', low, high) if low >= 0 else ('Blues_r', low, high)


def plot_relationship_heatmap(path: str, matrix: np.ndarray, datasets: Sequence[str], title: str) -> None:
    """The relationship matrix as an annotated heatmap (colours: :func:`colour_scale`)."""
    size = len(datasets)
    fig = _figure((max(4.0, 1.6 + 0.75 * size), max(3.2, 1.2 + 0.65 * size)))
    ax = fig.add_subplot()
    cmap, vmin, vmax = colour_scale(matrix)
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(size), labels=datasets, rotation=45, ha='right', fontsize='small')
    ax.set_yticks(range(size), labels=datasets, fontsize='small')
    for i in range(size):
        for j in range(size):
            value = matrix[i, j]
            if not np.isfinite(value):
                ax.text(j, i, 'n/a', ha='center', va='center', fontsize='x-small')
                continue
            strength = abs(value) / max(abs(vmin), abs(vmax)) if cmap == 'coolwarm' else (value - vmin) / (vmax - vmin)
            if cmap == 'Blues_r':
                strength = 1 - strength
            ax.text(j, i, f'{value:.2f}', ha='center', va='center', fontsize='x-small',
                    color='white' if strength > 0.6 else 'black')
    ax.set_title(title, fontsize='medium')
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path)
