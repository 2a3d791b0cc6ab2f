"""Feature inversion maps (Fig. 2, eq. 11): x' = argmax_δ g(x0 + δ)_i.

g is the representation (`Classifier.features`, the penultimate layer) and i a chosen
component. Starting from seed inputs x0 (`n_seeds` test images drawn with the job seed, and
`n_noise` uniform-noise images), the input is optimised by `steps` steps of l2-normalised
gradient ascent of size `lr` (in [0, 1] pixel units), each followed by clipping to [0, 1] — the
unconstrained "representation inversion / feature visualisation" of Engstrom et al. (2019),
which the paper follows. The iterate with the largest g_i seen is kept, so the returned value is
never below the seed's. Outputs: an .npz with ``seeds`` (S, 3, H, W) float32, ``images``
(S, K, 3, H, W) float32 (one per seed and component), ``components`` (K,), ``seed_kind`` (S,)
("image" | "noise") and ``labels`` (S,) (-1 for noise); and a CSV (seed, seed_kind, component,
before, after) of g_i at the seed and at the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ascl.data import write_npz_atomic
from ascl.errors import ParamsError
from ascl.evaluations.common import (
    evaluation_job,
    write_csv,
)
from ascl.tensors import to_float


@torch.no_grad()
def component_values(model: nn.Module, x: Tensor, components: list[int]) -> Tensor:
    """g(x)_i for each component: x (B, 3, H, W) float -> (B, K)."""
    model.eval()
    return model.features(x)[:, components]


def invert(
    model: nn.Module, x0: Tensor, component: int, *, steps: int, lr: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Maximise g(x)_component from x0 (B, 3, H, W) in [0, 1].

    Returns (best inputs (B, 3, H, W), g_i at x0 (B,), g_i at the best inputs (B,)).
    """
    model.eval()
    x = x0.detach().clone()
    best = x.clone()
    before = best_val = None
    with torch.enable_grad():
        for step in range(steps + 1):
            x.requires_grad_(True)
            value = model.features(x)[:, component]
            if best_val is None:
                before = value.detach().clone()
                best_val = before.clone()
            else:
                better = value.detach() > best_val
                best[better] = x.detach()[better]
                best_val = torch.where(better, value.detach(), best_val)
            if step == steps:
                break
            (grad,) = torch.autograd.grad(value.sum(), x)
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x = (x.detach() + lr * grad / norm).clamp(0, 1)
    return best.detach(), before, best_val


def seed_inputs(
    x: Tensor, y: Tensor, *, n_seeds: int, n_noise: int, seed: int
) -> tuple[Tensor, Tensor, list[str]]:
    """Seeds (S, 3, H, W) float: `n_seeds` images of uint8 x drawn with `seed`, then `n_noise`
    uniform-noise images; their labels (S,) (-1 for noise) and kinds."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[: min(n_seeds, len(x))].to(x.device)
    images = to_float(x[idx])
    noise = torch.rand((n_noise, *x.shape[1:]), generator=g).to(x.device)
    seeds = torch.cat([images, noise])
    labels = torch.cat([y[idx], torch.full((n_noise,), -1, dtype=y.dtype, device=y.device)])
    return seeds, labels, ["image"] * len(idx) + ["noise"] * n_noise


def run_inversion(settings: dict, *, out: str | Path, out_npz: str | Path, **job_args: Any) -> dict:
    """Write the inversion images (`out_npz`) and the before/after CSV (`out`).

    job_args: model_path, data, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    with evaluation_job("inversion", settings, outputs=(out, out_npz), **job_args) as job:
        model, x, y, run, seed = job.model, job.x, job.y, job.run, job.seed
        components = list(settings["components"])
        dim = model.encoder.out_dim
        if any(c >= dim for c in components):
            raise ParamsError(
                f"inversion.components: {max(components)} out of range for a {dim}-d representation"
            )
        seeds, labels, kinds = seed_inputs(
            x, y, n_seeds=settings["n_seeds"], n_noise=settings["n_noise"], seed=seed
        )
        images, rows = [], []
        for component in components:
            best, before, after = invert(
                model, seeds, component, steps=settings["steps"], lr=settings["lr"]
            )
            images.append(best)
            rows += [
                (s, kinds[s], component, float(before[s]), float(after[s]))
                for s in range(len(seeds))
            ]
        gain = sum(r[4] - r[3] for r in rows) / len(rows)
        metrics = {"mean_gain": gain, "n_seeds": len(seeds)}
        run.log_metrics({"inversion_mean_gain": gain})
        write_npz_atomic(
            out_npz,
            {
                "seeds": seeds.cpu().numpy().astype(np.float32),
                "images": torch.stack(images, 1).cpu().numpy().astype(np.float32),
                "components": np.array(components, dtype=np.int64),
                "seed_kind": np.array(kinds, dtype=np.str_),
                "labels": labels.cpu().numpy().astype(np.int64),
            },
        )
        write_csv(out, ("seed", "seed_kind", "component", "before", "after"), rows)
    return metrics
