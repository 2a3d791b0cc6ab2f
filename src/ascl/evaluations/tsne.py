"""t-SNE of the learned representation (Fig. 3).

The penultimate features (`Classifier.features`: the encoder's pooled output on the model's BN
branch, the input of the linear head) of `n_samples` test images (the shared seed-0 subset, so
every model is shown on the same images), embedded in 2-D by scikit-learn's (Barnes-Hut)
t-SNE (PCA initialisation, `perplexity`, random_state = the job seed). The perplexity is
lowered to (n - 1) / 3 when fewer images are available (t-SNE needs perplexity < n).
Output CSV: one row per image, columns x, y, label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ascl.evaluations.common import (
    evaluation_job,
    write_csv,
)
from ascl.tensors import to_float


@torch.no_grad()
def features(model: nn.Module, x: Tensor, batch_size: int) -> np.ndarray:
    """Penultimate features (N, D) float64 of uint8 images x (N, 3, H, W)."""
    model.eval()
    parts = [
        model.features(to_float(x[i : i + batch_size])).double().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts).numpy()


def effective_perplexity(perplexity: float, n: int) -> float:
    return float(min(perplexity, max(1.0, (n - 1) / 3)))


def embed(feats: np.ndarray, *, perplexity: float, seed: int) -> tuple[np.ndarray, float]:
    """2-D t-SNE embedding (N, 2) of features (N, D), and the final KL divergence."""
    from sklearn.manifold import TSNE

    tsne = TSNE(
        n_components=2,
        perplexity=effective_perplexity(perplexity, len(feats)),
        init="pca",
        random_state=seed,
    )
    points = tsne.fit_transform(feats)
    return points, float(tsne.kl_divergence_)


def run_tsne(settings: dict, *, out: str | Path, **job_args: Any) -> dict:
    """Write the t-SNE CSV (x, y, label) of the model's features to `out`.

    job_args: model_path, data, seed, parent_run_id, tags, track (`evaluation_job`).
    """
    with evaluation_job(
        "tsne", settings, n_images=settings["n_samples"], outputs=(out,), **job_args
    ) as job:
        model, x, y, run, seed = job.model, job.x, job.y, job.run, job.seed
        points, kl = embed(
            features(model, x, settings["batch_size"]),
            perplexity=settings["perplexity"],
            seed=seed,
        )
        labels = y.cpu().tolist()
        metrics = {"kl_divergence": kl, "n_samples": len(labels)}
        run.log_metrics({"tsne_kl_divergence": kl})
        write_csv(
            out,
            ("x", "y", "label"),
            ((float(p[0]), float(p[1]), int(k)) for p, k in zip(points, labels, strict=True)),
        )
    return metrics
