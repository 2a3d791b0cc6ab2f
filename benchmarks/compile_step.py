"""`torch.compile` against eager, on this machine: the pre-training step and the PGD evaluation.

    python benchmarks/compile_step.py [--params params.yaml --params config/smoke.yaml]
                                      [--method ascl] [--steps 6] [--json out.json]

What is compiled is what `params.yaml`'s `compile: true` compiles (`ascl.engine.compile_encoder`):
the ResNet-18 encoder, in place, so that every forward and backward through it (the attack's
steps, the views, the loss) runs the compiled graph. Both variants start from the same weights
and the same generator state. Printed, measured in this one run:

- correctness: every loss term of one step on a fixed batch and the gradient norm of the first
  layer, eager vs compiled, without attack steps (|diff| <= 1e-5 is the bar) and with the
  configured attack; and the PGD-evaluation accuracy of the same classifier both ways;
- the first calls (compilation included: the two correctness steps) and the median of the
  timed steps, per variant;
- the break-even: after how many steps the compiled variant has paid for its compilation, and
  what that means for one job of the configured size (its number of steps).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from ascl import config  # noqa: E402
from ascl.artifacts import build_pretrain_net  # noqa: E402
from ascl.engine import compile_encoder, place_model  # noqa: E402
from ascl.metrics import robust_accuracy  # noqa: E402
from ascl.models import Classifier  # noqa: E402
from ascl.pretrain import make_step  # noqa: E402
from ascl.tensors import to_float  # noqa: E402


def synthetic(n: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


def first_terms(net, settings: dict, xb, yb) -> tuple[float, dict, dict]:
    """Seconds of the first calls (compilation included), and the loss terms (plus the encoder's
    first-layer gradient norm) on one fixed batch: without attack steps (random start only:
    a pure function of the weights, the bar for correctness) and with the configured attack.
    No update: both variants keep equal weights (BN statistics move the same way)."""
    free = copy.deepcopy(settings)
    free["train"]["attack"]["steps"] = 0
    out = {}
    t0 = time.perf_counter()
    for name, s in (("attack_free", free), ("attack", settings)):
        net.zero_grad(set_to_none=True)
        terms = make_step(s, net)(xb, yb, torch.Generator().manual_seed(0))
        terms["loss"].backward()
        out[name] = {k: float(v.detach()) for k, v in terms.items()}
        out[name]["grad_norm"] = float(net.encoder.stem.weight.grad.norm())
    net.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, out["attack_free"], out["attack"]


def train_steps(net, settings: dict, x, y, batch: int, steps: int) -> list[float]:
    """Seconds of each of `steps` SGD steps (forward, attack, loss, backward, update)."""
    step = make_step(settings, net)
    opt = torch.optim.SGD(net.parameters(), lr=settings["train"]["lr"], momentum=0.9)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps):
        xb, yb = to_float(x[i * batch : (i + 1) * batch]), y[i * batch : (i + 1) * batch]
        t0 = time.perf_counter()
        terms = step(xb, yb, g)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def pgd_eval(model, x, y, settings: dict, rounds: int) -> tuple[list[float], float]:
    attack = settings["train"]["attack"]
    times, acc = [], 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        acc = robust_accuracy(
            model,
            x,
            y,
            eps=attack["eps"],
            alpha=attack["alpha"],
            steps=10,
            random_start=True,
            batch_size=len(x),
            seed=0,
        )
        times.append(time.perf_counter() - t0)
    return times, acc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", action="append")
    parser.add_argument("--method", default="ascl")
    parser.add_argument("--steps", type=int, default=6, help="training steps per variant")
    parser.add_argument("--eval-rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    files = args.params or [str(REPO / "params.yaml"), str(REPO / "config/smoke.yaml")]
    params = config.load_params(*files)
    settings = config.pretrain_settings(params, args.method)
    batch, size, classes = settings["train"]["batch_size"], 32, 10
    size = params["data"].get("image_size") or size
    torch.manual_seed(0)
    device = torch.device("cpu")
    base = build_pretrain_net(settings, classes)
    x, y = synthetic(batch * args.steps, size, classes, seed=1)
    result: dict = {"params": files, "method": args.method, "batch": batch, "image_size": size}
    result["threads"] = torch.get_num_threads()

    nets = {}
    for variant in ("eager", "compiled"):
        net = place_model(copy.deepcopy(base), device, params.get("memory_format", "auto"))
        if variant == "compiled":
            compile_encoder(net)
        net.train()
        first_s, free, attacked = first_terms(net, settings, to_float(x[:batch]), y[:batch])
        times = train_steps(net, settings, x, y, batch, args.steps)
        result[variant] = {
            "first_step_s": first_s,
            "step_s": statistics.median(times),
            "terms_attack_free": free,
            "terms_attack": attacked,
        }
        nets[variant] = net
    diffs = {
        kind: {
            k: abs(result["eager"][kind][k] - result["compiled"][kind][k])
            for k in result["eager"][kind]
        }
        for kind in ("terms_attack_free", "terms_attack")
    }
    result["term_diffs"] = diffs
    free_diffs = diffs["terms_attack_free"]
    result["max_term_diff"] = max(v for k, v in free_diffs.items() if k != "grad_norm")
    eager_grad = abs(result["eager"]["terms_attack_free"]["grad_norm"]) or 1.0
    result["grad_norm_rel_diff"] = free_diffs["grad_norm"] / eager_grad

    n_eval = min(len(x), params["evaluate"]["batch_size"])
    for variant in ("eager", "compiled"):
        clf = Classifier(copy.deepcopy(nets["eager"].encoder), classes)
        clf = place_model(clf, device, params.get("memory_format", "auto"))
        if variant == "compiled":
            compile_encoder(clf)
        times, acc = pgd_eval(clf, x[:n_eval], y[:n_eval], settings, args.eval_rounds)
        result[variant]["pgd_first_s"] = times[0]
        result[variant]["pgd_s"] = statistics.median(times[1:])
        result[variant]["pgd_accuracy"] = acc

    e, c = result["eager"], result["compiled"]
    compile_cost = c["first_step_s"] - e["first_step_s"]
    saving = e["step_s"] - c["step_s"]
    steps_per_job = settings["train"]["epochs"] * -(-params["data"]["max_train"] // batch)
    result["break_even_steps"] = compile_cost / saving if saving > 0 else None
    result["job_steps"] = steps_per_job
    print(
        f"{args.method} step, batch {batch}, {size}x{size}, width {settings['model']['width']}, "
        f"{result['threads']} threads"
    )
    print(f"{'':>10} {'first step':>11} {'step':>8} {'first PGD':>10} {'PGD-10':>8} {'PGD acc':>8}")
    for name, r in (("eager", e), ("compiled", c)):
        print(
            f"{name:>10} {r['first_step_s']:>10.2f}s {r['step_s']:>7.3f}s "
            f"{r['pgd_first_s']:>9.2f}s {r['pgd_s']:>7.3f}s {r['pgd_accuracy']:>7.1f}%"
        )
    print(
        f"loss terms, eager vs compiled, no attack steps: max |diff| "
        f"{result['max_term_diff']:.1e} "
        f"({'within' if result['max_term_diff'] <= 1e-5 else 'OUTSIDE'} 1e-5): "
        + ", ".join(f"{k} {v:.1e}" for k, v in free_diffs.items() if k != "grad_norm")
        + f"; first-layer gradient norm: relative diff {result['grad_norm_rel_diff']:.1e}"
    )
    print(
        "  with the configured attack (sign steps: a rounding-level gradient difference can flip "
        "a pixel's step): " + ", ".join(f"{k} {v:.1e}" for k, v in diffs["terms_attack"].items())
    )
    print(
        f"step ratio compiled/eager {c['step_s'] / e['step_s']:.2f}, compilation costs "
        f"{compile_cost:.1f} s; "
        + (
            f"break-even after {result['break_even_steps']:.0f} steps "
            f"(a job of this size: {steps_per_job} steps)"
            if saving > 0
            else "compiled steps are not faster: never breaks even"
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
