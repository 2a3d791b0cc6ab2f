"""Pre-training objectives: one function per objective, returning named loss terms.

`ascl_terms` implements eq. (10) of the paper,

    L = λ_AT · CE(f(x + δ_AT), y) + λ_CL · NT-Xent(x̃_i + δ_i, x̃_j + δ_j)
        + λ_ASCL · L_ASCL(x̃_i, x + δ_ASCL),

where x is the weak (crop + flip) view, x̃_i and x̃_j are two SimCLR views of the same image,
and each δ comes from PGD on the loss named by `attack_source` (see params.yaml). Clean views use
the model's "clean" BN branch; every perturbed input uses the "adv" branch. A term whose weight is
zero is neither attacked nor computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ascl.attacks import pgd
from ascl.losses import ascl_loss, cross_entropy_loss, nt_xent_loss
from ascl.models import PretrainNet

ATTACK_SOURCES = ("ensemble", "label_based", "label_free")


@dataclass(frozen=True)
class AttackConfig:
    """l∞ PGD settings; eps and alpha in [0, 1] pixel units."""

    eps: float
    alpha: float
    steps: int
    random_start: bool = True
    train_mode: bool = True

    @classmethod
    def from_settings(cls, d: dict) -> AttackConfig:
        """From a params `attack` section (eps/alpha in units of 1/255)."""
        return cls(d["eps"] / 255, d["alpha"] / 255, d["steps"], d["random_start"], d["train_mode"])


@dataclass(frozen=True)
class ASCLObjective:
    lambda_at: float = 1.0
    lambda_cl: float = 0.5
    lambda_ascl: float = 0.2
    attack_source: str = "ensemble"
    temperature: float = 0.5

    def __post_init__(self) -> None:
        if self.attack_source not in ATTACK_SOURCES:
            raise ValueError(
                f"attack_source must be one of {ATTACK_SOURCES}, got {self.attack_source!r}"
            )


def ascl_terms(
    model: PretrainNet,
    x: Tensor,
    view1: Tensor,
    view2: Tensor,
    y: Tensor,
    objective: ASCLObjective,
    attack: AttackConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Loss terms of eq. (10) for one batch.

    x: (N, 3, H, W) weak view; view1, view2: (N, 3, H, W) SimCLR views; y: (N,) labels.
    Returns {"at", "cl", "ascl"} (those with non-zero weight) and "loss", their weighted sum.
    """
    obj, tau, n = objective, objective.temperature, x.shape[0]
    use_at, use_cl, use_ascl = obj.lambda_at > 0, obj.lambda_cl > 0, obj.lambda_ascl > 0

    def attack_with(loss_fn, inputs: Tensor) -> Tensor:
        return pgd(
            loss_fn,
            inputs,
            eps=attack.eps,
            alpha=attack.alpha,
            steps=attack.steps,
            random_start=attack.random_start,
            generator=generator,
            model=model,
            train_mode=attack.train_mode,
        )

    def ce_attack_loss(labels: Tensor):
        return lambda xa: cross_entropy_loss(model(xa, "adv"), labels)

    def nt_xent_pair_loss(xa: Tensor) -> Tensor:
        z = model.project(xa, "adv")
        return nt_xent_loss(z[:n], z[n:], tau)

    views = torch.cat([view1, view2])
    # Clean projection of view 1: a training target of the ASCL term (with gradient) and the
    # reference of the label-free attack; without the ASCL term no graph is kept for it.
    needs_view1 = use_ascl or (obj.attack_source == "label_free" and use_at)
    with torch.set_grad_enabled(use_ascl and torch.is_grad_enabled()):
        z_view1 = model.project(view1, "clean") if needs_view1 else None

    x_at = x_cl = x_ascl = None
    if obj.attack_source == "ensemble":
        if use_at:
            x_at = attack_with(ce_attack_loss(y), x)
        if use_cl:
            x_cl = attack_with(nt_xent_pair_loss, views)
        if use_ascl:
            z_ref = z_view1.detach()
            x_ascl = attack_with(lambda xa: ascl_loss(z_ref, model.project(xa, "adv"), y, tau), x)
    elif obj.attack_source == "label_based":
        if use_at or use_ascl:
            x_at = x_ascl = attack_with(ce_attack_loss(y), x)
        if use_cl:
            x_cl = attack_with(ce_attack_loss(torch.cat([y, y])), views)
    else:  # label_free
        if use_at or use_ascl:
            z_ref = z_view1.detach()
            x_at = x_ascl = attack_with(
                lambda xa: nt_xent_loss(model.project(xa, "adv"), z_ref, tau), x
            )
        if use_cl:
            x_cl = attack_with(nt_xent_pair_loss, views)

    terms: dict[str, Tensor] = {}
    loss = x.new_zeros(())
    if use_at:
        terms["at"] = cross_entropy_loss(model(x_at, "adv"), y)
        loss = loss + obj.lambda_at * terms["at"]
    if use_cl:
        z = model.project(x_cl, "adv")
        terms["cl"] = nt_xent_loss(z[:n], z[n:], tau)
        loss = loss + obj.lambda_cl * terms["cl"]
    if use_ascl:
        terms["ascl"] = ascl_loss(z_view1, model.project(x_ascl, "adv"), y, tau)
        loss = loss + obj.lambda_ascl * terms["ascl"]
    terms["loss"] = loss
    return terms
