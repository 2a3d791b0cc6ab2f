"""Tensor helpers every layer uses: image scaling and the fixed data subset (pure, torch only)."""

from __future__ import annotations

import torch
from torch import Tensor


def to_float(x_uint8: Tensor) -> Tensor:
    """uint8 images (B, 3, H, W) -> a new float32 tensor in [0, 1] (the input is never written).

    Anything but uint8 is an error: a float batch is already scaled, and dividing it again would
    silently shrink the images 255-fold."""
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {x_uint8.dtype}")
    return x_uint8.float().div_(255.0)


def subset(x: Tensor, y: Tensor, cap: int | None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The first `cap` samples of a fixed seeded permutation (all when cap is None)."""
    if cap is None or cap >= len(x):
        return x, y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[:cap].sort().values
    return x[idx], y[idx]
