"""``rainmer data synth``: turn a folder of clean photographs into a paired three-domain rain dataset.

Output (``rain13k`` layout per domain, so every folder is a ready ``MixedRainDataset`` source)::

    <out>/train/<domain>/input/<photo>_v<k>.png    rainy
    <out>/train/<domain>/target/<photo>_v<k>.png   clean (for night: the clean night scene)
    <out>/val/<domain>/...                         only with a validation split (by photograph)
    <out>/synth_params.json                        seed, ranges and every image's parameters
"""
import json
import os
import os.path as osp
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from rainmer.data.errors import DataError
from rainmer.data.image_io import read_bgr_uint8
from rainmer.data.layouts import list_images, sanitize_key
from rainmer.data.synth_rain import DOMAINS, StreakRanges, image_rng, ranges_dict, synthesize

PARAMS_FILE = 'synth_params.json'


@dataclass
class SynthOutcome:
    """What :func:`synth_folder` wrote: pair counts per split and domain, and skipped inputs."""

    out_dir: str
    counts: dict
    skipped: list[str]


def split_photos(stems: list[str], val: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) photographs; ``val`` is a count (>= 1) or a fraction (< 1), drawn with ``seed``."""
    if val < 0:
        raise DataError(f'--val: expected a count or a fraction >= 0, got {val}')
    n_val = int(round(val * len(stems))) if val < 1 else int(val)
    if val and n_val >= len(stems):
        raise DataError(f'--val {val}: leaves no photograph for training ({len(stems)} in total)')
    order = np.random.default_rng(seed).permutation(len(stems))
    chosen = {stems[i] for i in order[:n_val]}
    return [s for s in stems if s not in chosen], [s for s in stems if s in chosen]


def _limit_size(img: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img
    scale = max_side / max(h, w)
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def synth_folder(clean_dir: str, out_dir: str, *, seed: int = 0, domains: tuple[str, ...] = DOMAINS,
                 per_image: int = 1, val: float = 0, max_side: int | None = None,
                 ranges: StreakRanges | None = None, force: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print) -> SynthOutcome:
    """Write rainy/clean pairs of every domain for every photograph of ``clean_dir`` (see module doc)."""
    for domain in domains:
        if domain not in DOMAINS:
            raise DataError(f'--domains: {domain!r} is not one of {", ".join(DOMAINS)}')
    if per_image < 1:
        raise DataError(f'--per-image: expected at least 1, got {per_image}')
    if osp.isfile(osp.join(out_dir, PARAMS_FILE)) and not force:
        raise DataError(f'{out_dir}: already holds a synthetic set ({PARAMS_FILE}); use --force to overwrite')
    if force:  # only ever removes what an earlier synth run wrote here
        for split in ('train', 'val'):
            if osp.isdir(osp.join(out_dir, split)) and osp.isfile(osp.join(out_dir, PARAMS_FILE)):
                shutil.rmtree(osp.join(out_dir, split))
    ranges = ranges or StreakRanges()
    photos: dict[str, str] = {}
    for path in list_images(clean_dir):
        stem = sanitize_key(osp.splitext(osp.basename(path))[0])
        if stem in photos:
            raise DataError(f'{path} and {photos[stem]} have the same name; rename one of them')
        photos[stem] = path
    if not photos:
        raise DataError(f'{clean_dir}: no images found')
    train, val_stems = split_photos(sorted(photos), val, seed)
    split_of = {s: 'train' for s in train} | {s: 'val' for s in val_stems}
    counts: dict = {}
    skipped, records = [], []
    for stem in tqdm(sorted(photos), desc='synth', unit='photo', disable=not progress):
        try:
            clean = _limit_size(read_bgr_uint8(photos[stem]), max_side)
        except DataError as err:
            skipped.append(str(err))
            log(f'skipped {err}')
            continue
        split = split_of[stem]
        for domain in domains:
            folder = osp.join(out_dir, split, domain)
            os.makedirs(osp.join(folder, 'input'), exist_ok=True)
            os.makedirs(osp.join(folder, 'target'), exist_ok=True)
            for variant in range(per_image):
                rainy, target, params = synthesize(clean, domain, image_rng(seed, domain, stem, variant), ranges)
                name = f'{stem}_v{variant}.png'
                cv2.imwrite(osp.join(folder, 'input', name), rainy)
                cv2.imwrite(osp.join(folder, 'target', name), target)
                records.append(dict(photo=photos[stem], split=split, domain=domain, name=name, params=params))
                counts.setdefault(split, {}).setdefault(domain, 0)
                counts[split][domain] += 1
    if not records:
        raise DataError(f'{clean_dir}: no usable photograph (all skipped: {skipped[0]})')
    with open(osp.join(out_dir, PARAMS_FILE), 'w', encoding='utf-8') as f:
        json.dump(dict(seed=seed, domains=list(domains), per_image=per_image, val=val, max_side=max_side,
                       ranges=ranges_dict(ranges), images=records), f, indent=1)
    return SynthOutcome(out_dir, counts, skipped)
