"""Evaluation job: standard accuracy (SA) and robust accuracy under PGD (RA) of a classifier."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ascl import checkpoint
from ascl.attacks import pgd
from ascl.data import load_dataset
from ascl.engine import resolve_device, subset, to_float
from ascl.losses import cross_entropy_loss
from ascl.tracking import Run, params_hash


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


def pgd_metrics(model: nn.Module, x: Tensor, y: Tensor, settings: dict, seed: int) -> dict:
    """{"sa": %, "ra_pgd_eps<k>": % for each eps in settings.pgd.eps, "n_test": N}."""
    pgd_cfg = settings["pgd"]
    metrics = {"sa": accuracy(model, x, y, settings["batch_size"]), "n_test": len(x)}
    for eps in pgd_cfg["eps"]:
        metrics[f"ra_pgd_eps{eps:g}"] = robust_accuracy(
            model,
            x,
            y,
            eps=eps / 255,
            alpha=pgd_cfg["alpha"] / 255,
            steps=pgd_cfg["steps"],
            random_start=pgd_cfg["random_start"],
            batch_size=settings["batch_size"],
            seed=seed,
        )
    return metrics


def run_evaluate(
    settings: dict,
    *,
    model_path: str | Path,
    data: str | Path,
    out: str | Path,
    seed: int,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    track: bool = True,
) -> dict:
    """Evaluate SA and PGD RA on the test split; write the metrics JSON `out` (atomic)."""
    from ascl.finetune import load_classifier

    device = resolve_device(settings["device"])
    model, state = load_classifier(model_path, map_location=device)
    model = model.to(device)
    ds = load_dataset(data)
    x, y = subset(ds.x_test, ds.y_test, settings["data"]["max_test"], seed=0)
    x, y = x.to(device), y.to(device)
    name = f"evaluate/pgd/seed{seed}"
    tags = {
        "stage": "evaluate",
        "evaluation": "pgd",
        "seed": str(seed),
        "params_hash": params_hash(settings),
        **(tags or {}),
    }
    parent = parent_run_id or state.get("run_id") or None
    with Run(name, params=settings, tags=tags, parent_run_id=parent, enabled=track) as run:
        metrics = pgd_metrics(model, x, y, settings, seed)
        run.log_metrics({k: v for k, v in metrics.items() if k != "n_test"})
        checkpoint.atomic_write_text(out, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
