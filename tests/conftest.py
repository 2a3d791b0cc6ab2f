"""Shared fixtures: a tiny data set in the uniform on-disk form, tiny job settings, and a
temporary MLflow store (tests never touch the project's mlflow.db)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ascl import config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["ASCL_PROGRESS"] = "0"
    # code hashes are cached between processes (ascl.codehash.cache_file): the tests' own
    os.environ["ASCL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def write_npz(
    path: Path, n_train: int = 48, n_test: int = 24, classes: int = 3, seed: int = 0
) -> Path:
    """A learnable toy set in the uniform form: class k is a bright square at position k."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % classes
        x = rng.integers(0, 60, size=(n, 3, 16, 16), dtype=np.uint8)
        for i, k in enumerate(y):
            x[i, :, 2 + 4 * k : 6 + 4 * k, 4:12] = 230
        return x, y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    np.savez(
        path,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=np.array([f"c{k}" for k in range(classes)]),
    )
    return path


@pytest.fixture
def toy_data(tmp_path) -> Path:
    return write_npz(tmp_path / "toy.npz")


@pytest.fixture
def smoke_params() -> dict:
    return config.load_params(ROOT / "params.yaml", ROOT / "config" / "smoke.yaml")


@pytest.fixture
def tiny_params(smoke_params) -> dict:
    """Smoke params shrunk further for unit-level training tests (seconds on CPU)."""
    p = config.deep_merge(
        smoke_params,
        {
            "device": "cpu",
            "data": {"max_train": None, "max_test": None},
            "model": {"width": 2, "proj_hidden": 8, "proj_dim": 4},
            "pretrain": {"epochs": 3, "batch_size": 16, "attack": {"steps": 1}},
            "finetune": {"batch_size": 16, "attack": {"steps": 1}},
            "evaluate": {"batch_size": 24, "pgd": {"steps": 3}},
        },
    )
    for s in p["finetune"]["strategies"].values():
        s["epochs"] = 1
        s.pop("batch_size", None)  # the tiny data: every strategy at finetune.batch_size
    config.validate_params(p)
    return p
