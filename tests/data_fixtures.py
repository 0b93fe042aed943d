"""Tiny generated dataset layouts (a few 40x48 images) for the data tests."""
import os
import os.path as osp

import cv2
import numpy as np

H, W = 40, 48


def clean_image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth colourful BGR uint8 image, different for every seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [np.sin(xx / w * rng.uniform(1, 6) + rng.uniform(0, 6)) * np.cos(yy / h * rng.uniform(1, 6))
                for _ in range(3)]
    img = (np.stack(channels, -1) * 0.35 + 0.5) * 255
    return np.clip(img, 0, 255).astype(np.uint8)


def rainy_image(clean: np.ndarray, seed: int, amount: float = 0.05) -> np.ndarray:
    """``clean`` with bright vertical streaks on a fraction ``amount`` of its columns-ish pixels."""
    rng = np.random.default_rng(seed + 1000)
    mask = rng.random(clean.shape[:2]) < amount
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((5, 1), np.uint8)) > 0
    out = clean.astype(np.int32)
    out[mask] += 90
    return np.clip(out, 0, 255).astype(np.uint8)


def write(path: str, img: np.ndarray) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img)
    return path


def make_rain13k(root: str, n: int = 3, ext: str = '.png', h: int = H, w: int = W, seed: int = 0) -> str:
    """``root/input/*`` and ``root/target/*`` with the same names."""
    for i in range(n):
        clean = clean_image(seed + i, h, w)
        write(osp.join(root, 'target', f'{i:03d}{ext}'), clean)
        write(osp.join(root, 'input', f'{i:03d}{ext}'), rainy_image(clean, seed + i))
    return root


def make_gtrain(root: str, scenes: int = 2, frames: int = 3, seed: int = 100) -> str:
    """GT-Rain: ``root/<scene>/<scene>-C-000.png`` and ``<scene>-R-00k.png``."""
    for s in range(scenes):
        scene = f'Scene_{s}'
        clean = clean_image(seed + s)
        write(osp.join(root, scene, f'{scene}-C-000.png'), clean)
        for k in range(frames):
            write(osp.join(root, scene, f'{scene}-R-{k:03d}.png'), rainy_image(clean, seed + 10 * s + k))
    return root


def make_gtav(root: str, sets: int = 2, split: str = 'train', scenes: int = 2, frames: int = 2,
              seed: int = 200) -> str:
    """GTAV-NightRain: ``root/setN/<split>/rainy/NNNN_KK.png`` and ``gt/NNNN.png`` (names repeat across sets)."""
    for s in range(1, sets + 1):
        base = osp.join(root, f'set{s}', split)
        for n in range(scenes):
            clean = clean_image(seed + 10 * s + n) // 3  # night: dark
            write(osp.join(base, 'gt', f'{n:04d}.png'), clean)
            for k in range(frames):
                write(osp.join(base, 'rainy', f'{n:04d}_{k:02d}.png'), rainy_image(clean, seed + 100 * s + 10 * n + k))
    return root


def make_allweather(root: str, n: int = 3, seed: int = 300, list_name: str = 'allweather.txt') -> str:
    """TransWeather: ``root/<set>/input/*``, ``root/<set>/gt/*`` and a list file; returns the list file."""
    lines = []
    for i in range(n):
        sub = ('snow', 'outdoor-rain', 'raindrop')[i % 3]
        clean = clean_image(seed + i)
        write(osp.join(root, sub, 'gt', f'im_{i}.png'), clean)
        write(osp.join(root, sub, 'input', f'im_{i}.png'), rainy_image(clean, seed + i))
        lines.append(f'./{sub}/input/im_{i}.png')
    list_file = osp.join(root, list_name)
    with open(list_file, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return list_file
