"""Loaders of the artifacts jobs pass to each other: encoders (pre-training), classifiers
(finetuning) and pseudo labels (AdvCL's clusters).

Every job reads its inputs through this module, so no job module imports another: pre-training
reads pseudo labels, finetuning and pseudo labelling read encoders, evaluations read classifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ascl import checkpoint
from ascl.errors import FormatError, ParamsError
from ascl.models import Classifier, PretrainNet, ResNet18Encoder
from ascl.objectives import ROTATION_CLASSES
from ascl.tensors import subset


def cluster_counts(clusters: int | Sequence[int]) -> tuple[int, ...]:
    """params' `clusters` (one count or a list) as a tuple of counts."""
    if isinstance(clusters, int):
        return (clusters,)
    return tuple(int(k) for k in clusters)


def training_index(n_train: int, max_train: int | None) -> Tensor:
    """(N,) int64 positions of the training images `run_pretrain` uses, in its order."""
    positions = torch.arange(n_train)
    return subset(positions, positions, max_train, seed=0)[0]


def build_pretrain_net(settings: dict, num_classes: int) -> PretrainNet:
    """The method's PretrainNet; the objective decides the optional heads (rotation, pseudo)."""
    m = settings["model"]
    spec = settings["objective"]
    pseudo = spec.get("pseudo_labels")
    return PretrainNet(
        num_classes,
        width=m["width"],
        proj_hidden=m["proj_hidden"],
        proj_dim=m["proj_dim"],
        bn=m["bn"],
        rotation_classes=ROTATION_CLASSES if spec["objective"] == "rotation" else 0,
        pseudo_classes=cluster_counts(pseudo["clusters"]) if pseudo else (),
    )


def load_pretrained(path: str | Path, map_location="cpu") -> tuple[PretrainNet, dict]:
    """Rebuild a PretrainNet from an encoder checkpoint written by run_pretrain."""
    state = checkpoint.load(path, map_location)
    if state.get("kind") != "pretrain":
        raise checkpoint.CheckpointError(f"{path}: not a pre-training checkpoint")
    model = build_pretrain_net(state["settings"], state["num_classes"])
    model.load_state_dict(state["model"])
    return model, state


def load_classifier(path: str | Path, map_location="cpu") -> tuple[Classifier, dict]:
    """Rebuild a Classifier from a checkpoint written by run_finetune."""
    state = checkpoint.load(path, map_location)
    if state.get("kind") != "classifier":
        raise checkpoint.CheckpointError(f"{path}: not a finetuned classifier checkpoint")
    m = state["encoder_settings"]["model"]
    encoder = ResNet18Encoder(m["width"], m["bn"])
    model = Classifier(encoder, state["num_classes"], state["branch"])
    model.load_state_dict(state["model"])
    return model.eval(), state


def load_pseudo_labels(
    path: str | Path,
    *,
    n_train: int,
    max_train: int | None,
    clusters: Sequence[int],
    data_hash: str | None = None,
) -> Tensor:
    """(N, K) int64 pseudo labels aligned with `run_pretrain`'s training images.

    Checks that the file labels exactly the images `subset(n_train, max_train)` selects, in the
    same order, with the given cluster counts (and, if given, the data set hash); any mismatch is
    a one-line ParamsError.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pseudo labels not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as err:  # noqa: BLE001 - re-raised as one line naming the file
        raise FormatError(f"{path}: not a readable .npz ({type(err).__name__})") from None
    missing = [k for k in ("labels", "clusters", "index") if k not in arrays]
    if missing:
        raise FormatError(f"{path}: missing key(s) {', '.join(missing)}")
    labels, counts, index = arrays["labels"], arrays["clusters"], arrays["index"]
    if tuple(int(k) for k in counts) != tuple(clusters):
        raise ParamsError(
            f"{path}: made with clusters {list(map(int, counts))}, the method wants "
            f"{list(clusters)}"
        )
    expected = training_index(n_train, max_train).numpy()
    if index.shape != expected.shape or not np.array_equal(index, expected):
        raise ParamsError(
            f"{path}: labels {len(index)} training images, not the {len(expected)} this job "
            "trains on (data set or data.max_train differ)"
        )
    if data_hash is not None and "data_hash" in arrays and str(arrays["data_hash"]) != data_hash:
        raise ParamsError(f"{path}: made from another data set file")
    if labels.ndim != 2 or labels.shape != (len(counts), len(index)):
        raise FormatError(f"{path}: labels must have shape (K, N), got {labels.shape}")
    if np.any(labels >= counts[:, None]) or np.any(labels < -1):
        raise FormatError(f"{path}: label out of range")
    return torch.from_numpy(labels.astype(np.int64)).T.contiguous()
