"""The MLflow UI shows the pipeline's run tree: a real `mlflow server`, runs logged the way the
jobs log them (pre-training parent, finetuning child, evaluation grandchild), and the
experiment page opened in a real headless browser (Debian's `chromium`, installed with apt-get
when missing, as scripts/slurm-local.sh installs SLURM). Slow: the browser install and the
page's JavaScript take about a minute."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse

import pytest
from mlflow.tracking import MlflowClient

from ascl.tracking import Run

from .test_faults import mlflow_server  # noqa: F401

pytestmark = pytest.mark.slow


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed here (needs root apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(cmd, capture_output=True, env=env, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=900)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"apt-get install chromium failed:\n{done.stdout[-2000:]}")
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _rendered(chromium: str, url: str, budget_ms: int = 30000) -> str:
    """The page's DOM after its scripts ran (headless, no GPU, no sandbox: root in CI)."""
    proc = subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--virtual-time-budget={budget_ms}",
            "--window-size=1600,1200",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_experiment_page_lists_the_run_tree(mlflow_server, monkeypatch):  # noqa: F811
    chromium = _chromium()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    experiment = "ui-run-tree"
    with Run("pretrain/ascl/seed0", tags={"stage": "pretrain"}, experiment=experiment) as pre:
        pre.log_metrics({"train/loss": 1.0}, step=1)
    with Run("finetune/LAF/seed0", parent_run_id=pre.run_id, experiment=experiment, tags={}) as ft:
        pass
    with Run("evaluate/pgd/seed0", parent_run_id=ft.run_id, experiment=experiment) as ev:
        ev.log_metrics({"sa": 50.0})
    exp_id = MlflowClient(mlflow_server).get_experiment_by_name(experiment).experiment_id
    page = f"{mlflow_server}/#/experiments/{urllib.parse.quote(exp_id)}"
    dom = _rendered(chromium, f"{page}/runs")  # the runs tab (MLflow 3 opens traces first)
    # the top of the tree is listed with the grid's expanders; its descendants are nested
    # under it (collapsed by default), not listed beside it as runs of their own
    assert "pretrain/ascl/seed0" in dom, dom[-3000:]
    assert "ag-grid-expanders-visible" in dom
    assert "finetune/LAF/seed0" not in dom and "evaluate/pgd/seed0" not in dom
    assert experiment in dom
    # a run's own page shows its parent: the tree's links, as the UI draws them
    run_page = _rendered(chromium, f"{page}/runs/{ev.run_id}")
    assert "evaluate/pgd/seed0" in run_page and ft.run_id in run_page, run_page[-3000:]
