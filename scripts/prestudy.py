"""Pre-study of the CPU-scale regime (docs/small-scale.md, "Pre-study"): which training regime
lets every method of Table 1 learn in every seed on the offline digits, decided on seeds the
final run (config/mini.yaml, seeds 0-2) never uses.

Each variant is one overlay of params.yaml + config/mini.yaml that applies to every method by
the same rule (one lr for all or each method's own recipe lr scaled linearly to the batch, the
lr decay points, an lr or ε warm-up, the image size, the epochs). For each variant the
workflow itself runs (its own working directory under <work>/<variant>): data, every
pre-training the chosen methods need, the Table 1 finetuning of each and its PGD evaluation,
so the pre-study measures exactly what the claims read (SA and RA-PGD-20 at 8/255 of the
Table 1 row). The data sets live in <work>/data, never in the workflow's resources/.

    python scripts/prestudy.py --variants mini,lr-0.02 --methods at,ascl --seeds 10 11 12
    python scripts/prestudy.py --plot-only

Results: <out>/prestudy.csv (one row per variant, method and seed; rows already there are not
rerun), <out>/prestudy.png, and each variant's Snakemake log in <work>/<variant>/.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# Table 1 rows: method -> the finetuning strategy its row reads.
ROWS = {
    "at": "E2E",
    "trades": "E2E",
    "acl": "FAF",
    "advcl": "LAF",
    "rocl": "LSF",
    "simclr": "LSF",
    "scl": "LSF",
    "ascl": "LAF",
}
ATTACK_FREE = ("simclr", "scl")
MINI_BATCH = 32


def own_recipe_lr(params: dict, method: str) -> dict:
    """The method's own recipe lr (recipes.peer, else the paper's) scaled linearly from its
    batch to the mini batch, with its own optimiser: {"lr": ..., "optimizer": ...}."""
    from ascl import config

    peer = config.pretrain_settings(config.deep_merge(params, {"protocol": "peer"}), method)
    peer = peer["train"]
    return {"lr": peer["lr"] * MINI_BATCH / peer["batch_size"], "optimizer": peer["optimizer"]}


def uniform(pretrain: dict) -> dict:
    """An overlay that sets the same `pretrain` keys for every method (a method's own
    `pretrain:` entries in config/mini.yaml still win where they set the same key)."""
    return {"pretrain": pretrain}


# name -> overlay (a dict, or a function of the merged params for per-method rules)
VARIANTS = {
    "mini": {},  # config/mini.yaml before the pre-study: lr 0.005, x0.1 at 60 % and 80 %
    "lr-0.02": uniform({"lr": 0.02}),
    "lr-0.02-late": uniform({"lr": 0.02, "lr_milestones": [0.8, 0.9]}),
    "lr-0.02-eps-warmup": uniform({"lr": 0.02, "eps_warmup": 0.3}),
    # the same, with milder SimCLR views for every method (no colour jitter or greyscale, crops
    # of 60-100 % of the image: the offline digits are grey glyphs of 8x8 scans)
    "lr-0.02-eps-warmup-weak-views": {
        "pretrain": {"lr": 0.02, "eps_warmup": 0.3},
        "augment": {"jitter_p": 0.0, "grayscale_p": 0.0, "crop_scale": [0.6, 1.0]},
    },
    "lr-0.02-cosine-warmup": uniform({"lr": 0.02, "schedule": "cosine", "warmup_epochs": 1}),
    "own-lr": lambda params: {
        "methods": {m: {"pretrain": own_recipe_lr(params, m)} for m in params["methods"]}
    },
    "lr-0.02-epochs-15": uniform({"lr": 0.02, "epochs": 15}),
    # 32x32 at about the wall time of 10 epochs at 16x16 (a step costs ~3.3x)
    "res-32-lr-0.02": lambda params: {
        "data": {"image_size": None},
        "pretrain": {"lr": 0.02, "epochs": 3},
    },
}


def overlay(name: str, params: dict) -> dict:
    spec = VARIANTS[name]
    over = spec(params) if callable(spec) else spec
    from ascl import config

    # mini.yaml pins the supervised baselines' epochs; the epoch rule applies to them too
    epochs = over.get("pretrain", {}).get("epochs")
    if epochs is not None:
        pinned = {m: {"pretrain": {"epochs": epochs}} for m in ("at", "trades", "rotation")}
        pinned["standard"] = {"pretrain": {"epochs": epochs}}
        over = config.deep_merge(over, {"methods": pinned})
    return over


def run_variant(
    name: str, methods: list[str], seeds: list[int], work_root: Path, cores: int
) -> None:
    from ascl import config

    base = config.load_params(ROOT / "params.yaml", ROOT / "config" / "mini.yaml")
    work = work_root / name
    work.mkdir(parents=True, exist_ok=True)
    over = config.deep_merge(
        overlay(name, base),
        {
            "seeds": seeds,
            "data": {"root": str((work_root / "data").resolve())},
            "tracking": {"experiment": f"ascl-prestudy-{name}"},
        },
    )
    (work / "variant.yaml").write_text(yaml.safe_dump(over, sort_keys=False))
    targets = [
        f"results/evaluate/{m}/{ROWS[m]}/source/seed{s}/pgd.json" for m in methods for s in seeds
    ]
    cmd = [
        "snakemake",
        "--snakefile",
        str(ROOT / "workflow" / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(ROOT / "params.yaml"),
        str(ROOT / "config" / "mini.yaml"),
        str(work / "variant.yaml"),
        "--cores",
        str(cores),
        "--resources",
        f"gpu={cores}",
        "--keep-going",
        *targets,
    ]
    print(f"[prestudy] {name}: {len(targets)} targets", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ASCL_PROGRESS": "0"}
    with (work / "snakemake.log").open("a") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)


def collect(work_root: Path) -> list[dict]:
    import json

    rows = []
    for name in VARIANTS:
        res = work_root / name / "results" / "evaluate"
        for m, strategy in ROWS.items():
            for f in sorted((res / m / strategy / "source").glob("seed*/pgd.json")):
                d = json.loads(f.read_text())
                rows.append(
                    {
                        "variant": name,
                        "method": m,
                        "strategy": strategy,
                        "seed": int(f.parent.name.removeprefix("seed")),
                        "sa": d["sa"],
                        "ra_pgd_eps8": d["ra_pgd_eps8"],
                    }
                )
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, ["variant", "method", "strategy", "seed", "sa", "ra_pgd_eps8"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def summary(rows: list[dict], chance: float = 10.0) -> str:
    """Markdown: per variant and method, SA / RA per seed and how many seeds learn."""
    lines = [
        "| variant | method | SA per seed | RA-PGD per seed | learns (SA ≥ 2× chance) |",
        "|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        for m in ROWS:
            rs = sorted(
                (r for r in rows if (r["variant"], r["method"]) == (name, m)),
                key=lambda r: r["seed"],
            )
            if not rs:
                continue
            ok = sum(r["sa"] >= 2 * chance for r in rs)
            sa = " / ".join(f"{r['sa']:.1f}" for r in rs)
            ra = " / ".join(f"{r['ra_pgd_eps8']:.1f}" for r in rs)
            lines.append(f"| {name} | {m} | {sa} | {ra} | {ok} of {len(rs)} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, chance: float = 10.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in ROWS if any(r["method"] == m for r in rows)]
    names = [n for n in VARIANTS if any(r["variant"] == n for r in rows)]
    if not methods:
        return
    fig, axes = plt.subplots(
        2, len(methods), figsize=(2.3 * len(methods), 6.0), squeeze=False, sharex=True
    )
    for j, m in enumerate(methods):
        for i, key in enumerate(("sa", "ra_pgd_eps8")):
            ax = axes[i][j]
            for k, n in enumerate(names):
                vals = [r[key] for r in rows if (r["variant"], r["method"]) == (n, m)]
                ax.scatter([k] * len(vals), vals, s=14, color=f"C{k % 10}")
            if key == "sa":
                ax.axhline(2 * chance, color="grey", lw=0.6, ls=":")
            ax.set_xticks(
                range(len(names)), names if i == 1 else [], rotation=60, fontsize=7, ha="right"
            )
            ax.set_xlim(-0.5, len(names) - 0.5)
            ax.set_ylim(0, 100)
            ax.set_title(f"{m} ({ROWS[m]}): {'SA' if key == 'sa' else 'RA-PGD-20'}", fontsize=9)
    fig.suptitle("Pre-study on seeds the final run does not use; dotted: 2x chance", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "small-scale" / "prestudy")
    ap.add_argument("--variants", default="mini", help="comma-separated (known: see VARIANTS)")
    ap.add_argument("--methods", default="at,ascl", help=f"comma-separated of {', '.join(ROWS)}")
    ap.add_argument(
        "--work", type=Path, help="the variants' working directories (default: <out>/work)"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    methods = [m for m in args.methods.split(",") if m]
    bad = [n for n in names if n not in VARIANTS] + [m for m in methods if m not in ROWS]
    if bad:
        ap.error(f"unknown variant or method: {', '.join(bad)}")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    if not args.plot_only:
        for name in names:
            run_variant(name, methods, args.seeds, work, args.cores)
            rows = collect(work)
            write_csv(rows, args.out / "prestudy.csv")
            plot(rows, args.out / "prestudy.png")
    rows = collect(work)
    write_csv(rows, args.out / "prestudy.csv")
    plot(rows, args.out / "prestudy.png")
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
