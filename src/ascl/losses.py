"""Losses of the ASCL paper (eq. 3, 4, 7, 9) and TRADES.

All contrastive losses take L2-normalised projections and average over anchors (the paper's
equations sum over anchors; averaging only rescales the gradient and is what public contrastive
code does). Anchors without any positive are left out of the average, so a class with a single
sample never produces a NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _log_prob_over_others(z: Tensor, temperature: float) -> Tensor:
    """log( exp(z_i·z_a/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ) for every ordered pair.

    z: (M, D) -> (M, M); the diagonal (a = i) is -inf and must never be used.
    """
    logits = z @ z.T / temperature
    self_mask = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    return logits - torch.logsumexp(logits, dim=1, keepdim=True)


def _mean_over_positives(log_prob: Tensor, positive: Tensor) -> Tensor:
    """Mean over anchors of -(1/|P(i)|) Σ_{p∈P(i)} log_prob[i, p], anchors with P(i) = ∅ left out.

    log_prob: (M, K) float; positive: (M, K) bool, row i marks P(i). A masked mean (no boolean
    indexing, no host sync); 0 with a zero gradient when no anchor has a positive.
    """
    n_pos = positive.sum(dim=1)
    has_pos = (n_pos > 0).to(log_prob.dtype)
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = -pos_log_prob / n_pos.clamp(min=1)
    return (per_anchor * has_pos).sum() / has_pos.sum().clamp(min=1)


def supcon_loss(z: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    """Supervised contrastive loss of eq. (7) (Khosla et al., 2020, "L_out").

    z: (M, D) L2-normalised projections of all views; labels: (M,) int. For every anchor i the
    positives P(i) are the other entries with the same label, the denominator runs over A(i) =
    all entries but i. Returns the mean over anchors that have at least one positive.
    """
    log_prob = _log_prob_over_others(z, temperature)
    positive = labels[:, None] == labels[None, :]
    positive.fill_diagonal_(False)
    return _mean_over_positives(log_prob, positive)


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent of eq. (4) (SimCLR) over the pairs (z1[k], z2[k]).

    z1, z2: (N, D) L2-normalised projections of two views of the same N samples. Every one of
    the 2N entries is an anchor; its positive is the other view of the same sample; the other
    2(N-1) entries are its negatives. Equal to supcon_loss with one label per sample.
    """
    n = z1.shape[0]
    instance = torch.arange(n, device=z1.device)
    return supcon_loss(torch.cat([z1, z2]), torch.cat([instance, instance]), temperature)


def ascl_symmetric(
    z_aug: Tensor, aug_labels: Tensor, z_adv: Tensor, labels: Tensor, temperature: float = 0.5
) -> Tensor:
    """Eq. (9), symmetric reading: SupCon (eq. 7) over the union {x̃} ∪ {x + δ}.

    z_aug: (M, D) projections of the augmented views x̃ (M = N for one view per sample, 2N for
    both SimCLR views); aug_labels: (M,); z_adv: (N, D) projections of the adversarial examples
    x + δ; labels: (N,). Every one of the M + N entries is an anchor; its positives are all other
    entries with its label (so each sample's adversarial example is a positive of its augmented
    views and vice versa); the denominator runs over all other entries.
    """
    return supcon_loss(torch.cat([z_aug, z_adv]), torch.cat([aug_labels, labels]), temperature)


def ascl_loss(z_aug: Tensor, z_adv: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    """`ascl_symmetric` with one augmented view per sample. z_aug, z_adv: (N, D); labels: (N,)."""
    return ascl_symmetric(z_aug, labels, z_adv, labels, temperature)


def ascl_adv_positives(
    z_anchor: Tensor,
    anchor_labels: Tensor,
    z_adv: Tensor,
    labels: Tensor,
    temperature: float = 0.5,
) -> Tensor:
    """Eq. (9), reading `adv_positives`: anchors the augmented views, positives the adversarial
    examples of the anchor's class.

    The printed numerator is exp(z_i · z^adv / τ) inside a sum over p ∈ P(i): z^adv carries no
    index. We infer the index p, i.e. z^adv_p, the projection of x_p + δ_p, so that P(i) is the
    set of adversarial examples with y_p = y_i (the anchor's own included). This is an
    inference, not the printed formula.

    z_anchor: (M, D) clean projections of the anchors x̃_i (M = N for view 1 only, M = 2N for
    both SimCLR views, eq. 4's I); anchor_labels: (M,); z_adv: (N, D) projections of the
    adversarial examples x + δ; labels: (N,). For anchor i, P(i) = {x_p + δ_p : y_p = y_i} and
    the denominator runs over A(i) = all M + N entries {x̃} ∪ {x + δ} but x̃_i. Adversarial
    entries are never anchors and augmented views are never positives. Returns the mean over
    anchors with at least one positive (all of them when every anchor's label is in `labels`).
    """
    m = z_anchor.shape[0]
    log_prob = _log_prob_over_others(torch.cat([z_anchor, z_adv]), temperature)[:m, m:]
    positive = anchor_labels[:, None] == labels[None, :]  # (M anchors, N adversarial entries)
    return _mean_over_positives(log_prob, positive)


ASCL_READINGS = {"symmetric": ascl_symmetric, "adv_positives": ascl_adv_positives}


def cross_entropy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax cross-entropy (the inner loss of AT, eq. 3). logits: (N, C); labels: (N,)."""
    return F.cross_entropy(logits, labels)


def trades_kl(logits_nat: Tensor, logits_adv: Tensor) -> Tensor:
    """KL(p_nat || p_adv) summed over classes, averaged over the batch (TRADES' robust term).

    logits_nat, logits_adv: (N, C).
    """
    return F.kl_div(
        F.log_softmax(logits_adv, dim=1),
        F.log_softmax(logits_nat, dim=1),
        reduction="batchmean",
        log_target=True,
    )


def trades_loss(
    logits_nat: Tensor, logits_adv: Tensor, labels: Tensor, beta: float = 6.0
) -> Tensor:
    """TRADES (Zhang et al., 2019): CE(f(x), y) + β·KL(f(x) || f(x+δ)). Shapes as trades_kl."""
    return F.cross_entropy(logits_nat, labels) + beta * trades_kl(logits_nat, logits_adv)


def multiview_nt_xent(views: list[Tensor], temperature: float = 0.5) -> Tensor:
    """NT-Xent over V >= 2 views of the same N samples (SupCon's loss without labels).

    views: V tensors (N, D) of L2-normalised projections; entry k of every view is sample k. For
    every one of the V·N anchors the positives are the other V-1 views of its sample and the
    denominator runs over all V·N-1 other entries; the per-anchor loss is the mean over its
    positives (Khosla et al., 2020, SupConLoss with labels=None, as used by AdvCL). V = 2 gives
    nt_xent_loss.
    """
    n = views[0].shape[0]
    instance = torch.arange(n, device=views[0].device)
    return supcon_loss(torch.cat(views), instance.repeat(len(views)), temperature)


def rocl_loss(z1: Tensor, z2: Tensor, z_adv: Tensor, temperature: float = 0.5) -> Tensor:
    """RoCL's contrastive loss over (t(x), t'(x), t(x)^adv) (Kim et al., 2020).

    z1, z2, z_adv: (N, D) L2-normalised projections of the two views and of the instance-wise
    adversarial example. Each of the 3N anchors has the other two entries of its sample as
    positives and all 3N-1 other entries in the denominator; RoCL's code (loss.NT_xent with
    adv_type 'Rep') sums the per-positive terms and averages over anchors, so this is
    2 · multiview_nt_xent([z1, z2, z_adv]).
    """
    return 2.0 * multiview_nt_xent([z1, z2, z_adv], temperature)


def pseudo_label_ce(logits: list[Tensor], labels: Tensor) -> Tensor:
    """Mean over K clusterings of the cross-entropy against their pseudo labels (AdvCL).

    logits: K tensors (N, C_k), one per clustering; labels: (N, K) int, column k in
    0..C_k-1 (-1 = no label, ignored as in AdvCL's ``ignore_index=-1``).
    """
    terms = [F.cross_entropy(lgt, labels[:, k], ignore_index=-1) for k, lgt in enumerate(logits)]
    return torch.stack(terms).mean()
