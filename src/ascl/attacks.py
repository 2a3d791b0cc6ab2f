"""One generic l∞ PGD (eq. 2) used for every attack of the pipeline.

The attacked loss is any function of the perturbed input; the caller's closure fixes the model,
its BN branch and the targets, and `pgd` fixes the model's train/eval mode for the duration of the
attack. Gradients are taken with respect to δ only (torch.autograd.grad), and the model's
parameters are frozen (requires_grad off) during the attack, so no parameter gradient is ever
computed: eager autograd skips them anyway, but a `torch.compile`d model's backward graph
(AOTAutograd) computes the gradient of every input that requires one, which made each attack step
cost three forward passes instead of two (tests/test_attacks.py counts the FLOPs of both).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn


@contextmanager
def frozen_parameters(model: nn.Module | None):
    """Turn requires_grad off for the parameters of `model` that have it (None: nothing) and
    restore it on exit; parameters already frozen (a linear evaluation's encoder) stay so."""
    params = [] if model is None else [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def model_mode(model: nn.Module, train: bool):
    """Temporarily put `model` in train (True) or eval (False) mode; restores every submodule."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for module, was_training in saved:
            module.training = was_training


def pgd(
    loss_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    start_std: float = 0.0,
    generator: torch.Generator | None = None,
    model: nn.Module | None = None,
    train_mode: bool = False,
) -> Tensor:
    """Maximise `loss_fn(x + δ)` over ‖δ‖∞ ≤ eps with x + δ ∈ [0, 1].

    x: (B, ...) clean inputs in [0, 1]; loss_fn maps a perturbed batch of the same shape to a
    scalar. δ starts at start_std·N(0, 1) when start_std > 0 and random_start (TRADES' start:
    x + 0.001·N(0, 1)), else uniform in [-eps, eps] (random_start) or at 0, and takes `steps` signed
    gradient steps of size `alpha`, each followed by projection to the ball and the box. If
    `model` is given it is held in train or eval mode (train_mode) and its parameters are frozen
    (`frozen_parameters`) during the attack; pass the model whose parameters `loss_fn` uses.
    Returns the detached adversarial batch x + δ (same dtype as x). steps = 0 or eps = 0 returns
    the start. The random start is drawn on the generator's device (the training device, for the
    jobs' generators) and nothing is read back to the host.
    """
    x = x.detach()
    if random_start and eps > 0:
        sample = torch.randn if start_std > 0 else torch.rand
        noise = sample(
            x.shape,
            generator=generator,
            device=generator.device if generator else x.device,
            dtype=x.dtype,
        ).to(x.device)
        delta = noise * start_std if start_std > 0 else (noise * 2 - 1) * eps
    else:
        delta = torch.zeros_like(x)
    delta = (x + delta).clamp(0, 1) - x
    if steps == 0 or eps == 0:
        return (x + delta).detach()
    ctx = model_mode(model, train_mode) if model is not None else _null()
    with ctx, frozen_parameters(model), torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = loss_fn(x + delta)
            # Under bf16 autocast (engine.fit) only the model's matmul/conv ops run in bf16: δ,
            # x + δ and this gradient (autograd returns it in δ's dtype) stay fp32.
            (grad,) = torch.autograd.grad(loss, delta)
            delta = delta.detach() + alpha * grad.sign()
            delta = delta.clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def pixel_units(value: float) -> float:
    """A perturbation budget or step in the params' units of 1/255 as a fraction of the [0, 1]
    pixel range: the one conversion of every attack setting (8 -> 8/255)."""
    return value / 255


@dataclass(frozen=True)
class AttackConfig:
    """l∞ PGD settings; eps and alpha in [0, 1] pixel units."""

    eps: float
    alpha: float
    steps: int
    random_start: bool = True
    train_mode: bool = True
    # > 0: the random start is start_std·N(0, 1) (TRADES' x + 0.001·N(0, 1)), not uniform
    start_std: float = 0.0

    @classmethod
    def from_settings(cls, d: dict) -> AttackConfig:
        """From a params `attack` section (eps/alpha in units of 1/255)."""
        return cls(
            pixel_units(d["eps"]),
            pixel_units(d["alpha"]),
            d["steps"],
            d["random_start"],
            d["train_mode"],
            d.get("start_std", cls.start_std),
        )


def eps_warmup_factor(epoch: int, epochs: int, fraction: float) -> float:
    """Multiplier of the training attack's eps and step size in (0-based) epoch `epoch`.

    A linear warm-up over the first n = ceil(fraction * epochs) epochs: epoch e < n attacks at
    e / n of the budget (epoch 0 clean), every later epoch at the full budget; fraction 0 = none.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"eps warm-up fraction must be in [0, 1], got {fraction}")
    n = math.ceil(fraction * epochs - 1e-9)
    return epoch / n if epoch < n else 1.0


def scaled_attack(attack: AttackConfig, factor: float) -> AttackConfig:
    """`attack` with eps and alpha multiplied by `factor` (the ε warm-up); factor 1 = itself."""
    if factor == 1.0:
        return attack
    return replace(attack, eps=attack.eps * factor, alpha=attack.alpha * factor)


def attack_with_config(
    model: nn.Module | None,
    loss_fn: Callable[[Tensor], Tensor],
    inputs: Tensor,
    attack: AttackConfig,
    generator: torch.Generator | None,
) -> Tensor:
    """`pgd` of `loss_fn` from `inputs` (B, ...) with a method's attack settings; the model is
    held in the attack's BN mode. Returns the detached adversarial batch."""
    return pgd(
        loss_fn,
        inputs,
        eps=attack.eps,
        alpha=attack.alpha,
        steps=attack.steps,
        random_start=attack.random_start,
        start_std=attack.start_std,
        generator=generator,
        model=model,
        train_mode=attack.train_mode,
    )


@contextmanager
def _null():
    yield
