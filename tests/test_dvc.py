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


def test_dvc_repro_reruns_only_affected_jobs_and_results_travel_through_a_remote(tmp_path):
    """From a `git clone` of this repository (its own .dvc/, no `dvc init`): `dvc repro` on
    CI-sized params; a parameter change reruns exactly the jobs it touches; `dvc push` to a
    directory remote; a second clone `dvc pull`s, `snakemake --touch`es, and then has nothing
    to do and a clean `dvc status`."""
    repo = tmp_path / "repo"
    store = tmp_path / "dvc-store"
    run(["git", "clone", "-q", str(REPO), str(repo)], tmp_path)
    # The working tree's tracked and untracked files (on CI the same as the commit).
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
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
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    run([*git, "add", "-A"], repo)
    run([*git, "commit", "-qm", "CI-sized params"], repo)
    assert (repo / ".dvc" / "config").is_file()  # committed: no `dvc init` needed
    run([str(BIN / "dvc"), "remote", "modify", "--local", "storage", "url", str(store)], repo)
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

    # Share: push the outputs, commit dvc.lock; take over in a fresh clone.
    run([str(BIN / "dvc"), "push"], repo)
    run([*git, "add", "dvc.lock", "params.yaml"], repo)
    run([*git, "commit", "-qm", "results"], repo)
    other = tmp_path / "other"
    run(["git", "clone", "-q", str(repo), str(other)], tmp_path)
    run([str(BIN / "dvc"), "remote", "modify", "--local", "storage", "url", str(store)], other)
    run([str(BIN / "dvc"), "pull"], other)
    assert (other / "results/pretrain/ascl/seed0/encoder.pt").read_bytes() == (
        repo / "results/pretrain/ascl/seed0/encoder.pt"
    ).read_bytes()
    run([str(BIN / "snakemake"), "--touch", "--cores", "1"], other)
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "1"], other)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    status = run([str(BIN / "dvc"), "status"], other).stdout
    assert "up to date" in status.lower(), status


class _Reads(dict):
    """params that records which top-level keys are read (params[k], params.get(k), k in)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return super().__contains__(key)


def _stage_reads() -> dict[str, set[str]]:
    """Top-level params keys each stage's jobs read: their settings and the jobs that exist."""
    p = config.load_params(REPO / "params.yaml")
    reads = {}
    peer = config.deep_merge(p, {"protocol": "peer"})  # the recipes are read only then
    for stage, build in {
        "pretrain": lambda q: (
            [config.pretrain_settings(q, m) for m in config.pretrain_methods(q)]
            + [config.pseudo_label_settings(q, "advcl")]
        ),
        "finetune": lambda q: [
            config.finetune_settings(q, s) for _, s, _ in config.finetune_jobs(q)
        ],
        "evaluate": lambda q: (
            [config.evaluate_settings(q)]
            + [config.evaluation_settings(q, k) for k in q["evaluate"] if k in config.EVALUATIONS]
        ),
    }.items():
        reads[stage] = set()
        for params in (p, peer):
            q = _Reads(params)
            build(q)
            reads[stage] |= q.read
    return reads


def test_each_stage_lists_every_params_key_its_jobs_read():
    """`dvc repro` after a params change reruns a stage whose jobs' settings change: every
    top-level key a stage's settings read is in its dvc.yaml params (the key or a sub-key)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = {}
    for stage, keys in _stage_reads().items():
        listed = {str(k).split(".")[0] for k in stages[stage]["params"]}
        if keys - listed:
            missing[stage] = sorted(keys - listed)
    assert missing == {}
    assert {"protocol", "recipes"} <= _stage_reads()["pretrain"]  # the reads are seen
