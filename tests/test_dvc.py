"""DVC on top of the Snakemake DAG: after a parameter change `dvc repro` reruns exactly the jobs
that the change touches, and `dvc metrics show` lists the tables' numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ascl import config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        ["timeout", "-s", "KILL", str(timeout), *cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def output_times(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for sub in ("results/pretrain", "results/finetune", "results/evaluate")
        for p in (root / sub).rglob("*")
        if p.is_file()
    }


def test_dvc_repro_reruns_only_affected_jobs(tmp_path):
    repo = tmp_path / "repo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if name.startswith(("src/", "workflow/", "config/")) or name in ("dvc.yaml",):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, repo / name)
    params = config.load_params(REPO / "params.yaml", REPO / "config" / "smoke.yaml")
    params["paper"] = {"table5": params["paper"]["table5"]}
    params["paper"]["table5"]["metrics"] = ["sa", "ra_pgd_eps8"]  # PGD only: no AutoAttack jobs
    params["figures"] = {}
    params["pretrain"]["epochs"] = 1
    for s in params["finetune"]["strategies"].values():
        s["epochs"] = 1
    params["data"]["max_train"] = 64
    params["data"]["max_test"] = 32
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("mlflow.db\n.snakemake/\nlogs/\ncheckpoints/\n")
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], repo)
    run([str(BIN / "dvc"), "init", "-q"], repo)
    run([str(BIN / "dvc"), "repro"], repo)
    before = output_times(repo)
    assert any(k.endswith("ascl-at/seed0/encoder.pt") for k in before)

    params["methods"]["ascl"]["lambda_cl"] = 0.25  # used only by ASCL's own pre-training
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([str(BIN / "dvc"), "repro"], repo)
    after = output_times(repo)
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == [
        "results/evaluate/ascl/LAF/source/seed0/pgd.json",
        "results/finetune/ascl/LAF/source/seed0/model.pt",
        "results/finetune/ascl/LAF/source/seed0/run_id.txt",
        "results/pretrain/ascl/seed0/encoder.pt",
        "results/pretrain/ascl/seed0/run_id.txt",
    ]
    metrics = run([str(BIN / "dvc"), "metrics", "show"], repo).stdout
    assert "table5" in metrics and "sa" in metrics
    # Plots of the files this slice produced (Table 5; the figures are not in this slice).
    run([str(BIN / "dvc"), "plots", "show", "-o", "plots"], repo)
    page = (repo / "plots" / "index.html").read_text()
    assert "table5_csv" in page and "Full model" in page

    status = run([str(BIN / "dvc"), "status"], repo).stdout
    assert "up to date" in status.lower()
