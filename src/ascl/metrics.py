"""Standard and robust accuracy of a classifier: the measurements every evaluation shares."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ascl.attacks import pgd
from ascl.losses import cross_entropy_loss
from ascl.tensors import to_float


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    """Top-1 accuracy in percent. x: (N, 3, H, W) uint8 or float in [0, 1]; y: (N,)."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        xb = to_float(xb) if xb.dtype == torch.uint8 else xb
        correct += int((model(xb).argmax(1) == y[i : i + batch_size]).sum())
    return 100.0 * correct / max(len(x), 1)


def pgd_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    batch_size: int,
    seed: int,
) -> Tensor:
    """Untargeted l∞ PGD-CE examples in eval mode. x: (N, 3, H, W) uint8 -> float (N, 3, H, W)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = to_float(x[i : i + batch_size]), y[i : i + batch_size]
        out.append(
            pgd(
                lambda xa, yb=yb: cross_entropy_loss(model(xa), yb),
                xb,
                eps=eps,
                alpha=alpha,
                steps=steps,
                random_start=random_start,
                generator=g,
                model=model,
                train_mode=False,
            )
        )
    return torch.cat(out) if out else to_float(x)


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    batch_size: int,
    seed: int = 0,
) -> float:
    """Accuracy (%) on PGD examples; eps/alpha in [0, 1] units."""
    x_adv = pgd_examples(
        model,
        x,
        y,
        eps=eps,
        alpha=alpha,
        steps=steps,
        random_start=random_start,
        batch_size=batch_size,
        seed=seed,
    )
    return accuracy(model, x_adv, y, batch_size)


@torch.no_grad()
def mean_loss(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    """Mean CE loss over float inputs x (N, 3, H, W)."""
    model.eval()
    total = sum(
        float(F.cross_entropy(model(x[i : i + batch_size]), y[i : i + batch_size], reduction="sum"))
        for i in range(0, len(x), batch_size)
    )
    return total / len(x)
