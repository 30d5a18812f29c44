"""How a synthetic capture looks: skin tones, lights, procedural backgrounds, and the camera's sensor and JPEG.

Everything is drawn from a numpy ``Generator`` so a sample is reproducible from its seed. Colours are linear light
unless a name says sRGB; :func:`finish_image` composites the averaged render over the background, applies exposure,
sensor noise and sRGB encoding, and returns JPEG bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# sRGB skin tones from very light to dark; a sample blends two neighbours
SKIN_TONES_SRGB = np.array(
    [[255, 224, 196], [241, 194, 167], [224, 172, 140], [198, 134, 96], [161, 102, 70], [120, 75, 52], [92, 56, 40]],
    dtype=np.float64,
)
LOW_RES = 32  # side of the smooth background layers before upsampling
LINEAR_LEVELS = 4096  # linear-light quantisation before sRGB encoding: finer than one 8-bit sRGB step


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear light (IEC 61966-2-1)."""
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB in [0, 1] (clipped)."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1.0 / 2.4) - 0.055)


_DECODE = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)  # uint8 sRGB -> linear
_ENCODE = np.round(linear_to_srgb(np.arange(LINEAR_LEVELS) / (LINEAR_LEVELS - 1)) * 255).astype(np.uint8)


def encode_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear light (any shape) -> uint8 sRGB, through a lookup table."""
    index = np.clip(linear, 0.0, 1.0) * (LINEAR_LEVELS - 1) + 0.5
    return _ENCODE[index.astype(np.int32)]


def sample_albedo(rng: np.random.Generator) -> np.ndarray:
    """Skin: linear rgb and a specular strength, ``(4,)``."""
    i = rng.integers(len(SKIN_TONES_SRGB) - 1)
    srgb = (SKIN_TONES_SRGB[i] + rng.uniform() * (SKIN_TONES_SRGB[i + 1] - SKIN_TONES_SRGB[i])) / 255.0
    srgb = np.clip(srgb * rng.uniform(0.92, 1.05, 3), 0.0, 1.0)  # slight tint
    return np.concatenate([srgb_to_linear(srgb), [rng.uniform(0.03, 0.2)]])


def sample_light(rng: np.random.Generator) -> np.ndarray:
    """Key light direction towards the light (camera frame, from the camera's side, mostly from above) and an
    ambient level, ``(4,)``."""
    direction = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 0.4), -rng.uniform(0.3, 1.2)])
    return np.concatenate([direction / np.linalg.norm(direction), [rng.uniform(0.25, 0.5)]])


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(np.clip(rng.uniform(0, 255) + rng.normal(0, 60, 3), 0, 255).astype(int).tolist())


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth colour noise ``(size, size, 3)`` in [-0.5, 0.5]: a random ``cells x cells`` grid, upsampled."""
    grid = Image.fromarray((rng.uniform(size=(cells, cells, 3)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0 - 0.5


def background(rng: np.random.Generator, size: int, clutter: int = 8) -> np.ndarray:
    """A procedural background ``(S, S, 3)`` in linear light: gradient, smooth noise and 0..``clutter`` shapes."""
    ramp = np.linspace(0.0, 1.0, LOW_RES, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * ramp[None, :, None] + np.sin(angle) * ramp[:, None, None]  # (L, L, 1)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    c0, c1 = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    srgb = c0 * (1.0 - ramp) + c1 * ramp  # (L, L, 3) 0..255
    for cells in (4, 12):
        srgb += _smooth_noise(rng, LOW_RES, cells) * np.float32(rng.uniform(0, 90))
    low = Image.fromarray(np.clip(srgb, 0, 255).astype(np.uint8))
    image = low.resize((size, size), Image.Resampling.BICUBIC)  # smooth layers are built small, then upsampled
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, clutter + 1)):
        box = np.sort(rng.uniform(-0.2, 1.2, (2, 2)) * size, axis=0)  # rows: (x0, y0), (x1, y1)
        xy = [float(box[0, 0]), float(box[0, 1]), float(box[1, 0]), float(box[1, 1])]
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle(xy, fill=_random_colour(rng))
        elif kind == 1:
            draw.ellipse(xy, fill=_random_colour(rng))
        else:
            draw.line(xy, fill=_random_colour(rng), width=int(rng.integers(1, max(2, size // 16))))
    if rng.uniform() < 0.6:  # out of focus
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.0) * size / 128))
    return _DECODE[np.asarray(image)]


def finish_image(rng: np.random.Generator, rgb: np.ndarray, alpha: np.ndarray, back: np.ndarray) -> bytes:
    """Composite and photograph: ``rgb (S, S, 3)`` premultiplied linear render, ``alpha (S, S)``, ``back (S, S, 3)``.

    Exposure gain, signal-dependent sensor noise, sRGB encoding, JPEG with a quality drawn in 75-95.
    """
    linear = (rgb + (1.0 - alpha[..., None]) * back) * np.float32(rng.uniform(0.75, 1.25))  # (S, S, 3)
    shot, read = np.float32(rng.uniform(0.0005, 0.004)), np.float32(rng.uniform(0.0003, 0.002))
    sigma = np.sqrt(shot * np.maximum(linear, 0.0) + read * read)
    srgb = encode_srgb8(linear + rng.standard_normal(linear.shape, dtype=np.float32) * sigma)
    buffer = io.BytesIO()
    Image.fromarray(srgb).save(buffer, format="JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue()
