"""The Snakemake DAG: the full paper's dry run, the whole smoke DAG end to end, caching, the
MLflow run tree, and bad params stopping before any job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEFILE = REPO / "workflow" / "Snakefile"


# The smoke configuration shrunk further so the whole DAG runs in a few minutes in CI.
CI_OVERRIDES = {
    "data": {"max_train": 64, "max_test": 32},
    "pretrain": {"epochs": 1},
    "methods": {"advcl": {"pseudo_labels": {"clusters": [2, 4]}}},
    "finetune": {"strategies": {s: {"epochs": 1} for s in ("LSF", "LAF", "FSF", "FAF")}},
    "evaluate": {
        "pgd": {"steps": 5},
        "autoattack": {"n_test": 8, "chunk_size": 8},
        "blackbox": {"steps": 2},
        "corruptions": {"severities": [1, 5]},
        "tsne": {"n_samples": 32, "perplexity": 5},
        "inversion": {"components": [0, 1], "steps": 3, "n_seeds": 1},
        "landscape_input": {"points": 3, "n_images": 8},
        "landscape_weight": {"points": 3, "n_images": 8, "attack": {"steps": 1}},
        "strength": {"steps": [0, 1, 3], "eps_grid": [0, 8, 16], "fixed_steps": 2},
    },
}


def workdir_with(tmp: Path, *, smoke: bool = True, params: dict | None = None) -> Path:
    """A run directory holding params.yaml and config/smoke.yaml (shrunk by CI_OVERRIDES)."""
    from ascl.config import deep_merge

    (tmp / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", tmp / "params.yaml")
    smoke_cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    (tmp / "config" / "smoke.yaml").write_text(
        yaml.safe_dump(deep_merge(smoke_cfg, CI_OVERRIDES), sort_keys=False)
    )
    if params is not None:
        (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp


def snakemake(
    workdir: Path, *args: str, smoke: bool = True, timeout: int = 1800, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "-s", str(SNAKEFILE), "-d", str(workdir)]
    if smoke:
        cmd += ["--configfile", str(workdir / "config" / "smoke.yaml")]
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset
    return subprocess.run(
        ["timeout", "-s", "KILL", str(timeout), *cmd, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=workdir,
    )


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    block = output.split("Job stats:")[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def test_full_paper_dry_run_lists_every_job(tmp_path):
    """Full params.yaml with two seeds: one pre-training per method and seed, one finetuning and
    one PGD evaluation per model the tables and figures name, AutoAttack for the rows of tables
    showing RA-AA, the black-box matrix, each figure's evaluations (first seed; every seed for
    the figures a claim reads), one aggregation per table and figure, one claims report."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seeds"] = [0, 1]
    wd = workdir_with(tmp_path, params=params)
    proc = snakemake(wd, "-n", smoke=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)

    def key(r):
        return (r["method"], r["strategy"], r.get("target", "source"))

    tables, figures = params["paper"], params["figures"]
    table_rows = [r for t in tables.values() for r in t.get("rows", {}).values()]
    matrix = [r for t in tables.values() for r in t.get("models", {}).values()]
    fig_models = [r for f in figures.values() for r in f["models"].values()]
    models = {key(r) for r in table_rows + matrix + fig_models if "method" in r}
    aa_rows = {
        key(r)
        for t in tables.values()
        if "ra_aa" in t["metrics"]
        for r in t["rows"].values()
        if "method" in r
    }

    def per_figure(evaluation):
        return {
            key(r)
            for f in figures.values()
            if f["evaluation"] == evaluation
            for r in f["models"].values()
        }

    # a figure shows the first seed; the figures a claim reads are evaluated for every seed
    claim_figures = {c["figure"] for c in params["claims"]["items"].values() if "figure" in c}

    def per_claim_figure(evaluation):
        return {
            key(r)
            for name in claim_figures
            if figures[name]["evaluation"] == evaluation
            for r in figures[name]["models"].values()
        }

    curves = sum(
        len(per_figure(e)) for e in ("tsne", "landscape_input", "landscape_weight", "strength")
    ) + len(per_claim_figure("strength"))
    assert counts["pretrain"] == len({m for m, _, _ in models} | {"simclr"}) * 2
    assert counts["pretrain"] == len(params["methods"]) * 2  # every method is used somewhere
    assert counts["pseudo_labels"] == 2  # advcl, per seed
    assert counts["finetune"] == len(models) * 2
    assert counts["evaluate_pgd"] == len(models) * 2
    assert counts["evaluate_autoattack"] == len(aa_rows) * 2
    assert counts["blackbox_craft"] == counts["blackbox_eval"] == len(matrix) * 2
    assert counts["evaluate_corruptions"] == len(per_figure("corruptions")) + len(
        per_claim_figure("corruptions")
    )
    assert counts["evaluate_inversion"] == len(per_figure("inversion"))
    assert counts["evaluate_curve"] == curves
    assert counts["table"] == len(tables) == 8
    assert counts["figure"] == len(figures) == 7
    assert counts["claims"] == 1
    assert counts["download"] == 3  # cifar10, stl10, cifar100
    assert counts["download_corruptions"] == 1  # cifar10c


def test_named_table_target(tmp_path):
    wd = workdir_with(tmp_path)
    proc = snakemake(wd, "-n", "table7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["pretrain"] == 1 and counts["finetune"] == 4 and counts["table"] == 1


def test_bad_params_stop_before_any_job(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pretrain"]["attack"]["eps"] = -1
    wd = workdir_with(tmp_path, params=params)
    proc = snakemake(wd, "--cores", "1", smoke=False)
    assert proc.returncode != 0
    assert "ascl: error: params: pretrain.attack.eps:" in proc.stderr
    assert not (wd / "results").exists() and not (wd / "resources").exists()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The whole smoke DAG, run once for the tests below, as `make smoke` runs it: no tracking
    URI set, so the run logs through its own MLflow server over the default store."""
    wd = workdir_with(tmp_path_factory.mktemp("smoke"))
    uri = f"sqlite:///{wd / 'mlflow.db'}"
    proc = snakemake(wd, "--cores", "2", "--resources", "gpu=2", env={"MLFLOW_TRACKING_URI": None})
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "MLflow server of this run: http://127.0.0.1:" in proc.stderr
    assert not (wd / ".snakemake" / "ascl-mlflow-server.json").exists()  # stopped
    return wd, uri


def test_smoke_dag_outputs(smoke_run):
    wd, _ = smoke_run
    params = yaml.safe_load((wd / "params.yaml").read_text())
    for table in params["paper"]:
        md = (wd / "results" / "paper" / f"{table}.md").read_text()
        rows = [ln.split("|")[1].strip() for ln in md.splitlines()[4:] if ln.startswith("|")]
        spec = params["paper"][table]
        # every row, in the paper's order (Table 2: one row per target model)
        assert rows == list(spec["rows"] if "rows" in spec else spec["models"])
    summary = json.loads((wd / "results" / "metrics.json").read_text())
    assert set(summary) == set(params["paper"]) | {"claims"}
    # the claims report: one verdict per claim, in the report and in the DVC metrics
    claims = params["claims"]["items"]
    assert set(summary["claims"]) == set(claims)
    md = (wd / "results" / "paper" / "claims.md").read_text()
    assert f"of {len(claims)} claims" in md and "Does every model learn?" in md
    m = json.loads((wd / "results/evaluate/ascl/LAF/source/seed0/pgd.json").read_text())
    assert all(0 <= m[k] <= m["sa"] <= 100 for k in ("ra_pgd_eps8", "ra_pgd_eps16"))
    assert m["n_test"] == 32
    assert (wd / "checkpoints/pretrain/ascl/seed0/epoch-1.pt").exists()


def test_smoke_dag_evaluations_and_figures(smoke_run):
    wd, _ = smoke_run
    ev = wd / "results/evaluate/ascl/LAF/source/seed0"
    pgd = json.loads((ev / "pgd.json").read_text())
    aa = json.loads((ev / "autoattack.json").read_text())
    assert 0 <= aa["ra_aa"] <= aa["sa"] <= 100 and aa["n_test"] == 8
    assert pgd["n_test"] == 32
    bb = json.loads((ev / "blackbox.json").read_text())
    assert set(bb["ra"]) == {"at/E2E", "acl/FAF", "advcl/LAF"}  # the diagonal is excluded
    corr = json.loads((ev / "corruptions.json").read_text())
    assert len(corr["per_corruption"]) == 19
    for fig in range(1, 8):
        png = wd / "results" / "paper" / "figures" / f"fig{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    table2 = (wd / "results" / "paper" / "table2.md").read_text()
    assert "| AT | × |" in table2


def test_smoke_html_report(smoke_run):
    wd, uri = smoke_run
    proc = snakemake(wd, "--report", "report.html", env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (wd / "report.html").read_text(errors="replace")
    assert len(html) > 100_000
    for name in ("table1.html", "table8.html", "fig1.png", "fig7.png"):
        assert name in html, name
    assert "offline stand-in" in html


def test_smoke_run_tree_in_mlflow(smoke_run):
    from mlflow.tracking import MlflowClient

    wd, uri = smoke_run
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ascl-smoke")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    by_id = {r.info.run_id: r for r in runs}
    pre_id = (wd / "results/pretrain/ascl/seed0/run_id.txt").read_text().strip()
    ft_id = (wd / "results/finetune/ascl/LAF/source/seed0/run_id.txt").read_text().strip()
    assert by_id[ft_id].data.tags["mlflow.parentRunId"] == pre_id
    evals = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ft_id]
    kinds = {r.data.tags["evaluation"] for r in evals}
    assert {"pgd", "autoattack", "corruptions", "strength", "tsne"} <= kinds, kinds
    pgd_run = next(r for r in evals if r.data.tags["evaluation"] == "pgd")
    assert "sa" in pgd_run.data.metrics
    assert all(r.info.status == "FINISHED" for r in runs)
    assert by_id[pre_id].data.tags["rule"] == "pretrain"
    assert by_id[pre_id].data.tags["wildcards"] == "method=ascl,seed=0"


def test_smoke_rerun_does_nothing(smoke_run):
    wd, uri = smoke_run
    proc = snakemake(wd, "--cores", "2", "-n", env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_params_change_reruns_only_affected_jobs(smoke_run):
    """A pre-training switch of one method marks exactly that method's jobs as outdated."""
    wd, _ = smoke_run
    override = wd / "config" / "change.yaml"
    override.write_text("methods:\n  ascl-same-bn: {lambda_cl: 0.3}\n")
    proc = snakemake(wd, "-n", "--configfile", str(wd / "config" / "smoke.yaml"), str(override))
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["pretrain"] == 1 and counts["finetune"] == 1 and counts["evaluate_pgd"] == 1
    assert counts["table"] == 1  # only table 8 uses ascl-same-bn
