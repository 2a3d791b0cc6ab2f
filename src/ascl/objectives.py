"""Pre-training objectives: one function per objective, returning named loss terms.

`ascl_terms` implements eq. (10) of the paper,

    L = λ_AT · CE(f(x + δ_AT), y) + λ_CL · NT-Xent(x̃_i + δ_i, x̃_j + δ_j)
        + λ_ASCL · L_ASCL(x̃_i, x + δ_ASCL),

where x is the weak (crop + flip) view, x̃_i and x̃_j are two SimCLR views of the same image,
and each δ comes from PGD on the loss named by `attack_source` (see params.yaml). Clean views use
the model's "clean" BN branch; every perturbed input uses the "adv" branch. A term whose weight is
zero is neither attacked nor computed.

The baselines of the paper's comparisons follow, one function per objective, each returning its
named terms and "loss" (see params.yaml `methods` for the switches and the source of each
default): `supervised_terms` (standard training, PGD AT of Madry et al. 2018, TRADES),
`rotation_terms` (AT + rotation prediction, Hendrycks et al. 2019), `supcon_terms` (SupCon,
Khosla et al. 2020), `simclr_terms` (SimCLR), `rocl_terms` (RoCL, Kim et al. 2020), `acl_terms`
(ACL-DS, Jiang et al. 2020) and `advcl_terms` (AdvCL, Fan et al. 2021). Every attack goes through
`ascl.attacks.pgd` with the loss the method's public code maximises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ascl.attacks import AttackConfig, attack_with_config, model_mode
from ascl.augment import AugmentConfig, high_frequency_view, rotations, simclr_view, weak_view
from ascl.losses import (
    ASCL_READINGS,
    cross_entropy_loss,
    multiview_nt_xent,
    nt_xent_loss,
    pseudo_label_ce,
    rocl_loss,
    supcon_loss,
    trades_kl,
)
from ascl.models import PretrainNet

# (x, y, generator) -> named loss terms incl. "loss"
StepFn = Callable[[Tensor, Tensor, torch.Generator], dict[str, Tensor]]

VIEW_MAKERS = {"weak": weak_view, "simclr": simclr_view}

ATTACK_SOURCES = ("ensemble", "label_based", "label_free")
ASCL_ANCHORS = ("both", "first")


class Objective:
    """Base of the objectives. `views` names the views of a batch that `terms` takes ("weak":
    `augment.weak_view`, "simclr": `augment.simclr_view`), made in this order from the batch's
    generator; `terms(model, views, y, attack, generator)` returns the named loss terms and
    "loss". Subclasses are frozen dataclasses whose fields are the objective's switches."""

    views: ClassVar[tuple[str, ...]] = ()

    def terms(self, model, views, y, attack, generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def step(self, model: PretrainNet, aug: AugmentConfig, attack: AttackConfig) -> StepFn:
        """(x, y, generator) -> loss terms for `model`; x: (B, 3, H, W) in [0, 1], y: (B,)
        labels (or (B, K) pseudo labels, AdvCL)."""
        makers = [VIEW_MAKERS[v] for v in self.views]
        return lambda x, y, g: self.terms(model, [make(x, aug, g) for make in makers], y, attack, g)


@dataclass(frozen=True)
class ASCLObjective(Objective):
    """ASCL, eq. (10): lambda_at · AT + lambda_cl · adversarial NT-Xent + lambda_ascl · eq. (9),
    each term's adversarial example from `attack_source` (Table 6)."""

    views = ("weak", "simclr", "simclr")
    lambda_at: float = 1.0
    lambda_cl: float = 0.5
    lambda_ascl: float = 0.2
    attack_source: str = "ensemble"
    temperature: float = 0.5
    # eq. (9): "adv_positives" (the default: anchors x̃, positives the adversarial examples
    # x_p + δ_p of the anchor's class; the printed numerator z^adv has no index, we infer p) or
    # "symmetric" (SupCon over {x̃} ∪ {x + δ}: every same-label entry a positive, the adversarial
    # entries anchors too); losses.ascl_adv_positives / losses.ascl_symmetric
    reading: str = "adv_positives"
    # the augmented views x̃ of eq. (9): "both" SimCLR views (eq. 4's I = {1…2N}, the default;
    # 2N anchors, labels repeated) or "first" (view 1 only, N anchors). In the symmetric reading
    # they are the x̃ half of the union. The ensemble's ASCL attack uses the same anchors.
    anchors: str = "both"

    def __post_init__(self) -> None:
        if self.reading not in ASCL_READINGS:
            raise ValueError(f"reading must be one of {tuple(ASCL_READINGS)}, got {self.reading!r}")
        if self.anchors not in ASCL_ANCHORS:
            raise ValueError(f"anchors must be one of {ASCL_ANCHORS}, got {self.anchors!r}")
        if self.attack_source not in ATTACK_SOURCES:
            raise ValueError(
                f"attack_source must be one of {ATTACK_SOURCES}, got {self.attack_source!r}"
            )

    def terms(self, model, views, y, attack, generator):
        return ascl_terms(model, *views, y, self, attack, generator)


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
    The ASCL anchors are the clean projections of view1 (anchors="first", N) or of
    [view1; view2] in one batch (anchors="both", 2N, labels [y; y]); the label-free attack's
    reference is always the clean projection of view1.
    """
    obj, tau, n = objective, objective.temperature, x.shape[0]
    use_at, use_cl, use_ascl = obj.lambda_at > 0, obj.lambda_cl > 0, obj.lambda_ascl > 0
    ascl_loss = ASCL_READINGS[obj.reading]

    def attack_with(loss_fn, inputs: Tensor) -> Tensor:
        return attack_with_config(model, loss_fn, inputs, attack, generator)

    def ce_attack_loss(labels: Tensor):
        return lambda xa: cross_entropy_loss(model(xa, "adv"), labels)

    def nt_xent_pair_loss(xa: Tensor) -> Tensor:
        z = model.project(xa, "adv")
        return nt_xent_loss(z[:n], z[n:], tau)

    views = torch.cat([view1, view2])
    # Clean projection of the anchors (view 1, or both views): a training target of the ASCL
    # term (with gradient); its view-1 rows are the reference of the label-free attack. Without
    # the ASCL term only view 1 is projected, and no graph is kept for it.
    both = obj.anchors == "both"
    y_anchor = torch.cat([y, y]) if both else y
    needs_clean = use_ascl or (obj.attack_source == "label_free" and use_at)
    with torch.set_grad_enabled(use_ascl and torch.is_grad_enabled()):
        anchor_views = views if both and use_ascl else view1
        z_anchor = model.project(anchor_views, "clean") if needs_clean else None
    z_view1 = z_anchor[:n] if z_anchor is not None else None

    x_at = x_cl = x_ascl = None
    if obj.attack_source == "ensemble":
        if use_at:
            x_at = attack_with(ce_attack_loss(y), x)
        if use_cl:
            x_cl = attack_with(nt_xent_pair_loss, views)
        if use_ascl:
            z_ref = z_anchor.detach()
            x_ascl = attack_with(
                lambda xa: ascl_loss(z_ref, y_anchor, model.project(xa, "adv"), y, tau), x
            )
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
        terms["ascl"] = ascl_loss(z_anchor, y_anchor, model.project(x_ascl, "adv"), y, tau)
        loss = loss + obj.lambda_ascl * terms["ascl"]
    terms["loss"] = loss
    return terms


# ---------------------------------------------------------------------------------------------
# Baselines


ADVERSARIES = ("none", "pgd", "trades")
ROTATION_CLASSES = 4
# Hendrycks et al. (2019), adversarial/attacks.py: the attack maximises
# CE_sum(classes) + CE_sum(rotations) / 8.
ROTATION_ATTACK_WEIGHT = 1 / 8


def _shares_bn(model: PretrainNet) -> bool:
    """True when the "clean" and "adv" branches use one BN set (bn="same")."""
    return model.encoder.bn == "same"


@dataclass(frozen=True)
class SupervisedObjective(Objective):
    """End-to-end supervised training on the weak view.

    adversary: "none" (standard CE), "pgd" (Madry et al., 2018: CE on the CE-PGD example) or
    "trades" (Zhang et al., 2019: CE(f(x)) + β·KL(f(x) || f(x+δ)), δ maximising the KL).
    """

    views = ("weak",)

    adversary: str = "pgd"
    trades_beta: float = 6.0

    def __post_init__(self) -> None:
        if self.adversary not in ADVERSARIES:
            raise ValueError(f"adversary must be one of {ADVERSARIES}, got {self.adversary!r}")

    def terms(self, model, views, y, attack, generator):
        return supervised_terms(model, *views, y, self, attack, generator)


def trades_attack_loss(model: PretrainNet, x: Tensor, attack: AttackConfig):
    """TRADES' inner loss xa -> KL(f(x) || f(xa)) on the "adv" branch.

    f(x) is computed once, without gradient, in the attack's BN mode (TRADES computes it in
    eval mode inside its attack loop). x: (N, 3, H, W).
    """
    with torch.no_grad(), model_mode(model, attack.train_mode):
        logits_nat = model(x, "clean")
    return lambda xa: trades_kl(logits_nat, model(xa, "adv"))


def supervised_terms(
    model: PretrainNet,
    x: Tensor,
    y: Tensor,
    objective: SupervisedObjective,
    attack: AttackConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Standard / PGD-AT / TRADES terms. x: (N, 3, H, W) weak view; y: (N,) labels.

    Returns {"ce", "loss"} (none), {"at", "loss"} (pgd: CE of the adversarial example) or
    {"ce", "kl", "loss"} (trades: loss = ce + β·kl). Clean inputs use the "clean" branch,
    adversarial ones the "adv" branch.
    """
    if objective.adversary == "none":
        ce = cross_entropy_loss(model(x, "clean"), y)
        return {"ce": ce, "loss": ce}
    if objective.adversary == "pgd":
        x_adv = attack_with_config(
            model, lambda xa: cross_entropy_loss(model(xa, "adv"), y), x, attack, generator
        )
        at = cross_entropy_loss(model(x_adv, "adv"), y)
        return {"at": at, "loss": at}
    x_adv = attack_with_config(model, trades_attack_loss(model, x, attack), x, attack, generator)
    logits_nat = model(x, "clean")
    ce = cross_entropy_loss(logits_nat, y)
    kl = trades_kl(logits_nat, model(x_adv, "adv"))
    return {"ce": ce, "kl": kl, "loss": ce + objective.trades_beta * kl}


@dataclass(frozen=True)
class RotationObjective(Objective):
    """Supervised (adversarial) training with auxiliary rotation prediction (Hendrycks et al.,
    2019): loss = CE(classes of x) + lambda_rotation · CE(rotation of each of x's 4 rotations)."""

    views = ("weak",)

    lambda_rotation: float = 0.5
    adversarial: bool = True

    def terms(self, model, views, y, attack, generator):
        return rotation_terms(model, *views, y, self, attack, generator)


def rotation_head_losses(
    model: PretrainNet, inputs: Tensor, y: Tensor, y_rot: Tensor, branch: str, reduction: str
) -> tuple[Tensor, Tensor]:
    """(class CE, rotation CE) of one forward of inputs = [x (N); rotations (4N)].

    inputs: (5N, 3, H, W); y: (N,); y_rot: (4N,) in 0..3. The first N rows feed the classifier,
    the other 4N the rotation head; one encoder forward for all 5N (as their code).
    """
    n = y.shape[0]
    f = model.features(inputs, branch)
    ce = F.cross_entropy(model.classifier(f[:n]), y, reduction=reduction)
    rot = F.cross_entropy(model.rotation_head(f[n:]), y_rot, reduction=reduction)
    return ce, rot


def rotation_terms(
    model: PretrainNet,
    x: Tensor,
    y: Tensor,
    objective: RotationObjective,
    attack: AttackConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Terms of Hendrycks et al. (2019), adversarial/train.py. x: (N, 3, H, W) weak view.

    The batch [x; x rotated by 0, 90, 180, 270 degrees] (5N images) is attacked as a whole
    (each image its own δ) by PGD on CE_sum(classes) + CE_sum(rotations)/8; the class CE is
    taken on the first N adversarial images and the rotation CE on the 4N adversarial rotated
    ones (their `loss += 0.5 * CE(rot_pred(pen[N:]))`). With adversarial=False nothing is
    attacked and the clean branch is used. Returns {"ce", "rotation", "loss"}.
    """
    if model.rotation_head is None:
        raise ValueError("the rotation objective needs a PretrainNet with a rotation head")
    x_rot, y_rot = rotations(x)
    inputs = torch.cat([x, x_rot])
    branch = "adv" if objective.adversarial else "clean"
    if objective.adversarial:

        def attack_loss(xa: Tensor) -> Tensor:
            ce, rot = rotation_head_losses(model, xa, y, y_rot, "adv", "sum")
            return ce + ROTATION_ATTACK_WEIGHT * rot

        inputs = attack_with_config(model, attack_loss, inputs, attack, generator)
    ce, rot = rotation_head_losses(model, inputs, y, y_rot, branch, "mean")
    return {"ce": ce, "rotation": rot, "loss": ce + objective.lambda_rotation * rot}


@dataclass(frozen=True)
class SimCLRObjective(Objective):
    """SimCLR (Chen et al., 2020): NT-Xent of two SimCLR views, clean branch, no attack."""

    views = ("simclr", "simclr")

    temperature: float = 0.5

    def terms(self, model, views, y, attack, generator):
        return simclr_terms(model, *views, self.temperature)


@dataclass(frozen=True)
class SupConObjective(Objective):
    """SupCon (Khosla et al., 2020) of two SimCLR views; base_temperature: SupContrast's loss
    factor temperature / base_temperature (None: no factor)."""

    views = ("simclr", "simclr")

    temperature: float = 0.1
    base_temperature: float | None = None

    def terms(self, model, views, y, attack, generator):
        return supcon_terms(model, *views, y, self.temperature, self.base_temperature)


def simclr_terms(
    model: PretrainNet, view1: Tensor, view2: Tensor, temperature: float
) -> dict[str, Tensor]:
    """SimCLR: NT-Xent of the two views, one forward of both on the clean branch.

    view1, view2: (N, 3, H, W) SimCLR views. Returns {"cl", "loss"}.
    """
    n = view1.shape[0]
    z = model.project(torch.cat([view1, view2]), "clean")
    cl = nt_xent_loss(z[:n], z[n:], temperature)
    return {"cl": cl, "loss": cl}


def supcon_terms(
    model: PretrainNet,
    view1: Tensor,
    view2: Tensor,
    y: Tensor,
    temperature: float,
    base_temperature: float | None = None,
) -> dict[str, Tensor]:
    """SupCon (Khosla et al., 2020, L_out): both views of every sample, positives = same label.

    view1, view2: (N, 3, H, W); y: (N,). One forward on the clean branch. With
    base_temperature the loss is multiplied by temperature / base_temperature, as SupContrast's
    SupConLoss does (x 1.43 at 0.1 / 0.07). Returns {"supcon", "loss"}.
    """
    z = model.project(torch.cat([view1, view2]), "clean")
    loss = supcon_loss(z, torch.cat([y, y]), temperature)
    if base_temperature is not None:
        loss = loss * (temperature / base_temperature)
    return {"supcon": loss, "loss": loss}


@dataclass(frozen=True)
class RoCLObjective(Objective):
    """RoCL (Kim et al., 2020): rocl_loss(t(x), t'(x), t(x)^adv) + lambda_reg · NT-Xent(t(x)^adv,
    t'(x)), where t(x)^adv starts at t(x) and maximises NT-Xent(t(x) + δ, t'(x))."""

    views = ("simclr", "simclr")

    lambda_reg: float = 1 / 256
    temperature: float = 0.5

    def terms(self, model, views, y, attack, generator):
        return rocl_terms(model, *views, self, attack, generator)


def rocl_attack_loss(model: PretrainNet, view2: Tensor, attack: AttackConfig, temperature: float):
    """RoCL's instance-wise attack loss xa -> NT-Xent(xa, t'(x)) over the N pairs.

    The target projections of view2 (N, 3, H, W) are computed once, without gradient, in the
    attack's BN mode; RoCL forwards [xa; t'(x)] jointly in eval mode, which gives the same
    projections.
    """
    with torch.no_grad(), model_mode(model, attack.train_mode):
        z_target = model.project(view2, "clean")
    return lambda xa: nt_xent_loss(model.project(xa, "adv"), z_target, temperature)


def rocl_terms(
    model: PretrainNet,
    view1: Tensor,
    view2: Tensor,
    objective: RoCLObjective,
    attack: AttackConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """RoCL's training loss (rocl_train.py with its defaults attack_to = regularize_to = other).

    view1, view2: (N, 3, H, W) SimCLR views t(x), t'(x). The adversarial example starts at t(x)
    and maximises NT-Xent against t'(x). Then "rocl" = rocl_loss over (t(x), t'(x), t(x)^adv)
    and "reg" = NT-Xent(t(x)^adv, t'(x)); loss = rocl + lambda_reg · reg. With one BN set the
    3N inputs go through one forward (RoCL's torch.cat((inputs_1, inputs_2, advinputs))); with
    separated BN the clean views use the clean branch and t(x)^adv the adv branch. Both terms
    use the same projections (RoCL's code re-forwards the pair for "reg"; only BN batch
    statistics differ). RoCL's similarity matrix detaches one factor of z·zᵀ; here gradients flow
    through both, as in the paper's loss.
    """
    tau, n = objective.temperature, view1.shape[0]
    x_adv = attack_with_config(
        model, rocl_attack_loss(model, view2, attack, tau), view1, attack, generator
    )
    if _shares_bn(model):
        z = model.project(torch.cat([view1, view2, x_adv]), "adv")
        z1, z2, z_adv = z[:n], z[n : 2 * n], z[2 * n :]
    else:
        z12 = model.project(torch.cat([view1, view2]), "clean")
        z1, z2, z_adv = z12[:n], z12[n:], model.project(x_adv, "adv")
    contrastive = rocl_loss(z1, z2, z_adv, tau)
    reg = nt_xent_loss(z_adv, z2, tau)
    return {"rocl": contrastive, "reg": reg, "loss": contrastive + objective.lambda_reg * reg}


@dataclass(frozen=True)
class ACLObjective(Objective):
    """ACL-DS (Jiang et al., 2020): lambda_clean · NT-Xent(clean pair, clean BN) + lambda_adv ·
    NT-Xent(adversarial pair, adv BN); both views of the adversarial pair are attacked jointly
    to maximise their NT-Xent."""

    views = ("simclr", "simclr")

    lambda_clean: float = 0.5
    lambda_adv: float = 0.5
    temperature: float = 0.5

    def terms(self, model, views, y, attack, generator):
        return acl_terms(model, *views, self, attack, generator)


def acl_terms(
    model: PretrainNet,
    view1: Tensor,
    view2: Tensor,
    objective: ACLObjective,
    attack: AttackConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """ACL-DS terms (train_simCLR.py --ACL_DS). view1, view2: (N, 3, H, W) SimCLR views.

    "adv": both views perturbed by PGD on NT-Xent of the pair (PGD_contrastive), one forward
    of the 2N adversarial views on the adv branch; "clean": one forward of the 2N clean views on
    the clean branch. loss = lambda_clean · clean + lambda_adv · adv (ACL: (clean + adv) / 2).
    With bn="same" both streams use one BN set (still one forward per stream). A zero-weight
    term is neither attacked nor computed. Returns {"clean", "adv", "loss"} (non-zero weights).
    """
    tau, n = objective.temperature, view1.shape[0]
    views = torch.cat([view1, view2])
    terms: dict[str, Tensor] = {}
    loss = view1.new_zeros(())
    if objective.lambda_clean > 0:
        z = model.project(views, "clean")
        terms["clean"] = nt_xent_loss(z[:n], z[n:], tau)
        loss = loss + objective.lambda_clean * terms["clean"]
    if objective.lambda_adv > 0:

        def pair_loss(xa: Tensor) -> Tensor:
            za = model.project(xa, "adv")
            return nt_xent_loss(za[:n], za[n:], tau)

        x_adv = attack_with_config(model, pair_loss, views, attack, generator)
        terms["adv"] = pair_loss(x_adv)
        loss = loss + objective.lambda_adv * terms["adv"]
    terms["loss"] = loss
    return terms


@dataclass(frozen=True)
class AdvCLObjective(Objective):
    """AdvCL (Fan et al., 2021): (τ/τ_base)·multiview NT-Xent over (x_cl^adv, t1, t2, HFC(x))
    + lambda_ce · mean over clusterings of CE(pseudo labels) of x_ce^adv."""

    views = ("weak", "simclr", "simclr")

    lambda_ce: float = 0.2
    hf_radius: float = 8.0
    base_temperature: float = 0.07
    temperature: float = 0.5

    def terms(self, model, views, y, attack, generator):
        return advcl_terms(model, *views, y, self, attack, generator)


def pseudo_logits(model: PretrainNet, x: Tensor, branch: str) -> list[Tensor]:
    """Logits (N, k) of every pseudo-label head on the encoder features of x (N, 3, H, W)."""
    f = model.features(x, branch)
    return [head(f) for head in model.pseudo_heads]


def advcl_terms(
    model: PretrainNet,
    x: Tensor,
    view1: Tensor,
    view2: Tensor,
    pseudo: Tensor,
    objective: AdvCLObjective,
    attack: AttackConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """AdvCL terms (pretraining_advCL.py). x: (N, 3, H, W) weak view; view1, view2: SimCLR
    views; pseudo: (N, K) pseudo labels, column k for pseudo head k.

    The high-frequency view HFC(x) (`high_frequency_view`, radius hf_radius) and the two views
    go through the clean branch, one forward each. Two adversarial examples start at x: x_cl
    maximises the contrastive term (the clean projections held fixed) and x_ce the pseudo-label
    CE (AdvCL's joint attack loss gives each of them exactly these gradients). "cl" =
    (τ/τ_base) · multiview_nt_xent([x_cl, t1, t2, HFC]) — AdvCL's SupConLoss keeps its
    base_temperature factor — and "ce" = pseudo_label_ce of x_ce; loss = cl + lambda_ce · ce.
    Both adversarial examples use the adv branch (AdvCL gives x_ce a third BN set).
    """
    if len(model.pseudo_heads) != pseudo.shape[1]:
        raise ValueError(
            f"{pseudo.shape[1]} pseudo-label column(s) for {len(model.pseudo_heads)} head(s)"
        )
    tau = objective.temperature
    scale = tau / objective.base_temperature
    x_hf = high_frequency_view(x, objective.hf_radius)
    clean = [model.project(v, "clean") for v in (view1, view2, x_hf)]
    fixed = [z.detach() for z in clean]
    x_cl = attack_with_config(
        model,
        lambda xa: scale * multiview_nt_xent([model.project(xa, "adv"), *fixed], tau),
        x,
        attack,
        generator,
    )
    x_ce = attack_with_config(
        model,
        lambda xa: pseudo_label_ce(pseudo_logits(model, xa, "adv"), pseudo),
        x,
        attack,
        generator,
    )
    cl = scale * multiview_nt_xent([model.project(x_cl, "adv"), *clean], tau)
    ce = pseudo_label_ce(pseudo_logits(model, x_ce, "adv"), pseudo)
    return {"cl": cl, "ce": ce, "loss": cl + objective.lambda_ce * ce}


# ---------------------------------------------------------------------------------------------
# Registry: params.yaml `objective:` name -> its dataclass (the one home of its defaults)

OBJECTIVES = {
    "ascl": ASCLObjective,
    "supervised": SupervisedObjective,
    "rotation": RotationObjective,
    "simclr": SimCLRObjective,
    "supcon": SupConObjective,
    "rocl": RoCLObjective,
    "acl": ACLObjective,
    "advcl": AdvCLObjective,
}


def build_objective(spec: dict, temperature: float):
    """The objective a params.yaml method spec names, its switches from the spec (missing ones
    take the dataclass defaults) and the pre-training temperature."""
    name = spec["objective"]
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    cls = OBJECTIVES[name]
    names = {f.name for f in fields(cls)}
    switches = {k: v for k, v in spec.items() if k in names}
    return cls(**switches, temperature=temperature) if "temperature" in names else cls(**switches)
