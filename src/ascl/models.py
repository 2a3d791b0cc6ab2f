"""ResNet-18 (CIFAR variant) with per-branch batch norm, a projection head and a classifier.

Branches: every forward names its branch, "clean" (natural and augmented inputs) or "adv"
(inputs carrying an adversarial perturbation). With bn="separated" each branch has its own
BatchNorm statistics and affine parameters (the paper's default, sec. 4.3.10); with bn="same"
both names use one set. A forward on one branch never touches the other branch's running
statistics. Inputs are images in [0, 1]; normalisation is the model's first layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BRANCHES = ("clean", "adv")
BN_STRATEGIES = ("separated", "same")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class BranchBatchNorm2d(nn.Module):
    """BatchNorm2d with one parameter/statistics set per branch (or one shared set)."""

    def __init__(self, channels: int, bn: str) -> None:
        super().__init__()
        if bn not in BN_STRATEGIES:
            raise ValueError(f"bn must be one of {BN_STRATEGIES}, got {bn!r}")
        self.bn = bn
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(channels) for _ in range(2 if bn == "separated" else 1)
        )

    def forward(self, x: Tensor, branch: str) -> Tensor:
        return self.norms[branch_index(branch, self.bn)](x)


def branch_index(branch: str, bn: str) -> int:
    """Index of the BN set used by `branch` under strategy `bn`."""
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    if bn not in BN_STRATEGIES:
        raise ValueError(f"bn must be one of {BN_STRATEGIES}, got {bn!r}")
    return BRANCHES.index(branch) if bn == "separated" else 0


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, bn: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = BranchBatchNorm2d(c_out, bn)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = BranchBatchNorm2d(c_out, bn)
        self.shortcut_conv = None
        if stride != 1 or c_in != c_out:
            self.shortcut_conv = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
            self.shortcut_bn = BranchBatchNorm2d(c_out, bn)

    def forward(self, x: Tensor, branch: str) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x), branch))
        out = self.bn2(self.conv2(out), branch)
        if self.shortcut_conv is None:
            return F.relu(out + x)
        return F.relu(out + self.shortcut_bn(self.shortcut_conv(x), branch))


class ResNet18Encoder(nn.Module):
    """CIFAR ResNet-18 (3x3 stem, no max-pool) up to global average pooling.

    x: (B, 3, H, W) in [0, 1] -> features (B, 8 * width).
    """

    def __init__(self, width: int = 64, bn: str = "separated") -> None:
        super().__init__()
        self.bn = bn
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.stem_bn = BranchBatchNorm2d(width, bn)
        blocks = []
        c_in = width
        for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(c_in, c_out, stride, bn))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = 8 * width

    def forward(self, x: Tensor, branch: str) -> Tensor:
        out = (x - self.mean) / self.std
        out = F.relu(self.stem_bn(self.stem(out), branch))
        for block in self.blocks:
            out = block(out, branch)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class ProjectionHead(nn.Module):
    """SimCLR MLP head: Linear-BN-ReLU-Linear, output L2-normalised. (B, D) -> (B, proj_dim)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, bn: str) -> None:
        super().__init__()
        if bn not in BN_STRATEGIES:
            raise ValueError(f"bn must be one of {BN_STRATEGIES}, got {bn!r}")
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = bn
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(hidden) for _ in range(2 if bn == "separated" else 1)
        )
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, h: Tensor, branch: str) -> Tensor:
        out = F.relu(self.norms[branch_index(branch, self.bn)](self.fc1(h)))
        return F.normalize(self.fc2(out), dim=1)


class PretrainNet(nn.Module):
    """Encoder + projection head + classification head, as used in pre-training (eq. 10).

    `features(x, branch)` -> (B, D); `project(x, branch)` -> (B, proj_dim) unit vectors;
    `forward(x, branch)` -> logits (B, num_classes).

    Optional heads, created only when asked (so other methods' state dicts are unchanged):
    `rotation_head` (D -> rotation_classes; Hendrycks et al., 2019) when rotation_classes > 0,
    else None; `pseudo_heads`, one linear head D -> k per entry k of pseudo_classes (AdvCL's
    cluster classifiers), an empty ModuleList when pseudo_classes is empty.
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 64,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        bn: str = "separated",
        rotation_classes: int = 0,
        pseudo_classes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.encoder = ResNet18Encoder(width, bn)
        self.head = ProjectionHead(self.encoder.out_dim, proj_hidden, proj_dim, bn)
        self.classifier = nn.Linear(self.encoder.out_dim, num_classes)
        self.rotation_head = (
            nn.Linear(self.encoder.out_dim, rotation_classes) if rotation_classes > 0 else None
        )
        self.pseudo_heads = nn.ModuleList(
            nn.Linear(self.encoder.out_dim, k) for k in pseudo_classes
        )

    def features(self, x: Tensor, branch: str) -> Tensor:
        return self.encoder(x, branch)

    def project(self, x: Tensor, branch: str) -> Tensor:
        return self.head(self.encoder(x, branch), branch)

    def forward(self, x: Tensor, branch: str) -> Tensor:
        return self.classifier(self.encoder(x, branch))


class Classifier(nn.Module):
    """A pre-trained encoder on a fixed BN branch plus a linear head; `forward(x)` -> logits.

    This is the model every finetuning and evaluation sees (AutoAttack calls `model(x)`).
    """

    def __init__(self, encoder: ResNet18Encoder, num_classes: int, branch: str = "adv") -> None:
        super().__init__()
        branch_index(branch, encoder.bn)
        self.encoder = encoder
        self.branch = branch
        self.head = nn.Linear(encoder.out_dim, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, x: Tensor) -> Tensor:
        return self.encoder(x, self.branch)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x, self.branch))
