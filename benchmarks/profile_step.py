"""Where our ASCL training step spends its time on CPU.

Usage: python benchmarks/profile_step.py [--batch 64] [--width 16] [--steps 2]

Part 1 times the phases of the step (augmentation, the clean projection, each PGD attack, the
final forwards, backward, SGD) with wall-clock timers around the functions that
``ascl.pretrain.make_step`` calls. Part 2 runs one step under ``torch.profiler`` and groups the
operators into kernel families (convolution forward/backward, batch norm forward/backward,
ReLU, element-wise, matrix products, ...).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from bench import table  # noqa: E402

FAMILIES = {
    "conv forward": ("mkldnn_convolution", "_convolution", "conv2d", "convolution"),
    "conv backward": ("convolution_backward",),
    "batch norm forward": ("native_batch_norm", "_batch_norm_impl_index", "batch_norm"),
    "batch norm backward": ("native_batch_norm_backward",),
    "relu fwd/bwd": ("clamp_min", "relu", "threshold_backward"),
    "matmul / linear": ("mm", "addmm", "bmm", "matmul", "linear"),
}


def family(name: str) -> str:
    op = name.removeprefix("aten::")
    for fam, ops in FAMILIES.items():
        if op in ops:
            return fam
    return "other (element-wise, copies, reductions, augmentation)"


class PhaseTimer:
    """Accumulates wall-clock seconds per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0

        return timed

    @contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - t0


def _model(settings: dict, channels_last: bool):
    model = harness.build_model(settings)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    return model


def phases(batch: int, width: int, steps: int, channels_last: bool = False) -> list[list]:
    """Per-phase seconds of `steps` training steps (after one warm-up step)."""
    import ascl.objectives as objectives
    import ascl.pretrain as pretrain
    from ascl.tensors import to_float

    settings = harness.pretrain_settings(width)
    model = _model(settings, channels_last)
    optimizer = harness.sgd(model, settings)
    x_all, y_all = harness.synthetic_images(batch)
    x = to_float(x_all)
    generator = torch.Generator().manual_seed(0)
    timer = PhaseTimer()
    originals = {
        "weak_view": pretrain.weak_view,
        "simclr_view": pretrain.simclr_view,
        "ascl_terms": pretrain.ascl_terms,
        "pgd": objectives.pgd,
        "project": model.project,
    }
    attack_names = iter(())

    def pgd_named(*args, **kwargs):
        return timer.wrap(next(attack_names), originals["pgd"])(*args, **kwargs)

    def terms(*args, **kwargs):
        with timer.phase("loss terms (total)"):
            return originals["ascl_terms"](*args, **kwargs)

    pretrain.weak_view = timer.wrap("augmentation", originals["weak_view"])
    pretrain.simclr_view = timer.wrap("augmentation", originals["simclr_view"])
    pretrain.ascl_terms = terms
    objectives.pgd = pgd_named
    try:
        step = pretrain.make_step(settings, model)
        for i in range(steps + 1):
            if i == 1:
                timer.seconds.clear()
            attack_names = iter(("PGD-5 on CE (AT)", "PGD-5 on NT-Xent (CL)", "PGD-5 on L_ASCL"))
            with timer.phase("step (total)"):
                out = step(x, y_all, generator)
                with timer.phase("backward"):
                    optimizer.zero_grad(set_to_none=True)
                    out["loss"].backward()
                with timer.phase("SGD update"):
                    optimizer.step()
    finally:
        pretrain.weak_view = originals["weak_view"]
        pretrain.simclr_view = originals["simclr_view"]
        pretrain.ascl_terms = originals["ascl_terms"]
        objectives.pgd = originals["pgd"]
    s = {k: v / steps for k, v in timer.seconds.items()}
    attacks = sum(v for k, v in s.items() if k.startswith("PGD"))
    s["clean projection + final forwards"] = s["loss terms (total)"] - attacks
    total = s["step (total)"]
    order = [
        "augmentation",
        "PGD-5 on CE (AT)",
        "PGD-5 on NT-Xent (CL)",
        "PGD-5 on L_ASCL",
        "clean projection + final forwards",
        "backward",
        "SGD update",
        "step (total)",
    ]
    return [[k, s[k], 100 * s[k] / total] for k in order]


def operator_families(
    batch: int, width: int, channels_last: bool = False
) -> tuple[list[list], str]:
    from torch.profiler import ProfilerActivity, profile

    from ascl.pretrain import make_step
    from ascl.tensors import to_float

    settings = harness.pretrain_settings(width)
    model = _model(settings, channels_last)
    step = make_step(settings, model)
    x_all, y_all = harness.synthetic_images(batch)
    x = to_float(x_all)
    generator = torch.Generator().manual_seed(0)
    step(x, y_all, generator)["loss"].backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.zero_grad(set_to_none=True)
        step(x, y_all, generator)["loss"].backward()
    fam: dict[str, float] = defaultdict(float)
    events = prof.key_averages()
    for e in events:
        fam[family(e.key)] += e.self_cpu_time_total / 1e6
    total = sum(fam.values())
    rows = [[k, v, 100 * v / total] for k, v in sorted(fam.items(), key=lambda kv: -kv[1])]
    top = events.table(sort_by="self_cpu_time_total", row_limit=12)
    return rows, top


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", action="store_true", help="also print the top operators")
    p.add_argument("--channels-last", action="store_true", help="profile a channels-last model")
    args = p.parse_args(argv)
    print(
        f"our step{' (channels_last model)' if args.channels_last else ''}, batch {args.batch}, "
        f"ResNet-18 width {args.width}, PGD-5, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("\nPhases (wall clock, mean of the timed steps)")
    rows = phases(args.batch, args.width, args.steps, args.channels_last)
    print(table(["phase", "seconds", "% of step"], rows))
    rows, top = operator_families(args.batch, args.width, args.channels_last)
    print("\nOperator families (torch.profiler, self CPU time of one step)")
    print(table(["family", "seconds", "%"], rows))
    if args.top:
        print(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
