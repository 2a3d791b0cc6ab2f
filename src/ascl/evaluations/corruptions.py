"""Accuracy under common corruptions (Fig. 1 and 7): CIFAR-10-C, or its stand-in digits10-c.

Input: a directory in CIFAR-10-C's form (`ascl.data.formats`): ``<corruption>.npz`` with x
(5 M, 3, H, W) uint8, y and severity (5 M,) int64, severities in blocks. For each corruption and
severity the job takes the images of that severity, capped by ``data.max_test`` with the shared
seed-0 subset (image i of every severity block is clean test image i, so the same images are
kept everywhere), and measures top-1 accuracy. Outputs: a CSV (corruption, severity, accuracy)
and a JSON {"per_corruption": {corruption: mean over severities}, "mean": mean over all
corruptions and severities, "n_test": images per severity}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ascl.data import CIFAR10C_CORRUPTIONS, FormatError, image_size_setting, load_corrupted
from ascl.data.formats import UNCHECKED
from ascl.evaluations.common import (
    cap,
    evaluation_job,
    write_csv,
    write_json,
)
from ascl.metrics import accuracy
from ascl.tensors import subset


def severity_accuracies(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    severity: Tensor,
    *,
    severities: list[int],
    batch_size: int,
    max_images: int | None,
    where: str = "corruption file",
) -> tuple[dict[int, float], int]:
    """({severity: accuracy %}, images per severity) of one corruption file.

    x: (5 M, 3, H, W) uint8; y, severity: (5 M,) int64.
    """
    device = next(model.parameters()).device
    out, n = {}, 0
    for s in severities:
        mask = severity == s
        if not bool(mask.any()):
            raise FormatError(f"{where}: no images of severity {s}")
        xs, ys = subset(x[mask], y[mask], max_images, seed=0)
        out[s] = accuracy(model, xs.to(device), ys.to(device), batch_size)
        n = len(xs)
    return out, n


def summarize(rows: list[tuple[str, int, float]]) -> dict:
    """{"per_corruption": {c: mean %}, "mean": overall mean %} of (corruption, severity, %)."""
    per: dict[str, list[float]] = {}
    for corruption, _, acc in rows:
        per.setdefault(corruption, []).append(acc)
    means = {c: sum(v) / len(v) for c, v in per.items()}
    overall = sum(acc for _, _, acc in rows) / len(rows)
    return {"per_corruption": means, "mean": overall}


def corruption_rows(
    model: nn.Module,
    root: str | Path,
    *,
    corruptions: list[str],
    severities: list[int],
    batch_size: int,
    max_images: int | None,
    image_size=UNCHECKED,
) -> tuple[list[tuple[str, int, float]], int]:
    """[(corruption, severity, accuracy %)] over the files of `root`, and images per severity;
    files made with another `image_size` are refused (`ascl.data.load_corrupted`)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corruption directory not found: {root}")
    rows, n = [], 0
    for corruption in corruptions:
        path = root / f"{corruption}.npz"
        x, y, severity = load_corrupted(path, image_size)
        accs, n = severity_accuracies(
            model,
            x,
            y,
            severity,
            severities=severities,
            batch_size=batch_size,
            max_images=max_images,
            where=str(path),
        )
        rows += [(corruption, s, accs[s]) for s in severities]
    return rows, n


def run_corruptions(
    settings: dict,
    *,
    data: str | Path,
    out: str | Path,
    out_csv: str | Path,
    **job_args: Any,
) -> dict:
    """Accuracy per corruption and severity of the directory `data`; writes `out_csv` and the
    summary JSON `out`.

    job_args: model_path, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    corruptions = settings.get("names") or list(CIFAR10C_CORRUPTIONS)
    with evaluation_job("corruptions", settings, outputs=(out, out_csv), **job_args) as job:
        model, run = job.model, job.run
        rows, n = corruption_rows(
            model,
            data,
            corruptions=corruptions,
            severities=settings["severities"],
            batch_size=settings["batch_size"],
            max_images=cap(settings),
            image_size=image_size_setting(settings),
        )
        summary = {**summarize(rows), "n_test": n}
        run.log_metrics(
            {f"corruption/{c}": v for c, v in summary["per_corruption"].items()}
            | {"corruption_mean": summary["mean"]}
        )
        write_csv(out_csv, ("corruption", "severity", "accuracy"), rows)
        write_json(out, summary)
    return summary
