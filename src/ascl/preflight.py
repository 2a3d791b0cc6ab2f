"""Preflight: will the configured full-scale jobs run on this machine, how fast, and how long the
whole DAG takes, learned in a couple of minutes before spending GPU-hours.

For every pre-training method, every finetuning strategy and the PGD evaluation that the params'
tables need, a few training (or attack) steps run through the pipeline's own code (`make_step`
of the job, `ascl.metrics.robust_accuracy`) on synthetic images at the configured batch size and
width; the table reports the step time, images/s, peak memory (GPU memory on CUDA, the process's
peak RSS elsewhere), the model FLOP utilisation on a GPU, and the projected wall time of one job
and of all its jobs (epochs x steps per epoch x step time, times the number of jobs and seeds).
On a CPU the same code runs at a reduced batch and width (`--cpu-batch`, `--cpu-width`); the
projection then scales the measured step time to the configured size by the FLOP ratio and says
so. AutoAttack and the figure evaluations are not timed (their cost is listed as not measured).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass

import torch

from ascl import config
from ascl.attacks import pixel_units

# Training-set size of each data set (the projection's steps per epoch); the offline stand-ins
# hold their own sizes in their files, but a preflight is about the full-scale sets.
TRAIN_SIZES = {
    "cifar10": 50_000,
    "cifar100": 50_000,
    "stl10": 5_000,
    "digits10": 1_438,
    "digits10-shift": 1_438,
    "digits20": 1_438,
}
TEST_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "stl10": 8_000, "digits10": 359}
# Dense peak (TFLOP/s) of common GPUs per compute dtype, for MFU (the dtype the job's steps run
# in: bf16 tensor cores under autocast, plain fp32 otherwise); others: no MFU.
PEAK_TFLOPS = {
    "bf16": {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0},
    "fp32": {"H200": 67.0, "H100": 67.0, "A100": 19.5, "L40S": 91.6, "A10": 31.2},
}


@dataclass
class Row:
    kind: str
    name: str
    jobs: int
    step_s: float
    images_per_s: float
    peak_mem_gb: float
    mfu: float | None
    job_h: float
    total_h: float


def _reset_peak_memory(device: torch.device) -> None:
    """Start a row's peak-memory count (CUDA; a CPU process's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps of one epoch as `engine.epoch_batches` makes them: full batches only
    (the last partial one is dropped), one batch when the set is smaller than a batch."""
    return max(1, n_train // batch_size)


def _time_steps(step, params, batch, n_steps, device, bf16=False) -> tuple[float, float]:
    """(seconds per optimiser step, FLOPs per step) of `step` on a synthetic batch, with the
    step under bf16 autocast exactly where the job's `fit` puts it (`bf16`)."""
    from contextlib import nullcontext

    from torch.utils.flop_counter import FlopCounterMode

    from ascl.engine import make_generator

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=g).to(device)
    y = batch_labels(batch, device)
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def one() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            terms = step(x, y, make_generator(1, device))
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()

    one()  # warm-up (allocations, kernel selection)
    flops = 0.0
    if device.type == "cuda":
        with FlopCounterMode(display=False) as counter:
            one()
        flops = float(counter.get_total_flops())
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / n_steps, flops


def batch_labels(batch: int, device: torch.device) -> torch.Tensor:
    return (torch.arange(batch) % 10).to(device)


def _row(kind, name, n_jobs, seconds, batch, flops, device, job_h, bf16=False) -> Row:
    """A table row from one kind's measured step time and projected hours of one job."""
    return Row(
        kind,
        name,
        n_jobs,
        seconds,
        batch / seconds,
        _peak_memory_gb(device),
        _mfu(flops, seconds, device, "bf16" if bf16 else "fp32"),
        job_h,
        job_h * n_jobs,
    )


def _mfu(flops: float, step_s: float, device: torch.device, dtype: str) -> float | None:
    if device.type != "cuda" or flops <= 0:
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_TFLOPS[dtype].items() if k in name), None)
    return None if peak is None else flops / step_s / (peak * 1e12)


def preflight(
    params: dict,
    *,
    n_steps: int = 2,
    cpu_batch: int = 16,
    cpu_width: int = 8,
    methods: list[str] | None = None,
) -> tuple[list[Row], str]:
    """Time every job kind of `params` on this machine; returns the rows and a note on how the
    numbers were obtained."""
    from ascl import finetune, pretrain
    from ascl.artifacts import build_pretrain_net, cluster_counts
    from ascl.engine import place_model, resolve_precision, setup_device
    from ascl.metrics import robust_accuracy
    from ascl.models import Classifier

    device = setup_device({"device": params["device"], **config.backend_switches(params)})
    seeds = len(params["seeds"])
    full_batch = params["pretrain"]["batch_size"]
    full_width = params["model"]["width"]
    reduced = device.type != "cuda"
    if reduced:
        params = config.deep_merge(params, {"model": {"width": min(cpu_width, full_width)}})
    width = params["model"]["width"]

    # FLOPs grow with batch x width^2 (convolutions): the factor from the measured to the
    # configured size of a step.
    def scale(batch: int) -> float:
        return (full_width / width) ** 2 * (batch / min(cpu_batch, batch)) if reduced else 1.0

    source = params["data"]["source"]
    n_train = TRAIN_SIZES.get(source, 50_000)
    rows: list[Row] = []
    wanted = methods or config.pretrain_methods(params)
    for method in wanted:
        settings = config.pretrain_settings(params, method)
        train = settings["train"]
        batch = min(cpu_batch, train["batch_size"]) if reduced else train["batch_size"]
        model = place_model(
            build_pretrain_net(settings, 10), device, settings.get("memory_format", "auto")
        )
        model.train()
        step = pretrain.make_step(settings, model)
        if settings["objective"].get("pseudo_labels"):
            k = len(cluster_counts(settings["objective"]["pseudo_labels"]["clusters"]))

            def step(x, y, g, _inner=step, _k=k):
                return _inner(x, torch.stack([y % 2] * _k, 1), g)

        bf16 = resolve_precision(train.get("precision", "auto"), device)
        _reset_peak_memory(device)
        seconds, flops = _time_steps(step, list(model.parameters()), batch, n_steps, device, bf16)
        full_step = seconds * scale(train["batch_size"])
        job_h = train["epochs"] * steps_per_epoch(n_train, train["batch_size"]) * full_step / 3600
        rows.append(_row("pretrain", method, seeds, seconds, batch, flops, device, job_h, bf16))
    jobs = config.finetune_jobs(params)
    for strategy in sorted({s for _, s, _ in jobs}):
        settings = config.finetune_settings(params, strategy)
        n_jobs = sum(1 for _, s, _ in jobs if s == strategy) * seeds
        encoder = build_pretrain_net(config.pretrain_settings(params, "ascl"), 10).encoder
        linear = settings["params"] == "linear"
        model = finetune.build_classifier(encoder, 10, params["model"]["eval_branch"], linear)
        model = place_model(model, device, settings.get("memory_format", "auto"))
        model.train()
        if linear:
            model.encoder.eval()
        batch = min(cpu_batch, settings["batch_size"]) if reduced else settings["batch_size"]
        trainable = [p for p in model.parameters() if p.requires_grad]
        bf16 = resolve_precision(settings.get("precision", "auto"), device)
        _reset_peak_memory(device)
        seconds, flops = _time_steps(
            finetune.make_step(settings, model), trainable, batch, n_steps, device, bf16
        )
        full_step = seconds * scale(settings["batch_size"])
        epoch_steps = steps_per_epoch(n_train, settings["batch_size"])
        job_h = settings["epochs"] * epoch_steps * full_step / 3600
        rows.append(_row("finetune", strategy, n_jobs, seconds, batch, flops, device, job_h, bf16))
    ev = config.evaluate_settings(params)
    encoder = build_pretrain_net(config.pretrain_settings(params, "ascl"), 10).encoder
    model = Classifier(encoder, 10, params["model"]["eval_branch"])
    model = place_model(model, device, "auto").eval()
    batch = min(cpu_batch, ev["batch_size"]) if reduced else ev["batch_size"]
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8).to(device)  # as data sets
    y = batch_labels(batch, device)
    pgd = ev["pgd"]
    _reset_peak_memory(device)  # evaluation attacks run in fp32, as the jobs do
    t0 = time.perf_counter()
    for _ in range(n_steps):
        robust_accuracy(
            model,
            x,
            y,
            eps=pixel_units(pgd["eps"][0]),
            alpha=pixel_units(pgd["alpha"]),
            steps=pgd["steps"],
            random_start=pgd["random_start"],
            batch_size=batch,
        )
    seconds = (time.perf_counter() - t0) / n_steps
    n_test = TEST_SIZES.get(source, 10_000)
    full_batch_s = seconds * scale(ev["batch_size"])
    job_h = len(pgd["eps"]) * math.ceil(n_test / ev["batch_size"]) * full_batch_s / 3600
    n_jobs = len(jobs) * seeds
    rows.append(_row("evaluate", f"PGD-{pgd['steps']}", n_jobs, seconds, batch, 0.0, device, job_h))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    if reduced:
        note = (
            f"measured on {name} at a reduced size (batch <= {cpu_batch}, width {width}); "
            f"projections scale the step time to the configured size (batch {full_batch}, "
            f"width {full_width}) by the FLOP ratio: an extrapolation, not a measurement"
        )
    else:
        note = f"measured on {name} at the configured size (batch {full_batch}, width {width})"
    return rows, note


def format_table(rows: list[Row], note: str, seeds: int) -> str:
    head = (
        "| kind | job | jobs | step (s) | images/s | peak mem (GB) | MFU | one job (h) "
        "| all jobs (h) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r.kind} | {r.name} | {r.jobs} | {r.step_s:.3f} | {r.images_per_s:.1f} | "
        f"{r.peak_mem_gb:.2f} | {'' if r.mfu is None else f'{100 * r.mfu:.1f} %'} | "
        f"{r.job_h:.2f} | {r.total_h:.1f} |\n"
        for r in rows
    )
    total = sum(r.total_h for r in rows)
    return (
        head
        + body
        + f"\nWhole DAG ({seeds} seed(s)): {total:.1f} device-hours for the timed kinds "
        "(AutoAttack, black-box, corruptions and the figure evaluations are not timed).\n"
        + f"{note}.\n"
    )


def main(params: dict, *, n_steps: int, cpu_batch: int, cpu_width: int) -> None:
    t0 = time.perf_counter()
    rows, note = preflight(params, n_steps=n_steps, cpu_batch=cpu_batch, cpu_width=cpu_width)
    sys.stdout.write(format_table(rows, note, len(params["seeds"])))
    sys.stdout.write(f"preflight took {time.perf_counter() - t0:.0f} s\n")
