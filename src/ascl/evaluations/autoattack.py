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

Sizes: on the CPU the settings' `chunk_size` and `batch_size` (so CPU results never change). On
CUDA both come from a memory estimate (`device_sizes`): the peak memory of one fp32 forward and
backward pass per image, measured on a probe batch, against half of the device's memory; the
larger batches mean far fewer, better filled iterations of the attacks. AutoAttack's random
draws depend on how the images are batched, so a CUDA result is reproducible on the same kind
of device (the estimate depends on the device's memory, not on what is free at the moment); the
chosen sizes are part of the state file's fingerprint and printed in the job's log.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
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

# The share of a CUDA device's memory that one AutoAttack batch may take; the rest is left to
# the allocator's fragmentation, cuDNN workspaces, the model and the data set.
MEMORY_FRACTION = 0.5
# Input-sized buffers the attacks keep per image beside the network's activations (APGD's
# x_adv, x_best, x_best_adv, gradients and momentum, FAB's and Square's own copies).
INPUT_COPIES = 16
PROBE_IMAGES = 64


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


def attack_sizes(
    n_images: int,
    chunk_size: int,
    batch_size: int,
    *,
    budget_bytes: int | None = None,
    bytes_per_image: int | None = None,
) -> tuple[int, int]:
    """(images per resumable chunk, images per AutoAttack batch).

    Without a memory estimate (`budget_bytes` None: the CPU) the settings' `chunk_size` and
    `batch_size`, unchanged. With one (CUDA): the batch is the number of images whose attack
    pass fits in `budget_bytes` at `bytes_per_image` each, rounded down to a multiple of
    `batch_size` when at least `batch_size` fit, at least 1 and at most `n_images`; the chunk is
    the larger of `chunk_size` and that batch, at most `n_images`.
    """
    if budget_bytes is None or bytes_per_image is None:
        return chunk_size, batch_size
    if bytes_per_image <= 0:
        raise ValueError(f"bytes_per_image must be > 0, got {bytes_per_image}")
    fits = max(1, budget_bytes // bytes_per_image)
    batch = fits // batch_size * batch_size if fits >= batch_size else fits
    most = max(1, n_images)
    return min(max(chunk_size, batch), most), min(batch, most)


def bytes_per_image(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """Device memory one image takes in an attack pass on CUDA: the peak of an fp32 forward and
    backward pass w.r.t. the input (cross-entropy, as APGD-CE) over the probe batch x (n, 3, H,
    W) float in [0, 1], y (n,), per image, plus `INPUT_COPIES` input-sized buffers."""
    device = x.device
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(xr), y, reduction="sum")
        torch.autograd.grad(loss, xr)
    del loss, xr
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    return math.ceil(peak / len(x)) + INPUT_COPIES * x[0].numel() * x.element_size()


def device_sizes(
    model: nn.Module, x: Tensor, y: Tensor, chunk_size: int, batch_size: int
) -> tuple[int, int]:
    """`attack_sizes` for the test images x (N, 3, H, W) uint8 and labels y (N,) on their
    device: the settings' sizes on the CPU; on CUDA from `bytes_per_image` on the first
    `PROBE_IMAGES` images against `MEMORY_FRACTION` of the device's total memory less what the
    process holds (model, data)."""
    if x.device.type != "cuda" or len(x) == 0:
        return attack_sizes(len(x), chunk_size, batch_size)
    per_image = bytes_per_image(model, to_float(x[:PROBE_IMAGES]), y[:PROBE_IMAGES])
    total = torch.cuda.get_device_properties(x.device).total_memory
    budget = int(MEMORY_FRACTION * total) - torch.cuda.memory_allocated(x.device)
    chunk, batch = attack_sizes(
        len(x), chunk_size, batch_size, budget_bytes=budget, bytes_per_image=per_image
    )
    print(
        f"[autoattack] chunk {chunk}, batch {batch}: {per_image / 2**20:.2f} MiB per image "
        f"against {budget / 2**30:.1f} GiB ({MEMORY_FRACTION:.0%} of the device's memory less "
        "what the job holds)",
        file=sys.stderr,
    )
    return chunk, batch


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
        chunk, batch = device_sizes(model, x, y, settings["chunk_size"], settings["batch_size"])
        torch.manual_seed(seed)
        state_file = Path(state_path) if state_path else default_state_path(out)
        fingerprint = params_hash(
            {
                "settings": settings,
                "seed": seed,
                "model": file_hash(job_args["model_path"]),
                "data": file_hash(job_args["data"]),
                "n": len(x),
                "sizes": [chunk, batch],
            }
        )
        progress = _load_state(state_file, fingerprint)
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
                batch_size=batch,
                seed=seed,
                num_classes=job.num_classes,
            )
            clean = correct(model, xb, yb, batch)
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
