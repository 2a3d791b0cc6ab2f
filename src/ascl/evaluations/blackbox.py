"""Black-box (transfer) robustness, Table 2.

`craft`: untargeted l∞ PGD-CE examples (PGD-20, ε = 8/255, step 2/255, random start, as the
white-box evaluation) computed on a SOURCE model in eval mode, saved once per source as an
``.npz`` artifact: ``x_adv`` (N, 3, H, W) float32 in [0, 1], ``y`` (N,) int64 and ``meta``, a
0-d string holding JSON (source name, sha256 prefixes of the source checkpoint and of the data
file, attack settings, seed, N).

`evaluate`: the accuracy of a TARGET model on the crafted sets of several sources. The target's
own source (same name, or crafted on the same checkpoint file) is left out: that would be a
white-box attack (the diagonal of Table 2). Output JSON: ``{"target": name, "ra": {source: %}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ascl.attacks import pixel_units
from ascl.data import FormatError, write_npz_atomic
from ascl.evaluations.common import (
    evaluation_job,
    safe_metric_name,
    write_json,
)
from ascl.metrics import accuracy, pgd_examples
from ascl.tracking import file_hash

CRAFTED_KEYS = ("x_adv", "y", "meta")


def craft(model: nn.Module, x: Tensor, y: Tensor, settings: dict, seed: int) -> Tensor:
    """PGD examples of uint8 images x (N, 3, H, W) -> float32 (N, 3, H, W) in [0, 1]."""
    return pgd_examples(
        model,
        x,
        y,
        eps=pixel_units(settings["eps"]),
        alpha=pixel_units(settings["alpha"]),
        steps=settings["steps"],
        random_start=settings["random_start"],
        batch_size=settings["batch_size"],
        seed=seed,
    ).float()


def load_crafted(path: str | Path) -> tuple[Tensor, Tensor, dict]:
    """x_adv (N, 3, H, W) float32, y (N,) int64 and meta of a crafted set."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"crafted set not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in CRAFTED_KEYS if k not in npz.files]
            if missing:
                raise FormatError(f"{path}: missing key(s) {', '.join(missing)}")
            x, y, meta = npz["x_adv"], npz["y"], json.loads(str(npz["meta"]))
    except (ValueError, OSError) as err:
        raise FormatError(f"{path}: not a crafted set ({str(err).splitlines()[0]})") from None
    if x.dtype != np.float32 or x.ndim != 4 or y.shape != (len(x),):
        raise FormatError(f"{path}: expected x_adv float32 (N, 3, H, W) and y (N,)")
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), meta


def transfer_accuracies(
    target: nn.Module,
    crafted: dict[str, tuple[Tensor, Tensor, dict]],
    *,
    target_name: str,
    target_hash: str,
    batch_size: int,
) -> dict[str, float]:
    """{source: accuracy % of `target` on that source's x_adv}, without the target's own source
    (same name or same checkpoint hash in the set's meta)."""
    out = {}
    for name, (x_adv, y, meta) in crafted.items():
        if name == target_name or meta.get("model_hash") == target_hash:
            continue
        device = next(target.parameters()).device
        out[name] = accuracy(target, x_adv.to(device), y.to(device), batch_size)
    return out


def run_blackbox_craft(
    settings: dict, *, out: str | Path, name: str | None = None, **job_args: Any
) -> dict:
    """Craft the source model's PGD set on the (capped) test split; write the .npz `out`.

    job_args: model_path, data, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    name = name or Path(job_args["model_path"]).stem
    job_args["tags"] = {"source": name, **(job_args.get("tags") or {})}
    with evaluation_job("blackbox-craft", settings, **job_args) as job:
        model, x, y, run, seed = job.model, job.x, job.y, job.run, job.seed
        x_adv = craft(model, x, y, settings, seed)
        metrics = {
            "ra_whitebox": accuracy(model, x_adv, y, settings["batch_size"]),
            "n_test": len(x),
        }
        meta = {
            "source": name,
            "model_hash": file_hash(job_args["model_path"]),
            "data_hash": file_hash(job_args["data"]),
            "attack": {k: settings[k] for k in ("eps", "alpha", "steps", "random_start")},
            "seed": seed,
            "n": len(x),
        }
        run.log_metrics({"ra_whitebox": metrics["ra_whitebox"]})
        write_npz_atomic(
            out,
            {
                "x_adv": x_adv.cpu().numpy().astype(np.float32),
                "y": y.cpu().numpy().astype(np.int64),
                "meta": np.array(json.dumps(meta, sort_keys=True)),
            },
        )
    return metrics


def run_blackbox_eval(
    settings: dict,
    *,
    sources: dict[str, str | Path],
    out: str | Path,
    name: str,
    **job_args: Any,
) -> dict:
    """Accuracy of the target model (named `name`) on each source's crafted set; writes
    {"target": name, "ra": {source: %}} (the target's own source left out) to `out`.

    job_args: model_path, seed, parent_run_id, tags, track (`evaluation_job`; no data set).
    """
    crafted = {src: load_crafted(path) for src, path in sources.items()}
    labels = [y for _, y, _ in crafted.values()]
    if any(len(y) != len(labels[0]) or not torch.equal(y, labels[0]) for y in labels):
        raise FormatError("blackbox: the crafted sets hold different test images (labels differ)")
    job_args["tags"] = {"target": name, **(job_args.get("tags") or {})}
    with evaluation_job("blackbox", settings, outputs=(out,), **job_args) as job:
        model, run = job.model, job.run
        ra = transfer_accuracies(
            model,
            crafted,
            target_name=name,
            target_hash=file_hash(job_args["model_path"]),
            batch_size=settings["batch_size"],
        )
        run.log_metrics({safe_metric_name(f"ra_bb/{src}"): v for src, v in ra.items()})
        result = {"target": name, "ra": ra}
        write_json(out, result)
    return result
