"""Peer-style reference of the ASCL training step (eq. 10), written the way public
adversarial-contrastive code usually writes it.

* Data: a map-style ``Dataset`` over uint8 HWC images; every ``__getitem__`` builds a PIL image
  and applies torchvision v1 transforms (one weak view, two SimCLR views) to that one sample; a
  ``torch.utils.data.DataLoader`` collates the batch (``num_workers`` is a parameter; the
  benchmark uses 0 unless told otherwise).
* Model: the same ``ascl.models.PretrainNet`` (per-branch BN), fp32, NCHW.
* Attacks: l∞ PGD on an explicit δ with ``requires_grad``; every step calls ``loss.backward()``
  (so every parameter's ``.grad`` is computed too), reads ``delta.grad`` and then throws the
  parameter gradients away with ``model.zero_grad()``.
* Forwards: one forward per view and per attack step, with exactly the BN batches of
  ``ascl.objectives.ascl_terms`` (a train-mode BN normalises with the statistics of the batch it
  sees, so the batch composition is part of the math): the clean SimCLR view 1, the weak view x
  (AT and ASCL attacks and losses, separately) and the pair of SimCLR views, stacked into one
  batch as SimCLR/ACL code does, for the contrastive attack and loss.
* Losses: written here in the usual peer form (cross-entropy over similarity logits for NT-Xent,
  the masked log-softmax form for the supervised contrastive loss); ``loss_agreement`` checks them
  against ``ascl.losses``.

The order of the random draws (AT start, CL start, ASCL start) matches ``ascl_terms``, so with the
same ``torch.Generator`` state both produce the same perturbations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from ascl.augment import AugmentConfig
from ascl.models import PretrainNet

# ---------------------------------------------------------------------------------------------
# Data


def weak_transform(cfg: AugmentConfig, size: int = 32) -> T.Compose:
    """Random crop with zero padding, horizontal flip, to tensor (PIL in, float CHW out)."""
    return T.Compose(
        [
            T.RandomCrop(size, padding=cfg.weak_padding),
            T.RandomHorizontalFlip(p=cfg.flip_p),
            T.ToTensor(),
        ]
    )


def simclr_transform(cfg: AugmentConfig, size: int = 32) -> T.Compose:
    """SimCLR view as in SimCLR/ACL CIFAR code (torchvision v1 transforms on PIL images)."""
    jitter = T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio),
            T.RandomHorizontalFlip(p=cfg.flip_p),
            T.RandomApply([jitter], p=cfg.jitter_p),
            T.RandomGrayscale(p=cfg.grayscale_p),
            T.ToTensor(),
        ]
    )


class ThreeViewDataset(Dataset):
    """uint8 images (N, H, W, 3) and labels (N,) -> (weak view, SimCLR view, SimCLR view, y)."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, cfg: AugmentConfig) -> None:
        self.images = images_hwc
        self.labels = labels
        size = images_hwc.shape[1]
        self.weak = weak_transform(cfg, size)
        self.strong = simclr_transform(cfg, size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor, int]:
        img = Image.fromarray(self.images[i])
        return self.weak(img), self.strong(img), self.strong(img), int(self.labels[i])


def make_loader(
    images_hwc: np.ndarray,
    labels: np.ndarray,
    cfg: AugmentConfig,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
) -> DataLoader:
    """Shuffled, drop-last loader of ``ThreeViewDataset`` batches."""
    return DataLoader(
        ThreeViewDataset(images_hwc, labels, cfg),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


# ---------------------------------------------------------------------------------------------
# Losses (peer form)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR NT-Xent: cross-entropy of each of the 2N anchors against its other view."""
    n = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    sim = torch.mm(z, z.t()) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def sup_con(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (L_out) in the masked log-softmax form."""
    m = z.shape[0]
    logits = torch.matmul(z, z.t()) / temperature
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    not_self = 1.0 - torch.eye(m, device=z.device)
    positives = torch.eq(labels.view(-1, 1), labels.view(1, -1)).float() * not_self
    exp_logits = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (positives * log_prob).sum(1) / positives.sum(1)
    return -mean_log_prob_pos.mean()


def ascl_contrast(z_aug: Tensor, z_adv: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Eq. (9): supervised contrast over {augmented views} ∪ {adversarial examples}."""
    return sup_con(torch.cat([z_aug, z_adv], dim=0), torch.cat([labels, labels]), temperature)


# ---------------------------------------------------------------------------------------------
# Attack and step


def pgd_backward(
    model: nn.Module,
    loss_fn,
    x: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    generator: torch.Generator | None,
) -> Tensor:
    """l∞ PGD whose steps call ``loss.backward()`` and read ``delta.grad``."""
    x = x.detach()
    if random_start and eps > 0:
        delta = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * eps
        delta = delta.to(x.device)
    else:
        delta = torch.zeros_like(x)
    delta = (x + delta).clamp(0, 1) - x
    if steps == 0 or eps == 0:
        return (x + delta).detach()
    delta.requires_grad = True
    for _ in range(steps):
        loss = loss_fn(x + delta)
        loss.backward()
        grad = delta.grad.detach()
        delta.data = (delta.data + alpha * torch.sign(grad)).clamp(-eps, eps)
        delta.data = (x + delta.data).clamp(0, 1) - x
        delta.grad.zero_()
        model.zero_grad()
    return (x + delta).detach()


@dataclass(frozen=True)
class ReferenceConfig:
    lambda_at: float = 1.0
    lambda_cl: float = 0.5
    lambda_ascl: float = 0.2
    temperature: float = 0.5
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 5
    random_start: bool = True


def reference_terms(
    model: PretrainNet,
    x: Tensor,
    view1: Tensor,
    view2: Tensor,
    y: Tensor,
    cfg: ReferenceConfig,
    generator: torch.Generator | None = None,
    loss_impl: str = "peer",
) -> dict[str, Tensor]:
    """The ensemble ASCL objective (all three weights > 0), peer style; returns the loss terms.

    loss_impl: "peer" uses the loss code of this module; "ascl" uses ``ascl.losses`` (same
    math, different rounding), which the agreement check uses to tell rounding from math.
    """
    nt_xent_fn, ascl_fn = (nt_xent, ascl_contrast) if loss_impl == "peer" else _ascl_losses()
    tau = cfg.temperature
    n = x.shape[0]
    model.train()

    def attack(loss_fn, inputs: Tensor) -> Tensor:
        return pgd_backward(
            model,
            loss_fn,
            inputs,
            cfg.eps,
            cfg.alpha,
            cfg.steps,
            cfg.random_start,
            generator,
        )

    z_clean = model.project(view1, "clean")

    x_at = attack(lambda xa: F.cross_entropy(model(xa, "adv"), y), x)

    def cl_attack_loss(xa: Tensor) -> Tensor:
        z = model.project(xa, "adv")
        return nt_xent_fn(z[:n], z[n:], tau)

    x_cl = attack(cl_attack_loss, torch.cat([view1, view2], dim=0))

    z_ref = z_clean.detach()
    x_ascl = attack(lambda xa: ascl_fn(z_ref, model.project(xa, "adv"), y, tau), x)

    loss_at = F.cross_entropy(model(x_at, "adv"), y)
    z_cl = model.project(x_cl, "adv")
    loss_cl = nt_xent_fn(z_cl[:n], z_cl[n:], tau)
    loss_ascl = ascl_fn(z_clean, model.project(x_ascl, "adv"), y, tau)
    loss = cfg.lambda_at * loss_at + cfg.lambda_cl * loss_cl + cfg.lambda_ascl * loss_ascl
    return {"at": loss_at, "cl": loss_cl, "ascl": loss_ascl, "loss": loss}


def _ascl_losses():
    from ascl.losses import ascl_loss, nt_xent_loss

    return nt_xent_loss, ascl_loss


def reference_train_step(
    model: PretrainNet,
    optimizer: torch.optim.Optimizer,
    batch: tuple[Tensor, Tensor, Tensor, Tensor],
    cfg: ReferenceConfig,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One optimisation step on a loader batch; returns the loss terms as floats."""
    x, v1, v2, y = (t.to(device, non_blocking=True) for t in batch)
    terms = reference_terms(model, x, v1, v2, y, cfg, generator)
    optimizer.zero_grad()
    terms["loss"].backward()
    optimizer.step()
    return {k: v.item() for k, v in terms.items()}
