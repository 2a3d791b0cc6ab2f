"""MLflow run lifecycle of the jobs: a killed training job's rerun continues its own run (the
run id is kept with the checkpoints), a run left RUNNING by a killed job is ended KILLED when the
job starts again, training runs tag the artifact they wrote (path, md5 as DVC records it),
evaluation runs log their outputs, and report outputs land in one `paper` run. Checked on the
SQLite store and against a real `mlflow server` process, reading back through the client."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from mlflow.tracking import MlflowClient

from ascl import config
from ascl.tracking import PAPER_RUN, Run, job_run, log_paper_outputs, tracking_uri

# `mlflow server` on a loopback port with a SQLite backend (module-scoped fixture)
from .test_faults import mlflow_server  # noqa: F401

# A job process that opens its run and is then killed with SIGKILL (no cleanup runs).
KILLED_JOB = textwrap.dedent(
    """
    import os, signal, sys
    from ascl.tracking import Run, job_run
    name, experiment, ckpt_dir, parent = sys.argv[1:5]
    os.environ["ASCL_EXPERIMENT"] = experiment
    if ckpt_dir != "-":
        ctx = job_run(name, params={"a": 1}, tags={"params_hash": "h1"}, ckpt_dir=ckpt_dir)
    else:
        ctx = Run(name, params={"a": 1}, tags={"params_hash": "h1", "wildcards": "w=1"},
                  parent_run_id=parent, experiment=experiment)
    with ctx as run:
        print(run.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _killed_job(uri: str, name: str, experiment: str, ckpt_dir: str = "-", parent: str = "-"):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    p = subprocess.run(
        [sys.executable, "-c", KILLED_JOB, name, experiment, ckpt_dir, parent],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    return p.stdout.strip().splitlines()[-1]


def _runs_named(client: MlflowClient, experiment: str, name: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], f"tags.mlflow.runName = '{name}'")


def check_killed_training_job_continues_its_run(uri, tmp_path, experiment):
    ckpt = tmp_path / f"ckpt-{experiment}"
    first = _killed_job(uri, "pretrain/ascl/seed0", experiment, str(ckpt))
    client = MlflowClient(uri)
    assert client.get_run(first).info.status == "RUNNING"  # what SIGKILL leaves behind
    with job_run(
        "pretrain/ascl/seed0",
        params={"a": 1},
        tags={"params_hash": "h1"},
        ckpt_dir=ckpt,
        run_id_out=tmp_path / "run_id.txt",
    ) as run:
        pass
    assert run.run_id == first
    assert (tmp_path / "run_id.txt").read_text().strip() == first
    assert client.get_run(first).info.status == "FINISHED"
    assert [r.info.run_id for r in _runs_named(client, experiment, "pretrain/ascl/seed0")] == [
        first
    ]


def check_stale_run_of_a_killed_job_is_ended_killed(uri, experiment):
    with Run("finetune/LAF/seed0", experiment=experiment) as parent:
        pass
    stale = _killed_job(uri, "evaluate/pgd/seed0", experiment, parent=parent.run_id)
    with Run(
        "evaluate/pgd/seed0",
        tags={"params_hash": "h1", "wildcards": "w=1"},
        parent_run_id=parent.run_id,
        experiment=experiment,
    ) as rerun:
        pass
    client = MlflowClient(uri)
    assert client.get_run(stale).info.status == "KILLED"
    assert client.get_run(rerun.run_id).info.status == "FINISHED"
    # another job's RUNNING run (other wildcards) is left alone
    other = _killed_job(uri, "evaluate/pgd/seed1", experiment, parent=parent.run_id)
    with Run(
        "evaluate/pgd/seed0",
        tags={"params_hash": "h1", "wildcards": "w=1"},
        parent_run_id=parent.run_id,
        experiment=experiment,
    ):
        pass
    assert client.get_run(other).info.status == "RUNNING"


def check_paper_outputs_go_to_one_paper_run(uri, tmp_path, experiment, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ASCL_EXPERIMENT", experiment)
    table = tmp_path / "table1.md"
    table.write_text("| a |\n")
    fig = tmp_path / "fig1.png"
    fig.write_bytes(b"\x89PNG")
    log_paper_outputs([table], "tables")
    log_paper_outputs([fig], "figures")
    client = MlflowClient(uri)
    (paper,) = _runs_named(client, experiment, PAPER_RUN)
    from ascl.environment import environment_tags

    expected = environment_tags()
    assert {k: paper.data.tags.get(k) for k in expected} == expected
    assert [a.path for a in client.list_artifacts(paper.info.run_id, "tables")] == [
        "tables/table1.md"
    ]
    assert [a.path for a in client.list_artifacts(paper.info.run_id, "figures")] == [
        "figures/fig1.png"
    ]


def test_killed_training_job_continues_its_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri())
    monkeypatch.setenv("ASCL_EXPERIMENT", "resume-sqlite")
    check_killed_training_job_continues_its_run(tracking_uri(), tmp_path, "resume-sqlite")


def test_stale_run_of_a_killed_job_is_ended_killed(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri())
    check_stale_run_of_a_killed_job_is_ended_killed(tracking_uri(), "stale-sqlite")


def test_paper_outputs_go_to_one_paper_run(tmp_path, monkeypatch):
    check_paper_outputs_go_to_one_paper_run(tracking_uri(), tmp_path, "paper-sqlite", monkeypatch)


def test_report_commands_by_hand_log_nothing(tmp_path, monkeypatch):
    """Without ASCL_EXPERIMENT (a command run by hand) no paper run is made."""
    monkeypatch.delenv("ASCL_EXPERIMENT", raising=False)
    client = MlflowClient(tracking_uri())

    def paper_runs() -> int:
        ids = [e.experiment_id for e in client.search_experiments()]
        return len(client.search_runs(ids, f"tags.mlflow.runName = '{PAPER_RUN}'")) if ids else 0

    before = paper_runs()
    (tmp_path / "t.md").write_text("x\n")
    log_paper_outputs([tmp_path / "t.md"], "tables")
    assert paper_runs() == before


def test_jobs_tag_and_log_what_they_wrote(tiny_params, toy_data, tmp_path, monkeypatch):
    """pretrain and finetune runs carry artifact.path / artifact.md5 of their checkpoint; the
    PGD evaluation run holds its metrics JSON as an artifact."""
    from ascl.evaluations.pgd import run_pgd
    from ascl.finetune import run_finetune
    from ascl.pretrain import run_pretrain

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASCL_EXPERIMENT", "artifacts")
    enc, clf, met = tmp_path / "enc.pt", tmp_path / "clf.pt", tmp_path / "pgd.json"
    p = config.deep_merge(tiny_params, {"pretrain": {"epochs": 1}})
    run_pretrain(
        config.pretrain_settings(p, "ascl"), data=toy_data, out=enc, seed=0, run_id_out="pre.txt"
    )
    run_finetune(
        config.finetune_settings(p, "LSF"),
        encoder=enc,
        data=toy_data,
        out=clf,
        seed=0,
        run_id_out="ft.txt",
    )
    run_pgd(config.evaluate_settings(p), model_path=clf, data=toy_data, out=met, seed=0)
    client = MlflowClient(tracking_uri())
    import importlib.metadata

    import torch

    from ascl.environment import packages_hash

    for id_file, path in (("pre.txt", enc), ("ft.txt", clf)):
        tags = client.get_run(Path(id_file).read_text().strip()).data.tags
        # the environment the job ran on (the job process has torch loaded)
        assert tags["env.torch"] == importlib.metadata.version("torch")
        assert tags["env.packages_hash"] == packages_hash()
        assert tags["env.cuda"] == str(torch.version.cuda or "none (CPU build)")
        assert tags["env.device"] != "not loaded"
        assert tags["artifact.path"] == path.name
        assert tags["artifact.md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    ft_id = Path("ft.txt").read_text().strip()
    exp = client.get_run(ft_id).info.experiment_id
    (pgd_run,) = client.search_runs([exp], f"tags.mlflow.parentRunId = '{ft_id}'")
    assert [a.path for a in client.list_artifacts(pgd_run.info.run_id)] == ["pgd.json"]


# ---------------------------------------------------------------------------------------------
# The same against a real tracking server (the `mlflow_server` fixture of test_faults)


def test_server_killed_training_job_continues_its_run(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("ASCL_EXPERIMENT", "resume-server")
    check_killed_training_job_continues_its_run(mlflow_server, tmp_path, "resume-server")


def test_server_stale_run_of_a_killed_job_is_ended_killed(mlflow_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    check_stale_run_of_a_killed_job_is_ended_killed(mlflow_server, "stale-server")


def test_server_paper_outputs_go_to_one_paper_run(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    check_paper_outputs_go_to_one_paper_run(mlflow_server, tmp_path, "paper-server", monkeypatch)


def test_server_through_mlflows_own_client(mlflow_server, monkeypatch):  # noqa: F811
    """`ASCL_MLFLOW_CLIENT=mlflow` switches jobs to MLflow's client: same
    lifecycle."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("ASCL_MLFLOW_CLIENT", "mlflow")
    check_stale_run_of_a_killed_job_is_ended_killed(mlflow_server, "stale-server-mlflow-client")


def test_rest_store_writes_what_mlflow_reads_back(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    """Everything a job logs over the REST API arrives as MLflow's own client reads it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    out = tmp_path / "metrics.json"
    out.write_text('{"sa": 50.0}\n')
    with Run("rest/parent", experiment="rest") as parent:
        pass
    with Run(
        "rest/child",
        params={"train": {"lr": 0.1, "milestones": [0.5, 0.75]}, "name": "x" * 7000},
        tags={"stage": "evaluate"},
        parent_run_id=parent.run_id,
        experiment="rest",
    ) as run:
        run.log_metrics({"acc": 0.5, "loss": 2.0}, step=1)
        run.log_metrics({"acc": 0.75}, step=2)
        run.log_artifact(out, "outputs")
        run.tag_output(out)
    client = MlflowClient(mlflow_server)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.end_time >= got.info.start_time
    assert got.data.params == {
        "train.lr": "0.1",
        "train.milestones": "[0.5, 0.75]",
        "name": "x" * 6000,
    }
    tags = got.data.tags
    assert tags["stage"] == "evaluate" and tags["mlflow.parentRunId"] == parent.run_id
    assert tags["mlflow.runName"] == "rest/child" and got.info.run_name == "rest/child"
    assert tags["artifact.md5"] == hashlib.md5(out.read_bytes()).hexdigest()
    history = [(m.step, m.value) for m in client.get_metric_history(run.run_id, "acc")]
    assert history == [(1, 0.5), (2, 0.75)]
    assert [a.path for a in client.list_artifacts(run.run_id, "outputs")] == [
        "outputs/metrics.json"
    ]
    local = client.download_artifacts(run.run_id, "outputs/metrics.json", str(tmp_path / "dl"))
    assert Path(local).read_text() == out.read_text()
    try:
        with Run("rest/crash", experiment="rest") as crashed:
            raise ValueError("bad batch")
    except ValueError:
        pass
    got = client.get_run(crashed.run_id)
    assert got.info.status == "FAILED" and "bad batch" in got.data.tags["error"]


def test_job_on_a_server_does_not_import_mlflow(mlflow_server):  # noqa: F811
    """The point of the REST store: a job logging to a server never imports MLflow."""
    code = (
        "import sys\nfrom ascl.tracking import Run\n"
        "with Run('no-import', params={'a': 1}, experiment='rest') as run:\n"
        "    run.log_metrics({'m': 1.0}, step=1)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'sqlalchemy')))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "[]"
