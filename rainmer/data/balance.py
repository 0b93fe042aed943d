"""``rainmer data balance``: the paper's GTAV-balance, crops of GTAV-NightRain resampled by rain density.

The training split's crops go to ``<out>`` (LMDB pair, ``input/``+``target/`` PNGs, or ``selection.csv`` only);
the test split's crops, balanced the same way, go to ``<out>/test/{rainy,gt}`` as PNGs in the GTAV naming
(:func:`test_crop_names`), which the ``gtav`` layout reads.
"""
import csv
import os
import os.path as osp
import shutil
from collections.abc import Callable
from dataclasses import astuple, dataclass

import cv2
import numpy as np

from rainmer.data.density import BALANCE_EDGES, balance_selection, bin_shares
from rainmer.data.errors import DataError
from rainmer.data.image_io import encode_png
from rainmer.data.lmdb_tools import build_pair_lmdbs, build_state, read_marker
from rainmer.data.pair_source import PairSource
from rainmer.data.rain_stats import CropDensity, crop_densities

SELECTION = 'selection.csv'
FORMATS = ('lmdb', 'folder', 'list')


@dataclass
class BalanceResult:
    out_dir: str
    selected: int
    candidates: int
    shares_before: np.ndarray
    shares_after: np.ndarray
    target_shares: tuple[float, float]
    warnings: list[str]
    already_done: bool = False


def _crop_loaders(source: PairSource, rows: list[CropDensity]):
    """One loader per selected crop; consecutive crops of the same pair share one read."""
    cache: dict = {}

    def load(row: CropDensity):
        if cache.get('pair') != row.pair:
            cache.clear()
            cache.update(pair=row.pair, images=source.read(row.pair)[:2])
        lq, gt = cache['images']
        window = (slice(row.top, row.top + row.size), slice(row.left, row.left + row.size))
        return row.key, np.ascontiguousarray(lq[window]), np.ascontiguousarray(gt[window]), row.lq, row.gt

    return ((lambda r=r: load(r)) for r in rows)


def _write_selection(path: str, rows: list[CropDensity]) -> None:
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['key', 'lq', 'gt', 'top', 'left', 'size', 'density'])
        writer.writerows([r.key, r.lq, r.gt, r.top, r.left, r.size, f'{r.density:.6f}'] for r in rows)


def run_balance(source: PairSource, out_dir: str, target_shares: tuple[float, float], *, crop: int = 512,
                seed: int = 0, fmt: str = 'lmdb', edges: tuple[float, float] = BALANCE_EDGES, force: bool = False,
                skip_bad: bool = False, progress: bool = True,
                log: Callable[[str], None] = print) -> BalanceResult:
    """Crop every pair of ``source`` into ``crop`` tiles, select them by density, write the selection."""
    if fmt not in FORMATS:
        raise DataError(f'--format: {fmt!r} is not one of {", ".join(FORMATS)}')
    if fmt == 'lmdb' and build_state(out_dir) == 'done' and not force:
        marker = read_marker(out_dir)
        log(f'{out_dir}: already balanced ({marker.get("pairs")} crops), not rebuilt (use --force to rebuild)')
        return BalanceResult(out_dir, int(marker.get('pairs', 0)), int(marker.get('candidates', 0)),
                             np.array(marker.get('shares_before', [])), np.array(marker.get('shares_after', [])),
                             target_shares, [], True)
    rows = crop_densities(source, crop, skip_bad, progress, log)
    densities = np.array([r.density for r in rows])
    chosen, warnings = balance_selection(densities, target_shares, np.random.default_rng(seed), edges)
    selected = [rows[i] for i in chosen]
    for warning in warnings:
        log(f'warning: {warning}')
    os.makedirs(out_dir, exist_ok=True)
    _write_selection(osp.join(out_dir, SELECTION), selected)
    before, after = bin_shares(densities, edges), bin_shares(densities[chosen], edges)
    if fmt == 'lmdb':
        description = dict(kind='balance', source=source.name, crop=crop, seed=seed, candidates=len(rows),
                           target_shares=list(target_shares), shares_before=before.tolist(),
                           shares_after=after.tolist())
        build_pair_lmdbs(_crop_loaders(source, selected), len(selected), out_dir, description=description,
                         encode=encode_png, progress=progress)
    elif fmt == 'folder':
        for folder in ('input', 'target'):
            os.makedirs(osp.join(out_dir, folder), exist_ok=True)
        for load in _crop_loaders(source, selected):
            key, lq, gt, _, _ = load()
            cv2.imwrite(osp.join(out_dir, 'input', f'{key}.png'), lq)
            cv2.imwrite(osp.join(out_dir, 'target', f'{key}.png'), gt)
    return BalanceResult(out_dir, len(selected), len(rows), before, after, target_shares, warnings)


def test_crop_names(rows: list[CropDensity]) -> list[tuple[str, str]]:
    """(rainy, clean) file stems of selected GTAV test crops: ``NNNN_KK_setN`` with clean ``NNNN_setN``.

    The rainy frame ``setN/test/rainy/NNNN_KK.png`` gives ``NNNN_KK_setN`` (the clean partner drops the second
    ``_`` field, as :func:`rainmer.data.layouts.gtav_clean_stem` does). When crops at more than one window of the
    same scene are selected, the scene field carries the crop's tile: ``NNNN-tT_KK_setN`` / ``NNNN-tT_setN``.
    """
    parsed = []
    for row in rows:
        stem = osp.splitext(osp.basename(row.lq))[0]
        parts = stem.split('_')
        if len(parts) < 2:
            raise DataError(f'{row.lq}: GTAV rainy images are named <scene>_<frame>.png (e.g. 0001_03.png)')
        set_name = osp.basename(osp.dirname(osp.dirname(osp.dirname(osp.abspath(row.lq)))))
        tile = row.key.rsplit('_t', 1)[-1] if row.size else '0'
        rest = ''.join('_' + p for p in parts[2:])
        parsed.append((parts[0], parts[1], set_name, rest, tile, (row.top, row.left)))
    windows: dict[tuple, set] = {}
    for scene, _, set_name, rest, _, window in parsed:
        windows.setdefault((scene, set_name, rest), set()).add(window)
    names = []
    for scene, frame, set_name, rest, tile, _ in parsed:
        field = scene if len(windows[(scene, set_name, rest)]) == 1 else f'{scene}-t{tile}'
        names.append((f'{field}_{frame}_{set_name}{rest}', f'{field}_{set_name}{rest}'))
    seen: dict[str, str] = {}
    for (rainy, _), row in zip(names, rows):
        if rainy in seen:
            raise DataError(f'{row.lq} and {seen[rainy]} give the same test crop name {rainy!r}')
        seen[rainy] = row.lq
    return names


def run_balance_test(source: PairSource, out_dir: str, target_shares: tuple[float, float], *, crop: int = 512,
                     seed: int = 0, fmt: str = 'lmdb', edges: tuple[float, float] = BALANCE_EDGES,
                     force: bool = False, skip_bad: bool = False, progress: bool = True,
                     log: Callable[[str], None] = print) -> BalanceResult:
    """The balanced GTAV test crops: ``out_dir/{rainy,gt}`` PNGs (``fmt`` list: ``selection.csv`` only)."""
    selection = osp.join(out_dir, SELECTION)
    if osp.isfile(selection) and not force:
        with open(selection, newline='', encoding='utf-8') as f:
            count = sum(1 for _ in csv.DictReader(f))
        log(f'{out_dir}: test crops already written ({count} crops), not rebuilt (use --force to rebuild)')
        return BalanceResult(out_dir, count, 0, np.array([]), np.array([]), target_shares, [], True)
    rows = crop_densities(source, crop, skip_bad, progress, log)
    densities = np.array([r.density for r in rows])
    try:
        chosen, warnings = balance_selection(densities, target_shares, np.random.default_rng(seed), edges)
    except DataError as err:
        raise DataError(f'{source.name} (test split): {err}') from err
    selected = [rows[i] for i in chosen]
    names = test_crop_names(selected)
    for warning in warnings:
        log(f'warning: test split: {warning}')
    for folder in ('rainy', 'gt'):
        shutil.rmtree(osp.join(out_dir, folder), ignore_errors=True)
    if osp.isfile(selection):
        os.remove(selection)
    os.makedirs(out_dir, exist_ok=True)
    if fmt != 'list':
        for folder in ('rainy', 'gt'):
            os.makedirs(osp.join(out_dir, folder))
        written: set[str] = set()
        for load, (rainy_name, clean_name) in zip(_crop_loaders(source, selected), names):
            _, lq, gt, _, _ = load()
            cv2.imwrite(osp.join(out_dir, 'rainy', f'{rainy_name}.png'), lq)
            if clean_name not in written:
                cv2.imwrite(osp.join(out_dir, 'gt', f'{clean_name}.png'), gt)
                written.add(clean_name)
    _write_selection(selection, [CropDensity(name, *astuple(row)[1:]) for (name, _), row in zip(names, selected)])
    return BalanceResult(out_dir, len(selected), len(rows), bin_shares(densities, edges),
                         bin_shares(densities[chosen], edges), target_shares, warnings)
