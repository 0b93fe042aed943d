"""``rainmer data stats``: rain density of every pair (or every crop) of a dataset, CSV + histogram PNG."""
import csv
import os
import os.path as osp
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields

import cv2
import numpy as np
from tqdm import tqdm

from rainmer.data.density import bin_shares, grid_tiles, histogram, rain_density
from rainmer.data.errors import DataError
from rainmer.data.histogram_png import draw_histogram
from rainmer.data.pair_source import PairSource


@dataclass
class CropDensity:
    """Density of one pair (``size`` 0) or one ``size`` x ``size`` crop of it at (``top``, ``left``)."""

    key: str
    lq: str
    gt: str
    pair: int
    top: int
    left: int
    size: int
    density: float


def crop_densities(source: PairSource, crop: int | None = None, skip_bad: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> list[CropDensity]:
    """Densities of every pair of ``source`` (of every non-overlapping ``crop`` tile when given)."""
    rows, bad = [], []
    for pair in tqdm(range(len(source)), desc=f'density {source.name}', unit='pair', disable=not progress):
        try:
            lq, gt, lq_path, gt_path = source.read(pair)
        except DataError as err:
            bad.append(str(err))
            continue
        key = source.keys[pair]
        h, w = lq.shape[:2]
        tiles = grid_tiles(h, w, crop)
        if not tiles:
            bad.append(f'{source.describe(lq_path, "lq")}: {w}x{h} is smaller than the {crop}x{crop} crop')
        for number, (top, left) in enumerate(tiles):
            window = (slice(top, top + crop), slice(left, left + crop)) if crop else (slice(None), slice(None))
            rows.append(CropDensity(f'{key}_t{number}' if crop else key, lq_path, gt_path, pair, top, left,
                                    crop or 0, rain_density(lq[window], gt[window])))
    if bad:
        if not skip_bad:
            raise DataError(f'{len(bad)} bad pair(s) (use --skip-bad to leave them out). First: {bad[0]}')
        log(f'left out {len(bad)} bad pair(s); first: {bad[0]}')
    if not rows:
        raise DataError(f'{source.name}: no pair to measure')
    return rows


def write_density_csv(path: str, rows: list[CropDensity]) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow([field.name for field in fields(CropDensity)])
        writer.writerows(astuple(row) for row in rows)


def read_density_csv(path: str) -> np.ndarray:
    """The ``density`` column of a CSV written by ``rainmer data stats``."""
    if not osp.isfile(path):
        raise DataError(f'{path}: density CSV not found (write it with rainmer data stats)')
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        if 'density' not in (reader.fieldnames or []):
            raise DataError(f'{path}: no "density" column; expected a CSV written by rainmer data stats')
        try:
            return np.array([float(row['density']) for row in reader], np.float64)
        except ValueError as err:
            raise DataError(f'{path}: {err}') from err


@dataclass
class StatsResult:
    csv_path: str
    png_path: str
    counts: np.ndarray
    edges: np.ndarray
    shares: np.ndarray  # of [0, 0.04], (0.04, 0.08], (0.08, inf)
    mean: float


def run_stats(source: PairSource, out_dir: str, name: str, *, crop: int | None = None, bins: int = 10,
              max_density: float = 0.4, skip_bad: bool = False, progress: bool = True,
              log: Callable[[str], None] = print) -> StatsResult:
    """Write ``<out_dir>/<name>_density.csv`` and ``<name>_density.png`` for ``source``."""
    rows = crop_densities(source, crop, skip_bad, progress, log)
    densities = np.array([row.density for row in rows])
    counts, edges = histogram(densities, bins, max_density)
    csv_path, png_path = osp.join(out_dir, f'{name}_density.csv'), osp.join(out_dir, f'{name}_density.png')
    write_density_csv(csv_path, rows)
    cv2.imwrite(png_path, draw_histogram(counts, edges, f'{name} rain density'))
    return StatsResult(csv_path, png_path, counts, edges, bin_shares(densities), float(densities.mean()))
