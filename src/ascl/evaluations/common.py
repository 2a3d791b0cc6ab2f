"""Plumbing shared by the evaluation jobs: the model, the test subset, the MLflow run, outputs.

Every job loads a finetuned classifier (`ascl.finetune.load_classifier`) in eval mode with its
parameters frozen (attacks differentiate with respect to the input only), placed on CUDA as its
training placed it (`ascl.engine.place_model`, fp32 weights), takes the test images
through the same seeded cap as the PGD evaluation (`ascl.tensors.subset`, seed 0, so all jobs
and models see the same images), runs inside one MLflow child run of the model's run, and
writes its outputs atomically (temporary file + rename) only once everything is computed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ascl import checkpoint
from ascl.engine import place_model, setup_device
from ascl.errors import FormatError
from ascl.tensors import subset
from ascl.tracking import Run, params_hash


def eval_memory_format(spec: str, device: torch.device | str) -> str:
    """The memory format (`engine.MEMORY_FORMATS`) an evaluation places its model in: on CUDA
    `spec`, the one of the model's training; on the CPU "contiguous" (NCHW), so CPU evaluation
    outputs stay byte-identical to those of every earlier run (channels-last convolutions round
    differently)."""
    return spec if torch.device(device).type == "cuda" else "contiguous"


def load_model(path: str | Path, device: torch.device, memory_format: str | None = None):
    """(Classifier in eval mode on `device` with frozen parameters, checkpoint state).

    Placed by `engine.place_model` in `eval_memory_format` of `memory_format`, or of the memory
    format of its finetuning settings when None; the weights stay fp32 (the attacks run in
    fp32, no autocast)."""
    from ascl.artifacts import load_classifier

    model, state = load_classifier(path, map_location=device)
    if memory_format is None:
        memory_format = (state.get("settings") or {}).get("memory_format", "auto")
    model = place_model(model, device, eval_memory_format(memory_format, device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, state


def device_of(settings: dict) -> torch.device:
    """The settings' device, its backend switches applied (`engine.setup_device`)."""
    return setup_device(settings)


def cap(settings: dict, n: int | None = None) -> int | None:
    """The number of test images a job uses: min(data.max_test, n), None = all."""
    caps = [c for c in (settings.get("data", {}).get("max_test"), n) if c is not None]
    return min(caps) if caps else None


def eval_split(
    data: str | Path, settings: dict, n: int | None = None, device: torch.device | None = None
) -> tuple[Tensor, Tensor, int]:
    """Test images x (N, 3, H, W) uint8 and labels y (N,) of the data set `data`, capped by
    `cap(settings, n)` with the shared seed-0 subset; also the number of classes."""
    from ascl.data import image_size_setting, load_dataset

    ds = load_dataset(data, image_size_setting(settings))
    x, y = subset(ds.x_test, ds.y_test, cap(settings, n), seed=0)
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y, ds.num_classes


@contextmanager
def evaluation_run(
    kind: str,
    settings: dict,
    state: dict,
    *,
    seed: int,
    parent_run_id: str | None,
    tags: dict[str, str] | None,
    track: bool,
) -> Iterator[Run]:
    """The MLflow run of one evaluation, a child of `parent_run_id` or of the model's run."""
    name = f"evaluate/{kind}/seed{seed}"
    all_tags = {
        "stage": "evaluate",
        "evaluation": kind,
        "seed": str(seed),
        "params_hash": params_hash(settings),
        **(tags or {}),
    }
    parent = parent_run_id or state.get("run_id") or None
    with Run(name, params=settings, tags=all_tags, parent_run_id=parent, enabled=track) as run:
        yield run


@dataclass
class EvaluationJob:
    """What one evaluation job works on: the classifier (eval mode, frozen parameters), its
    checkpoint state, the test images x (N, 3, H, W) uint8 and labels y (N,) on `device` (None
    for a job without a data set), the number of classes, the job's seed and its MLflow run."""

    model: nn.Module
    state: dict
    x: Tensor | None
    y: Tensor | None
    num_classes: int | None
    device: torch.device
    seed: int
    run: Run


@contextmanager
def evaluation_job(
    kind: str,
    settings: dict,
    *,
    model_path: str | Path,
    seed: int,
    data: str | Path | None = None,
    n_images: int | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    track: bool = True,
    outputs: Sequence[str | Path] = (),
) -> Iterator[EvaluationJob]:
    """The scaffold of every evaluation job: load the model on the settings' device, take the
    test split of `data` (capped by `cap(settings, n_images)`, shared seed-0 subset) and open the
    MLflow child run of the model's run (or of `parent_run_id`) for `kind`; when the job's body
    succeeds, its `outputs` files are logged to that run as artifacts."""
    device = device_of(settings)
    model, state = load_model(model_path, device)
    x = y = num_classes = None
    if data is not None:
        x, y, num_classes = eval_split(data, settings, n_images, device)
    with evaluation_run(
        kind, settings, state, seed=seed, parent_run_id=parent_run_id, tags=tags, track=track
    ) as run:
        yield EvaluationJob(model, state, x, y, num_classes, device, seed, run)
        for path in outputs:
            run.log_artifact(path)


def write_json(path: str | Path, obj: dict) -> None:
    checkpoint.atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    checkpoint.atomic_write_text(path, csv_text(header, rows))


def read_csv(path: str | Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV written by `write_csv`; FormatError (one line) if a column is missing."""

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise FormatError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise FormatError(f"{path}: no data rows")
    return rows


def safe_metric_name(name: str) -> str:
    """An MLflow-safe metric name (alphanumerics, _ - . / and spaces kept)."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)


def grid(radius: float, points: int) -> list[float]:
    """`points` evenly spaced values in [-radius, radius] (0 included when points is odd)."""
    if points == 1:
        return [0.0]
    return [-radius + 2 * radius * i / (points - 1) for i in range(points)]
