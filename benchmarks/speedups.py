"""Candidate speed-ups of our CPU training step, each measured in isolation without editing src/.

Usage: python benchmarks/speedups.py [--batch 64] [--width 16] [--steps 2] [--rounds 2]
                                     [--compile] [--env]

In-process candidates (one model per candidate, all from the same initial weights, run in
interleaved rounds whose order rotates, so that a change in machine load hits every candidate
alike):

* baseline          - ``ascl.pretrain.make_step`` as it is;
* inplace_relu      - ``F.relu`` replaced by ``torch.relu_`` while the step runs;
* channels_last     - ``model.to(memory_format=torch.channels_last)`` (the first convolution then
                      returns channels-last activations, every later op follows);
* frozen_params     - parameters set to ``requires_grad=False`` while ``pgd`` runs (autograd then
                      records no parameter edges in the attack graphs);
* flush_denormal    - ``torch.set_flush_denormal(True)``;
* channels_last+frozen - both;
* channels_last+frozen+inplace_relu - all three.

``--bf16`` adds ``torch.autocast("cpu", torch.bfloat16)`` around the loss terms (NOT
math-preserving, for reference); ``--compile`` adds ``torch.compile`` of the encoder (its
compile time shows in the warm-up line); ``--env`` compares ``OMP_WAIT_POLICY`` settings in
separate processes; ``--vs-reference`` instead times the reference, ours and ours with a
channels-last model in fresh processes.

For every candidate the script also reports how far its loss terms are from the baseline's on
one fixed batch with the same weights and random draws (PGD-5): math-preserving candidates differ
only by floating-point rounding.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import harness  # noqa: E402
from bench import table  # noqa: E402


@contextmanager
def frozen_during_attacks() -> Iterator[None]:
    """Patch the `pgd` used by ascl.objectives so that parameters are frozen while it runs."""
    import ascl.objectives as objectives

    original = objectives.pgd

    def pgd_frozen(loss_fn, x, **kwargs):
        model = kwargs.get("model")
        params = [p for p in model.parameters() if p.requires_grad] if model is not None else []
        for p in params:
            p.requires_grad_(False)
        try:
            return original(loss_fn, x, **kwargs)
        finally:
            for p in params:
                p.requires_grad_(True)

    objectives.pgd = pgd_frozen
    try:
        yield
    finally:
        objectives.pgd = original


@contextmanager
def flush_denormal() -> Iterator[None]:
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextmanager
def inplace_relu() -> Iterator[None]:
    """F.relu -> torch.relu_ (every relu input in ascl.models is a fresh intermediate)."""
    import torch.nn.functional as F

    original = F.relu

    def relu_(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return torch.relu_(x)

    F.relu = relu_
    try:
        yield
    finally:
        F.relu = original


@dataclass
class Candidate:
    name: str
    prepare: Callable[[nn.Module], nn.Module] = lambda m: m
    around_run: Callable[[], object] = nullcontext
    around_terms: Callable[[], object] = nullcontext
    math_preserving: bool = True
    times: list[float] = field(default_factory=list)


def to_channels_last(model: nn.Module) -> nn.Module:
    return model.to(memory_format=torch.channels_last)


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def compiled_encoder(model: nn.Module) -> nn.Module:
    model.encoder = torch.compile(model.encoder)
    return model


@contextmanager
def _both(first, second) -> Iterator[None]:
    with first, second:
        yield


def candidates(with_compile: bool, with_bf16: bool) -> list[Candidate]:
    out = [
        Candidate("baseline"),
        Candidate("channels_last", prepare=to_channels_last),
        Candidate("frozen_params", around_run=frozen_during_attacks),
        Candidate("flush_denormal", around_run=flush_denormal),
        Candidate("inplace_relu", around_run=inplace_relu),
        Candidate(
            "channels_last+frozen", prepare=to_channels_last, around_run=frozen_during_attacks
        ),
        Candidate(
            "channels_last+frozen+inplace_relu",
            prepare=to_channels_last,
            around_run=lambda: _both(frozen_during_attacks(), inplace_relu()),
        ),
    ]
    if with_bf16:
        out.append(Candidate("bf16_autocast", around_terms=bf16_autocast, math_preserving=False))
    if with_compile:
        out.append(Candidate("compile(encoder)", prepare=compiled_encoder))
    return out


class Runner:
    """One candidate's model, optimiser and step function."""

    def __init__(self, cand: Candidate, base: nn.Module, settings: dict) -> None:
        from ascl.pretrain import make_step

        self.cand = cand
        self.model = cand.prepare(copy.deepcopy(base))
        self.model.train()
        self.optimizer = harness.sgd(self.model, settings)
        self.step = make_step(settings, self.model)

    def run(self, x_u8: torch.Tensor, y: torch.Tensor, batches: list, seed: int) -> list[float]:
        from ascl.tensors import to_float

        generator = torch.Generator().manual_seed(seed)
        times = []
        with self.cand.around_run():
            for idx in batches:
                t0 = time.perf_counter()
                x = to_float(x_u8[idx])
                with self.cand.around_terms():
                    terms = self.step(x, y[idx], generator)
                self.last = {k: float(v.detach()) for k, v in terms.items()}
                self.optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                self.optimizer.step()
                times.append(time.perf_counter() - t0)
        return times

    def terms(
        self, base: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int
    ) -> dict[str, float]:
        """Loss terms on one batch from the initial weights with fixed random draws."""
        from ascl.augment import AugmentConfig, simclr_view, weak_view
        from ascl.objectives import ASCLObjective, AttackConfig, ascl_terms

        model = self.cand.prepare(copy.deepcopy(base))
        model.train()
        aug = AugmentConfig()
        g = torch.Generator().manual_seed(3)
        views = weak_view(x, aug, g), simclr_view(x, aug, g), simclr_view(x, aug, g)
        with self.cand.around_run(), self.cand.around_terms():
            attack = AttackConfig(8 / 255, 2 / 255, steps, steps > 0)
            t = ascl_terms(model, *views, y, ASCLObjective(), attack, g)
        return {k: float(v.detach()) for k, v in t.items()}


def in_process(args: argparse.Namespace) -> list[list]:
    from ascl.engine import epoch_batches
    from ascl.tensors import to_float

    settings = harness.pretrain_settings(args.width)
    base = harness.build_model(settings)
    n = args.batch * (args.steps + 1)
    x_u8, y = harness.synthetic_images(n)
    batches = epoch_batches(n, args.batch, torch.Generator().manual_seed(0))
    cands = candidates(args.compile, args.bf16)
    runners = [Runner(c, base, settings) for c in cands]
    compile_s: dict[str, float] = {}
    for r in runners:
        t0 = time.perf_counter()
        r.run(x_u8, y, batches[:1], seed=1)
        compile_s[r.cand.name] = time.perf_counter() - t0
        print(f"  warm-up {r.cand.name}: {compile_s[r.cand.name]:.1f} s", flush=True)
    for rnd in range(args.rounds):
        shift = rnd % len(runners)
        for r in runners[shift:] + runners[:shift]:
            r.cand.times += r.run(x_u8, y, batches[1:], seed=10 + rnd)
        print(
            f"  round {rnd + 1}: "
            + ", ".join(f"{r.cand.name} {statistics.median(r.cand.times):.2f} s" for r in runners),
            flush=True,
        )
    x_check, y_check = to_float(x_u8[: args.batch]), y[: args.batch]
    base_terms = {k: runners[0].terms(base, x_check, y_check, k) for k in (0, 5)}
    base_med = statistics.median(runners[0].cand.times)
    base_min = min(runners[0].cand.times)
    rows = []
    for r in runners:
        rel = []
        for steps, ref in base_terms.items():
            terms = r.terms(base, x_check, y_check, steps)
            rel.append(max(abs(terms[k] - ref[k]) / abs(ref[k]) for k in ref))
        med = statistics.median(r.cand.times)
        rows.append(
            [
                r.cand.name,
                args.batch / med,
                base_med / med,
                base_min / min(r.cand.times),
                rel[0],
                rel[1],
                "yes" if r.cand.math_preserving else "NO",
            ]
        )
    return rows


def env_compare(args: argparse.Namespace) -> list[list]:
    """Baseline throughput in fresh processes under different OMP_WAIT_POLICY values."""
    spec = {
        "kind": "train",
        "variant": "ours",
        "device": "cpu",
        "batch": args.batch,
        "width": args.width,
        "warmup": 1,
        "steps": args.steps,
    }
    results: dict[str, list[float]] = {"default": [], "PASSIVE": [], "ACTIVE": []}
    for _ in range(args.rounds):
        for policy in results:
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            proc = subprocess.run(
                [sys.executable, str(BENCH_DIR / "harness.py"), json.dumps(spec)],
                capture_output=True,
                text=True,
                env=env,
            )
            line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
            if line:
                results[policy] += json.loads(line[-1][7:])["step_s"]
    base = statistics.median(results["default"])
    return [
        [f"OMP_WAIT_POLICY={k}", args.batch / statistics.median(v), base / statistics.median(v)]
        for k, v in results.items()
        if v
    ]


def versus_reference(args: argparse.Namespace) -> list[list]:
    """Reference, ours and ours with a channels-last model, in fresh processes, interleaved."""
    spec = {
        "kind": "train",
        "device": "cpu",
        "batch": args.batch,
        "width": args.width,
        "warmup": 1,
        "steps": args.steps,
    }
    variants = ("reference", "ours", "ours_channels_last")
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            proc = subprocess.run(
                [
                    sys.executable,
                    str(BENCH_DIR / "harness.py"),
                    json.dumps(spec | {"variant": variant}),
                ],
                capture_output=True,
                text=True,
            )
            line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
            if line:
                times[variant] += json.loads(line[-1][7:])["step_s"]
    ref = statistics.median(times["reference"])
    return [
        [v, args.batch / statistics.median(t), ref / statistics.median(t)]
        for v, t in times.items()
        if t
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="timed steps per candidate and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also try torch.compile(encoder)")
    p.add_argument("--bf16", action="store_true", help="also try CPU bf16 autocast (inexact)")
    p.add_argument(
        "--vs-reference",
        action="store_true",
        help="only compare reference / ours / ours + channels_last in fresh processes",
    )
    p.add_argument("--env", action="store_true", help="also compare OMP_WAIT_POLICY values")
    args = p.parse_args(argv)
    print(
        f"candidates on our step: batch {args.batch}, ResNet-18 width {args.width}, PGD-5, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.vs_reference:
        rows = versus_reference(args)
        print(table(["variant (fresh processes)", "images/s", "vs reference"], rows))
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        return 0
    rows = in_process(args)
    print()
    headers = ["candidate", "images/s", "gain (median)", "gain (best)"]
    print(table([*headers, "rel diff (no attack)", "rel diff (PGD-5)", "exact math"], rows))
    print(
        "gain = baseline step time / candidate step time (median or best step); rel diff = "
        "largest relative difference of a loss term from the baseline's (same weights, batch and "
        "random draws), without attack (x+δ = x) and with PGD-5, where sign(∇δ) amplifies "
        "rounding differences."
    )
    if args.env:
        print()
        print(table(["environment (fresh processes)", "images/s", "gain"], env_compare(args)))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
