"""The 19 common corruptions of CIFAR-10-C, and ``digits10-c``, their offline stand-in.

``digits10-c`` applies the 19 corruption types of CIFAR-10-C (Hendrycks & Dietterich 2019,
`ascl.data.CIFAR10C_CORRUPTIONS`) at severities 1..5 to the 359 test images of ``digits10`` and
stores them in CIFAR-10-C's directory form (`ascl.data.formats`): one ``<corruption>.npz`` per
corruption with ``x`` (5 * 359, 3, 32, 32) uint8, ``y`` (5 * 359,) int64 and ``severity``
(5 * 359,) int64, one block of 359 images per severity in order 1..5; image ``i`` of every block
is test image ``i`` of ``digits10``.

The corruptions are this module's own numpy/scipy implementations (no ImageMagick, OpenCV or
image files). Each follows the construction and the CIFAR-10 (32x32) parameters of Hendrycks &
Dietterich's reference code, with these differences:

- motion_blur, snow: the ImageMagick motion blur is a one-sided line kernel with Gaussian
  weights (length `radius`, spread `sigma`) at a random angle, applied by convolution;
- frost: the frost photographs are replaced by a procedural texture (ridged multi-scale noise,
  bluish white), blended with the reference weights;
- fog: the reference's diamond-square plasma fractal, written anew;
- spatter: water = a smoothed, thresholded noise layer tinted light cyan (no Canny/distance
  transform); mud = thresholded blobs replaced by brown;
- elastic_transform: affine jitter of three anchor points plus a smoothed random displacement
  field, resampled bilinearly with reflected borders; its parameters are re-scaled to grow
  monotonically with severity (the reference's severity 1, a pure affine jitter of 2.56 px, is
  larger than its severity 5's);
- saturate: the reference's factors (0.3, 0.1, 2, 5, 20) do not grow monotonically in effect;
  here severities 1..5 scale the saturation by 0.6, 0.3, 2, 5, 20 (plus 0, 0, 0, 0.1, 0.2);
- pixelate and jpeg_compression go through Pillow (box down-sampling + nearest up-sampling;
  JPEG at the reference qualities).

Every corruption is a function ``f(x, severity, rng)`` of float64 images ``x`` (N, 3, H, W) in
[0, 1] returning float64 (N, 3, H, W) in [0, 1]; `corrupt` wraps it for uint8 images (rounding
to nearest). Randomness comes only from the explicit ``rng``; the build draws one
``numpy.random.default_rng([SEED, k, severity])`` per (corruption k, severity), so every build is
byte-identical on one platform.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

DIGITS10C = "digits10-c"
SEED = 4040
SOURCE = "digits10"

CorruptionFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Helpers on (N, 3, H, W) float64 arrays


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every image plane (reflected borders)."""
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return x.copy()
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0)


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D convolution of every image plane with `kernel` (kh, kw) (reflected borders)."""
    from scipy.ndimage import convolve

    return convolve(x, kernel[None, None], mode="reflect")


def _hsv(x: np.ndarray) -> np.ndarray:
    from matplotlib.colors import rgb_to_hsv

    return rgb_to_hsv(np.clip(x, 0, 1).transpose(0, 2, 3, 1))


def _rgb(hsv: np.ndarray) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb

    return hsv_to_rgb(np.clip(hsv, 0, 1)).transpose(0, 3, 1, 2)


def _grey(x: np.ndarray) -> np.ndarray:
    """Luma (N, 1, H, W) of RGB images (ITU-R BT.601 weights)."""
    w = np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    return (x * w).sum(axis=1, keepdims=True)


def _resample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of (N, C, H, W) at row positions `rows` (H',) and column positions
    `cols` (W',) (separable, edge-clamped) -> (N, C, H', W')."""

    def axis(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip(pos, 0.0, n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, pos - lo

    r0, r1, wr = axis(rows, x.shape[-2])
    c0, c1, wc = axis(cols, x.shape[-1])
    out = x[..., r0, :] * (1 - wr[:, None]) + x[..., r1, :] * wr[:, None]
    return out[..., c0] * (1 - wc) + out[..., c1] * wc


def _motion_kernel(radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """One-sided line kernel of length `radius` px at `angle_deg`, Gaussian weights of spread
    `sigma` along the line (ImageMagick's -motion-blur), bilinearly splatted, sums to 1."""
    r = int(np.ceil(radius))
    size = 2 * r + 1
    kernel = np.zeros((size, size))
    theta = np.deg2rad(angle_deg)
    for t in np.linspace(0.0, radius, 4 * r + 1):
        weight = np.exp(-(t**2) / (2 * sigma**2))
        py, px = r - t * np.sin(theta), r + t * np.cos(theta)
        y0, x0 = int(np.floor(py)), int(np.floor(px))
        fy, fx = py - y0, px - x0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    kernel[y0 + dy, x0 + dx] += weight * wy * wx
    return kernel / kernel.sum()


def _to_uint8_images(x: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8 (for Pillow)."""
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _from_uint8_images(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2).astype(np.float64) / 255.0


# ---------------------------------------------------------------------------------------------
# Noise


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return np.clip(x + rng.normal(0.0, c, size=x.shape), 0, 1)


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (500, 250, 100, 75, 50)[severity - 1]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper on a fraction `amount` of the values (half salt, half pepper)."""
    amount = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    u = rng.random(x.shape)
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.06, 0.1, 0.12, 0.16, 0.2)[severity - 1]
    return np.clip(x + x * rng.normal(0.0, c, size=x.shape), 0, 1)


# ---------------------------------------------------------------------------------------------
# Blur


def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1]
    return np.clip(_gaussian(x, c), 0, 1)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    span = np.arange(-8, 9)
    X, Y = np.meshgrid(span, span)
    disk = (radius**2 >= (X**2 + Y**2)).astype(np.float64)
    disk /= disk.sum()
    from scipy.ndimage import gaussian_filter

    disk = gaussian_filter(disk, alias_blur, mode="constant", truncate=1.0 / max(alias_blur, 1e-3))
    keep = np.argwhere(disk > 1e-6)
    (r0, c0), (r1, c1) = keep.min(0), keep.max(0)
    disk = disk[r0 : r1 + 1, c0 : c1 + 1]
    return disk / disk.sum()


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, alias = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))[severity - 1]
    return np.clip(_convolve(x, _disk(radius, alias)), 0, 1)


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, then `iterations` sweeps of swapping every pixel with a random neighbour within
    `delta` px (independently per image), then blur again."""
    sigma, delta, iterations = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))[
        severity - 1
    ]
    out = _gaussian(x, sigma)
    n, _, h, w = out.shape
    idx = np.arange(n)
    for _ in range(iterations):
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2, n))
                i2, j2 = i + dy, j + dx
                a = out[idx, :, i, j].copy()
                out[idx, :, i, j] = out[idx, :, i2, j2]
                out[idx, :, i2, j2] = a
    return np.clip(_gaussian(out, sigma), 0, 1)


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3))[severity - 1]
    angles = rng.uniform(-45, 45, size=len(x))
    return np.clip(
        np.stack(
            [
                _convolve(img[None], _motion_kernel(radius, sigma, a))[0]
                for img, a in zip(x, angles, strict=True)
            ]
        ),
        0,
        1,
    )


def _zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre by `factor` >= 1, keeping the size (bilinear)."""
    h, w = x.shape[-2:]
    rows = (np.arange(h) - (h - 1) / 2) / factor + (h - 1) / 2
    cols = (np.arange(w) - (w - 1) / 2) / factor + (w - 1) / 2
    return _resample(x, rows, cols)


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    zooms = (
        np.arange(1, 1.06, 0.01),
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.02),
        np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.03),
    )[severity - 1]
    out = x.copy()
    for z in zooms:
        out += _zoom(x, float(z))
    return np.clip(out / (len(zooms) + 1), 0, 1)


# ---------------------------------------------------------------------------------------------
# Weather


def snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, blend = (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    )[severity - 1]
    n, _, h, w = x.shape
    layer = rng.normal(loc, scale, size=(n, 1, h, w))
    layer = _zoom(layer, zoom)
    layer[layer < threshold] = 0
    angles = rng.uniform(-135, -45, size=n)
    flakes = np.stack(
        [
            _convolve(lay[None], _motion_kernel(radius, sigma, a))[0]
            for lay, a in zip(layer, angles, strict=True)
        ]
    )
    out = blend * x + (1 - blend) * np.maximum(x, _grey(x) * 1.5 + 0.5)
    return np.clip(out + flakes + np.rot90(flakes, 2, axes=(2, 3)), 0, 1)


def _frost_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(3, h, w) in [0, 1]: ridged multi-octave noise (ice-crystal veins), bluish white."""
    from scipy.ndimage import gaussian_filter

    acc = np.zeros((h, w))
    for octave, amp in ((4.0, 0.5), (2.0, 0.3), (1.0, 0.2)):
        noise = gaussian_filter(rng.normal(size=(h, w)), octave, mode="wrap")
        noise /= noise.std() + 1e-12
        acc += amp * (1 - np.abs(np.tanh(noise)))
    acc = (acc - acc.min()) / (acc.max() - acc.min() + 1e-12)
    acc = acc**3
    tint = np.array([0.85, 0.92, 1.0])[:, None, None]
    return tint * acc


def frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c_img, c_frost = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    n, _, h, w = x.shape
    layers = np.stack([_frost_texture(h, w, rng) for _ in range(n)])
    return np.clip(c_img * x + c_frost * layers, 0, 1)


def plasma_fractal(size: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size) diamond-square fractal in [0, 1] (wrapping at the borders); `size` a power
    of two. Each level sets cell centres (squares), then edge midpoints (diamonds), to the mean
    of their four neighbours plus uniform noise in [-w^2, w^2]; w starts at 100 and is divided
    by `wibbledecay` after each level (the reference's plasma_fractal)."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        acc = corners + np.roll(corners, -1, 0)
        acc = acc + np.roll(acc, -1, 1)
        noise = wibble**2
        grid[half:size:step, half:size:step] = acc / 4 + rng.uniform(-noise, noise, acc.shape)
        centres = grid[half:size:step, half:size:step]
        top = corners + np.roll(corners, -1, 1) + centres + np.roll(centres, 1, 0)
        left = corners + np.roll(corners, -1, 0) + centres + np.roll(centres, 1, 1)
        grid[0:size:step, half:size:step] = top / 4 + rng.uniform(-noise, noise, top.shape)
        grid[half:size:step, 0:size:step] = left / 4 + rng.uniform(-noise, noise, left.shape)
        step //= 2
        wibble /= wibbledecay
    grid -= grid.min()
    return grid / (grid.max() + 1e-12)


def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    strength, decay = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1.0, 2), (1.5, 1.75))[severity - 1]
    n, _, h, w = x.shape
    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    layers = np.stack([plasma_fractal(size, decay, rng)[:h, :w] for _ in range(n)])[:, None]
    out = x + strength * layers
    return np.clip(out * peak / (peak + strength), 0, 1)


# ---------------------------------------------------------------------------------------------
# Digital


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    hsv = _hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(_rgb(hsv), 0, 1)


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    means = x.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


def saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    scale, shift = ((0.6, 0.0), (0.3, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))[severity - 1]
    hsv = _hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return np.clip(_rgb(hsv), 0, 1)


def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Affine jitter (anchor points moved by up to `affine` px) plus a displacement field of
    uniform noise smoothed by `sigma` and scaled by `alpha` px; bilinear, reflected borders."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    n, c, h, w = x.shape
    alpha, sigma, affine = (
        (0.0, 0.0, 0.96),
        (1.6, 6.4, 1.6),
        (2.56, 1.92, 1.92),
        (3.2, 1.28, 2.24),
        (4.8, 0.96, 2.56),
    )[severity - 1]
    out = np.empty_like(x)
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64))
    rows, cols = rows.T, cols.T
    centre = np.array([h / 2, w / 2])
    square = min(h, w) // 3
    src = np.array([centre + square, centre + [square, -square], centre - square])
    for k in range(n):
        dst = src + rng.uniform(-affine, affine, size=src.shape)
        # affine map taking dst back to src: [r, c, 1] @ M = [r', c']
        M = np.linalg.solve(np.c_[dst, np.ones(3)], src)
        r_aff = rows * M[0, 0] + cols * M[1, 0] + M[2, 0]
        c_aff = rows * M[0, 1] + cols * M[1, 1] + M[2, 1]
        if alpha > 0:
            dr = gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect") * alpha
            dc = gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect") * alpha
        else:
            dr = dc = np.zeros((h, w))
        coords = np.stack([r_aff + dr, c_aff + dc])
        for ch in range(c):
            out[k, ch] = map_coordinates(x[k, ch], coords, order=1, mode="reflect")
    return np.clip(out, 0, 1)


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    h, w = x.shape[-2:]
    small = (max(1, int(w * c)), max(1, int(h * c)))
    out = [
        np.asarray(
            Image.fromarray(img).resize(small, Image.Resampling.BOX).resize((w, h), Image.NEAREST)
        )
        for img in _to_uint8_images(x)
    ]
    return _from_uint8_images(np.stack(out))


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    quality = (80, 65, 58, 50, 40)[severity - 1]
    out = []
    for img in _to_uint8_images(x):
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return _from_uint8_images(np.stack(out))


def spatter(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, sigma, threshold, intensity, mud = (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1.0, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    )[severity - 1]
    n, _, h, w = x.shape
    liquid = _gaussian(rng.normal(loc, scale, size=(n, 1, h, w)), sigma)
    if not mud:
        mask = np.clip((liquid - threshold) / (1 - threshold), 0, 1)
        mask = _gaussian(mask, 1.0) * 4 * intensity
        water = np.array([175, 238, 238]).reshape(1, 3, 1, 1) / 255.0
        return np.clip(x * (1 - np.clip(mask, 0, 1)) + water * np.clip(mask, 0, 1), 0, 1)
    mask = (liquid > threshold).astype(np.float64)
    mask = np.clip(_gaussian(mask, 0.5) * (1 + intensity), 0, 1)
    brown = np.array([63, 42, 20]).reshape(1, 3, 1, 1) / 255.0
    return np.clip(x * (1 - mask) + brown * mask, 0, 1)


CORRUPTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "spatter": spatter,
    "saturate": saturate,
}


def corrupt(x: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Apply corruption `name` at `severity` (1..5) to uint8 images x (N, 3, H, W) -> uint8
    (N, 3, H, W) (rounded to nearest)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected uint8 images (N, 3, H, W), got {x.dtype} {x.shape}")
    out = CORRUPTIONS[name](x.astype(np.float64) / 255.0, severity, rng)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def corrupted_set(x: np.ndarray, y: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """The CIFAR-10-C form of one corruption of (x, y): 5 blocks of len(x) images, severities
    1..5 in order, each drawn from default_rng([SEED, k, severity]) (k = index of `name`)."""
    k = list(CORRUPTIONS).index(name)
    blocks = [corrupt(x, name, s, np.random.default_rng([SEED, k, s])) for s in range(1, 6)]
    return {
        "x": np.ascontiguousarray(np.concatenate(blocks)),
        "y": np.tile(y.astype(np.int64), 5),
        "severity": np.repeat(np.arange(1, 6, dtype=np.int64), len(x)),
    }


def prepare_digits10c(out_dir: str | Path) -> Path:
    """Build ``digits10-c`` (see the module docstring) as ``out_dir/<corruption>.npz``.

    Files are written into a staging directory inside `out_dir` and moved into place only when
    all 19 succeeded. Returns `out_dir`.
    """
    from ascl.data.formats import check_corrupted, write_npz_atomic
    from ascl.data.offline import build_offline
    from ascl.data.prepare import CIFAR10C_CORRUPTIONS

    assert tuple(CORRUPTIONS) == CIFAR10C_CORRUPTIONS
    arrays = build_offline(SOURCE)
    x, y = arrays["x_test"], arrays["y_test"]
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        for name in CORRUPTIONS:
            data = corrupted_set(x, y, name)
            check_corrupted(data, f"{DIGITS10C}/{name}")
            write_npz_atomic(staging / f"{name}.npz", data)
        for name in CORRUPTIONS:
            os.replace(staging / f"{name}.npz", out_dir / f"{name}.npz")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return out_dir
