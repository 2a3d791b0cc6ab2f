"""Pre-training objective of eq. (10) (`ascl.objectives.ascl_terms`) on a tiny PretrainNet."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ascl import objectives
from ascl.losses import _log_prob_over_others
from ascl.models import BranchBatchNorm2d, PretrainNet, branch_index
from ascl.objectives import ATTACK_SOURCES, ASCLObjective, AttackConfig, ascl_terms
from tests.test_losses import ref_ascl_adv_positives

N = 6
SIZE = 16
TAU = 0.1
NO_ATTACK = AttackConfig(eps=8 / 255, alpha=2 / 255, steps=0, random_start=False)

VARIANTS = {
    "at": ((1.0, 0.0, 0.0), {"at", "loss"}),
    "at+cl": ((1.0, 0.5, 0.0), {"at", "cl", "loss"}),
    "at+ascl": ((1.0, 0.0, 0.2), {"at", "ascl", "loss"}),
    "full": ((1.0, 0.5, 0.2), {"at", "cl", "ascl", "loss"}),
}


def tiny_net(seed=0, bn="separated"):
    torch.manual_seed(seed)
    return PretrainNet(3, width=4, proj_hidden=8, proj_dim=4, bn=bn)


def randomise_bn(net, seed=0):
    """Give the clean and adv BN sets different affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.5 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return net


def tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, v1, v2 = (torch.rand(N, 3, SIZE, SIZE, generator=g) for _ in range(3))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return x, v1, v2, y


def objective(weights, source="ensemble", reading="adv_positives", anchors="both"):
    at, cl, ascl = weights
    return ASCLObjective(
        lambda_at=at,
        lambda_cl=cl,
        lambda_ascl=ascl,
        attack_source=source,
        temperature=TAU,
        reading=reading,
        anchors=anchors,
    )


def old_ascl_first_view(z_aug, z_adv, labels, tau):
    """The adv_positives loss as it was before the `anchors` switch (view-1 anchors only),
    copied verbatim: the reference for anchors="first" being bit-identical."""
    n = z_aug.shape[0]
    log_prob = _log_prob_over_others(torch.cat([z_aug, z_adv]), tau)[:n, n:]
    positive = labels[:, None] == labels[None, :]
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return (-pos_log_prob / positive.sum(dim=1)).mean()


def ref_ce(logits, y):
    rows = logits.detach().double().tolist()
    total = 0.0
    for row, k in zip(rows, y.tolist(), strict=True):
        total += math.log(sum(math.exp(v) for v in row)) - row[k]
    return total / len(rows)


def ref_supcon(z, labels, tau):
    """Eq. (7) anchor by anchor, averaged over anchors that have a positive."""
    rows = z.detach().double().tolist()
    labs = labels.tolist()
    per_anchor = []
    for i in range(len(rows)):
        others = [a for a in range(len(rows)) if a != i]
        pos = [p for p in others if labs[p] == labs[i]]
        if not pos:
            continue
        sim = [sum(u * v for u, v in zip(rows[i], rows[a], strict=True)) / tau for a in others]
        log_denom = math.log(sum(math.exp(s) for s in sim))
        per_anchor.append(-sum(sim[others.index(p)] - log_denom for p in pos) / len(pos))
    return sum(per_anchor) / len(per_anchor)


def references(net, x, v1, v2, y, anchors="both"):
    """AT, CL and ASCL terms of eq. (10) with δ = 0, computed straight from the model; the
    anchors are the clean projections of view 1 ("first") or of both views in one batch."""
    net = copy.deepcopy(net)
    inst = torch.arange(N)
    with torch.no_grad():
        at = ref_ce(net(x, "adv"), y)
        z = net.project(torch.cat([v1, v2]), "adv")
        cl = ref_supcon(z, torch.cat([inst, inst]), TAU)
        if anchors == "first":
            z_aug, y_aug = net.project(v1, "clean"), y
        else:
            z_aug, y_aug = net.project(torch.cat([v1, v2]), "clean"), torch.cat([y, y])
        z_adv = net.project(x, "adv")
        symmetric = ref_supcon(torch.cat([z_aug, z_adv]), torch.cat([y_aug, y]), TAU)
        adv_positives = ref_ascl_adv_positives(z_aug, y_aug, z_adv, y, TAU)
    return {"at": at, "cl": cl, "ascl": adv_positives, "ascl_symmetric": symmetric}


@pytest.mark.parametrize("source", ATTACK_SOURCES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_keys_match_nonzero_weights(variant, source):
    """Table 5 variants return exactly the terms with non-zero weight plus "loss"."""
    weights, keys = VARIANTS[variant]
    net = tiny_net().train()
    attack = AttackConfig(8 / 255, 2 / 255, 1)
    out = ascl_terms(
        net, *tiny_batch(), objective(weights, source), attack, torch.Generator().manual_seed(0)
    )
    assert set(out) == keys
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.values())


@pytest.mark.parametrize("source", ATTACK_SOURCES)
@pytest.mark.parametrize("weights", [(1.0, 0.5, 0.2), (0.7, 1.3, 0.25), (0.0, 2.0, 0.5)])
def test_loss_is_weighted_sum(weights, source):
    """terms["loss"] = λ_AT·at + λ_CL·cl + λ_ASCL·ascl."""
    net = tiny_net().train()
    out = ascl_terms(
        net,
        *tiny_batch(),
        objective(weights, source),
        AttackConfig(8 / 255, 2 / 255, 1),
        torch.Generator().manual_seed(0),
    )
    names = ("at", "cl", "ascl")
    expected = sum(w * out[k].item() for w, k in zip(weights, names, strict=True) if w > 0)
    assert out["loss"].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("anchors", ["both", "first"])
@pytest.mark.parametrize("reading", ["adv_positives", "symmetric"])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("source", ATTACK_SOURCES)
def test_unattacked_terms_equal_references(source, train, reading, anchors):
    """With steps=0 and no random start each term is the clean-input reference loss (eq. 9 in
    the objective's reading, over the objective's anchor set)."""
    net = randomise_bn(tiny_net(1)).train(train)
    batch = tiny_batch(1)
    ref = references(net, *batch, anchors=anchors)
    if reading == "symmetric":
        ref["ascl"] = ref["ascl_symmetric"]
    obj = objective((1.0, 0.5, 0.2), source, reading, anchors)
    out = ascl_terms(net, *batch, obj, NO_ATTACK)
    for k in ("at", "cl", "ascl"):
        assert out[k].item() == pytest.approx(ref[k], abs=1e-5), k
    expected = ref["at"] + 0.5 * ref["cl"] + 0.2 * ref["ascl"]
    assert out["loss"].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("source", ATTACK_SOURCES)
def test_each_attack_source_gives_finite_terms(source, train_mode):
    """Every attack source yields finite terms and a finite backward pass."""
    net = tiny_net(2).train()
    attack = AttackConfig(8 / 255, 2 / 255, 2, random_start=True, train_mode=train_mode)
    out = ascl_terms(
        net, *tiny_batch(2), objective((1.0, 0.5, 0.2), source), attack, torch.Generator()
    )
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _attacked_minus_clean(source, seed):
    net = tiny_net(seed).eval()
    batch = tiny_batch(seed)
    obj = objective((1.0, 0.5, 0.2), source)
    clean = ascl_terms(net, *batch, obj, NO_ATTACK)
    attack = AttackConfig(8 / 255, 2 / 255, 3, random_start=True, train_mode=False)
    adv = ascl_terms(net, *batch, obj, attack, torch.Generator().manual_seed(seed))
    return {k: adv[k].item() - clean[k].item() for k in ("at", "cl", "ascl")}


@pytest.mark.parametrize("source", ["ensemble", "label_based"])
def test_attack_raises_at_term(source):
    """With a CE attack (ensemble, label_based) the AT term rises over its clean value."""
    for seed in range(3):
        assert _attacked_minus_clean(source, seed)["at"] > 1e-4


def test_ensemble_attack_raises_contrastive_terms():
    """Under the ensemble attack the CL and ASCL terms do not fall (and rise on average)."""
    diffs = [_attacked_minus_clean("ensemble", seed) for seed in range(3)]
    for k in ("cl", "ascl"):
        assert all(d[k] >= -1e-5 for d in diffs), k
        assert sum(d[k] for d in diffs) / len(diffs) > 0, k


def test_unknown_attack_source_raises():
    """An attack_source outside ensemble/label_based/label_free is a ValueError."""
    with pytest.raises(ValueError):
        ASCLObjective(attack_source="mixed")


def test_unknown_reading_or_anchors_raises():
    """The old name "literal" and anchor sets other than both/first are ValueErrors."""
    with pytest.raises(ValueError):
        ASCLObjective(reading="literal")
    with pytest.raises(ValueError):
        ASCLObjective(anchors="second")
    assert (ASCLObjective().reading, ASCLObjective().anchors) == ("adv_positives", "both")


@pytest.mark.parametrize("train", [False, True])
def test_first_anchors_reproduce_previous_loss_exactly(train):
    """anchors="first", unattacked: the ASCL term equals, bit for bit, the previous formula on
    the clean projection of view 1 alone."""
    net = randomise_bn(tiny_net(8)).train(train)
    x, v1, v2, y = tiny_batch(8)
    copy_net = copy.deepcopy(net)
    with torch.no_grad():
        old = old_ascl_first_view(copy_net.project(v1, "clean"), copy_net.project(x, "adv"), y, TAU)
    out = ascl_terms(net, x, v1, v2, y, objective((1.0, 0.5, 0.2), anchors="first"), NO_ATTACK)
    assert torch.equal(out["ascl"].detach(), old)


@pytest.mark.parametrize("source", ATTACK_SOURCES)
def test_first_anchors_attacked_terms_match_previous_formula(source, monkeypatch):
    """anchors="first" with PGD: every term is bit-identical to a run whose ASCL loss (in the
    attack and in the term) is the previous formula."""
    batch = tiny_batch(9)
    attack = AttackConfig(8 / 255, 2 / 255, 2, random_start=True, train_mode=False)
    obj = objective((1.0, 0.5, 0.2), source, anchors="first")

    def run():
        net = tiny_net(9).eval()
        return ascl_terms(net, *batch, obj, attack, torch.Generator().manual_seed(3))

    new = run()
    monkeypatch.setitem(
        objectives.ASCL_READINGS,
        "adv_positives",
        lambda za, ya, zv, yv, tau: old_ascl_first_view(za, zv, yv, tau),
    )
    old = run()
    assert all(torch.equal(new[k], old[k]) for k in new)


def test_both_anchors_differ_from_first():
    """The 2N-anchor loss is a different number from the view-1 one on the same batch."""
    net = tiny_net(10).eval()
    batch = tiny_batch(10)
    first = ascl_terms(net, *batch, objective((0.0, 0.0, 1.0), anchors="first"), NO_ATTACK)
    both = ascl_terms(net, *batch, objective((0.0, 0.0, 1.0), anchors="both"), NO_ATTACK)
    assert abs(first["ascl"].item() - both["ascl"].item()) > 1e-4


@pytest.mark.parametrize("source", ATTACK_SOURCES)
def test_attacks_leave_no_parameter_gradients(source):
    """After ascl_terms (attacks included) no parameter has a .grad until loss.backward()."""
    net = tiny_net(3).train()
    out = ascl_terms(
        net,
        *tiny_batch(3),
        objective((1.0, 0.5, 0.2), source),
        AttackConfig(8 / 255, 2 / 255, 2),
        torch.Generator().manual_seed(0),
    )
    assert all(p.grad is None for p in net.parameters())
    out["loss"].backward()
    assert any(p.grad is not None for p in net.parameters())


def _bn_sets(net, branch):
    idx = branch_index(branch, "separated")
    return [m.norms[idx] for m in net.encoder.modules() if isinstance(m, BranchBatchNorm2d)]


@pytest.mark.parametrize(
    "weights,clean_gets_grad",
    [((1.0, 0.0, 0.0), False), ((0.0, 1.0, 0.0), False), ((0.0, 0.0, 1.0), True)],
)
def test_branch_wiring_of_gradients(weights, clean_gets_grad):
    """AT and CL train only the adv encoder BN branch; ASCL also trains the clean one via x̃_i."""
    net = tiny_net(4).train()
    out = ascl_terms(
        net,
        *tiny_batch(4),
        objective(weights),
        AttackConfig(8 / 255, 2 / 255, 1),
        torch.Generator().manual_seed(0),
    )
    out["loss"].backward()
    assert all(bn.weight.grad is not None for bn in _bn_sets(net, "adv"))
    clean_grads = [bn.weight.grad is not None for bn in _bn_sets(net, "clean")]
    assert all(clean_grads) if clean_gets_grad else not any(clean_grads)


@pytest.mark.parametrize("source", ["ensemble", "label_based"])
def test_zero_weight_terms_are_neither_attacked_nor_computed(source):
    """AT only: one encoder call per PGD step plus the final one, no projection, no 2N batch."""
    net = tiny_net(5).train()
    calls = []
    net.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    head_calls = []
    net.head.register_forward_hook(lambda m, i, o: head_calls.append(1))
    steps = 3
    ascl_terms(
        net,
        *tiny_batch(5),
        objective((1.0, 0.0, 0.0), source),
        AttackConfig(8 / 255, 2 / 255, steps),
        torch.Generator().manual_seed(0),
    )
    assert calls == [N] * (steps + 1)
    assert head_calls == []


@pytest.mark.parametrize("anchors", ["first", "both"])
@pytest.mark.parametrize("source", ATTACK_SOURCES)
def test_no_cl_weight_means_no_view_pair_batch(source, anchors):
    """With λ_CL = 0 the 2N batch of both SimCLR views is fed to the encoder only once, for the
    clean ASCL anchors when anchors="both", and never with anchors="first"."""
    net = tiny_net(6).train()
    calls = []
    net.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    out = ascl_terms(
        net,
        *tiny_batch(6),
        objective((1.0, 0.0, 0.2), source, anchors=anchors),
        AttackConfig(8 / 255, 2 / 255, 2),
        torch.Generator().manual_seed(0),
    )
    assert "cl" not in out
    assert calls.count(2 * N) == (1 if anchors == "both" else 0)
    assert all(b in (N, 2 * N) for b in calls)


def test_seeded_generator_makes_terms_deterministic():
    """Same generator seed and weights give identical terms (eval-mode model)."""
    batch = tiny_batch(7)
    attack = AttackConfig(8 / 255, 2 / 255, 2, train_mode=False)

    def run(seed):
        net = tiny_net(7).eval()
        return ascl_terms(
            net, *batch, objective((1.0, 0.5, 0.2)), attack, torch.Generator().manual_seed(seed)
        )

    a, b = run(0), run(0)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_attack_config_from_settings_uses_1_over_255_units():
    """AttackConfig.from_settings converts eps/alpha from units of 1/255."""
    cfg = AttackConfig.from_settings(
        {"eps": 8, "alpha": 2, "steps": 5, "random_start": False, "train_mode": True}
    )
    assert cfg == AttackConfig(8 / 255, 2 / 255, 5, False, True)
