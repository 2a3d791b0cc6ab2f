"""Small-scale diagnosis: which regime lets adversarial contrastive pre-training learn on the
offline digits data (docs/small-scale.md).

Each variant is one pre-training of a params.yaml method, with the package's own objective
(`ascl.pretrain.make_step`), model and training loop (`ascl.engine.fit`), under a few overrides
of the base regime (config/smoke.yaml plus the keys below). After every epoch it records the mean
loss terms and the test accuracy of the pre-training classifier head (clean, and under PGD-10 at
8/255 on the adversarial branch): the head is trained by the AT term only, so its accuracy shows
whether the encoder the other terms shape still carries the class information.

    python scripts/small_scale.py --out docs/small-scale            # every variant, seed 0
    python scripts/small_scale.py --only base,lr-0.005 --seeds 0 1  # a few variants
    python scripts/small_scale.py --plot-only --out docs/small-scale
    python scripts/small_scale.py --only mini10-full --seeds 0 1 --data-seeds 0 1 \
        --out docs/small-scale/init-vs-data     # initial weights against the data stream

The seed sets the initial weights; the data seed (default: the seed) sets the training stream:
batch order, augmentations and the attacks' random starts.

Results: <out>/runs.jsonl (one line per variant, seed and data seed, appended as each finishes;
one already there is skipped), <out>/loss-terms.png and <out>/seeds.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

# The base regime: the measurement (digits10, all 1438 training images, ResNet-18 width
# 8, batch 32, lr 0.02, PGD-2 at 8/255 in train mode, separated BN), 6 epochs.
BASE = {
    "device": "cpu",
    "data": {"max_train": None, "max_test": None},
    "model": {"width": 8, "proj_hidden": 32, "proj_dim": 16},
    "pretrain": {"epochs": 6, "batch_size": 32, "lr": 0.02, "attack": {"steps": 2}},
}

# name -> (method, overrides of params, resolution or None for 32x32). The objective's weights
# and the attack budget stay the paper's (lambda_at 1, lambda_cl 0.5, lambda_ascl 0.2, 8/255).
VARIANTS: dict[str, tuple[str, dict, int | None]] = {
    "at": ("ascl-at", {}, None),
    "at+supcl": ("ascl-at-supcl", {}, None),
    "base": ("ascl-at-cl", {}, None),
    "full": ("ascl", {}, None),
    "lr-0.005": ("ascl-at-cl", {"pretrain": {"lr": 0.005}}, None),
    "batch-128": ("ascl-at-cl", {"pretrain": {"batch_size": 128}}, None),
    "batch-128-lr-0.08": ("ascl-at-cl", {"pretrain": {"batch_size": 128, "lr": 0.08}}, None),
    "width-16": ("ascl-at-cl", {"model": {"width": 16}}, None),
    "attack-eval-bn": ("ascl-at-cl", {"pretrain": {"attack": {"train_mode": False}}}, None),
    "epochs-15": ("ascl-at-cl", {"pretrain": {"epochs": 15}}, None),
    "lr-0.005-epochs-15": ("ascl-at-cl", {"pretrain": {"lr": 0.005, "epochs": 15}}, None),
    "lr-0.002": ("ascl-at-cl", {"pretrain": {"lr": 0.002}}, None),
    # the CPU-scale regime (config/mini.yaml): 16x16 images, lr 0.005, 12 epochs
    "mini-at-cl": ("ascl-at-cl", {"pretrain": {"lr": 0.005, "epochs": 12}}, 16),
    "mini-full": ("ascl", {"pretrain": {"lr": 0.005, "epochs": 12}}, 16),
    # candidates for a steadier CPU-scale regime (16x16, 10 epochs, full ASCL objective)
    "mini10-full": ("ascl", {"pretrain": {"lr": 0.005, "epochs": 10}}, 16),
    "mini10-lr-0.0025": ("ascl", {"pretrain": {"lr": 0.0025, "epochs": 10}}, 16),
    "mini10-batch-16-lr-0.0025": (
        "ascl",
        {"pretrain": {"lr": 0.0025, "batch_size": 16, "epochs": 10}},
        16,
    ),
    "mini10-lr-0.01-warmup-3": (
        "ascl",
        {"pretrain": {"lr": 0.01, "warmup_epochs": 3, "epochs": 10}},
        16,
    ),
    "res-16": ("ascl-at-cl", {}, 16),
    "res-16-full": ("ascl", {}, 16),
    "temperature-0.2": ("ascl-at-cl", {"pretrain": {"temperature": 0.2}}, None),
    # milder SimCLR views: no colour jitter or greyscale, crops of 60-100 % of the image
    "weak-views": (
        "ascl-at-cl",
        {"augment": {"jitter_p": 0.0, "grayscale_p": 0.0, "crop_scale": [0.6, 1.0]}},
        None,
    ),
    "no-colour-jitter": ("ascl-at-cl", {"augment": {"jitter_p": 0.0, "grayscale_p": 0.0}}, None),
    # diagnostics that change the attack or the objective (not candidates for the regime)
    "random-start-only": ("ascl-at-cl", {"pretrain": {"attack": {"steps": 0}}}, None),
    "lambda-cl-0.1": ("ascl-at-cl", {"methods": {"ascl-at-cl": {"lambda_cl": 0.1}}}, None),
    "weak-views-lr-0.005": (
        "ascl-at-cl",
        {
            "augment": {"jitter_p": 0.0, "grayscale_p": 0.0, "crop_scale": [0.6, 1.0]},
            "pretrain": {"lr": 0.005},
        },
        None,
    ),
}


def resize(x_uint8: torch.Tensor, size: int | None) -> torch.Tensor:
    """(N, 3, 32, 32) uint8 -> (N, 3, size, size) uint8 by area averaging (None: unchanged)."""
    if size is None or size == x_uint8.shape[-1]:
        return x_uint8
    x = F.adaptive_avg_pool2d(x_uint8.float(), size)
    return x.round().clamp_(0, 255).to(torch.uint8)


def head_accuracy(
    model, x_uint8: torch.Tensor, y: torch.Tensor, branch: str
) -> tuple[float, float]:
    """Clean and PGD-10 (8/255, step 2/255) accuracy of the pre-training classifier head."""
    from ascl.attacks import pgd
    from ascl.tensors import to_float

    model.eval()
    x = to_float(x_uint8)
    with torch.no_grad():
        clean = (model(x, branch).argmax(1) == y).float().mean().item()
    g = torch.Generator().manual_seed(0)
    x_adv = pgd(
        lambda xa: F.cross_entropy(model(xa, branch), y),
        x,
        eps=8 / 255,
        alpha=2 / 255,
        steps=10,
        random_start=True,
        generator=g,
    )
    with torch.no_grad():
        robust = (model(x_adv, branch).argmax(1) == y).float().mean().item()
    model.train()
    return clean, robust


def term_gradients(model, step, x_uint8: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Norm of each loss term's gradient w.r.t. the encoder weights on one fixed batch, and the
    cosine between the AT term's gradient and each other term's (BN statistics restored)."""
    from ascl.tensors import to_float

    buffers = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if not v.is_floating_point() or "running" in k
    }
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    terms = step(to_float(x_uint8), y, torch.Generator().manual_seed(12345))
    grads = {}
    for k in ("at", "cl", "ascl"):
        if k in terms:
            g = torch.autograd.grad(terms[k], params, retain_graph=True, allow_unused=True)
            grads[k] = torch.cat(
                [
                    (gi if gi is not None else torch.zeros_like(p)).flatten()
                    for gi, p in zip(g, params, strict=True)
                ]
            )
    model.load_state_dict(buffers, strict=False)
    out = {f"grad_norm_{k}": float(g.norm()) for k, g in grads.items()}
    for k in ("cl", "ascl"):
        if "at" in grads and k in grads:
            out[f"cos_at_{k}"] = float(F.cosine_similarity(grads["at"], grads[k], dim=0))
    return out


def representation_spread(model, x_uint8: torch.Tensor) -> dict[str, float]:
    """How far the test images' representations are from collapse (eval mode), per branch:
    ``spread_<branch>`` = ||std over images|| / ||mean over images|| of the encoder features
    (0 = every image has the same features) and ``cos_<branch>`` = mean pairwise cosine of the
    projections (1 = all projections identical)."""
    from ascl.tensors import to_float

    model.eval()
    x = to_float(x_uint8)
    out = {}
    with torch.no_grad():
        for branch in ("clean", "adv"):
            f = model.features(x, branch)
            out[f"spread_{branch}"] = float(f.std(0).norm() / f.mean(0).norm().clamp_min(1e-12))
            z = model.project(x, branch)
            n = len(z)
            out[f"cos_{branch}"] = float(((z @ z.T).sum() - n) / (n * (n - 1)))
    model.train()
    return out


def run_variant(
    name: str, seed: int, data: Path, epochs: int | None = None, data_seed: int | None = None
) -> dict:
    """One pre-training: initial weights from `seed`, training stream from `data_seed`."""
    data_seed = seed if data_seed is None else data_seed
    from ascl import config
    from ascl.artifacts import build_pretrain_net
    from ascl.data import load_dataset
    from ascl.engine import fit, place_model
    from ascl.pretrain import make_step
    from ascl.tracking import Run

    method, overrides, res = VARIANTS[name]
    params = config.load_params(ROOT / "params.yaml", ROOT / "config" / "smoke.yaml")
    params = config.deep_merge(config.deep_merge(params, BASE), overrides)
    if epochs is not None:
        params = config.deep_merge(params, {"pretrain": {"epochs": epochs}})
    settings = config.pretrain_settings(params, method)
    ds = load_dataset(data)
    x, y = resize(ds.x_train, res), ds.y_train
    x_test, y_test = resize(ds.x_test, res), ds.y_test
    torch.manual_seed(seed)
    model = place_model(build_pretrain_net(settings, ds.num_classes), torch.device("cpu"))
    branch = "adv"
    history: list[dict] = []
    t0 = time.perf_counter()

    class Recorder(Run):
        def log_metrics(self, metrics, step=None):
            clean, robust = head_accuracy(model, x_test, y_test, branch)
            row = {k.removeprefix("train/"): v for k, v in metrics.items()}
            row.update(epoch=step, head_sa=clean, head_ra=robust, wall_s=time.perf_counter() - t0)
            row.update(representation_spread(model, x_test))
            model.train()
            row.update(term_gradients(model, step_fn, x[:batch], y[:batch]))
            history.append(row)
            shown = (
                "at",
                "cl",
                "ascl",
                "loss",
                "cos_at_cl",
                "cos_at_ascl",
                "spread_adv",
                "cos_adv",
            )
            terms = {
                k: round(v, 3) for k, v in row.items() if k.startswith("grad_norm") or k in shown
            }
            print(
                f"  {name} seed {seed} data {data_seed} epoch {step}: {terms} "
                f"SA {clean:.3f} RA {robust:.3f}"
            )
            sys.stdout.flush()

    train = settings["train"]
    step_fn, batch = make_step(settings, model), train["batch_size"]
    with Recorder(name, enabled=False) as run:
        fit(
            model=model,
            parameters=list(model.parameters()),
            step=step_fn,
            x_train=x,
            y_train=y,
            epochs=train["epochs"],
            batch_size=train["batch_size"],
            lr=train["lr"],
            momentum=train["momentum"],
            weight_decay=train["weight_decay"],
            lr_milestones=train["lr_milestones"],
            lr_gamma=train["lr_gamma"],
            generator=torch.Generator().manual_seed(data_seed),
            ckpt_dir=None,
            run=run,
            desc=name,
        )
    return {
        "variant": name,
        "method": method,
        "overrides": overrides,
        "resolution": res or 32,
        "seed": seed,
        "data_seed": data_seed,
        "batch_size": train["batch_size"],
        "history": history,
    }


def plot(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.4))
    cmap = plt.get_cmap("tab20")
    names = list(dict.fromkeys(r["variant"] for r in runs))
    for i, name in enumerate(names):
        c = cmap(i % 20)
        for r in (r for r in runs if r["variant"] == name):
            ep = [h["epoch"] for h in r["history"]]
            first = r["seed"] == min(q["seed"] for q in runs if q["variant"] == name)
            label = f"{name} ({r['method']})" if first else None
            ls = "--" if r["resolution"] != 32 else "-"
            for ax, key in zip(axes, ("cl", "at", "head_sa"), strict=True):
                if key in r["history"][0]:
                    ax.plot(ep, [h[key] for h in r["history"]], color=c, ls=ls, label=label)
    for n in sorted({r["batch_size"] for r in runs if "cl" in r["history"][0]}):
        axes[0].axhline(math.log(2 * n - 1), color="grey", lw=0.6, ls=":")
    axes[0].set(title="adversarial NT-Xent term (L_CL); dotted: log(2N-1)", xlabel="epoch")
    axes[1].set(title="AT term (CE of the CE-PGD example); chance: log 10", xlabel="epoch")
    axes[2].set(title="test accuracy of the pre-training head (clean)", xlabel="epoch", ylim=(0, 1))
    axes[1].axhline(math.log(10), color="grey", lw=0.6, ls=":")
    axes[2].axhline(0.1, color="grey", lw=0.6, ls=":")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(
        "digits10, ResNet-18 width 8, batch 32, lr 0.02, 6 epochs unless the name says "
        "otherwise; dashed: 16x16 images"
    )
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)


def _data_seed(run: dict) -> int:
    return run.get("data_seed", run["seed"])


def plot_seeds(runs: list[dict], out: Path, prefix: str = "mini10-") -> None:
    """Head accuracy per epoch of the `prefix` variants (the full objective at the CPU-scale
    regime and its lr / batch / warm-up neighbours): colour = variant, line style = seed; for a
    single variant, colour = seed and line style = data seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in runs if r["variant"].startswith(prefix)]
    if not chosen:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    names = list(dict.fromkeys(r["variant"] for r in chosen))
    styles = ["-", "--", ":", "-."]
    cmap = plt.get_cmap("tab10")
    for r in chosen:
        ep = [h["epoch"] for h in r["history"]]
        if len(names) > 1:
            c = cmap(names.index(r["variant"]) % 10)
            ls = styles[r["seed"] % len(styles)]
        else:  # one variant: colour = seed (initial weights), line style = data seed
            c = cmap(r["seed"] % 10)
            ls = styles[_data_seed(r) % len(styles)]
        label = f"{r['variant']}, seed {r['seed']}"
        if _data_seed(r) != r["seed"] or len(names) == 1:
            label += f", data seed {_data_seed(r)}"
        axes[0].plot(ep, [h["head_sa"] for h in r["history"]], color=c, ls=ls, label=label)
        axes[1].plot(ep, [h["at"] for h in r["history"]], color=c, ls=ls)
    axes[0].set(title="test accuracy of the pre-training head (clean)", xlabel="epoch", ylim=(0, 1))
    axes[0].axhline(0.1, color="grey", lw=0.6, ls=":")
    axes[1].set(title="AT term; dotted: log 10", xlabel="epoch")
    axes[1].axhline(math.log(10), color="grey", lw=0.6, ls=":")
    axes[0].legend(fontsize=7)
    what = (
        "seed against lr, batch and warm-up (data seed = seed unless named)"
        if len(names) > 1
        else "initial weights (seed, colour) against training stream (data seed, line style)"
    )
    fig.suptitle(f"full ASCL objective, digits10 at 16x16, width 8, 10 epochs: {what}")
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "small-scale")
    ap.add_argument("--only", default="", help="comma-separated variants (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--data-seeds",
        type=int,
        nargs="+",
        help="training-stream seeds run with every seed (default: each seed's own)",
    )
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, help="override every variant's epochs (quick checks)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ASCL_PROGRESS", "0")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if not args.plot_only:
        from ascl.data import prepare_dataset

        # its own copy: never a file of the workflow's outputs (resources/data), whose image
        # size and settings may differ
        data = args.out / "data" / "digits10.npz"
        if not data.exists():
            prepare_dataset("digits10", data)
        names = [n for n in args.only.split(",") if n] or list(VARIANTS)
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            ap.error(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
        jobs = [
            (name, seed, data_seed)
            for seed in args.seeds
            for data_seed in args.data_seeds or [seed]
            for name in names
        ]
        for name, seed, data_seed in jobs:
            if any(
                (r["variant"], r["seed"], _data_seed(r)) == (name, seed, data_seed) for r in runs
            ):
                continue
            result = run_variant(name, seed, data, args.epochs, data_seed)
            runs.append(result)
            with log.open("a") as f:
                f.write(json.dumps(result) + "\n")
            plot(runs, args.out / "loss-terms.png")
    plot(runs, args.out / "loss-terms.png")
    plot_seeds(runs, args.out / "seeds.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
