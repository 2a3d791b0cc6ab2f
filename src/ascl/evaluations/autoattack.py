"""AutoAttack robust accuracy (RA-AA, Tables 1 and 5).

The attack is the published AutoAttack (Croce & Hein 2020) from the `pyautoattack` distribution
(import name ``pyautoattack``; the GitHub package ``autoattack`` is used instead when that is
what is installed), l∞, ε = 8/255, version ``standard``: APGD-CE, APGD-T, FAB-T and Square
(5000 queries), each run on the points still robust. The model is in eval mode; inputs are
images in [0, 1] (normalisation is inside the model). The targeted attacks use
min(9, C - 1) target classes (9 for 10 or more classes, as AutoAttack's standard version; fewer
classes than 10 would make its target ranks invalid).

Resumability: the test images are attacked in chunks of `chunk_size`; after each chunk the
per-image flags go to a state file (atomic JSON, default ``.<out>.state.json`` next to `out`)
tagged with a fingerprint of the settings, seed, model and data files, and a rerun skips the
chunks already done. The library's own `state_path` is not used: in pyautoattack 0.2.0 a
restored state leaves `y_adv` undefined (an error as soon as a restored run breaks another
point) and the state file is not written atomically. The state file is removed on success.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ascl import checkpoint
from ascl.attacks import pixel_units
from ascl.errors import ParamsError
from ascl.evaluations.common import (
    evaluation_job,
    write_json,
)
from ascl.tensors import to_float
from ascl.tracking import file_hash, params_hash


def autoattack_class():
    """The AutoAttack class of whichever distribution is installed."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        from autoattack import AutoAttack
    return AutoAttack


def make_adversary(
    model: nn.Module,
    *,
    eps: float,
    version: str,
    seed: int,
    num_classes: int,
    device: torch.device,
    attacks: list[str] | None = None,
    square_queries: int | None = None,
    target_classes: int | None = None,
):
    """A configured AutoAttack (l∞, radius `eps` in [0, 1] units, fixed seed). `attacks`
    (with version "custom") runs a subset of the attacks; the jobs never do. `square_queries`
    replaces Square's query budget (5000 in the standard version) and `target_classes` the
    number of target classes (restarts) of APGD-T and FAB-T (standard: min(9, C - 1));
    config/smoke.yaml lowers both to bound the smoke's time, the paper's settings never do."""

    if num_classes < 4:
        raise ParamsError(
            f"autoattack: the {version} version needs at least 4 classes (targeted DLR), "
            f"the data set has {num_classes}"
        )
    cls = autoattack_class()
    kwargs = {"norm": "Linf", "eps": eps, "version": version, "seed": seed, "device": device}
    if attacks is not None:
        kwargs[
            "attacks" if "attacks" in inspect.signature(cls).parameters else "attacks_to_run"
        ] = list(attacks)
    if "verbose" in inspect.signature(cls).parameters:
        kwargs["verbose"] = False
    adversary = cls(model, **kwargs)
    targets = min(9 if target_classes is None else target_classes, num_classes - 1)
    adversary.apgd_targeted.n_target_classes = targets
    adversary.fab.n_target_classes = targets
    if square_queries is not None:
        adversary.square.n_queries = square_queries
    return adversary


def _run_standard(adversary, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """x_adv of `run_standard_evaluation`, for both the PyPI and the GitHub signatures."""
    params = inspect.signature(adversary.run_standard_evaluation).parameters
    if "batch_size" in params:
        out = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    else:
        out = adversary.run_standard_evaluation(x, y, bs=batch_size)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """Per-image correctness (N,) bool of float inputs x (N, 3, H, W) in [0, 1]."""
    model.eval()
    return (
        torch.cat(
            [
                model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]
                for i in range(0, len(x), batch_size)
            ]
        )
        if len(x)
        else torch.zeros(0, dtype=torch.bool, device=y.device)
    )


def autoattack_robust(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    version: str,
    batch_size: int,
    seed: int,
    num_classes: int,
    attacks: list[str] | None = None,
    square_queries: int | None = None,
    target_classes: int | None = None,
) -> Tensor:
    """Per-image robustness (N,) bool under AutoAttack; x (N, 3, H, W) float in [0, 1], y (N,).

    An image counts as robust when the model classifies the returned example correctly (for
    images AutoAttack could not break, that example is the clean image itself, so misclassified
    clean images are never robust). The returned examples are checked to lie in the ε-ball
    and in [0, 1].
    """
    model.eval()
    adversary = make_adversary(
        model,
        eps=eps,
        version=version,
        seed=seed,
        num_classes=num_classes,
        device=x.device,
        attacks=attacks,
        square_queries=square_queries,
        target_classes=target_classes,
    )
    x_adv = _run_standard(adversary, x, y, batch_size).to(x.device)
    if (x_adv - x).abs().max() > eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError("AutoAttack returned examples outside the ε-ball or [0, 1]")
    return correct(model, x_adv, y, batch_size)


def default_state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.state.json")


def _load_state(path: Path, fingerprint: str) -> dict:
    if path.is_file():
        try:
            state = json.loads(path.read_text())
            if state.get("fingerprint") == fingerprint:
                return state
        except json.JSONDecodeError:
            pass
    return {"fingerprint": fingerprint, "chunks": {}}


def run_autoattack(
    settings: dict,
    *,
    out: str | Path,
    state_path: str | Path | None = None,
    **job_args: Any,
) -> dict:
    """RA-AA and SA on the (capped) test split; writes {"ra_aa", "sa", "n_test"} to `out`.

    job_args: model_path, data, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    with evaluation_job(
        "autoattack", settings, n_images=settings["n_test"], outputs=(out,), **job_args
    ) as job:
        model, x, y, run, seed = job.model, job.x, job.y, job.run, job.seed
        torch.manual_seed(seed)
        state_file = Path(state_path) if state_path else default_state_path(out)
        fingerprint = params_hash(
            {
                "settings": settings,
                "seed": seed,
                "model": file_hash(job_args["model_path"]),
                "data": file_hash(job_args["data"]),
                "n": len(x),
            }
        )
        progress = _load_state(state_file, fingerprint)
        chunk = settings["chunk_size"]
        for index, start in enumerate(range(0, len(x), chunk)):
            if str(index) in progress["chunks"]:
                continue
            xb, yb = to_float(x[start : start + chunk]), y[start : start + chunk]
            robust = autoattack_robust(
                model,
                xb,
                yb,
                eps=pixel_units(settings["eps"]),
                version=settings["version"],
                square_queries=settings.get("square_queries"),
                target_classes=settings.get("target_classes"),
                batch_size=settings["batch_size"],
                seed=seed,
                num_classes=job.num_classes,
            )
            clean = correct(model, xb, yb, settings["batch_size"])
            progress["chunks"][str(index)] = {
                "robust": robust.int().tolist(),
                "clean": clean.int().tolist(),
            }
            checkpoint.atomic_write_text(state_file, json.dumps(progress))
        robust_all = [v for c in progress["chunks"].values() for v in c["robust"]]
        clean_all = [v for c in progress["chunks"].values() for v in c["clean"]]
        n = len(x)
        metrics = {
            "ra_aa": 100.0 * sum(robust_all) / max(n, 1),
            "sa": 100.0 * sum(clean_all) / max(n, 1),
            "n_test": n,
        }
        run.log_metrics({"ra_aa": metrics["ra_aa"], "sa": metrics["sa"]})
        write_json(out, metrics)
    state_file.unlink(missing_ok=True)
    return metrics
