"""Weight loss landscape (Fig. 5): loss(w + α d) along a filter-normalised direction.

Direction (Li et al. 2018, "filter normalisation"): d is drawn from N(0, 1) with the job seed
(one tensor per parameter, in `named_parameters` order); for every parameter with two or more
dimensions each filter d[f] (a slice along the output dimension: a convolution filter, a row of
a linear layer) is rescaled to the norm of the corresponding weight filter,
d[f] <- d[f] * ||w[f]|| / (||d[f]|| + 1e-10); one-dimensional parameters (batch-norm scales and
shifts, biases) get d = 0 (Li et al.'s `ignore biasbn`). Buffers (BN running statistics) are
not perturbed; the model stays in eval mode.

Loss (Wu et al. 2020, "adversarial weight perturbation"): the adversarial loss
ρ(w) = mean CE(f_w(x'), y) over `n_images` test images, where x' is PGD (l∞, `attack` settings,
same random start at every α) computed AGAIN on each perturbed model w + α d. ρ is defined with
the inner maximisation at w itself; examples fixed at the unperturbed weights would measure how
well they transfer to the perturbed model and underestimate its adversarial loss. The clean loss
is recorded alongside. The weights are restored bit-exactly afterwards (copies of the original
tensors are written back, also on error). Output CSV: alpha, loss (adversarial), clean_loss.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ascl.attacks import pixel_units
from ascl.evaluations.common import (
    evaluation_job,
    grid,
    write_csv,
)
from ascl.metrics import mean_loss, pgd_examples
from ascl.tensors import to_float


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> dict[str, Tensor]:
    """{parameter name: direction of the parameter's shape} (see the module docstring)."""
    out = {}
    for name, p in model.named_parameters():
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        if p.dim() <= 1:
            d.zero_()
        else:
            scale = p.detach().flatten(1).norm(dim=1) / (d.flatten(1).norm(dim=1) + 1e-10)
            d = d * scale.view(-1, *([1] * (p.dim() - 1)))
        out[name] = d
    return out


def weight_landscape(
    model: nn.Module,
    direction: dict[str, Tensor],
    alphas: list[float],
    loss_fn: Callable[[], tuple[float, ...]],
) -> list[tuple[float, ...]]:
    """[loss_fn() at w + α d for α in alphas]; the original weights are restored exactly."""
    params = dict(model.named_parameters())
    originals = {n: p.detach().clone() for n, p in params.items()}
    results = []
    try:
        for a in alphas:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(originals[n] + a * direction[n])
            results.append(loss_fn())
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(originals[n])
    return results


def adversarial_loss(
    model: nn.Module, x: Tensor, y: Tensor, attack: dict, batch_size: int, seed: int
) -> float:
    """Mean CE on PGD examples of uint8 images x (N, 3, H, W) crafted on `model` as it is now."""
    x_adv = pgd_examples(
        model,
        x,
        y,
        eps=pixel_units(attack["eps"]),
        alpha=pixel_units(attack["alpha"]),
        steps=attack["steps"],
        random_start=attack["random_start"],
        batch_size=batch_size,
        seed=seed,
    )
    return mean_loss(model, x_adv, y, batch_size)


def run_landscape_weight(settings: dict, *, out: str | Path, **job_args: Any) -> dict:
    """Write the weight-landscape CSV (alpha, loss, clean_loss) to `out`.

    job_args: model_path, data, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    with evaluation_job(
        "landscape_weight", settings, n_images=settings["n_images"], outputs=(out,), **job_args
    ) as job:
        model, x, y, run, seed = job.model, job.x, job.y, job.run, job.seed
        bs = settings["batch_size"]
        alphas = grid(settings["radius"], settings["points"])
        direction = filter_normalized_direction(model, torch.Generator().manual_seed(seed))

        def losses() -> tuple[float, float]:
            adv = adversarial_loss(model, x, y, settings["attack"], bs, seed)
            return adv, mean_loss(model, to_float(x), y, bs)

        values = weight_landscape(model, direction, alphas, losses)
        rows = [(a, adv, clean) for a, (adv, clean) in zip(alphas, values, strict=True)]
        center = min(rows, key=lambda r: abs(r[0]))
        metrics = {
            "loss_center": center[1],
            "loss_max": max(r[1] for r in rows),
            "clean_loss_center": center[2],
        }
        run.log_metrics({f"landscape_weight/{k}": v for k, v in metrics.items()})
        write_csv(out, ("alpha", "loss", "clean_loss"), rows)
    return metrics
