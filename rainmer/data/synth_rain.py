"""Synthetic rain in three domains, like the paper's training mixture (synthetic / heavy real / night).

- ``day``: rain streaks (density, angle, length, width) screen-blended on the photograph.
- ``heavy``: two denser, longer streak layers and a veiling haze (``I = J t + A (1 - t)``, thicker at the top).
- ``night``: the photograph made a night scene (gamma darkening, sodium or bluish colour cast), which is
  also the clean target; the rainy input adds streaks lit by the scene's lights, glow around the lights
  and sensor noise.

Everything is drawn from ``numpy.random.default_rng([seed, domain, crc32(name), variant])``, so an
image's result depends only on the seed, its name and its variant, not on the other images.
"""
import zlib
from dataclasses import asdict, dataclass

import cv2
import numpy as np

DOMAINS = ('day', 'heavy', 'night')


@dataclass(frozen=True)
class StreakRanges:
    """Ranges the streak parameters are drawn from (``heavy`` scales density by 2 and length by 1.5)."""

    density: tuple[float, float] = (0.002, 0.008)  # fraction of pixels that start a streak
    angle: tuple[float, float] = (-25.0, 25.0)  # degrees from vertical
    length: tuple[float, float] = (10.0, 30.0)  # pixels
    width: tuple[float, float] = (1.0, 2.0)  # pixels


def image_rng(seed: int, domain: str, name: str, variant: int = 0) -> np.random.Generator:
    """The random generator of one output image."""
    return np.random.default_rng([seed, DOMAINS.index(domain), zlib.crc32(name.encode('utf-8')), variant])


def streak_layer(shape: tuple[int, int], rng: np.random.Generator, density: float, angle: float, length: float,
                 width: float) -> np.ndarray:
    """A float32 HxW rain layer in [0, 1]: random drops smeared along a line of the given angle and length."""
    h, w = shape
    drops = (rng.random((h, w)) < density) * rng.uniform(0.5, 1.0, (h, w))
    size = int(np.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    centre = size // 2
    dx, dy = np.sin(np.deg2rad(angle)) * length / 2, np.cos(np.deg2rad(angle)) * length / 2
    cv2.line(kernel, (int(round(centre - dx)), int(round(centre - dy))),
             (int(round(centre + dx)), int(round(centre + dy))), 1.0, thickness=max(1, int(round(width))))
    layer = cv2.filter2D(drops.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    layer = cv2.GaussianBlur(layer, (0, 0), sigmaX=0.4 + 0.3 * width)
    return np.clip(layer, 0.0, 1.0)


def _draw_streaks(rng: np.random.Generator, ranges: StreakRanges, density_scale: float = 1.0,
                  length_scale: float = 1.0) -> dict:
    return dict(density=float(rng.uniform(*ranges.density) * density_scale),
                angle=float(rng.uniform(*ranges.angle)),
                length=float(rng.uniform(*ranges.length) * length_scale),
                width=float(rng.uniform(*ranges.width)))


def _screen(base: np.ndarray, layer: np.ndarray) -> np.ndarray:
    return 1.0 - (1.0 - base) * (1.0 - layer[..., None])


def rain_day(clean: np.ndarray, rng: np.random.Generator, ranges: StreakRanges) -> tuple[np.ndarray, np.ndarray, dict]:
    """Daytime streaks; returns (rainy, clean target, parameters). Images are float32 BGR in [0, 1]."""
    params = _draw_streaks(rng, ranges)
    params['brightness'] = float(rng.uniform(0.6, 0.9))
    layer = streak_layer(clean.shape[:2], rng, params['density'], params['angle'], params['length'],
                         params['width']) * params['brightness']
    return _screen(clean, layer), clean, params


def rain_heavy(clean: np.ndarray, rng: np.random.Generator,
               ranges: StreakRanges) -> tuple[np.ndarray, np.ndarray, dict]:
    """Heavy rain: two dense streak layers and a veiling haze."""
    h, w = clean.shape[:2]
    near = _draw_streaks(rng, ranges, 2.0, 1.5)
    far = dict(_draw_streaks(rng, ranges, 2.0, 0.8), angle=near['angle'] + float(rng.uniform(-5, 5)))
    rainy = clean
    for layer_params, strength in ((far, 0.4), (near, 0.7)):
        layer = streak_layer((h, w), rng, layer_params['density'], layer_params['angle'], layer_params['length'],
                             layer_params['width'])
        rainy = _screen(rainy, layer * strength)
    airlight = float(rng.uniform(0.7, 0.9))
    beta = float(rng.uniform(0.3, 0.9))
    depth = np.linspace(1.0, 0.3, h, dtype=np.float32)[:, None, None]  # far at the top, near at the bottom
    transmission = np.exp(-beta * depth)
    tint = np.array([1.0, 0.98, 0.95], np.float32) * airlight  # slightly bluish grey (BGR)
    rainy = rainy * transmission + tint * (1.0 - transmission)
    params = dict(near=near, far=far, airlight=airlight, beta=beta)
    return rainy, clean, params


_CASTS = {'sodium': (0.55, 0.8, 1.0), 'blue': (1.0, 0.85, 0.7), 'neutral': (0.9, 0.9, 0.9)}  # BGR gains


def night_scene(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The photograph as a clean night scene: darker, contrasty, with a colour cast."""
    gamma, scale = float(rng.uniform(1.8, 2.6)), float(rng.uniform(0.35, 0.6))
    cast = str(rng.choice(list(_CASTS)))
    night = (clean ** gamma) * scale * np.array(_CASTS[cast], np.float32)
    return night.astype(np.float32), dict(gamma=gamma, scale=scale, cast=cast)


def rain_night(clean: np.ndarray, rng: np.random.Generator,
               ranges: StreakRanges) -> tuple[np.ndarray, np.ndarray, dict]:
    """Night rain: the target is the night scene; the input adds lit streaks, glow and noise."""
    night, params = night_scene(clean, rng)
    luminance = night.mean(axis=2)
    sigma = max(clean.shape[:2]) / 40
    lights = np.clip(cv2.GaussianBlur(luminance, (0, 0), sigma) / (luminance.max() + 1e-6), 0, 1)
    streaks = _draw_streaks(rng, ranges)
    streaks['brightness'] = float(rng.uniform(0.5, 0.8))
    layer = streak_layer(night.shape[:2], rng, streaks['density'], streaks['angle'], streaks['length'],
                         streaks['width']) * streaks['brightness'] * (0.2 + 0.8 * lights)
    highlights = np.clip(luminance - np.quantile(luminance, 0.9), 0, None)
    glow_strength = float(rng.uniform(1.0, 3.0))
    glow = cv2.GaussianBlur(highlights, (0, 0), sigma * 1.5)[..., None] * glow_strength
    colour = night.reshape(-1, 3).mean(0) / (night.reshape(-1, 3).mean() + 1e-6)  # glow takes the scene's tint
    noise = float(rng.uniform(0.005, 0.02))
    rainy = _screen(night, layer) + glow * colour + rng.normal(0, noise, night.shape).astype(np.float32)
    params.update(streaks=streaks, glow=glow_strength, noise=noise)
    return rainy, night, params


_GENERATORS = {'day': rain_day, 'heavy': rain_heavy, 'night': rain_night}


def synthesize(clean_bgr_uint8: np.ndarray, domain: str, rng: np.random.Generator,
               ranges: StreakRanges | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(rainy, clean target, parameters) as uint8 BGR images for one photograph and domain."""
    if domain not in _GENERATORS:
        raise ValueError(f'domain {domain!r} is not one of {", ".join(DOMAINS)}')
    clean = clean_bgr_uint8.astype(np.float32) / 255.0
    rainy, target, params = _GENERATORS[domain](clean, rng, ranges or StreakRanges())
    to_uint8 = lambda img: (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
    return to_uint8(rainy), to_uint8(target), params


def ranges_dict(ranges: StreakRanges) -> dict:
    return asdict(ranges)
