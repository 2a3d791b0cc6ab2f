"""Cost of one pre-training step of every method, counted: FLOPs of the method's own step
(`ascl.pretrain.make_step`: augmentation, every attack, the loss terms and the backward pass)
divided by the FLOPs of one forward pass of its network over the same batch, i.e. forward
passes per training image. Counted by torch's FlopCounterMode (matrix multiplications and
convolutions) on the CPU, at a reduced width: the ratio does not depend on the width or the
device, since every pass runs the same layers. Then the projected GPU-hours of one full-scale
job (params.yaml: the method's epochs, 50 000 images, 0.56 GMAC per 32x32 forward of the
standard ResNet-18) at 10-25 % of an H100/H200's dense bf16 peak (989 TFLOP/s): an estimate
from counted FLOPs, not a measurement (`make preflight` measures on the machine at hand).

    python benchmarks/forward_equivalents.py [--width 8] [--batch 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ascl import config  # noqa: E402
from ascl.artifacts import build_pretrain_net, cluster_counts  # noqa: E402
from ascl.pretrain import make_step  # noqa: E402

FORWARD_GFLOP = 2 * 0.56  # one standard ResNet-18 forward on a 32x32 image (0.56 GMAC)
PEAK_TFLOPS = 989.0  # H100 / H200 dense bf16
MFU = (0.25, 0.10)  # the range the projection assumes (best, worst)
N_TRAIN = 50_000


def counted(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def forward_equivalents(params: dict, method: str, batch: int) -> dict:
    settings = config.pretrain_settings(params, method)
    torch.manual_seed(0)
    net = build_pretrain_net(settings, 10).train()
    step = make_step(settings, net)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(batch) % 10
    if settings["objective"].get("pseudo_labels"):
        k = len(cluster_counts(settings["objective"]["pseudo_labels"]["clusters"]))
        y = torch.stack([y % 2] * k, 1)

    def train_step() -> None:
        step(x, y, torch.Generator().manual_seed(1))["loss"].backward()

    def forward() -> None:
        with torch.no_grad():
            net.features(x, "adv")

    ratio = counted(train_step) / counted(forward)
    train = settings["train"]
    flop = ratio * N_TRAIN * train["epochs"] * FORWARD_GFLOP * 1e9
    hours = [flop / (PEAK_TFLOPS * 1e12 * mfu) / 3600 for mfu in MFU]
    return {
        "method": method,
        "attack_steps": train["attack"]["steps"],
        "epochs": train["epochs"],
        "forward_equivalents": round(ratio, 1),
        "gpu_hours": [round(h, 1) for h in hours],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    params = config.load_params(ROOT / "params.yaml")
    params = config.deep_merge(params, {"device": "cpu", "model": {"width": args.width}})
    rows = [forward_equivalents(params, m, args.batch) for m in params["methods"]]
    print(
        "| method | PGD steps | epochs | forward passes per image and step | GPU-hours (one job) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["gpu_hours"]
        print(
            f"| {r['method']} | {r['attack_steps']} | {r['epochs']} | "
            f"{r['forward_equivalents']:g} | {lo:g}–{hi:g} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
