"""Input loss landscape (Fig. 4).

Around each of `n_images` test images x (the shared seed-0 subset) the cross-entropy loss is
evaluated on the 2-D grid x + a * d_adv + b * d_rand, a, b in linspace(-radius, radius, points)
(in 1/255 units), where d_adv = sign(∇_x CE(f(x), y)) is the adversarial (FGSM) direction and
d_rand a Rademacher (±1) direction drawn with the job seed, both per image. Points are clipped
to the image domain [0, 1]. The value at (a, b) is the mean loss over the images; (0, 0) is the
plain test loss. The model is in eval mode. Output CSV: a, b (1/255 units), loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ascl.attacks import pixel_units
from ascl.evaluations.common import (
    evaluation_job,
    grid,
    write_csv,
)
from ascl.metrics import mean_loss
from ascl.tensors import to_float


def directions(
    model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(d_adv, d_rand), each (N, 3, H, W): sign of the input gradient of the CE loss, and
    Rademacher ±1 entries. x: (N, 3, H, W) float in [0, 1]."""
    model.eval()
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    rand = torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
    return grad.sign(), rand


def input_landscape(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    d1: Tensor,
    d2: Tensor,
    coords: list[float],
    batch_size: int,
) -> list[tuple[float, float, float]]:
    """[(a, b, mean CE at clip(x + a d1 + b d2, 0, 1))] for a, b in `coords` ([0, 1] units)."""
    rows = []
    for a in coords:
        for b in coords:
            xp = (x + a * d1 + b * d2).clamp(0, 1)
            rows.append((a, b, mean_loss(model, xp, y, batch_size)))
    return rows


def run_landscape_input(settings: dict, *, out: str | Path, **job_args: Any) -> dict:
    """Write the input-landscape CSV (a, b, loss) to `out`.

    job_args: model_path, data, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    with evaluation_job(
        "landscape_input", settings, n_images=settings["n_images"], outputs=(out,), **job_args
    ) as job:
        model, x, y, run, seed = job.model, job.x, job.y, job.run, job.seed
        x = to_float(x)
        coords = grid(settings["radius"], settings["points"])
        d1, d2 = directions(model, x, y, torch.Generator().manual_seed(seed))
        rows = input_landscape(
            model,
            x,
            y,
            d1=d1,
            d2=d2,
            coords=[pixel_units(c) for c in coords],
            batch_size=settings["batch_size"],
        )
        # back to 1/255 units exactly (the row order is a-major over `coords`)
        rows = [
            (ca, cb, r[2])
            for (ca, cb), r in zip(((ca, cb) for ca in coords for cb in coords), rows, strict=True)
        ]
        metrics = {
            "loss_center": mean_loss(model, x, y, settings["batch_size"]),
            "loss_max": max(r[2] for r in rows),
        }
        run.log_metrics({f"landscape_input/{k}": v for k, v in metrics.items()})
        write_csv(out, ("a", "b", "loss"), rows)
    return metrics
