"""Robust accuracy against attacks of growing strength (Fig. 6).

Two sweeps of the l∞ PGD-CE attack of the white-box evaluation (`ascl.evaluations.pgd`), model in
eval mode: RA vs the number of PGD steps (`steps`, 0..100) at ε = `eps`/255, and RA vs the
radius (`eps_grid`, 0..32 in 1/255 units) at `fixed_steps` steps; step size `alpha`/255 in both.
The random start is off by default, so that 0 steps and ε = 0 are exactly the clean accuracy
(the curves of Fig. 6 start at SA). The steps sweep runs one PGD of max(steps) iterations and
reads the accuracy of each intermediate iterate (a k-step PGD is the first k iterations of a
longer one with the same start), so it costs max(steps) instead of sum(steps) iterations.
Output CSV: kind ("steps" | "eps"), value (steps, or ε in 1/255 units), ra (%).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ascl.attacks import pgd, pixel_units
from ascl.evaluations.common import (
    evaluation_job,
    write_csv,
)
from ascl.losses import cross_entropy_loss
from ascl.metrics import accuracy, robust_accuracy
from ascl.tensors import to_float


def steps_curve(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: list[int],
    random_start: bool,
    batch_size: int,
    seed: int,
) -> dict[int, float]:
    """{k: accuracy % after k PGD steps} for k in `steps`; x (N, 3, H, W) uint8; eps, alpha in
    [0, 1] units. Equal to `robust_accuracy(..., steps=k)` for every k (same generator use)."""
    model.eval()
    wanted = set(steps)
    last = max(steps)
    if eps == 0 or last == 0:
        if random_start and eps > 0:
            acc = robust_accuracy(
                model,
                x,
                y,
                eps=eps,
                alpha=alpha,
                steps=0,
                random_start=True,
                batch_size=batch_size,
                seed=seed,
            )
        else:
            acc = accuracy(model, x, y, batch_size)
        return {k: acc for k in steps}
    g = torch.Generator().manual_seed(seed)
    correct = dict.fromkeys(wanted, 0)
    for i in range(0, len(x), batch_size):
        xb, yb = to_float(x[i : i + batch_size]), y[i : i + batch_size]
        t = [0]

        def loss_fn(xa: Tensor, yb: Tensor = yb, t: list[int] = t) -> Tensor:
            logits = model(xa)  # logits of iterate t (before its update)
            if t[0] in wanted:
                correct[t[0]] += int((logits.argmax(1) == yb).sum())
            t[0] += 1
            return cross_entropy_loss(logits, yb)

        x_adv = pgd(
            loss_fn,
            xb,
            eps=eps,
            alpha=alpha,
            steps=last,
            random_start=random_start,
            generator=g,
            model=model,
            train_mode=False,
        )
        with torch.no_grad():
            correct[last] += int((model(x_adv).argmax(1) == yb).sum())
    return {k: 100.0 * correct[k] / max(len(x), 1) for k in steps}


def eps_curve(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps_grid: list[float],
    alpha: float,
    steps: int,
    random_start: bool,
    batch_size: int,
    seed: int,
) -> dict[float, float]:
    """{ε: accuracy % under `steps`-step PGD of radius ε} (ε, alpha in [0, 1] units)."""
    return {
        eps: robust_accuracy(
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
        for eps in eps_grid
    }


def strength_rows(model: nn.Module, x: Tensor, y: Tensor, settings: dict, seed: int) -> list:
    """[(kind, value, ra)] of both sweeps (values in steps and 1/255 units)."""
    common = {
        "alpha": pixel_units(settings["alpha"]),
        "random_start": settings["random_start"],
        "batch_size": settings["batch_size"],
        "seed": seed,
    }
    by_steps = steps_curve(
        model, x, y, eps=pixel_units(settings["eps"]), steps=list(settings["steps"]), **common
    )
    by_eps = eps_curve(
        model,
        x,
        y,
        eps_grid=[pixel_units(e) for e in settings["eps_grid"]],
        steps=settings["fixed_steps"],
        **common,
    )
    rows = [("steps", k, by_steps[k]) for k in settings["steps"]]
    rows += [
        ("eps", e, by_eps[pixel_units(e)]) for e in settings["eps_grid"]
    ]  # same float keys as above
    return rows


def run_strength(settings: dict, *, out: str | Path, **job_args: Any) -> dict:
    """Write the attack-strength CSV (kind, value, ra) to `out`.

    job_args: model_path, data, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    with evaluation_job("strength", settings, outputs=(out,), **job_args) as job:
        model, x, y, run, seed = job.model, job.x, job.y, job.run, job.seed
        rows = strength_rows(model, x, y, settings, seed)
        for kind, value, ra in rows:
            run.log_metrics({f"strength/ra_vs_{kind}": ra}, step=int(round(value)))
        write_csv(out, ("kind", "value", "ra"), rows)
    return {f"ra_{kind}{value:g}": ra for kind, value, ra in rows}
