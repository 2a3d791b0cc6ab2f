"""Benchmark suite: training-step throughput (ours vs the peer-style reference), peak memory,
evaluation throughput (PGD-20, AutoAttack), workflow overhead and, where CUDA is available, the
GPU training step.

Usage: python benchmarks/bench.py [--quick] [--json PATH] [options]

Every figure comes from a worker process of ``harness.py`` (one per measurement, run one after
another), so peak memories never mix and a crash in one section does not end the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
HARNESS = BENCH_DIR / "harness.py"
MIB = 1024 * 1024
GOALS = {"ratio_cpu": 1.5, "snakemake_dry_run_s": 3.0, "cli_help_s": 2.0}
PAPER_TEST_IMAGES = 10_000  # CIFAR-10 test set: PGD-20 evaluation of one model at one eps
# Dense (no sparsity) peak tensor-core TFLOP/s from NVIDIA's datasheets, for model FLOPs
# utilisation: (bf16, tf32). fp32 convolutions run as TF32 (torch.backends.cudnn.allow_tf32 is
# on by default). First match of the device name wins; others need --gpu-peak-tflops.
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", (756.0, 378.0)),
    ("H100 NVL", (835.0, 418.0)),
    ("H100", (989.4, 494.7)),
    ("H200 NVL", (835.0, 418.0)),
    ("H200", (989.4, 494.7)),
    ("A100", (312.0, 156.0)),
)
OMP_POLICY = {"value": "PASSIVE"}
LOSS_TOLERANCE = 1e-5
GRAD_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# Helpers


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Aligned plain-text table (first column left-aligned, the others right-aligned)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        parts = [
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        if value == 0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.3f}"
    return str(value)


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def run_worker(spec: dict, timeout: float) -> dict[str, Any]:
    """Run one harness worker; returns its result or {"error": ...}."""
    cmd = [sys.executable, str(HARNESS), json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if OMP_POLICY["value"] != "inherit":
        env["OMP_WAIT_POLICY"] = OMP_POLICY["value"]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def timed_command(cmd: list[str], repeats: int, timeout: float = 120) -> dict[str, Any]:
    """Median wall time of `repeats` runs of a command in the repository root."""
    times, rc, tail = [], 0, ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
            )
            rc = rc or proc.returncode
            if proc.returncode and not tail:
                lines = (proc.stderr or proc.stdout).strip().splitlines()
                tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())
        except (subprocess.TimeoutExpired, FileNotFoundError) as err:
            return {"error": type(err).__name__, "cmd": " ".join(cmd)}
        times.append(time.perf_counter() - t0)
    out = {"median_s": statistics.median(times), "runs_s": times, "returncode": rc}
    if tail:
        out["error_tail"] = tail
    return out


def venv_tool(name: str) -> str:
    """A console script next to the running interpreter (the project's virtualenv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


# ---------------------------------------------------------------------------------------------
# Sections


def agreement(args: argparse.Namespace) -> dict[str, Any]:
    section("Loss agreement: reference vs ours (same weights, views and perturbations)")
    res = run_worker(
        {"kind": "agreement", "width": args.agree_width, "batch": args.agree_batch},
        timeout=600,
    )
    if "error" in res:
        print(f"FAILED: {res['error']}")
        return res
    print(
        f"ResNet-18 width {res['width']}, batch {res['batch']}; peer-style losses vs "
        f"ascl.losses on random unit vectors: NT-Xent rel. diff {res['losses']['nt_xent']:.1e}, "
        f"L_ASCL rel. diff {res['losses']['ascl']:.1e}"
    )
    rows = []
    for name, case in res["cases"].items():
        rd = case["rel_diff"]
        rows.append(
            [
                name,
                case["steps"],
                case["reference_losses"],
                case["ours"]["loss"],
                case["reference"]["loss"],
                rd["at"],
                rd["cl"],
                rd["ascl"],
                rd["loss"],
                case["grad_rel_diff_global"],
            ]
        )
    headers = ["case", "pgd", "ref losses", "loss ours", "loss ref"]
    headers += ["rel at", "rel cl", "rel ascl", "rel loss", "rel grad"]
    print(table(headers, rows))
    exact = res["cases"]["no_attack"]
    ok = max(exact["rel_diff"].values()) <= LOSS_TOLERANCE
    ok = ok and exact["grad_rel_diff_global"] <= GRAD_TOLERANCE
    ok = ok and max(res["losses"].values()) <= LOSS_TOLERANCE
    same = res["cases"]["pgd_ascl_losses"]
    ok_pgd = max(same["rel_diff"].values()) <= LOSS_TOLERANCE
    res["pass"] = bool(ok and ok_pgd)
    print(
        f"no_attack (x+δ = x): every term within {LOSS_TOLERANCE:g} relative and gradients within "
        f"{GRAD_TOLERANCE:g}: {'PASS' if ok else 'FAIL'}; PGD with the same random starts and "
        f"ascl.losses inside the reference: {'PASS' if ok_pgd else 'FAIL'}.\n"
        "The 'pgd' row uses the peer-style loss code inside the attacks: its rounding differs "
        "at ~1e-7, and where a gradient entry is ~0 sign(∇δ) can turn that into a different "
        "pixel of δ (then up to ~1e-3 there)."
    )
    return res


def training(args: argparse.Namespace) -> dict[str, Any]:
    section(
        f"Training step on CPU (batch {args.batch}, ResNet-18 width {args.width}, "
        f"PGD-{args.attack_steps} per term, data loading + augmentation included)"
    )
    results: dict[str, list[dict]] = {"reference": [], "ours": []}
    base = {
        "kind": "train",
        "device": "cpu",
        "batch": args.batch,
        "width": args.width,
        "warmup": args.warmup,
        "steps": args.steps,
        "attack_steps": args.attack_steps,
        "workers": args.ref_workers,
    }
    for r in range(args.rounds):
        for variant in ("reference", "ours"):
            count = variant == "ours" and r == 0  # one extra, untimed step under FlopCounterMode
            res = run_worker({**base, "variant": variant, "count_flops": count}, timeout=900)
            if "error" in res:
                print(f"{variant} round {r + 1}: FAILED: {res['error']}")
                continue
            results[variant].append(res)
            print(
                f"  round {r + 1} {variant:9s}: {res['images_per_s']:.1f} images/s "
                f"(median step {res['step_s_median']:.2f} s)",
                flush=True,
            )
    summary = summarize(results, args.batch)
    rows = []
    for variant in ("reference", "ours"):
        s = summary.get(variant)
        if s:
            rows.append(
                [
                    variant,
                    s["images_per_s"],
                    s["images_per_s_best"],
                    s["step_s_median"],
                    s["peak_rss_mib"],
                    s["base_rss_mib"],
                    s["peak_rss_mib"] - s["base_rss_mib"],
                ]
            )
    print(
        table(
            [
                "variant",
                "images/s",
                "best img/s",
                "step s",
                "peak RSS MiB",
                "RSS before MiB",
                "growth MiB",
            ],
            rows,
        )
    )
    if args.ref_workers and "reference" in summary:
        print(
            f"reference DataLoader workers: largest peak RSS "
            f"{summary['reference']['workers_peak_rss_mib']:.0f} MiB each (not in the table)"
        )
    flops = summary.get("ours", {}).get("flops_per_step")
    if flops is not None:
        achieved = flops / summary["ours"]["step_s_median"]
        print(
            f"ours: {flops / 1e9:.1f} GFLOP per step (FlopCounterMode: every attack and loss "
            f"forward/backward as executed), {achieved / 1e9:.1f} GFLOP/s at the median step; "
            f"precision {'bf16' if results['ours'][0]['bf16'] else 'fp32'} "
            "(pretrain.precision: auto = fp32 on CPU)"
        )
    ratio = summary.get("ratio")
    if ratio is not None:
        verdict = "PASS" if ratio >= GOALS["ratio_cpu"] else "FAIL"
        print(
            f"ratio ours/reference: {ratio:.2f}x (median step times; best steps: "
            f"{summary['ratio_best']:.2f}x); goal >= {GOALS['ratio_cpu']}x: {verdict}"
        )
    print(
        f"reference data loading: torch DataLoader, num_workers={args.ref_workers}, PIL + "
        "torchvision v1 transforms per sample. 'images/s' = batch / median step time over all "
        "rounds; peak RSS = ru_maxrss of each worker process, 'RSS before' = after imports, "
        "model and data set-up."
    )
    return {"runs": results, "summary": summary}


def summarize(results: dict[str, list[dict]], batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant, runs in results.items():
        if not runs:
            continue
        times = [t for r in runs for t in r["step_s"]]
        entry = {
            "images_per_s": batch / statistics.median(times),
            "images_per_s_best": batch / min(times),
            "step_s_median": statistics.median(times),
            "peak_rss_mib": max(r["peak_rss_bytes"] for r in runs) / MIB,
            "base_rss_mib": max(r["base_rss_bytes"] for r in runs) / MIB,
            "workers_peak_rss_mib": max(r["workers_peak_rss_bytes"] for r in runs) / MIB,
        }
        if "cuda_max_allocated_bytes" in runs[0]:
            entry["cuda_max_allocated_mib"] = max(r["cuda_max_allocated_bytes"] for r in runs) / MIB
        flops = [r["flops_per_step"] for r in runs if "flops_per_step" in r]
        if flops:
            entry["flops_per_step"] = flops[0]
        out[variant] = entry
    if "reference" in out and "ours" in out:
        out["ratio"] = out["ours"]["images_per_s"] / out["reference"]["images_per_s"]
        out["ratio_best"] = out["ours"]["images_per_s_best"] / out["reference"]["images_per_s_best"]
    return out


def evaluation(
    args: argparse.Namespace,
    tmp: Path,
    device: str = "cpu",
    width: int | None = None,
    sizes: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """PGD-20 and AutoAttack throughput; sizes = (PGD images, PGD batch, AutoAttack images)."""
    width = width or args.eval_width
    n_pgd, pgd_batch, n_aa = sizes or (args.pgd_images, args.pgd_batch, args.aa_images)
    where = "CPU" if device == "cpu" else device
    section(f"Evaluation throughput on {where} (classifier: ResNet-18 width {width}, fp32)")
    state = tmp / f"classifier-{device.replace(':', '')}.pt"
    pgd = run_worker(
        {
            "kind": "eval",
            "device": device,
            "width": width,
            "train_images": 512,
            "train_steps": args.eval_train_steps,
            "n_pgd": n_pgd,
            "pgd_batch": pgd_batch,
            "save": str(state),
        },
        timeout=600,
    )
    rows = []
    if "error" in pgd:
        print(f"PGD-20 FAILED: {pgd['error']}")
    else:
        rows.append(
            [
                f"PGD-{pgd['pgd_steps']} (robust_accuracy)",
                pgd["pgd_images"],
                pgd["pgd_batch"],
                pgd["pgd_s"],
                pgd["pgd_images_per_s"],
                pgd["clean_acc"],
                pgd["pgd_robust_acc"],
            ]
        )
    aa: dict[str, Any] = {"error": "skipped (no classifier)"}
    if "error" not in pgd and not args.skip_autoattack:
        aa = run_worker(
            {
                "kind": "autoattack",
                "device": device,
                "width": width,
                "n_aa": n_aa,
                "aa_batch": min(n_aa, pgd_batch),
                "load": str(state),
            },
            timeout=args.aa_timeout,
        )
    elif args.skip_autoattack:
        aa = {"error": "skipped (--skip-autoattack)"}
    if "error" in aa:
        print(f"AutoAttack: {aa['error']}")
    else:
        rows.append(
            [
                "AutoAttack standard",
                aa["aa_images"],
                aa["aa_batch"],
                aa["aa_s"],
                aa["aa_images_per_s"],
                aa["clean_acc"],
                aa["aa_robust_acc"],
            ]
        )
    if rows:
        print(
            table(
                [
                    "attack (l∞, eps 8/255)",
                    "images",
                    "batch",
                    "seconds",
                    "images/s",
                    "SA %",
                    "RA %",
                ],
                rows,
            )
        )
    if "error" not in pgd:
        projected = PAPER_TEST_IMAGES / pgd["pgd_images_per_s"]
        pgd["projected_10k_s"] = projected
        print(
            f"PGD-{pgd['pgd_steps']} on {PAPER_TEST_IMAGES} test images (one eps): "
            f"{projected:.0f} s ({projected / 60:.1f} min) projected from "
            f"{pgd['pgd_images_per_s']:.1f} images/s on {pgd['pgd_images']} images."
        )
        print(
            f"classifier: {pgd['classifier_train_steps']} Adam steps (batch 64) of clean CE on "
            "separable synthetic data, then BN statistics recalibrated "
            f"({pgd['classifier_train_s']:.1f} s, not timed above). Evaluation never autocasts."
        )
    if "error" not in aa:
        for line in aa["log"]:
            print(f"  autoattack: {line}")
        print(
            "AutoAttack only attacks points that are still classified correctly, and the later "
            "attacks only the points the earlier ones did not break: its images/s depends on the "
            "model's robustness and is only meaningful next to its RA."
        )
    return {"pgd": pgd, "autoattack": aa}


def workflow(args: argparse.Namespace) -> dict[str, Any]:
    repeats = 1 if args.quick else 3
    section(f"Workflow overhead (median of {repeats} run{'s' if repeats > 1 else ''})")
    snake = timed_command([venv_tool("snakemake"), "-n", "--quiet"], repeats)
    cli = timed_command([sys.executable, "-m", "ascl", "--help"], repeats)
    rows = []
    for name, res, goal in (
        ("snakemake -n --quiet (params.yaml, paper grid)", snake, GOALS["snakemake_dry_run_s"]),
        ("python -m ascl --help", cli, GOALS["cli_help_s"]),
    ):
        if "error" in res:
            rows.append([name, float("nan"), goal, f"ERROR {res['error']}"])
            continue
        ok = res["returncode"] == 0 and res["median_s"] < goal
        status = "PASS" if ok else f"FAIL (rc {res['returncode']})"
        res["pass"] = ok
        res["goal_s"] = goal
        rows.append([name, res["median_s"], goal, status])
    print(table(["command", "median s", "goal s", "result"], rows))
    for name, res in (("snakemake", snake), ("ascl --help", cli)):
        if res.get("error_tail"):
            print(f"  {name} failed: {res['error_tail']}")
    return {"snakemake_dry_run": snake, "cli_help": cli}


def gpu_fast_paths() -> list[str]:
    """Mixed-precision / layout features that the package source mentions."""
    words = ("autocast", "channels_last", "GradScaler", "torch.compile", "cudnn.benchmark")
    text = "".join(p.read_text() for p in (REPO_ROOT / "src" / "ascl").rglob("*.py"))
    return [w for w in words if w in text]


def peak_tflops(name: str, override: float | None) -> tuple[float, float] | None:
    """(bf16, tf32) dense peak TFLOP/s of a GPU by name; override sets both."""
    if override:
        return override, override
    return next((peak for key, peak in GPU_PEAK_TFLOPS if key in name), None)


def gpu(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    section("GPU training step")
    import torch

    device = args.accel_device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print("skipped: torch.cuda.is_available() is False on this machine (CPU only).")
        return {"skipped": "no CUDA device"}
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else device
    fast = gpu_fast_paths()
    have = f"src/ascl uses {', '.join(fast)}" if fast else "ascl has no GPU fast path of its own"
    print(
        f"device {name}; batch {args.gpu_batch}, ResNet-18 width {args.gpu_width}, "
        f"PGD-{args.attack_steps}. {have}. 'ours' runs as ascl.engine.fit does (channels_last, "
        "pretrain.precision: auto = bf16 autocast on CUDA); 'ours_fp32' forces fp32."
    )
    base = {
        "kind": "train",
        "device": device,
        "batch": args.gpu_batch,
        "width": args.gpu_width,
        "warmup": args.gpu_warmup,
        "steps": args.gpu_steps,
        "attack_steps": args.attack_steps,
        "workers": args.gpu_ref_workers,
    }
    variants = ("reference", "ours", "ours_fp32")
    results: dict[str, list[dict]] = {}
    for variant in variants:
        spec = {**base, "variant": variant, "count_flops": variant != "reference"}
        res = run_worker(spec, timeout=900)
        if "error" in res:
            print(f"{variant}: FAILED: {res['error']}")
            continue
        results[variant] = [res]
    summary = summarize(results, args.gpu_batch)
    peaks = peak_tflops(name, args.gpu_peak_tflops)
    rows = []
    for variant in variants:
        s = summary.get(variant)
        if not s:
            continue
        ref = summary.get("reference")
        bf16 = results[variant][0].get("bf16", False)
        tflops = mfu = float("nan")
        if "flops_per_step" in s:
            tflops = s["flops_per_step"] / s["step_s_median"] / 1e12
            if peaks:
                mfu = 100 * tflops / peaks[0 if bf16 else 1]
            s["tflops"], s["mfu_pct"] = tflops, mfu
        rows.append(
            [
                variant,
                "-" if variant == "reference" else ("bf16" if bf16 else "fp32"),
                s["images_per_s"],
                s["step_s_median"],
                s["images_per_s"] / ref["images_per_s"] if ref else float("nan"),
                s.get("cuda_max_allocated_mib", float("nan")),
                s["peak_rss_mib"],
                s.get("flops_per_step", float("nan")) / 1e12,
                tflops,
                mfu,
            ]
        )
    headers = ["variant", "precision", "images/s", "step s", "vs reference", "max alloc MiB"]
    headers += ["peak RSS MiB", "TFLOP/step", "TFLOP/s", "MFU %"]
    print(table(headers, rows))
    peak_note = (
        f"MFU = TFLOP/s / dense peak ({peaks[0]:g} bf16, {peaks[1]:g} TF32 TFLOP/s)"
        if peaks
        else "MFU: peak of this GPU unknown, give --gpu-peak-tflops"
    )
    print(
        f"reference DataLoader num_workers={args.gpu_ref_workers}. TFLOP/step: FlopCounterMode "
        f"on one step of ours (attacks and losses, forward and backward, as executed). "
        f"{peak_note}."
    )
    out: dict[str, Any] = {"device": name, "src_fast_paths": fast, "runs": results}
    # bf16 vs fp32: speed and memory from the two runs above, agreement on one fixed batch.
    agree = run_worker(
        {
            "kind": "precision",
            "device": device,
            "width": args.gpu_width,
            "batch": 64,
            "attack_steps": args.attack_steps,
        },
        timeout=600,
    )
    out["precision"] = agree
    fast_s, slow_s = summary.get("ours"), summary.get("ours_fp32")
    speed = "speed n/a"
    if fast_s and slow_s:
        prec = "bf16" if results["ours"][0].get("bf16") else "fp32"
        speed = (
            f"ours ({prec}) / ours_fp32: {fast_s['images_per_s'] / slow_s['images_per_s']:.2f}x "
            f"images/s, max alloc {fast_s.get('cuda_max_allocated_mib', float('nan')):.0f} vs "
            f"{slow_s.get('cuda_max_allocated_mib', float('nan')):.0f} MiB"
        )
    if "error" in agree:
        print(f"bf16 vs fp32: {speed}; agreement FAILED: {agree['error']}")
    else:
        exact, pgd = agree["cases"]["no_attack"], agree["cases"]["pgd"]
        print(
            f"bf16 vs fp32: {speed}. One batch of {agree['batch']}, same weights and random "
            f"starts: loss terms within {max(exact['rel_diff'].values()):.1e} without attack "
            f"and {max(pgd['rel_diff'].values()):.1e} after PGD-{pgd['steps']}; parameter "
            f"gradients (no attack) ‖Δg‖/‖g‖ {exact['grad_rel_diff']:.2f}, cosine "
            f"{exact['grad_cosine']:.3f}. Tolerances: tests/test_precision.py (2e-2, 5e-2, 0.5)."
        )
    out["summary"] = summary
    out["evaluation"] = evaluation(
        args,
        tmp,
        device=device,
        width=args.gpu_width,
        sizes=(args.gpu_pgd_images, args.gpu_pgd_batch, args.gpu_aa_images),
    )
    return out


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few steps (smoke run)")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    p.add_argument("--batch", type=int, help="training batch size (default 64; quick 32)")
    p.add_argument("--width", type=int, help="ResNet-18 base width (default 16; quick 8)")
    p.add_argument("--steps", type=int, help="timed steps per round (default 3; quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per worker")
    p.add_argument("--rounds", type=int, help="alternating reference/ours rounds (3; quick 1)")
    p.add_argument("--attack-steps", type=int, default=5, help="PGD steps in training")
    p.add_argument("--ref-workers", type=int, default=0, help="reference DataLoader workers")
    p.add_argument(
        "--only",
        type=lambda v: set(v.split(",")),
        help="comma-separated sections: agreement,training_cpu,evaluation_cpu,workflow,gpu",
    )
    p.add_argument("--skip-autoattack", action="store_true")
    p.add_argument("--aa-timeout", type=float, help="AutoAttack time limit in s (150; quick 90)")
    p.add_argument("--gpu-batch", type=int, default=512)
    p.add_argument("--gpu-width", type=int, default=64)
    p.add_argument("--gpu-steps", type=int, default=10)
    p.add_argument("--gpu-warmup", type=int, default=3)
    p.add_argument("--gpu-ref-workers", type=int, default=2)
    p.add_argument("--gpu-pgd-images", type=int, help="PGD-20 images on GPU (10000; quick 1024)")
    p.add_argument("--gpu-pgd-batch", type=int, default=512)
    p.add_argument("--gpu-aa-images", type=int, help="AutoAttack images on GPU (512; quick 128)")
    p.add_argument("--gpu-peak-tflops", type=float, help="GPU peak TFLOP/s for MFU (else table)")
    p.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        choices=["PASSIVE", "ACTIVE", "inherit"],
        help="OMP_WAIT_POLICY of the workers (default PASSIVE; inherit = as set for this process)",
    )
    p.add_argument("--accel-device", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "batch": 32 if quick else 64,
        "width": 8 if quick else 16,
        "steps": 2 if quick else 3,
        "rounds": 1 if quick else 3,
        "aa_timeout": 90.0 if quick else 150.0,
        "gpu_pgd_images": 1024 if quick else PAPER_TEST_IMAGES,
        "gpu_aa_images": 128 if quick else 512,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.agree_width = 8 if quick else args.width
    args.agree_batch = 16 if quick else args.batch
    args.eval_width = 8
    args.eval_train_steps = 30
    args.pgd_images = 32 if quick else 128
    args.pgd_batch = 32 if quick else 128
    args.aa_images = 16 if quick else 32
    if quick:
        args.gpu_steps, args.gpu_warmup = 3, 1
    return args


def environment() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cuda_available": torch.cuda.is_available(),
        "loadavg_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OMP_POLICY["value"] = args.omp_wait_policy
    t0 = time.perf_counter()
    env = environment()
    env["omp_wait_policy_workers"] = (
        os.environ.get("OMP_WAIT_POLICY", "unset")
        if args.omp_wait_policy == "inherit"
        else args.omp_wait_policy
    )
    print(
        f"ascl benchmark{' (quick)' if args.quick else ''}: torch {env['torch']}, "
        f"{env['cpu_count']} CPU cores, {env['torch_threads']} torch threads, "
        f"CUDA {'available' if env['cuda_available'] else 'not available'}, "
        f"load average {env['loadavg_start'][0]:.2f}; workers run with "
        f"OMP_WAIT_POLICY={env['omp_wait_policy_workers']}"
    )
    report: dict[str, Any] = {"environment": env, "goals": GOALS, "args": _jsonable(vars(args))}
    with tempfile.TemporaryDirectory() as tmp:
        sections = {
            "agreement": lambda: agreement(args),
            "training_cpu": lambda: training(args),
            "evaluation_cpu": lambda: evaluation(args, Path(tmp)),
            "workflow": lambda: workflow(args),
            "gpu": lambda: gpu(args, Path(tmp)),
        }
        for name, run in sections.items():
            if args.only is None or name in args.only:
                report[name] = run()
    env["loadavg_end"] = os.getloadavg()
    report["total_s"] = time.perf_counter() - t0
    print(
        f"\ntotal {report['total_s']:.0f} s; load average at the end "
        f"{env['loadavg_end'][0]:.2f} (other processes on the machine slow every figure)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


def _jsonable(d: dict) -> dict:
    return {
        k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v)
        for k, v in d.items()
    }


if __name__ == "__main__":
    sys.exit(main())
