"""Contrastive and TRADES losses against explicit loop references (eq. 4, 7, 9 and TRADES)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ascl.losses import (
    ASCL_READINGS,
    ascl_adv_positives,
    ascl_loss,
    ascl_symmetric,
    cross_entropy_loss,
    nt_xent_loss,
    supcon_loss,
    trades_kl,
    trades_loss,
)

TEMPERATURES = (0.1, 0.5, 1.0)


def _dot(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True))


def ref_supcon(z, labels, tau):
    """Eq. (7) anchor by anchor; anchors without positives are left out of the mean."""
    rows = z.detach().double().tolist()
    labs = [int(v) for v in labels.tolist()]
    m = len(rows)
    per_anchor = []
    for i in range(m):
        others = [a for a in range(m) if a != i]
        positives = [p for p in others if labs[p] == labs[i]]
        if not positives:
            continue
        denom = sum(math.exp(_dot(rows[i], rows[a]) / tau) for a in others)
        total = 0.0
        for p in positives:
            total += math.log(math.exp(_dot(rows[i], rows[p]) / tau) / denom)
        per_anchor.append(-total / len(positives))
    if not per_anchor:
        return 0.0
    return sum(per_anchor) / len(per_anchor)


def ref_nt_xent(z1, z2, tau):
    """Eq. (4) over the 2N entries [z1; z2]; the positive of entry i is i + N (mod 2N)."""
    rows = z1.detach().double().tolist() + z2.detach().double().tolist()
    n = z1.shape[0]
    m = 2 * n
    losses = []
    for i in range(m):
        j = (i + n) % m
        denom = sum(math.exp(_dot(rows[i], rows[a]) / tau) for a in range(m) if a != i)
        losses.append(-math.log(math.exp(_dot(rows[i], rows[j]) / tau) / denom))
    return sum(losses) / m


def ref_ascl(z_aug, z_adv, labels, tau):
    """Eq. (9): every augmented and adversarial entry is an anchor; positives share its label."""
    rows = z_aug.detach().double().tolist() + z_adv.detach().double().tolist()
    labs = [int(v) for v in labels.tolist()] * 2
    m = len(rows)
    losses = []
    for i in range(m):
        denom = 0.0
        for a in range(m):
            if a != i:
                denom += math.exp(_dot(rows[i], rows[a]) / tau)
        positives = [p for p in range(m) if p != i and labs[p] == labs[i]]
        term = sum(math.log(math.exp(_dot(rows[i], rows[p]) / tau) / denom) for p in positives)
        losses.append(-term / len(positives))
    return sum(losses) / m


def ref_ce(logits, labels):
    rows = logits.detach().double().tolist()
    total = 0.0
    for row, y in zip(rows, labels.tolist(), strict=True):
        log_norm = math.log(sum(math.exp(v) for v in row))
        total += -(row[y] - log_norm)
    return total / len(rows)


def ref_kl(logits_p, logits_q):
    """Mean over rows of sum_c p_c log(p_c / q_c) with p, q the softmaxes."""
    total = 0.0
    for lp, lq in zip(
        logits_p.detach().double().tolist(), logits_q.detach().double().tolist(), strict=True
    ):
        zp = sum(math.exp(v) for v in lp)
        zq = sum(math.exp(v) for v in lq)
        p = [math.exp(v) / zp for v in lp]
        q = [math.exp(v) / zq for v in lq]
        total += sum(pc * math.log(pc / qc) for pc, qc in zip(p, q, strict=True))
    return total / len(logits_p)


def unit(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


def rand_labels(n, classes, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randint(0, classes, (n,), generator=g)


def tol(dtype):
    return 1e-6 if dtype == torch.float64 else 1e-5


CASES = [(n, d, seed) for seed, (n, d) in enumerate([(3, 4), (5, 8), (8, 16), (6, 5), (4, 12)])]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("n,d,seed", CASES)
def test_supcon_matches_loop(n, d, seed, tau, dtype):
    """supcon_loss equals eq. (7) computed anchor by anchor, for two views with repeated labels."""
    torch.manual_seed(seed)
    z = unit(2 * n, d, seed, dtype)
    y = rand_labels(n, 3, seed).repeat(2)
    got = supcon_loss(z, y, tau)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(ref_supcon(z, y, tau), abs=tol(dtype), rel=tol(dtype))


@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("m,d,seed", [(5, 4, 0), (9, 7, 1), (12, 16, 2)])
def test_supcon_single_view_matches_loop(m, d, seed, tau):
    """supcon_loss on an arbitrary set (odd size, unpaired) still equals the eq. (7) loop."""
    z = unit(m, d, seed)
    y = rand_labels(m, 3, seed)
    assert supcon_loss(z, y, tau).item() == pytest.approx(ref_supcon(z, y, tau), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("n,d,seed", CASES)
def test_nt_xent_matches_loop(n, d, seed, tau, dtype):
    """nt_xent_loss equals eq. (4) averaged over all 2N anchors."""
    z1, z2 = unit(n, d, seed, dtype), unit(n, d, seed + 50, dtype)
    got = nt_xent_loss(z1, z2, tau)
    assert got.item() == pytest.approx(ref_nt_xent(z1, z2, tau), abs=tol(dtype), rel=tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("n,d,seed", CASES)
def test_ascl_matches_loop(n, d, seed, tau, dtype):
    """ascl_loss equals eq. (9) over {z_aug} ∪ {z_adv} with labels repeated."""
    z_aug, z_adv = unit(n, d, seed, dtype), unit(n, d, seed + 50, dtype)
    y = rand_labels(n, 3, seed)
    got = ascl_loss(z_aug, z_adv, y, tau)
    ref = ref_ascl(z_aug, z_adv, y, tau)
    assert got.item() == pytest.approx(ref, abs=tol(dtype), rel=tol(dtype))


def test_supcon_singleton_class_is_excluded():
    """A class with one sample gives no NaN and its anchor is dropped from the average."""
    z = unit(6, 5, 3)
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    got = supcon_loss(z, y, 0.5)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(ref_supcon(z, y, 0.5), abs=1e-6)
    rows = z.tolist()
    manual = 0.0
    for i in (0, 1, 3, 4, 5):
        others = [a for a in range(6) if a != i]
        log_denom = math.log(sum(math.exp(_dot(rows[i], rows[a]) / 0.5) for a in others))
        pos = [p for p in others if y[p] == y[i]]
        manual += -sum(_dot(rows[i], rows[p]) / 0.5 - log_denom for p in pos) / len(pos)
    assert got.item() == pytest.approx(manual / 5, abs=1e-6)
    zg = z.clone().requires_grad_(True)
    supcon_loss(zg, y, 0.5).backward()
    assert torch.isfinite(zg.grad).all()


def test_supcon_no_positive_at_all_is_zero_and_finite():
    """With every label distinct (one view) no anchor has a positive: loss 0, finite zero grad."""
    z = unit(5, 4, 0).requires_grad_(True)
    loss = supcon_loss(z, torch.arange(5), 0.5)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert (z.grad == 0).all()


def test_ascl_singleton_class_is_finite():
    """In ASCL a lone-class sample still has its adversarial twin as positive: finite loss."""
    z_aug, z_adv = unit(5, 6, 1), unit(5, 6, 2)
    y = torch.tensor([0, 0, 1, 2, 2])
    z_aug.requires_grad_(True)
    loss = ascl_loss(z_aug, z_adv, y, 0.5)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref_ascl(z_aug, z_adv, y, 0.5), abs=1e-6)
    loss.backward()
    assert torch.isfinite(z_aug.grad).all()


@pytest.mark.parametrize("tau", TEMPERATURES)
def test_all_labels_equal(tau):
    """All labels equal: every other entry is a positive; supcon and ascl equal the loop."""
    z = unit(8, 6, 4)
    y = torch.zeros(8, dtype=torch.long)
    assert supcon_loss(z, y, tau).item() == pytest.approx(ref_supcon(z, y, tau), abs=1e-6)
    z_aug, z_adv = z[:4], z[4:]
    got = ascl_loss(z_aug, z_adv, y[:4], tau)
    assert got.item() == pytest.approx(ref_ascl(z_aug, z_adv, y[:4], tau), abs=1e-6)


@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("n,d,seed", CASES)
def test_supcon_with_instance_labels_is_nt_xent(n, d, seed, tau):
    """Supcon over two views with one label per instance equals the NT-Xent loop."""
    z1, z2 = unit(n, d, seed), unit(n, d, seed + 7)
    inst = torch.arange(n)
    got = supcon_loss(torch.cat([z1, z2]), torch.cat([inst, inst]), tau)
    assert got.item() == pytest.approx(ref_nt_xent(z1, z2, tau), abs=1e-6)


@pytest.mark.parametrize("tau", TEMPERATURES)
def test_ascl_with_distinct_labels_is_nt_xent(tau):
    """ASCL with all labels distinct reduces to NT-Xent between augmented and adversarial views."""
    z_aug, z_adv = unit(6, 8, 11), unit(6, 8, 12)
    got = ascl_loss(z_aug, z_adv, torch.arange(6), tau)
    assert got.item() == pytest.approx(ref_nt_xent(z_aug, z_adv, tau), abs=1e-6)


def test_contrastive_losses_are_permutation_invariant():
    """Reordering the batch (jointly with labels) leaves supcon and ascl unchanged."""
    z_aug, z_adv = unit(7, 5, 21), unit(7, 5, 22)
    y = torch.tensor([0, 1, 1, 2, 0, 2, 2])
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    a = ascl_loss(z_aug, z_adv, y, 0.3)
    b = ascl_loss(z_aug[perm], z_adv[perm], y[perm], 0.3)
    assert a.item() == pytest.approx(b.item(), abs=1e-12)
    assert ascl_loss(z_adv, z_aug, y, 0.3).item() == pytest.approx(a.item(), abs=1e-12)


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_gradcheck_contrastive(tau):
    """Analytic gradients of supcon, nt_xent and ascl match finite differences (float64)."""
    torch.manual_seed(0)
    z = unit(6, 4, 30).requires_grad_(True)
    y = torch.tensor([0, 1, 0, 2, 1, 1])
    assert torch.autograd.gradcheck(lambda t: supcon_loss(t, y, tau), (z,))
    z1 = unit(4, 5, 31).requires_grad_(True)
    z2 = unit(4, 5, 32).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, tau), (z1, z2))
    y4 = torch.tensor([0, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda a, b: ascl_loss(a, b, y4, tau), (z1, z2))


def test_gradcheck_supcon_with_singleton_class():
    """Gradients stay correct when an anchor without positives is left out."""
    z = unit(5, 3, 40).requires_grad_(True)
    y = torch.tensor([0, 0, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda t: supcon_loss(t, y, 0.5), (z,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_matches_loop(seed, dtype):
    """cross_entropy_loss is the batch mean of -log softmax of the true class."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(6, 5, generator=g) * 3).to(dtype)
    y = torch.randint(0, 5, (6,), generator=g)
    got = cross_entropy_loss(logits, y)
    assert got.item() == pytest.approx(ref_ce(logits, y), abs=tol(dtype), rel=tol(dtype))


@pytest.mark.parametrize("beta", [0.0, 1.0, 6.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trades_matches_loop(seed, dtype, beta):
    """TRADES = CE(f(x), y) + β · mean_i Σ_c p log(p/q), with p from natural logits."""
    g = torch.Generator().manual_seed(seed)
    nat = (torch.randn(7, 4, generator=g) * 2).to(dtype)
    adv = (torch.randn(7, 4, generator=g) * 2).to(dtype)
    y = torch.randint(0, 4, (7,), generator=g)
    got = trades_loss(nat, adv, y, beta)
    ref = ref_ce(nat, y) + beta * ref_kl(nat, adv)
    assert got.item() == pytest.approx(ref, abs=tol(dtype), rel=tol(dtype))
    kl = trades_kl(nat, adv).item()
    assert kl == pytest.approx(ref_kl(nat, adv), abs=tol(dtype), rel=tol(dtype))


def test_trades_kl_direction():
    """trades_kl is KL(p_nat || p_adv), not the reverse."""
    nat = torch.tensor([[3.0, 0.0, -1.0]], dtype=torch.float64)
    adv = torch.tensor([[0.0, 2.0, 0.5]], dtype=torch.float64)
    forward, backward = ref_kl(nat, adv), ref_kl(adv, nat)
    assert abs(forward - backward) > 0.1
    assert trades_kl(nat, adv).item() == pytest.approx(forward, abs=1e-9)


def test_trades_beta_zero_is_ce():
    """With β = 0 TRADES is exactly the natural cross-entropy."""
    g = torch.Generator().manual_seed(5)
    nat, adv = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    y = torch.tensor([0, 2, 1, 1, 0])
    assert trades_loss(nat, adv, y, beta=0.0).item() == pytest.approx(ref_ce(nat, y), abs=1e-5)


def test_trades_kl_identical_logits_is_zero():
    """KL of a distribution with itself is zero, and KL is non-negative otherwise."""
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(8, 10, generator=g, dtype=torch.float64)
    assert trades_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-12)
    assert trades_kl(logits, logits + 5.0).item() == pytest.approx(0.0, abs=1e-12)
    assert trades_kl(logits, torch.randn(8, 10, generator=g, dtype=torch.float64)).item() > 0


def _logsumexp(values):
    """log Σ exp(v), written as a loop (shifted by the maximum for stability)."""
    top = max(values)
    total = 0.0
    for v in values:
        total += math.exp(v - top)
    return top + math.log(total)


def ref_ascl_adv_positives(z_anchor, anchor_labels, z_adv, labels, tau):
    """Eq. (9), reading adv_positives, anchor by anchor and positive by positive.

    Entries are [anchors x̃ (M); adversarial examples x + δ (N)]. For anchor i the positives are
    the adversarial entries p with y_p = y_i, the denominator every entry but x̃_i; anchors with
    no positive are left out of the mean.
    """
    anc, adv = z_anchor.detach().double().tolist(), z_adv.detach().double().tolist()
    a_labs = [int(v) for v in anchor_labels.tolist()]
    labs = [int(v) for v in labels.tolist()]
    entries = anc + adv
    per_anchor = []
    for i in range(len(anc)):
        log_denom = _logsumexp(
            [_dot(anc[i], entries[a]) / tau for a in range(len(entries)) if a != i]
        )
        positives = [p for p in range(len(adv)) if labs[p] == a_labs[i]]
        if not positives:
            continue
        total = 0.0
        for p in positives:
            total += _dot(anc[i], adv[p]) / tau - log_denom
        per_anchor.append(-total / len(positives))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def anchor_set(anchors, n, d, seed, labels, dtype=torch.float64):
    """(z_anchor, anchor_labels): view 1 only ("first", N) or both views ("both", 2N)."""
    z1 = unit(n, d, seed, dtype)
    if anchors == "first":
        return z1, labels
    return torch.cat([z1, unit(n, d, seed + 90, dtype)]), torch.cat([labels, labels])


@pytest.mark.parametrize("anchors", ["first", "both"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("n,d,seed", CASES)
def test_ascl_adv_positives_matches_loop(n, d, seed, tau, dtype, anchors):
    """ascl_adv_positives equals the double loop over anchors and positives, for N anchors (view
    1) and 2N anchors (both views, labels repeated); labels from 3 classes give same-class
    samples."""
    y = rand_labels(n, 3, seed)
    z_anchor, y_anchor = anchor_set(anchors, n, d, seed, y, dtype)
    z_adv = unit(n, d, seed + 50, dtype)
    got = ascl_adv_positives(z_anchor, y_anchor, z_adv, y, tau)
    ref = ref_ascl_adv_positives(z_anchor, y_anchor, z_adv, y, tau)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(ref, abs=tol(dtype), rel=tol(dtype))


@pytest.mark.parametrize("anchors", ["first", "both"])
@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_ascl_adv_positives_singleton_class(anchors, tau):
    """A class with one sample: its anchors have only their own adversarial example as positive;
    finite loss and gradient, equal to the loop."""
    y = torch.tensor([0, 0, 1, 2, 2])
    z_anchor, y_anchor = anchor_set(anchors, 5, 6, 3, y)
    z_anchor.requires_grad_(True)
    z_adv = unit(5, 6, 4)
    loss = ascl_adv_positives(z_anchor, y_anchor, z_adv, y, tau)
    assert loss.item() == pytest.approx(
        ref_ascl_adv_positives(z_anchor, y_anchor, z_adv, y, tau), abs=1e-9
    )
    loss.backward()
    assert torch.isfinite(z_anchor.grad).all()


def test_ascl_adv_positives_hand_computed():
    """One anchor per class, two adversarial entries, τ = 0.5, written out by hand."""
    z_anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z_adv = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    y_anchor, y = torch.tensor([0, 1]), torch.tensor([0, 0])
    # anchor 0: others = anchor 1 (0.0), adv 0 (0.6), adv 1 (1.0); positives adv 0 and adv 1
    log_denom = math.log(math.exp(0.0) + math.exp(1.2) + math.exp(2.0))
    expected = -((1.2 - log_denom) + (2.0 - log_denom)) / 2  # anchor 1 has no positive
    got = ascl_adv_positives(z_anchor, y_anchor, z_adv, y, 0.5)
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_ascl_adv_positives_no_positive_is_zero():
    """No anchor label among the adversarial labels: 0, finite zero gradient (masked mean)."""
    z_anchor = unit(4, 3, 5).requires_grad_(True)
    loss = ascl_adv_positives(
        z_anchor, torch.tensor([0, 0, 1, 1]), unit(3, 3, 6), torch.tensor([2, 3, 4]), 0.5
    )
    assert loss.item() == 0.0
    loss.backward()
    assert (z_anchor.grad == 0).all()


@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("n,d,seed", CASES)
def test_ascl_symmetric_both_views_matches_loop(n, d, seed, tau):
    """Symmetric reading with both views: SupCon over the 3N entries {x̃¹, x̃², x + δ}."""
    y = rand_labels(n, 3, seed)
    z_aug, y_aug = anchor_set("both", n, d, seed, y)
    z_adv = unit(n, d, seed + 50)
    got = ascl_symmetric(z_aug, y_aug, z_adv, y, tau)
    ref = ref_supcon(torch.cat([z_aug, z_adv]), torch.cat([y_aug, y]), tau)
    assert got.item() == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("n,d,seed", CASES)
def test_ascl_symmetric_one_view_is_ascl_loss(n, d, seed):
    """ascl_symmetric with one view per sample is ascl_loss, bit for bit."""
    y = rand_labels(n, 3, seed)
    z_aug, z_adv = unit(n, d, seed), unit(n, d, seed + 50)
    assert torch.equal(ascl_symmetric(z_aug, y, z_adv, y, 0.3), ascl_loss(z_aug, z_adv, y, 0.3))


def test_ascl_readings_differ():
    """The two readings of eq. (9) are different losses, both with a finite gradient for every
    adversarial entry."""
    z_aug, z_adv = unit(6, 5, 7), unit(6, 5, 8)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    assert set(ASCL_READINGS) == {"symmetric", "adv_positives"}
    assert ascl_symmetric(z_aug, y, z_adv, y, 0.5).item() != pytest.approx(
        ascl_adv_positives(z_aug, y, z_adv, y, 0.5).item(), abs=1e-3
    )
    z_adv = z_adv.clone().requires_grad_(True)
    ascl_adv_positives(z_aug, y, z_adv, y, 0.5).backward()
    assert torch.isfinite(z_adv.grad).all() and (z_adv.grad.abs().sum(1) > 0).all()


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_gradcheck_ascl_adv_positives(tau):
    """Analytic gradients of ascl_adv_positives (2N anchors) match finite differences."""
    y = torch.tensor([0, 1, 0, 2])
    za = unit(8, 3, 60).requires_grad_(True)
    zv = unit(4, 3, 61).requires_grad_(True)
    yy = torch.cat([y, y])
    assert torch.autograd.gradcheck(lambda a, b: ascl_adv_positives(a, yy, b, y, tau), (za, zv))
