"""Batched data augmentation with per-sample random parameters, run on the training device.

Every view draws its own random parameters for each sample of the batch (a torchvision v2
transform applied to a batch tensor draws one set for the whole batch, which would make the two
contrastive views of a sample differ in the same way for every sample).

Conventions
-----------
* Images are float tensors ``(B, 3, H, W)`` with values in ``[0, 1]``; outputs have the same
  shape, dtype and device and are clamped to ``[0, 1]``. Normalisation belongs to the model.
* All randomness comes from the explicit ``torch.Generator`` argument, so a training loop can
  save ``generator.get_state()`` and resume bit-identically. Parameters are drawn on the
  generator's device and then moved to the images' device: the training jobs' generator lives
  on the training device (``engine.make_generator``), so nothing is copied; a CPU generator with
  CUDA images works too, at the price of a copy per draw. Every call consumes a fixed amount of
  random numbers for a given batch size, whatever the images or the configuration; no value is
  read back to the host.
* The building blocks (``resized_crop``, ``hflip``, ``adjust_*``, ``to_grayscale``,
  ``pad_crop``) are pure functions of explicit per-sample parameter tensors; the colour ops
  reproduce ``torchvision.transforms.v2.functional`` per sample on float images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_CROP_ATTEMPTS = 10
# (v, p, q, t) index of the red, green and blue channel for each of the six hue sectors.
_HSV_SECTOR_TABLE = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))
# The same table packed into one integer per channel (sector s in bits 2s, 2s + 1), so that the
# indices are computed on the images' device without copying a table from the host.
_HSV_SECTOR_CODES = tuple(
    sum(index << (2 * sector) for sector, index in enumerate(row)) for row in _HSV_SECTOR_TABLE
)


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the SimCLR view and of the weak (crop + flip) view.

    crop_scale: range of the crop area as a fraction of the image area.
    crop_ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
    flip_p, jitter_p, grayscale_p: per-sample probabilities.
    brightness, contrast, saturation: factors are uniform in ``[max(0, 1 - s), 1 + s]``.
    hue: hue shift uniform in ``[-hue, hue]`` (at most 0.5).
    weak_padding: zero padding of the weak view's random crop.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    weak_padding: int = 4

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio"):
            pair = tuple(float(v) for v in getattr(self, name))
            if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
                raise ValueError(f"{name} must be a pair 0 < low <= high, got {pair}")
            object.__setattr__(self, name, pair)
        if self.crop_scale[1] > 1:
            raise ValueError(f"crop_scale must not exceed 1, got {self.crop_scale}")
        for name in ("flip_p", "jitter_p", "grayscale_p"):
            value = float(getattr(self, name))
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability, got {value}")
            object.__setattr__(self, name, value)
        for name in ("brightness", "contrast", "saturation", "hue"):
            value = float(getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
            object.__setattr__(self, name, value)
        if self.hue > 0.5:
            raise ValueError(f"hue must be at most 0.5, got {self.hue}")
        if int(self.weak_padding) != self.weak_padding or self.weak_padding < 0:
            raise ValueError(
                f"weak_padding must be a non-negative integer, got {self.weak_padding}"
            )
        object.__setattr__(self, "weak_padding", int(self.weak_padding))

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        """Build from a settings mapping (lists become tuples); an unknown key is a ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown augment setting(s): {', '.join(map(str, unknown))}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_images(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected float images in [0, 1], got dtype {x.dtype}")


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) in x's dtype and on x's device."""
    return v.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)


def _select(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample choice: mask (B,) bool; a, b (B, C, H, W) -> a where mask else b."""
    return torch.where(mask.to(device=a.device).reshape(-1, 1, 1, 1), a, b)


def _gather_rows(x: Tensor, rows: Tensor) -> Tensor:
    """x (B, C, H, W), rows (B, H') long -> (B, C, H', W): out[b, :, i] = x[b, :, rows[b, i]]."""
    B, C, _, W = x.shape
    return x.gather(2, rows[:, None, :, None].expand(B, C, rows.shape[1], W))


def _gather_cols(x: Tensor, cols: Tensor) -> Tensor:
    """x (B, C, H, W), cols (B, W') long -> (B, C, H, W').

    out[b, ..., j] = x[b, ..., cols[b, j]].
    """
    B, C, H, _ = x.shape
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, cols.shape[1]))


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    """Uniform draws in [low, high) on the generator's device (float32)."""
    u = torch.rand(shape, generator=generator, device=generator.device)
    return low + (high - low) * u


def _bernoulli(n: int, p: float, generator: torch.Generator) -> Tensor:
    """(n,) bool, each True with probability p, on the generator's device."""
    return torch.rand(n, generator=generator, device=generator.device) < p


def _grayscale_1(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with torchvision's weights and operation order."""
    r, g, b = x.unbind(dim=1)
    wr, wg, wb = _GRAY_WEIGHTS
    return r.mul(wr).add_(g, alpha=wg).add_(b, alpha=wb).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, f: Tensor) -> Tensor:
    """x * f + other * (1 - f), clamped to [0, 1]; f (B, 1, 1, 1), other broadcastable to x."""
    return (x * f + other * (1.0 - f)).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Geometric building blocks


def _crop_source_index(
    start: Tensor, length: Tensor, out_size: int, in_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear source taps along one axis, as ``F.interpolate(align_corners=False)``.

    start, length: (B,) crop start and length in pixels (float). Returns (i0, i1, w), each
    (B, out_size): out[k] = (1 - w) * in[i0] + w * in[i1]. Source coordinates outside the crop are
    clamped to the crop's edge pixels, exactly as resizing the cropped image would do.
    """
    k = torch.arange(out_size, device=start.device, dtype=start.dtype)
    scale = (length / out_size)[:, None]
    src = (scale * (k + 0.5) - 0.5).clamp_(min=0.0)
    src = torch.minimum(src, (length - 1).clamp(min=0.0)[:, None])
    src = (src + start[:, None]).clamp_(0.0, in_size - 1)
    i0 = src.floor()
    w = src - i0
    i0 = i0.long()
    i1 = (i0 + 1).clamp_(max=in_size - 1)
    return i0, i1, w


def resized_crop(x: Tensor, boxes: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Crop a box out of each image and resize it bilinearly (no antialiasing).

    x: (B, C, H, W) float. boxes: (B, 4) ``(top, left, height, width)`` in pixels, one box per
    sample (integer-valued boxes reproduce torchvision's ``resized_crop``; fractional ones are
    allowed). size: output ``(H', W')``, default ``(H, W)``. Returns (B, C, H', W').

    The sampling grid is that of ``F.interpolate(mode="bilinear", align_corners=False)`` applied
    to the cropped image: output pixel k reads crop coordinate ``(k + 0.5) * len / out - 0.5``,
    clamped to the crop, so no pixel outside the box leaks in. The interpolation is separable
    (rows, then columns) with index gathers, so the identity box returns the exact image.
    """
    B, _, H, W = x.shape
    Ho, Wo = (H, W) if size is None else size
    boxes = boxes.to(device=x.device, dtype=x.dtype)
    top, left, height, width = boxes.unbind(dim=1)
    r0, r1, wy = _crop_source_index(top, height, Ho, H)
    c0, c1, wx = _crop_source_index(left, width, Wo, W)
    wy = wy[:, None, :, None]
    rows = _gather_rows(x, r0) * (1.0 - wy) + _gather_rows(x, r1) * wy
    wx = wx[:, None, None, :]
    out = _gather_cols(rows, c0) * (1.0 - wx) + _gather_cols(rows, c1) * wx
    return out.clamp_(0.0, 1.0)


def hflip(x: Tensor, mask: Tensor) -> Tensor:
    """Mirror left-right the samples flagged in mask. x: (B, C, H, W); mask: (B,) bool."""
    return _select(mask, x.flip(-1), x)


def pad_crop(x: Tensor, offsets: Tensor, padding: int) -> Tensor:
    """Crop H x W out of each zero-padded (H + 2p) x (W + 2p) image at integer offsets.

    x: (B, C, H, W); offsets: (B, 2) integer ``(dy, dx)`` with ``0 <= dy, dx <= 2 * padding``.
    out[b, :, i, j] = padded[b, :, dy + i, dx + j] (an exact pixel copy). Returns (B, C, H, W).
    """
    B, _, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = offsets.to(device=x.device, dtype=torch.long)
    rows = torch.arange(H, device=x.device)[None, :] + offsets[:, 0:1]
    cols = torch.arange(W, device=x.device)[None, :] + offsets[:, 1:2]
    return _gather_cols(_gather_rows(padded, rows), cols)


# ---------------------------------------------------------------------------------------------
# Colour building blocks (torchvision.transforms.v2.functional per sample, float images)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    """x * f clamped to [0, 1]. x: (B, 3, H, W); f: (B,) non-negative factors."""
    return (x * _per_sample(f, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale. x: (B, 3, H, W); f: (B,) factors."""
    mean = _grayscale_1(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, _per_sample(f, x))


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    """Blend each image with its grayscale version. x: (B, 3, H, W); f: (B,) factors."""
    return _blend(x, _grayscale_1(x), _per_sample(f, x))


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) HSV with hue in [0, 1)."""
    r, g, _ = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    flat = maxc == minc
    ones = torch.ones_like(maxc)
    spread = maxc - minc
    s = spread / torch.where(flat, ones, maxc)
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / torch.where(flat, ones, spread).unsqueeze(1)).unbind(1)
    max_is_r = maxc == r
    max_is_g = (maxc == g) & ~max_is_r
    max_is_b = ~max_is_r & ~max_is_g
    h = (bc - gc) * max_is_r + (rc + 2.0 - bc) * max_is_g + (gc + 4.0 - rc) * max_is_b
    h = (h * (1.0 / 6.0) + 1.0).fmod(1.0)
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """(B, 3, H, W) HSV with hue in [0, 1) -> (B, 3, H, W) RGB in [0, 1]."""
    h, s, v = hsv.unbind(dim=1)
    h6 = h * 6.0
    sector = h6.floor()
    frac = h6 - sector
    sector = sector.long().remainder(6)
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * frac)).clamp(0.0, 1.0)
    t = (v * (s * frac + (1.0 - s))).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=1)
    return vpqt.gather(1, _sector_index(sector))


def _sector_index(sector: Tensor) -> Tensor:
    """sector (B, H, W) long in 0..5 -> (B, 3, H, W): the (v, p, q, t) index of each output
    channel, `_HSV_SECTOR_TABLE[c][sector]`, unpacked from `_HSV_SECTOR_CODES` on sector's device.
    """
    shift = 2 * sector
    return torch.stack(
        [(torch.full_like(sector, code) >> shift) & 3 for code in _HSV_SECTOR_CODES], dim=1
    )


def adjust_hue(x: Tensor, h: Tensor) -> Tensor:
    """Rotate the hue of each image by h[b] turns. x: (B, 3, H, W); h: (B,) in [-0.5, 0.5]."""
    hsv = rgb_to_hsv(x)
    hue = (hsv[:, 0:1] + _per_sample(h, x)).remainder(1.0)
    return hsv_to_rgb(torch.cat((hue, hsv[:, 1:]), dim=1)).clamp_(0.0, 1.0)


def to_grayscale(x: Tensor, mask: Tensor) -> Tensor:
    """Replace flagged images by their 3-channel grayscale. x: (B, 3, H, W); mask: (B,) bool."""
    gray = _grayscale_1(x).clamp_(0.0, 1.0).expand_as(x)
    return _select(mask, gray, x)


def color_jitter(
    x: Tensor,
    brightness: Tensor | None,
    contrast: Tensor | None,
    saturation: Tensor | None,
    hue: Tensor | None,
) -> Tensor:
    """Brightness, contrast, saturation, then hue, each with (B,) per-sample factors.

    x: (B, 3, H, W). A None factor skips that op. The order is fixed; torchvision's
    ``ColorJitter`` draws a random order of the four ops for every call.
    """
    if brightness is not None:
        x = adjust_brightness(x, brightness)
    if contrast is not None:
        x = adjust_contrast(x, contrast)
    if saturation is not None:
        x = adjust_saturation(x, saturation)
    if hue is not None:
        x = adjust_hue(x, hue)
    return x


# ---------------------------------------------------------------------------------------------
# Parameter sampling (on the generator's device)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """Random-resized-crop boxes as torchvision's ``RandomResizedCrop.get_params``, per sample.

    For each sample, up to 10 attempts draw an area fraction uniform in ``scale`` and an aspect
    ratio log-uniform in ``ratio``; the first attempt whose rounded box fits is kept, else the
    central crop with the ratio clamped to ``ratio``. The position is uniform over the integer
    positions. Returns (n, 4) float ``(top, left, height, width)`` on the generator's device.
    """
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target_area = area * _uniform((n, _CROP_ATTEMPTS), scale[0], scale[1], generator)
    aspect = torch.exp(_uniform((n, _CROP_ATTEMPTS), log_lo, log_hi, generator))
    u_top = torch.rand(n, generator=generator, device=generator.device)
    u_left = torch.rand(n, generator=generator, device=generator.device)

    w = torch.sqrt(target_area * aspect).round()
    h = torch.sqrt(target_area / aspect).round()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(dim=1, keepdim=True)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    fb_h, fb_w = _fallback_crop_size(height, width, ratio)
    found = valid.any(dim=1)
    h = torch.where(found, h, torch.full_like(h, fb_h))
    w = torch.where(found, w, torch.full_like(w, fb_w))
    top = torch.where(
        found, (u_top * (height - h + 1)).floor().clamp(max=height - h), (height - h) // 2
    )
    left = torch.where(
        found, (u_left * (width - w + 1)).floor().clamp(max=width - w), (width - w) // 2
    )
    return torch.stack((top, left, h, w), dim=1)


def _fallback_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's central-crop fallback size (h, w) when no attempt fits."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        h, w = height, width
    return h, w


def sample_jitter_factors(
    n: int, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(n,) brightness, contrast, saturation factors and hue shifts, drawn like ColorJitter.

    Factors are uniform in ``[max(0, 1 - s), 1 + s]`` and hue shifts uniform in
    ``[-hue, hue]``; all on the generator's device.
    """
    b = _uniform((n,), max(0.0, 1.0 - cfg.brightness), 1.0 + cfg.brightness, generator)
    c = _uniform((n,), max(0.0, 1.0 - cfg.contrast), 1.0 + cfg.contrast, generator)
    s = _uniform((n,), max(0.0, 1.0 - cfg.saturation), 1.0 + cfg.saturation, generator)
    h = _uniform((n,), -cfg.hue, cfg.hue, generator)
    return b, c, s, h


# ---------------------------------------------------------------------------------------------
# Views


def simclr_view(x: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """SimCLR view with per-sample parameters. x: (B, 3, H, W) in [0, 1] -> same shape.

    Random resized crop (resized back to H x W), horizontal flip with ``flip_p``, colour jitter
    with ``jitter_p`` (brightness, contrast, saturation, hue in this fixed order; an op whose
    strength is 0 is skipped), then grayscale with ``grayscale_p``. All parameters are drawn on
    the generator's device, in a fixed order and amount, then moved to x's device.
    """
    _check_images(x)
    B, _, H, W = x.shape
    boxes = sample_crop_boxes(B, H, W, cfg.crop_scale, cfg.crop_ratio, generator)
    flip = _bernoulli(B, cfg.flip_p, generator)
    jitter = _bernoulli(B, cfg.jitter_p, generator)
    b, c, s, h = sample_jitter_factors(B, cfg, generator)
    gray = _bernoulli(B, cfg.grayscale_p, generator)

    out = resized_crop(x, boxes)
    out = hflip(out, flip)
    # Every sample is jittered and the mask selects (asking whether any sample is would make
    # the host read the mask back from the device).
    jittered = color_jitter(
        out,
        b if cfg.brightness > 0 else None,
        c if cfg.contrast > 0 else None,
        s if cfg.saturation > 0 else None,
        h if cfg.hue > 0 else None,
    )
    out = _select(jitter, jittered, out)
    return to_grayscale(out, gray)


def weak_view(x: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Weak view: random crop with zero padding ``weak_padding``, then horizontal flip.

    x: (B, 3, H, W) in [0, 1] -> same shape. Offsets are integers uniform in
    ``[0, 2 * weak_padding]``, drawn per sample on the generator's device.
    """
    _check_images(x)
    B = x.shape[0]
    p = cfg.weak_padding
    offsets = torch.randint(0, 2 * p + 1, (B, 2), generator=generator, device=generator.device)
    flip = _bernoulli(B, cfg.flip_p, generator)
    return hflip(pad_crop(x, offsets, p), flip)


# ---------------------------------------------------------------------------------------------
# Frequency views


def low_frequency_mask(height: int, width: int, radius: float, device=None) -> Tensor:
    """(H, W) bool, True where a centred (fftshift-ed) spectrum index lies within `radius`.

    Index (i, j) is inside when sqrt((i - H/2)^2 + (j - W/2)^2) < radius, the disc of AdvCL's
    fr_util.mask_radial (centre H/2, W/2 in index units; the DC term sits at (H//2, W//2)).
    """
    i = torch.arange(height, device=device, dtype=torch.float64)[:, None]
    j = torch.arange(width, device=device, dtype=torch.float64)[None, :]
    return ((i - height / 2) ** 2 + (j - width / 2) ** 2).sqrt() < radius


def high_frequency_view(x: Tensor, radius: float = 8.0) -> Tensor:
    """High-frequency component (HFC) of each image, AdvCL's extra contrastive view.

    x: (B, C, H, W) float -> (B, C, H, W), same dtype and device. Every channel's 2-D DFT is
    centred (fftshift), the low frequencies inside `low_frequency_mask(H, W, radius)` (DC
    included) are set to zero, and the real part of the inverse DFT is returned. The cut-off
    radius 8 (in spectrum index units, for 32x32 images) is AdvCL's default (Fan et al., 2021,
    pretraining_advCL.py ``--radius 8`` with fr_util.generate_high). Deterministic, no random
    numbers. The output is NOT clamped to [0, 1]: without its DC term each channel has zero
    mean, and AdvCL feeds this signal to the network as it is.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected float images of shape (B, C, H, W), got {tuple(x.shape)}")
    H, W = x.shape[-2:]
    keep = ~low_frequency_mask(H, W, radius, device=x.device)
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)) * keep
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real.to(x.dtype)


def rotations(x: Tensor) -> tuple[Tensor, Tensor]:
    """The four rotations of every image, for rotation prediction (Hendrycks et al., 2019).

    x: (B, C, H, W) with H = W -> (images (4B, C, H, W), labels (4B,) int64): block k (rows
    k·B .. (k+1)·B - 1) holds every image rotated by k·90° (torch.rot90 over dims (2, 3), the
    direction of np.rot90(axes=(2, 3)) in their adversarial/train.py) and carries label k.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected square images (B, C, H, H), got {tuple(x.shape)}")
    B = x.shape[0]
    images = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(B)
    return images, labels
