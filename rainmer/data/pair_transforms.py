"""Training transforms that keep a rainy/clean pair aligned: pad, random crop, flips, whole-image resize."""
import random

import cv2
import numpy as np

from rainmer.data.errors import DataError

SMALL_IMAGE_MODES = ('pad', 'reject')
# ``basicsr``: BasicSR's ``augment`` (``use_hflip``, ``use_rot``), the same flips on the crop and the resized whole
# images. ``public``: the public Rainmer dataset (datasets/dataset_noresize.py), ``random.randint(0, 3)`` per item,
# 1 = vertical, 2 = horizontal, 0 and 3 = none, on the training crop only.
FLIP_MODES = ('basicsr', 'public')
PUBLIC_NO_FLIP, PUBLIC_VFLIP, PUBLIC_HFLIP = 0, 1, 2


def ensure_min_size(lq: np.ndarray, gt: np.ndarray, size: int, mode: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Make both images at least ``size`` x ``size``: reflect-pad bottom/right, or reject with a message."""
    h, w = lq.shape[:2]
    if h >= size and w >= size:
        return lq, gt
    if mode == 'reject':
        raise DataError(f'{name}: {w}x{h} is smaller than the {size}x{size} crop (gt_size); remove it or set '
                        "small_images: pad")
    if mode != 'pad':
        raise DataError(f'small_images: {mode!r} is not one of {", ".join(SMALL_IMAGE_MODES)}')
    pad = ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0))
    return np.pad(lq, pad, mode='symmetric'), np.pad(gt, pad, mode='symmetric')


def random_crop_pair(lq: np.ndarray, gt: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same random ``size`` x ``size`` window of both images (Python ``random``, as BasicSR)."""
    h, w = lq.shape[:2]
    top, left = random.randint(0, h - size), random.randint(0, w - size)
    return lq[top:top + size, left:left + size], gt[top:top + size, left:left + size]


def draw_augment(use_hflip: bool, use_rot: bool) -> tuple[bool, bool, bool]:
    """(hflip, vflip, transpose) drawn like BasicSR's ``augment``."""
    hflip = use_hflip and random.random() < 0.5
    vflip = use_rot and random.random() < 0.5
    rot90 = use_rot and random.random() < 0.5
    return hflip, vflip, rot90


def apply_augment(img: np.ndarray, flags: tuple[bool, bool, bool]) -> np.ndarray:
    """Apply the flips drawn by :func:`draw_augment` to an HWC image."""
    hflip, vflip, rot90 = flags
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if rot90:
        img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


def check_flip_mode(opt: dict) -> str:
    """The ``flip_mode`` of a dataset option (default ``basicsr``); ``public`` excludes ``use_hflip``/``use_rot``."""
    mode = opt.get('flip_mode', 'basicsr')
    if mode not in FLIP_MODES:
        raise DataError(f'flip_mode: {mode!r} is not one of {", ".join(FLIP_MODES)}')
    if mode == 'public':
        given = [key for key in ('use_hflip', 'use_rot') if opt.get(key)]
        if given:
            raise DataError(f'flip_mode: public draws its own flips (vertical 1/4, horizontal 1/4, none 1/2, on the '
                            f'crop only); remove {" and ".join(given)} or set them false')
    return mode


def draw_public_flip() -> int:
    """The public Rainmer dataset's ``aug = random.randint(0, 3)`` (both ends included)."""
    return random.randint(0, 3)


def apply_public_flip(img: np.ndarray, aug: int) -> np.ndarray:
    """The public ``aug`` on an HWC image: 1 flips rows (its CHW ``flip(1)``, vertical), 2 flips columns
    (``flip(2)``, horizontal), 0 and 3 leave it."""
    if aug == PUBLIC_VFLIP:
        img = img[::-1]
    elif aug == PUBLIC_HFLIP:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def resize_whole(img: np.ndarray, size: int) -> np.ndarray:
    """The whole image resized bilinearly to ``size`` x ``size`` (the encoders' global view)."""
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
