"""Evaluation job: standard accuracy (SA) and robust accuracy under PGD (RA) of a classifier."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

from ascl import checkpoint
from ascl.data import load_dataset
from ascl.engine import resolve_device, subset
from ascl.metrics import accuracy, robust_accuracy
from ascl.tracking import Run, params_hash


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
    from ascl.artifacts import load_classifier

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
