"""Training transforms that keep a rainy/clean pair aligned: pad, random crop, flips, whole-image resize."""
import random

import cv2
import numpy as np

from rainmer.data.errors import DataError

SMALL_IMAGE_MODES = ('pad', 'reject')


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


def resize_whole(img: np.ndarray, size: int) -> np.ndarray:
    """The whole image resized bilinearly to ``size`` x ``size`` (the encoders' global view)."""
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
