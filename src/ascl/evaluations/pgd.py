"""PGD evaluation (Tables 1, 3-8): standard accuracy (SA) and robust accuracy under PGD-CE (RA)
at each radius of `evaluate.pgd.eps`, on the capped test split, model in eval mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ascl import checkpoint
from ascl.attacks import pixel_units
from ascl.engine import compile_encoder
from ascl.evaluations.common import evaluation_job
from ascl.metrics import accuracy, robust_accuracy


def pgd_metrics(model: nn.Module, x: Tensor, y: Tensor, settings: dict, seed: int) -> dict:
    """{"sa": %, "ra_pgd_eps<k>": % for each eps in settings.pgd.eps, "n_test": N}."""
    pgd_cfg = settings["pgd"]
    metrics = {"sa": accuracy(model, x, y, settings["batch_size"]), "n_test": len(x)}
    for eps in pgd_cfg["eps"]:
        metrics[f"ra_pgd_eps{eps:g}"] = robust_accuracy(
            model,
            x,
            y,
            eps=pixel_units(eps),
            alpha=pixel_units(pgd_cfg["alpha"]),
            steps=pgd_cfg["steps"],
            random_start=pgd_cfg["random_start"],
            batch_size=settings["batch_size"],
            seed=seed,
        )
    return metrics


def run_pgd(settings: dict, *, out: str | Path, **job_args: Any) -> dict:
    """Evaluate SA and PGD RA on the test split; write the metrics JSON `out` (atomic).

    job_args: model_path, data, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    with evaluation_job("pgd", settings, outputs=(out,), **job_args) as job:
        compile_encoder(job.model, settings.get("compile", False))
        metrics = pgd_metrics(job.model, job.x, job.y, settings, job.seed)
        job.run.log_metrics({k: v for k, v in metrics.items() if k != "n_test"})
        checkpoint.atomic_write_text(out, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
