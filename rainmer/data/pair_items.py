"""Turn a checked BGR uint8 pair into the dict items BasicSR models consume."""
import os.path as osp

import numpy as np
from basicsr.utils import img2tensor

from rainmer.data.pair_transforms import (
    apply_augment,
    apply_public_flip,
    draw_augment,
    draw_public_flip,
    ensure_min_size,
    random_crop_pair,
    resize_whole,
)


def _tensors(*imgs: np.ndarray) -> list:
    return img2tensor([img.astype(np.float32) / 255.0 for img in imgs], bgr2rgb=True, float32=True)


def train_item(lq: np.ndarray, gt: np.ndarray, opt: dict, name: str) -> dict:
    """Crop ``gt_size`` (after padding small images), whole images resized to ``resize_size``, flips.

    ``flip_mode: basicsr`` (default): BasicSR's ``augment`` (``use_hflip``, ``use_rot``), the same flips on the crop
    and the resized views. ``flip_mode: public``: the public Rainmer dataset's ``randint(0, 3)`` (vertical 1/4,
    horizontal 1/4, none 1/2) on the crop only; the resized views are not flipped.

    Returns float32 RGB CHW tensors in [0, 1]: ``lq``, ``gt``, ``lq_resize``, ``gt_resize``.
    """
    gt_size, resize_size = int(opt.get('gt_size', 128)), int(opt.get('resize_size', 128))
    lq_resize, gt_resize = resize_whole(lq, resize_size), resize_whole(gt, resize_size)
    lq, gt = ensure_min_size(lq, gt, gt_size, opt.get('small_images', 'pad'), name)
    lq, gt = random_crop_pair(lq, gt, gt_size)
    if opt.get('flip_mode', 'basicsr') == 'public':
        aug = draw_public_flip()
        lq, gt = apply_public_flip(lq, aug), apply_public_flip(gt, aug)
    else:
        flags = draw_augment(opt.get('use_hflip', True), opt.get('use_rot', True))
        lq, gt, lq_resize, gt_resize = (apply_augment(img, flags) for img in (lq, gt, lq_resize, gt_resize))
    lq, gt, lq_resize, gt_resize = _tensors(lq, gt, lq_resize, gt_resize)
    return {'lq': lq, 'gt': gt, 'lq_resize': lq_resize, 'gt_resize': gt_resize}


def whole_item(lq: np.ndarray, gt: np.ndarray) -> dict:
    """Whole images as float32 RGB CHW tensors in [0, 1] (validation and test)."""
    lq, gt = _tensors(lq, gt)
    return {'lq': lq, 'gt': gt}


def named_path(path: str, key: str) -> str:
    """``path`` whose file stem is the unique pair ``key`` (BasicSR names saved results by the stem)."""
    stem, ext = osp.splitext(osp.basename(path))
    return path if stem == key else osp.join(osp.dirname(path), key + ext)
