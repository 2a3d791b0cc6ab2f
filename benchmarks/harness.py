"""Measurement workers of the benchmark suite.

Every measurement that reports a peak memory runs in its own process:
``python benchmarks/harness.py '<spec JSON>'`` runs one worker and prints one line
``RESULT <JSON>`` on stdout. ``bench.py`` starts these workers one after another (never two at
once, so they do not compete for the cores) and collects their results.

Worker kinds (``spec["kind"]``):

* ``train``: training-step throughput of one variant on one device, data loading and
  augmentation included: ``reference``, ``ours`` (as ``ascl.engine.fit`` runs it: channels_last
  model, ``pretrain.precision`` from params.yaml, i.e. bf16 autocast on CUDA and fp32 on CPU),
  ``ours_fp32`` or ``ours_bf16`` (the same with the precision forced; ``ours_channels_last`` is
  an old name of ``ours``); with ``count_flops`` also the FLOPs of one training step;
* ``precision``: bf16 autocast vs fp32 loss terms and gradients of our step on one fixed batch;
* ``eval``: trains a small classifier on separable synthetic data for a few steps, then times
  PGD-20 (``ascl.metrics.robust_accuracy``) and saves the classifier for ``autoattack``;
* ``autoattack``: AutoAttack (standard, l∞, eps 8/255) on a few images of that classifier;
* ``agreement``: the loss-agreement check of the reference against ``ascl.objectives``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PARAMS_PATH = REPO_ROOT / "params.yaml"
NUM_CLASSES = 10

if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from reference import (  # noqa: E402
    ReferenceConfig,
    ascl_contrast,
    make_loader,
    nt_xent,
    reference_terms,
    reference_train_step,
)

# ---------------------------------------------------------------------------------------------
# Settings, data, models


def pretrain_settings(width: int, method: str = "ascl") -> dict:
    """The resolved settings of one pre-training job from params.yaml, with a model width."""
    from ascl.config import load_params
    from ascl.config import pretrain_settings as resolve

    settings = resolve(load_params(PARAMS_PATH), method)
    settings["model"]["width"] = width
    return settings


def reference_config(settings: dict) -> ReferenceConfig:
    """The reference's hyperparameters, read from the same settings as ours."""
    spec, train = settings["objective"], settings["train"]
    attack = train["attack"]
    return ReferenceConfig(
        lambda_at=spec["lambda_at"],
        lambda_cl=spec["lambda_cl"],
        lambda_ascl=spec["lambda_ascl"],
        temperature=train["temperature"],
        eps=attack["eps"] / 255,
        alpha=attack["alpha"] / 255,
        steps=attack["steps"],
        random_start=attack["random_start"],
    )


def synthetic_images(n: int, size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Separable CIFAR-shaped data: uint8 (n, 3, size, size) and int64 labels (n,).

    Each class has a smooth random colour pattern (the same for every seed); an image is 75 % its
    class pattern and 25 % uniform noise, so a small network learns it within a few steps.
    """
    protos = torch.rand(NUM_CLASSES, 3, 4, 4, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.interpolate(protos, size=(size, size), mode="bilinear")
    labels = torch.randperm(n, generator=g) % NUM_CLASSES
    noise = torch.rand(n, 3, size, size, generator=g)
    images = 0.75 * protos[labels] + 0.25 * noise
    return (images * 255).round().clamp(0, 255).to(torch.uint8), labels


def build_model(settings: dict, seed: int = 0):
    from ascl.artifacts import build_pretrain_net

    torch.manual_seed(seed)
    return build_pretrain_net(settings, NUM_CLASSES)


def sgd(model: torch.nn.Module, settings: dict) -> torch.optim.SGD:
    train = settings["train"]
    return torch.optim.SGD(
        model.parameters(),
        lr=train["lr"],
        momentum=train["momentum"],
        weight_decay=train["weight_decay"],
    )


# ---------------------------------------------------------------------------------------------
# Memory and timing helpers


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def children_peak_rss_bytes() -> int:
    """Largest peak RSS among waited-for child processes (DataLoader workers)."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(batch: int, times: list[float]) -> dict[str, float]:
    """images/s over the timed steps (total), plus per-step median and min seconds."""
    return {
        "images_per_s": batch * len(times) / sum(times),
        "step_s_median": float(np.median(times)),
        "step_s_min": float(min(times)),
    }


# ---------------------------------------------------------------------------------------------
# Training-step workers


def ours_loop(
    settings: dict,
    device: torch.device,
    batch: int,
    warmup: int,
    steps: int,
    precision: str | None = None,
    seed: int = 0,
    count_flops: bool = False,
) -> tuple[list[float], dict[str, float]]:
    """Our step as `ascl.engine.fit` runs it: a channels_last model (as `ascl.pretrain`), index
    uint8 data on the device, to float, then under bf16 autocast where the precision resolves
    to it (`resolve_precision`; None = params.yaml's `pretrain.precision`): batched augmentation
    (`ascl.pretrain.make_step`) and loss terms; then, outside autocast, backward and SGD step.

    With count_flops, one more (untimed) step runs under `FlopCounterMode`; its total FLOPs
    (forward and backward of every attack step and of the loss, as executed) come back under
    "flops_per_step"."""
    from ascl.engine import epoch_batches, place_model, resolve_precision
    from ascl.pretrain import make_step
    from ascl.tensors import to_float

    precision = precision or settings["train"].get("precision", "auto")
    bf16 = resolve_precision(precision, device)
    model = place_model(build_model(settings, seed), device, settings.get("memory_format", "auto"))
    model.train()
    optimizer = sgd(model, settings)
    step = make_step(settings, model)
    n = batch * (warmup + steps + int(count_flops))
    x_all, y_all = synthetic_images(n, seed=seed)
    x_all, y_all = x_all.to(device), y_all.to(device)
    generator = torch.Generator().manual_seed(seed)
    batches = epoch_batches(n, batch, generator)
    times: list[float] = []
    values: dict[str, float] = {}

    def one_step(idx: Tensor) -> None:
        nonlocal values
        idx = idx.to(device)
        x, y = to_float(x_all[idx]), y_all[idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = step(x, y, generator)
        values = {k: float(v.detach()) for k, v in terms.items()}
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()

    for idx in batches[: warmup + steps]:
        sync(device)
        t0 = time.perf_counter()
        one_step(idx)
        sync(device)
        times.append(time.perf_counter() - t0)
    values["bf16"] = float(bf16)
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            one_step(batches[warmup + steps])
        values["flops_per_step"] = float(counter.get_total_flops())
    return times[warmup:], values


def reference_loop(
    settings: dict,
    device: torch.device,
    batch: int,
    warmup: int,
    steps: int,
    workers: int = 0,
    seed: int = 0,
) -> tuple[list[float], dict[str, float]]:
    """The peer-style step: DataLoader with per-sample PIL augmentation, then the step."""
    from ascl.augment import AugmentConfig

    model = build_model(settings, seed).to(device)
    model.train()
    optimizer = sgd(model, settings)
    cfg = reference_config(settings)
    n = batch * (warmup + steps)
    x_all, y_all = synthetic_images(n, seed=seed)
    images_hwc = x_all.permute(0, 2, 3, 1).contiguous().numpy()
    aug = AugmentConfig.from_dict(settings["augment"])
    loader = make_loader(images_hwc, y_all.numpy(), aug, batch, num_workers=workers, seed=seed)
    it = iter(loader)
    times: list[float] = []
    values: dict[str, float] = {}
    for _ in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        values = reference_train_step(model, optimizer, next(it), cfg, device)
        sync(device)
        times.append(time.perf_counter() - t0)
    del it, loader
    return times[warmup:], values


def train_worker(spec: dict) -> dict[str, Any]:
    device = torch.device(spec["device"])
    settings = pretrain_settings(spec["width"])
    settings["train"]["attack"]["steps"] = spec.get("attack_steps", 5)
    base_rss = rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    variant = spec["variant"]
    if variant == "reference":
        times, values = reference_loop(
            settings,
            device,
            spec["batch"],
            spec["warmup"],
            spec["steps"],
            workers=spec.get("workers", 0),
        )
    else:
        times, values = ours_loop(
            settings,
            device,
            spec["batch"],
            spec["warmup"],
            spec["steps"],
            precision={"ours_fp32": "fp32", "ours_bf16": "bf16"}.get(variant),
            count_flops=spec.get("count_flops", False),
        )
    out: dict[str, Any] = {
        "variant": variant,
        "device": str(device),
        "batch": spec["batch"],
        "width": spec["width"],
        "timed_steps": len(times),
        "step_s": times,
        **throughput(spec["batch"], times),
        "base_rss_bytes": base_rss,
        "peak_rss_bytes": peak_rss_bytes(),
        "workers_peak_rss_bytes": (
            children_peak_rss_bytes() if variant == "reference" and spec.get("workers", 0) else 0
        ),
        "last_loss": values.get("loss", math.nan),
        "bf16": bool(values.get("bf16", 0.0)),
    }
    if "flops_per_step" in values:
        out["flops_per_step"] = values["flops_per_step"]
    if device.type == "cuda":
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out


# ---------------------------------------------------------------------------------------------
# Loss agreement


def _rel(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _grads(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def _grad_rel(ours: dict[str, Tensor], ref: dict[str, Tensor]) -> tuple[float, float]:
    """(‖Δ‖/‖g‖ over all parameters, max of the same per tensor).

    The per-tensor maximum skips tensors whose reference gradient norm is below 1e-6 of the
    global norm: those are zero in exact arithmetic (e.g. the bias of a linear layer followed
    by a train-mode BN) and hold only rounding noise.
    """
    keys = sorted(ref)
    flat_o = torch.cat([ours[k].double().flatten() for k in keys])
    flat_r = torch.cat([ref[k].double().flatten() for k in keys])
    total = flat_r.norm()
    glob = float((flat_o - flat_r).norm() / total)
    per = [
        float((ours[k].double() - ref[k].double()).norm() / ref[k].double().norm())
        for k in keys
        if ref[k].double().norm() > 1e-6 * total
    ]
    return glob, max(per)


def agreement_worker(spec: dict) -> dict[str, Any]:
    """Same weights, same views, same perturbations -> the terms of both implementations.

    Case "no_attack": steps 0 and no random start (x + δ = x). Case "pgd": the configured PGD
    with random start, both drawing their starts from generators in the same state. Also
    compares the parameter gradients of the total loss and the peer-style losses against
    `ascl.losses` on random unit vectors.
    """
    from ascl.augment import AugmentConfig
    from ascl.losses import ascl_loss, nt_xent_loss
    from ascl.objectives import ASCLObjective, AttackConfig, ascl_terms

    settings = pretrain_settings(spec["width"])
    batch = spec["batch"]
    base = build_model(settings, seed=1)
    base.train()
    x_all, y_all = synthetic_images(batch, seed=1)
    aug = AugmentConfig.from_dict(settings["augment"])
    loader = make_loader(x_all.permute(0, 2, 3, 1).numpy(), y_all.numpy(), aug, batch, seed=1)
    x, v1, v2, y = next(iter(loader))
    results: dict[str, Any] = {"batch": batch, "width": spec["width"], "cases": {}}

    g = torch.Generator().manual_seed(0)
    z1 = torch.nn.functional.normalize(torch.randn(batch, 128, generator=g), dim=1)
    z2 = torch.nn.functional.normalize(torch.randn(batch, 128, generator=g), dim=1)
    results["losses"] = {
        "nt_xent": _rel(nt_xent(z1, z2, 0.5), nt_xent_loss(z1, z2, 0.5)),
        "ascl": _rel(ascl_contrast(z1, z2, y, 0.5), ascl_loss(z1, z2, y, 0.5)),
    }

    ref_cfg = reference_config(settings)
    spec_obj, attack = settings["objective"], settings["train"]["attack"]
    objective = ASCLObjective(
        lambda_at=spec_obj["lambda_at"],
        lambda_cl=spec_obj["lambda_cl"],
        lambda_ascl=spec_obj["lambda_ascl"],
        attack_source=spec_obj["attack_source"],
        temperature=settings["train"]["temperature"],
        reading="symmetric",  # the peer-style reference is SupContrast over {x̃, x + δ}
    )
    cases = {
        "no_attack": (0, False, "peer"),
        "pgd": (attack["steps"], attack["random_start"], "peer"),
        "pgd_ascl_losses": (attack["steps"], attack["random_start"], "ascl"),
    }
    for name, (steps, random_start, loss_impl) in cases.items():
        ours_model, ref_model = copy.deepcopy(base), copy.deepcopy(base)
        ours_attack = AttackConfig(
            attack["eps"] / 255, attack["alpha"] / 255, steps, random_start, train_mode=True
        )
        ours = ascl_terms(
            ours_model,
            x,
            v1,
            v2,
            y,
            objective,
            ours_attack,
            torch.Generator().manual_seed(7),
        )
        ours["loss"].backward()
        cfg = dataclasses.replace(ref_cfg, steps=steps, random_start=random_start)
        ref = reference_terms(
            ref_model, x, v1, v2, y, cfg, torch.Generator().manual_seed(7), loss_impl
        )
        ref_model.zero_grad()
        ref["loss"].backward()
        g_ours, g_ref = _grads(ours_model), _grads(ref_model)
        grad_rel = _grad_rel(g_ours, g_ref)
        results["cases"][name] = {
            "steps": steps,
            "random_start": random_start,
            "reference_losses": loss_impl,
            "ours": {k: float(v.detach()) for k, v in ours.items()},
            "reference": {k: float(v.detach()) for k, v in ref.items()},
            "rel_diff": {k: _rel(ours[k], ref[k]) for k in ref},
            "grad_rel_diff_global": grad_rel[0],
            "grad_rel_diff_max_tensor": grad_rel[1],
            "same_param_sets": sorted(g_ours) == sorted(g_ref),
        }
    return results


def precision_worker(spec: dict) -> dict[str, Any]:
    """bf16 autocast vs fp32 on `spec["device"]`: `ascl_terms` (params.yaml's ASCL settings) on
    one fixed batch and fixed weights, without attack (x + δ = x) and with the configured PGD
    from the same random start; relative differences of each term and ‖Δg‖/‖g‖ of the parameter
    gradients of the total loss (backward outside autocast, as `ascl.engine.fit`)."""
    from ascl.engine import place_model
    from ascl.objectives import ASCLObjective, AttackConfig, ascl_terms
    from ascl.tensors import to_float

    device = torch.device(spec["device"])
    settings = pretrain_settings(spec["width"])
    settings["train"]["attack"]["steps"] = spec.get("attack_steps", 5)
    spec_obj, attack = settings["objective"], settings["train"]["attack"]
    objective = ASCLObjective(
        lambda_at=spec_obj["lambda_at"],
        lambda_cl=spec_obj["lambda_cl"],
        lambda_ascl=spec_obj["lambda_ascl"],
        attack_source=spec_obj["attack_source"],
        temperature=settings["train"]["temperature"],
        reading="symmetric",  # the peer-style reference is SupContrast over {x̃, x + δ}
    )
    base = place_model(build_model(settings, seed=1), device).train()
    x_u8, y = synthetic_images(3 * spec["batch"], seed=1)
    x_all = to_float(x_u8).to(device)
    x, v1, v2 = x_all.split(spec["batch"])
    y = y[: spec["batch"]].to(device)
    cases: dict[str, Any] = {}
    for name, steps in (("no_attack", 0), ("pgd", attack["steps"])):
        cfg = AttackConfig(
            attack["eps"] / 255, attack["alpha"] / 255, steps, steps > 0, attack["train_mode"]
        )
        out: dict[bool, tuple[dict[str, float], Tensor]] = {}
        for bf16 in (False, True):
            model = copy.deepcopy(base)
            gen = torch.Generator().manual_seed(7)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                terms = ascl_terms(model, x, v1, v2, y, objective, cfg, gen)
            terms["loss"].backward()
            grads = [p.grad.double().flatten() for p in model.parameters() if p.grad is not None]
            out[bf16] = ({k: float(v.detach()) for k, v in terms.items()}, torch.cat(grads))
        (fp32, g32), (bf16_terms, g16) = out[False], out[True]
        cases[name] = {
            "steps": steps,
            "fp32": fp32,
            "bf16": bf16_terms,
            "rel_diff": {k: abs(bf16_terms[k] - v) / abs(v) for k, v in fp32.items()},
            "grad_rel_diff": float((g16 - g32).norm() / g32.norm()),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)),
        }
    return {"device": str(device), "width": spec["width"], "batch": spec["batch"], "cases": cases}


# ---------------------------------------------------------------------------------------------
# Evaluation workers


def _classifier(width: int):
    from ascl.models import Classifier, ResNet18Encoder

    torch.manual_seed(0)
    return Classifier(ResNet18Encoder(width, "separated"), NUM_CLASSES)


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, x: Tensor, batch: int) -> None:
    """Running BN statistics := the exact averages over x (train-mode forwards, no grad)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])


def eval_worker(spec: dict) -> dict[str, Any]:
    """Train a classifier briefly (clean CE, then BN statistics recalibrated on the training
    images), then time PGD-20 via `robust_accuracy`."""
    from ascl.config import evaluate_settings, load_params
    from ascl.metrics import accuracy, robust_accuracy
    from ascl.tensors import to_float

    device = torch.device(spec["device"])
    model = _classifier(spec["width"]).to(device)
    x_train, y_train = synthetic_images(spec["train_images"], seed=2)
    x_train, y_train = x_train.to(device), y_train.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    t0 = time.perf_counter()
    for _ in range(spec["train_steps"]):
        idx = torch.randperm(len(x_train), generator=g)[:64].to(device)
        loss = torch.nn.functional.cross_entropy(model(to_float(x_train[idx])), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    recalibrate_bn(model, to_float(x_train), batch=128)
    train_s = time.perf_counter() - t0
    model.eval()
    torch.save(model.state_dict(), spec["save"])

    pgd = evaluate_settings(load_params(PARAMS_PATH))["pgd"]
    x_eval, y_eval = synthetic_images(spec["n_pgd"], seed=3)
    x_eval, y_eval = x_eval.to(device), y_eval.to(device)
    clean = accuracy(model, x_eval, y_eval, spec["pgd_batch"])
    eps = pgd["eps"][0]
    robust_accuracy(  # warm-up on one small batch
        model,
        x_eval[:8],
        y_eval[:8],
        eps=eps / 255,
        alpha=pgd["alpha"] / 255,
        steps=1,
        random_start=True,
        batch_size=8,
    )
    sync(device)
    t0 = time.perf_counter()
    ra = robust_accuracy(
        model,
        x_eval,
        y_eval,
        eps=eps / 255,
        alpha=pgd["alpha"] / 255,
        steps=pgd["steps"],
        random_start=pgd["random_start"],
        batch_size=spec["pgd_batch"],
    )
    sync(device)
    pgd_s = time.perf_counter() - t0
    return {
        "width": spec["width"],
        "classifier_train_steps": spec["train_steps"],
        "classifier_train_s": train_s,
        "pgd_steps": pgd["steps"],
        "pgd_eps": eps,
        "pgd_images": spec["n_pgd"],
        "pgd_batch": spec["pgd_batch"],
        "clean_acc": clean,
        "pgd_robust_acc": ra,
        "pgd_s": pgd_s,
        "pgd_images_per_s": spec["n_pgd"] / pgd_s,
        "peak_rss_bytes": peak_rss_bytes(),
    }


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _import_autoattack():
    try:
        from autoattack import AutoAttack
    except ImportError:
        from pyautoattack import AutoAttack
    return AutoAttack


def autoattack_worker(spec: dict) -> dict[str, Any]:
    """AutoAttack (standard, l∞, eps 8/255, seed 0) on the classifier saved by `eval`."""
    from ascl.tensors import to_float

    AutoAttack = _import_autoattack()
    device = torch.device(spec["device"])
    model = _classifier(spec["width"]).to(device)
    model.load_state_dict(torch.load(spec["load"], map_location=device, weights_only=True))
    model.eval()
    x, y = synthetic_images(spec["n_aa"], seed=3)
    x, y = to_float(x).to(device), y.to(device)
    collect = _Collect()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    adversary = AutoAttack(
        model, norm="Linf", eps=8 / 255, version="standard", device=device, seed=0
    )
    sync(device)
    t0 = time.perf_counter()
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=spec["aa_batch"])
    sync(device)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean() * 100)
        robust = float((model(x_adv).argmax(1) == y).float().mean() * 100)
    return {
        "width": spec["width"],
        "aa_images": spec["n_aa"],
        "aa_batch": spec["aa_batch"],
        "aa_s": seconds,
        "aa_images_per_s": spec["n_aa"] / seconds,
        "clean_acc": clean,
        "aa_robust_acc": robust,
        "log": [s for s in collect.lines if "robust accuracy" in s or "initial" in s],
        "peak_rss_bytes": peak_rss_bytes(),
    }


WORKERS = {
    "train": train_worker,
    "agreement": agreement_worker,
    "precision": precision_worker,
    "eval": eval_worker,
    "autoattack": autoattack_worker,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    if "threads" in spec:
        torch.set_num_threads(spec["threads"])
    result = WORKERS[spec["kind"]](spec)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
