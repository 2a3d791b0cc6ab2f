"""MLflow tracking: params/metrics/tags arrive, failures end FAILED, concurrent writers lose
nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from ascl.tracking import Run, flatten, tracking_uri


def test_run_logs_and_finishes():
    with Run(
        "unit/ok", params={"a": {"b": 1}, "l": [1, 2]}, tags={"stage": "unit"}, experiment="unit"
    ) as run:
        run.log_metrics({"acc": 0.5}, step=1)
        run.log_metrics({"acc": 0.7}, step=2)
    client = MlflowClient(tracking_uri())
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params == {"a.b": "1", "l": "[1, 2]"}
    assert r.data.tags["stage"] == "unit" and "git_commit" in r.data.tags
    assert [m.value for m in client.get_metric_history(run.run_id, "acc")] == [0.5, 0.7]


def test_crashed_run_is_failed():
    with pytest.raises(ValueError), Run("unit/crash", experiment="unit") as run:
        raise ValueError("bad batch")
    r = MlflowClient(tracking_uri()).get_run(run.run_id)
    assert r.info.status == "FAILED" and "bad batch" in r.data.tags["error"]


def test_child_run_has_parent():
    with (
        Run("parent", experiment="unit") as parent,
        Run("child", parent_run_id=parent.run_id, experiment="unit") as child,
    ):
        pass
    tags = MlflowClient(tracking_uri()).get_run(child.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.run_id


def test_disabled_run_logs_nothing():
    with Run("off", enabled=False) as run:
        run.log_metrics({"x": 1.0})
    assert run.run_id is None


def test_flatten():
    assert flatten({"a": {"b": {"c": 1}}, "d": (1, 2)}) == {"a.b.c": 1, "d": "[1, 2]"}


WRITER = textwrap.dedent(
    """
    import sys
    from ascl.tracking import Run
    with Run(f"writer{sys.argv[1]}", experiment="concurrency") as run:
        for step in range(20):
            run.log_metrics({"m": float(step)}, step=step)
    print(run.run_id)
    """
)


def test_concurrent_writers_lose_nothing(tmp_path):
    """8 processes start at once on a store that does not exist yet (so they race to create
    and migrate it) and log to it; every metric of every run arrives."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(8)
    ]
    run_ids = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        run_ids.append(out.strip().splitlines()[-1])
    client = MlflowClient(uri)
    for run_id in run_ids:
        assert client.get_run(run_id).info.status == "FINISHED"
        history = client.get_metric_history(run_id, "m")
        assert sorted(m.step for m in history) == list(range(20))


def test_environment_tags_name_the_packages_and_the_device():
    """The packages hash changes with any distribution's version; torch's entries come from the
    loaded module (this process has torch)."""
    import importlib.metadata as md

    import torch

    from ascl import environment

    tags = environment.environment_tags()
    assert tags["env.torch"] == md.version("torch")
    assert tags["env.cuda"] == str(torch.version.cuda or "none (CPU build)")
    assert tags["env.device"].startswith("cpu") or torch.cuda.is_available()
    listed = environment.packages()
    assert f"torch=={md.version('torch')}" in listed and listed == sorted(listed)
    real = environment.packages

    def bumped():
        return [p if not p.startswith("torch==") else "torch==0.0.1" for p in real()]

    before = environment.packages_hash()
    environment.packages = bumped
    try:
        assert environment.packages_hash() != before
    finally:
        environment.packages = real
