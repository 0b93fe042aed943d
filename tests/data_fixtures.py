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


# ---------------------------------------------------------------------------------------------------------------
# The public downloads, named and laid out as docs/datasets.md describes the repository's ``datasets/`` tree.

RESTORMER_TEST_SETS = ('Rain100L', 'Rain100H', 'Test100', 'Test1200', 'Test2800')
ALLWEATHER_TEST_LISTS = ('snowtest100k_L.txt', 'test1.txt', 'raindroptesta.txt')


def make_restormer_datasets(datasets: str, h: int = 177, w: int = 241, train: int = 2, test: int = 1) -> str:
    """Restormer's ``Datasets/`` as ``datasets/``: ``train/Rain13K/{input,target}`` (JPEG, as downloaded) and
    ``test/<set>/{input,target}`` for the five test sets."""
    make_rain13k(osp.join(datasets, 'train', 'Rain13K'), n=train, ext='.jpg', h=h, w=w, seed=400)
    for i, name in enumerate(RESTORMER_TEST_SETS):
        make_rain13k(osp.join(datasets, 'test', name), n=test, h=h, w=w, seed=410 + 7 * i)
    return datasets


def make_gtrain_public(datasets: str, h: int = 199, w: int = 163, scenes: tuple[str, ...] = ('Gurutto_1-2',),
                       frames: int = 2, amount: float = 0.15, seed: int = 500) -> str:
    """GT-RAIN's ``GT-RAIN_{train,val,test}/<scene>/<scene>-R-NNN.png`` + ``<scene>-C-000.png`` under
    ``datasets/GT-Rain``; returns that folder."""
    root = osp.join(datasets, 'GT-Rain')
    for s, split in enumerate(('train', 'val', 'test')):
        for k, scene in enumerate(scenes):
            clean = clean_image(seed + 10 * s + k, h, w)
            folder = osp.join(root, f'GT-RAIN_{split}', scene)
            write(osp.join(folder, f'{scene}-C-000.png'), clean)
            for f in range(frames):
                write(osp.join(folder, f'{scene}-R-{f:03d}.png'), rainy_image(clean, seed + 100 * s + 10 * k + f,
                                                                                  amount))
    return root


def make_gtav_public(datasets: str, h: int = 177, w: int = 241, sets: int = 3, scenes: int = 1, frames: int = 2,
                     amount: float = 0.15, seed: int = 600) -> str:
    """GTAV-NightRain's ``set1..3/{train,test}/{rainy,gt}`` (``NNNN_KK.png``, clean ``NNNN.png``) under
    ``datasets/GTAV-NightRain``; returns that folder."""
    root = osp.join(datasets, 'GTAV-NightRain')
    for si, split in enumerate(('train', 'test')):
        for s in range(1, sets + 1):
            base = osp.join(root, f'set{s}', split)
            for n in range(scenes):
                clean = clean_image(seed + 100 * si + 10 * s + n, h, w) // 3
                write(osp.join(base, 'gt', f'{n:04d}.png'), clean)
                for k in range(frames):
                    write(osp.join(base, 'rainy', f'{n:04d}_{k:02d}.png'),
                          rainy_image(clean, seed + 1000 * si + 100 * s + 10 * n + k, amount))
    return root


def _list_folder(folder: str, list_names: tuple[str, ...], per_list: int, h: int, w: int, seed: int) -> None:
    for j, list_name in enumerate(list_names):
        lines = []
        for i in range(per_list):
            name = f'{osp.splitext(list_name)[0]}_{i}.png'
            clean = clean_image(seed + 10 * j + i, h, w)
            write(osp.join(folder, 'gt', name), clean)
            write(osp.join(folder, 'input', name), rainy_image(clean, seed + 10 * j + i))
            lines.append(f'./input/{name}')
        with open(osp.join(folder, list_name), 'w') as f:
            f.write('\n'.join(lines) + '\n')


def make_allweather_public(datasets: str, h: int = 177, w: int = 241, train: int = 3, test: int = 1,
                           seed: int = 700) -> str:
    """TransWeather: ``datasets/allweather/{allweather.txt,input,gt}`` and its test folder as
    ``datasets/allweather/test/{snowtest100k_L.txt,test1.txt,raindroptesta.txt,input,gt}`` (lines ``./input/<name>``);
    returns ``datasets/allweather``."""
    root = osp.join(datasets, 'allweather')
    _list_folder(root, ('allweather.txt',), train, h, w, seed)
    _list_folder(osp.join(root, 'test'), ALLWEATHER_TEST_LISTS, test, h, w, seed + 50)
    return root


def make_analysis_public(datasets: str, h: int = 177, w: int = 241, n: int = 2, seed: int = 800) -> str:
    """The analysis sets as docs/datasets.md lays them out: ``datasets/analysis/{Rain200H,Rain800}/{input,target}``
    and ``datasets/analysis/DDN_{1,5}/{rainy,gt}`` (``<i>_<type>.jpg`` with clean ``<i>.jpg``)."""
    root = osp.join(datasets, 'analysis')
    make_rain13k(osp.join(root, 'Rain200H'), n=n, h=h, w=w, seed=seed)
    make_rain13k(osp.join(root, 'Rain800'), n=n, ext='.jpg', h=h, w=w, seed=seed + 10)
    for rain_type in (1, 5):
        for i in range(1, n + 1):
            clean = clean_image(seed + 20 + i, h, w)
            write(osp.join(root, f'DDN_{rain_type}', 'gt', f'{900 + i}.jpg'), clean)
            write(osp.join(root, f'DDN_{rain_type}', 'rainy', f'{900 + i}_{rain_type}.jpg'),
                  rainy_image(clean, seed + 30 + i + rain_type))
    return root


def make_documented_tree(datasets: str) -> str:
    """Every public download of docs/datasets.md, tiny and at odd sizes, in the documented ``datasets/`` tree."""
    make_restormer_datasets(datasets)
    make_gtrain_public(datasets)
    make_gtav_public(datasets)
    make_allweather_public(datasets)
    make_analysis_public(datasets)
    return datasets
