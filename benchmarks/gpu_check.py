"""`make gpu-check`: what to run on the first GPU before the paper's jobs.

Prints the device and versions (torch, CUDA, cuDNN, device name), then, for every pre-training
method and finetuning strategy of the params, epochs of that job's own training code
(`ascl.engine.fit` with the job's `make_step`, memory format and `compile` setting, under bf16
autocast) on synthetic CIFAR-shaped uint8 images at the configured batch (512):

- host-device synchronisations per training step and per epoch (the epoch's own checks), counted
  under `torch.cuda.set_sync_debug_mode("warn")` on CUDA, in the second epoch (the first warms
  up) of two runs with 1 and 2 steps per epoch: per step = their difference;
- the bf16 step time (second epoch, synchronised) and the peak memory of that epoch;
- the projected hours of one job (its epochs x full-scale steps per epoch x step time) and of all
  its jobs in the DAG (seeds, transfer targets), and their sum.

With --dry (automatically when CUDA is not available) the same code runs on the CPU at a tiny
width and batch, and the output says so on every figure's header: a CPU dry run checks the code
path, its times are not GPU estimates. On the CPU the synchronisations are counted by a dispatch
mode that records the ops that would force one on a GPU (`ascl.syncs.SyncCounter`: reading a
value back: item, bool, float, nonzero, boolean-mask indexing; tensors made from host data;
copies between host and device cannot occur there). The job's backend switches
(`cudnn_benchmark`, `tf32`) are applied as the jobs apply them.

    python benchmarks/gpu_check.py [--dry] [--params FILE ...] [--methods a,b]
        [--strategies LSF,LAF] [--steps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ascl import config, finetune, pretrain  # noqa: E402
from ascl.artifacts import build_pretrain_net, cluster_counts  # noqa: E402
from ascl.engine import (  # noqa: E402
    compile_encoder,
    configure_backends,
    fit,
    make_generator,
    place_model,
    recipe,
    resolve_device,
)
from ascl.preflight import TRAIN_SIZES, steps_per_epoch  # noqa: E402
from ascl.syncs import SyncCounter, forces_sync  # noqa: E402, F401 - the one recorder
from ascl.tracking import Run  # noqa: E402

DRY_WIDTH = 8  # >= 8: channels-last on the CPU as at full width (engine.resolve_memory_format)
DRY_BATCH = 8
COUNT_STEPS = (1, 2)  # steps per epoch of the two counting runs
DRY_NOTE = "CPU DRY RUN"


class CudaSyncCounter:
    """Counts the synchronising CUDA calls `torch.cuda.set_sync_debug_mode("warn")` reports
    while active (`count`; `ops` stays empty: the warnings do not name the op)."""

    def __init__(self) -> None:
        self.count = 0
        self.ops: Counter[str] = Counter()
        self._caught = warnings.catch_warnings(record=True)
        self._records: list = []

    def __enter__(self) -> CudaSyncCounter:
        self._records = self._caught.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.set_sync_debug_mode(0)
        self._caught.__exit__(*exc)
        self.count = sum("synchroniz" in str(w.message) for w in self._records)


@dataclass
class Job:
    """One training job kind at the measured size: its model, the `fit` arguments of its
    recipe, and where its hours go (epochs, full-scale batch, training-set sizes of its jobs)."""

    kind: str  # pretrain | finetune
    name: str
    model: torch.nn.Module
    parameters: list
    step: Callable
    epoch_start: Callable[[int], None] | None
    set_train_mode: Callable[[], None] | None
    fit_args: dict
    label_columns: int  # 0: (N,) class labels; K: (N, K) pseudo labels
    epochs: int
    full_batch: int
    train_sizes: list[int]  # one entry per job of this kind in the DAG (seeds included)


@dataclass
class Row:
    kind: str
    name: str
    batch: int
    syncs_per_step: float
    syncs_per_epoch: float
    sync_ops: dict[str, float] = field(default_factory=dict)
    step_s: float = 0.0
    images_per_s: float = 0.0
    peak_mem_gb: float | None = None
    job_h: float = 0.0
    jobs: int = 0
    total_h: float = 0.0


def versions(device: torch.device) -> dict[str, str]:
    """Device and software versions: torch, CUDA, cuDNN, device name, memory, TF32 switches."""
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "",
        "device": "CPU",
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out |= {
            "device": torch.cuda.get_device_name(device),
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": f"{props.total_memory / 2**30:.1f}",
            "cudnn_benchmark": str(torch.backends.cudnn.benchmark),
            "tf32_conv": str(torch.backends.cudnn.allow_tf32),
            "tf32_matmul": str(torch.backends.cuda.matmul.allow_tf32),
        }
    return out


def _labels(n: int, columns: int, device: torch.device) -> torch.Tensor:
    y = torch.arange(n) % 10
    if columns:
        y = torch.stack([y % 2] * columns, 1)  # AdvCL's K pseudo-label columns
    return y.to(device)


def pretrain_job(params: dict, method: str, device: torch.device, batch: int) -> Job:
    settings = config.pretrain_settings(params, method)
    train = settings["train"]
    model = place_model(build_pretrain_net(settings, 10), device, settings["memory_format"])
    compile_encoder(model, settings["compile"])
    step = pretrain.make_step(settings, model)
    pseudo = settings["objective"].get("pseudo_labels")
    seeds = len(params["seeds"]) if method in config.pretrain_methods(params) else 0
    n_train = TRAIN_SIZES.get(params["data"]["source"], 50_000)
    return Job(
        "pretrain",
        method,
        model,
        list(model.parameters()),
        step,
        step.set_epoch,
        None,
        recipe(train) | {"batch_size": batch},
        len(cluster_counts(pseudo["clusters"])) if pseudo else 0,
        train["epochs"],
        train["batch_size"],
        [n_train] * seeds,
    )


def finetune_job(params: dict, strategy: str, device: torch.device, batch: int) -> Job:
    settings = config.finetune_settings(params, strategy)
    encoder = build_pretrain_net(config.pretrain_settings(params, "ascl"), 10).encoder
    linear = settings["params"] == "linear"
    model = finetune.build_classifier(encoder, 10, settings["eval_branch"], linear)
    model = place_model(model, device, settings["memory_format"])
    compile_encoder(model, settings["compile"])

    def set_train_mode() -> None:
        model.train()
        if linear:
            model.encoder.eval()

    sizes = [
        TRAIN_SIZES.get(config.target_dataset(params, target), 50_000)
        for _, s, target in config.finetune_jobs(params)
        if s == strategy
        for _ in params["seeds"]
    ]
    return Job(
        "finetune",
        strategy,
        model,
        [p for p in model.parameters() if p.requires_grad],
        finetune.make_step(settings, model),
        None,
        set_train_mode,
        recipe(settings) | {"batch_size": batch},
        0,
        settings["epochs"],
        settings["batch_size"],
        sizes,
    )


def run_epochs(
    job: Job, steps: int, device: torch.device, *, on_second: Callable[[], None] | None = None
) -> None:
    """Two epochs of `steps` steps each of the job's `fit` (bf16 autocast, no checkpoints) on
    synthetic images (steps x batch, 3, 32, 32) uint8; `on_second` runs before the second."""
    batch = job.fit_args["batch_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (steps * batch, 3, 32, 32), dtype=torch.uint8, generator=g)

    def epoch_start(epoch: int) -> None:
        if job.epoch_start is not None:
            job.epoch_start(epoch)
        if epoch == 1 and on_second is not None:
            on_second()

    with Run("gpu-check", enabled=False) as run:
        fit(
            model=job.model,
            parameters=job.parameters,
            step=job.step,
            x_train=x.to(device),
            y_train=_labels(len(x), job.label_columns, device),
            **(job.fit_args | {"epochs": 2, "precision": "bf16"}),
            generator=make_generator(1, device),
            ckpt_dir=None,
            run=run,
            set_train_mode=job.set_train_mode,
            desc=f"gpu-check {job.kind}/{job.name}",
            epoch_start=epoch_start,
        )


def count_syncs(job: Job, device: torch.device, steps: int) -> tuple[int, Counter[str]]:
    """Synchronisations of the second epoch (`steps` steps and the epoch's end)."""
    counter = CudaSyncCounter() if device.type == "cuda" else SyncCounter()
    entered: list[bool] = []

    def enter() -> None:
        counter.__enter__()
        entered.append(True)

    try:
        run_epochs(job, steps, device, on_second=enter)
    finally:
        if entered:
            counter.__exit__(None, None, None)
    return counter.count, counter.ops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(job: Job, device: torch.device, steps: int) -> Row:
    """A row for one job kind: syncs per step and per epoch, step time, peak memory, hours."""
    (few, few_ops), (more, more_ops) = (count_syncs(job, device, s) for s in COUNT_STEPS)
    extra_steps = COUNT_STEPS[1] - COUNT_STEPS[0]
    per_step = (more - few) / extra_steps
    ops = {k: (more_ops[k] - few_ops[k]) / extra_steps for k in more_ops | few_ops}
    started: list[float] = []

    def start() -> None:
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started.append(time.perf_counter())

    run_epochs(job, steps, device, on_second=start)
    _sync(device)
    step_s = (time.perf_counter() - started[0]) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    hours = [
        job.epochs * steps_per_epoch(n, job.full_batch) * step_s / 3600 for n in job.train_sizes
    ]
    one = job.epochs * steps_per_epoch(max(job.train_sizes, default=50_000), job.full_batch)
    return Row(
        job.kind,
        job.name,
        job.fit_args["batch_size"],
        per_step,
        few - per_step * COUNT_STEPS[0],
        {k: v for k, v in sorted(ops.items()) if v},
        step_s,
        job.fit_args["batch_size"] / step_s,
        peak,
        one * step_s / 3600,
        len(job.train_sizes),
        sum(hours),
    )


def gpu_check(
    params: dict,
    *,
    dry: bool,
    methods: list[str] | None = None,
    strategies: list[str] | None = None,
    steps: int = 10,
) -> dict:
    """Every figure of the check as a dict (see the module docstring)."""
    device = torch.device("cpu") if dry else resolve_device(params["device"])
    dry = device.type != "cuda"
    configure_backends(
        device,
        cudnn_benchmark=params.get("cudnn_benchmark", False),
        tf32=params.get("tf32", False),
    )
    if dry:
        params = config.deep_merge(params, {"device": "cpu", "model": {"width": DRY_WIDTH}})
        steps = min(steps, 2)
    rows = []
    for method in methods or list(params["methods"]):
        full = config.pretrain_settings(params, method)["train"]["batch_size"]
        job = pretrain_job(params, method, device, min(full, DRY_BATCH) if dry else full)
        rows.append(measure(job, device, steps))
    wanted = strategies or sorted({s for _, s, _ in config.finetune_jobs(params)})
    for strategy in wanted:
        full = config.finetune_settings(params, strategy)["batch_size"]
        job = finetune_job(params, strategy, device, min(full, DRY_BATCH) if dry else full)
        rows.append(measure(job, device, steps))
    return {
        "dry": dry,
        "note": (
            f"measured on the CPU at width {DRY_WIDTH}, batch <= {DRY_BATCH}: the figures "
            "check the code path and are not GPU estimates"
            if dry
            else f"measured on {versions(device)['device']} at the configured width and batch"
        ),
        "syncs_counted_by": (
            "a dispatch mode recording sync-forcing ops (read-backs; host-device copies cannot "
            "occur on the CPU)"
            if device.type != "cuda"
            else 'torch.cuda.set_sync_debug_mode("warn")'
        ),
        "versions": versions(device),
        "width": params["model"]["width"],
        "seeds": len(params["seeds"]),
        "rows": [asdict(r) for r in rows],
        "dag_hours": sum(r.total_h for r in rows),
    }


def _num(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def format_report(result: dict) -> str:
    dry = f" [{DRY_NOTE}]" if result["dry"] else ""
    v = result["versions"]
    lines = [
        f"gpu-check{dry}: {result['note']}",
        "device: "
        + v["device"]
        + (
            f" (compute capability {v['capability']}, {v['memory_gib']} GiB)"
            if "capability" in v
            else ""
        ),
        f"versions: torch {v['torch']}, CUDA {v['cuda']}, cuDNN {v['cudnn']}, Python {v['python']}",
    ]
    if "cudnn_benchmark" in v:
        lines.append(
            f"switches: cudnn.benchmark {v['cudnn_benchmark']}, TF32 convolutions "
            f"{v['tf32_conv']}, TF32 matmul {v['tf32_matmul']}"
        )
    lines += [
        f"syncs counted by {result['syncs_counted_by']}",
        "",
        f"| kind | job | batch | syncs/step | syncs/epoch | bf16 step (s){dry} | images/s | "
        f"peak mem (GB) | one job (h){dry} | jobs | all jobs (h){dry} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['kind']} | {r['name']} | {r['batch']} | {r['syncs_per_step']:g} | "
            f"{r['syncs_per_epoch']:g} | {r['step_s']:.3f} | {r['images_per_s']:.1f} | "
            f"{_num(r['peak_mem_gb'], 2)} | {r['job_h']:.2f} | {r['jobs']} | {r['total_h']:.1f} |"
        )
    ops = {f"{r['kind']}/{r['name']}": r["sync_ops"] for r in result["rows"] if r["sync_ops"]}
    if ops:
        lines += ["", "sync-forcing ops per step:"]
        lines += [f"  {k}: {', '.join(f'{o} {n:g}' for o, n in v.items())}" for k, v in ops.items()]
    lines += [
        "",
        f"DAG ({result['seeds']} seed(s)){dry}: {result['dag_hours']:.1f} device-hours for the "
        "training jobs above (the evaluations are not timed here; `make preflight` times PGD)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry", action="store_true", help="CPU dry run (automatic without CUDA)")
    ap.add_argument("--params", nargs="+", default=[str(ROOT / "params.yaml")])
    ap.add_argument("--methods", help="comma-separated pre-training methods (default: all)")
    ap.add_argument("--strategies", help="comma-separated finetuning strategies (default: DAG's)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (CPU dry run: <= 2)")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    os.environ.setdefault("ASCL_PROGRESS", "0")  # no progress bars between the report's lines
    params = config.load_params(*args.params)
    result = gpu_check(
        params,
        dry=args.dry or not torch.cuda.is_available(),
        methods=args.methods.split(",") if args.methods else None,
        strategies=args.strategies.split(",") if args.strategies else None,
        steps=args.steps,
    )
    sys.stdout.write(format_report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
