"""Pseudo labels for AdvCL: k-means clusters of a pre-trained encoder's features.

AdvCL (Fan et al., 2021) trains extra linear heads on cluster pseudo labels. Its public code
reads them from data/imagenet_clPretrain_pseudo_labels.pkl: ClusterFit-style k-means (2, 10, 50,
100 and 500 clusters) of the features of an ImageNet-pretrained SimCLR, which cannot be fetched
here. The pipeline instead clusters the features of its own self-supervised encoder (the method
named by `pseudo_labels.from` in params.yaml, `simclr` by default) on the training images.

Features are the encoder's penultimate (global-average-pooled) features of the clean training
images, clean BN branch, eval mode, L2-normalised (contrastive features are compared by cosine);
clustering is scikit-learn's KMeans (k-means++ init, one run, `random_state` = the job's seed),
so the labels are a deterministic function of the encoder, the images and the seed on one
device.

File (.npz, written atomically): ``labels`` (K, N) int64, row k in 0..clusters[k]-1;
``clusters`` (K,) int64; ``index`` (N,) int64, the positions of the N labelled images in the
data set's training split (`tensors.subset` with data.max_train, the selection `run_pretrain`
applies); ``data_hash``, the short sha256 of the data set file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ascl.artifacts import cluster_counts, load_pretrained, training_index
from ascl.engine import resolve_device
from ascl.errors import ParamsError
from ascl.models import PretrainNet
from ascl.tensors import to_float

KMEANS_N_INIT = 1  # scikit-learn's default for k-means++ init (n_init="auto")
FEATURE_BATCH = 512  # eval mode: the batch size does not change the features


@torch.no_grad()
def encoder_features(
    model: PretrainNet,
    x: Tensor,
    batch_size: int = FEATURE_BATCH,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Penultimate features of uint8 images x (N, 3, H, W): (N, D) float32 on the CPU.

    The model is put in eval mode (clean branch); its mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        out = [
            model.features(to_float(x[i : i + batch_size].to(device)), "clean").float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.encoder.out_dim)


def cluster_labels(features: np.ndarray, clusters: Sequence[int], seed: int = 0) -> np.ndarray:
    """k-means labels of L2-normalised features for every count in `clusters`.

    features: (N, D) float; returns (K, N) int64, row k with values in 0..clusters[k]-1.
    Deterministic for given features and seed.
    """
    from sklearn.cluster import KMeans

    feats = np.asarray(features, dtype=np.float64)
    n = feats.shape[0]
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    rows = []
    for k in clusters:
        if not 2 <= k <= n:
            raise ValueError(f"cannot make {k} clusters of {n} images")
        km = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed)
        rows.append(km.fit_predict(feats).astype(np.int64))
    return np.stack(rows)


def run_pseudo_labels(
    settings: dict,
    *,
    encoder: str | Path,
    data: str | Path,
    out: str | Path,
    seed: int = 0,
) -> dict[str, float]:
    """Cluster the encoder's features of the (subset of the) training images; write `out`.

    settings: `config.pseudo_label_settings(params, method)`. The encoder checkpoint must come
    from the method named by settings["from"]. Returns a small summary (images, clusterings).
    """
    from ascl.data import image_size_setting, load_dataset, write_npz_atomic
    from ascl.tracking import file_hash

    if settings.get("kind") != "pseudo_labels":
        raise ParamsError("--settings: expected the settings of a pseudo-labels job")
    model, state = load_pretrained(encoder)
    source = state["settings"]["method"]
    if source != settings["from"]:
        raise ParamsError(
            f"pseudo-labels: encoder {encoder} was trained by method {source!r}, "
            f"settings name {settings['from']!r}"
        )
    device = resolve_device(settings["device"])
    torch.manual_seed(seed)
    ds = load_dataset(data, image_size_setting(settings))
    index = training_index(len(ds.x_train), settings["data"]["max_train"])
    feats = encoder_features(model.to(device), ds.x_train[index], device=device)
    clusters = cluster_counts(settings["clusters"])
    labels = cluster_labels(feats.numpy(), clusters, seed)
    write_npz_atomic(
        out,
        {
            "labels": labels,
            "clusters": np.asarray(clusters, dtype=np.int64),
            "index": index.numpy().astype(np.int64),
            "data_hash": np.array(file_hash(data)),
        },
    )
    return {"images": float(labels.shape[1]), "clusterings": float(labels.shape[0])}
