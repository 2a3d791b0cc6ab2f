"""The workflow's own MLflow server (ascl.local_server): started over the project's store,
jobs log through it, stopped with its whole process group; a server left by a killed workflow
is stopped by the next start; cluster runs and a named tracking URI never start one."""

from __future__ import annotations

import json
import os

import pytest
from mlflow.tracking import MlflowClient

from ascl import local_server
from ascl.tracking import Run


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("setting", "local", "uri", "expected"),
    [
        ("auto", True, None, True),
        ("auto", True, "http://tracking:5000", False),  # the user's server
        ("auto", False, None, False),  # cluster jobs cannot reach this machine's loopback
        ("off", True, None, False),
    ],
)
def test_when_a_run_starts_its_server(monkeypatch, setting, local, uri, expected):
    if uri is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert local_server.wanted(setting, local) is expected


def test_server_over_the_project_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    url = local_server.start(tmp_path)
    try:
        first = json.loads((tmp_path / local_server.STATE).read_text())["pgid"]
        assert os.environ["MLFLOW_TRACKING_URI"] == url and url.startswith("http://127.0.0.1:")
        with Run("through-server", params={"a": 1}, experiment="local") as run:
            run.log_metrics({"m": 2.0}, step=1)
        # a workflow killed without cleanup leaves its server: the next start stops it
        os.environ.pop("MLFLOW_TRACKING_URI")
        local_server.start(tmp_path)
        assert not _alive(first)
        second = json.loads((tmp_path / local_server.STATE).read_text())["pgid"]
        assert second != first and _alive(second)
    finally:
        local_server.stop(tmp_path)
    assert not (tmp_path / local_server.STATE).exists()
    # the runs are in the project's default store, readable without any server
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.metrics == {"m": 2.0}


def test_stop_without_a_server_is_harmless(tmp_path):
    local_server.stop(tmp_path)
    (tmp_path / local_server.STATE).parent.mkdir(parents=True)
    (tmp_path / local_server.STATE).write_text("not json")
    local_server.stop(tmp_path)
    assert not (tmp_path / local_server.STATE).exists()


def test_a_server_that_cannot_start_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError, match="did not start"):
        local_server.start(tmp_path, store="nosuchscheme://x")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert not (tmp_path / local_server.STATE).exists()


def test_stop_leaves_a_group_that_is_no_longer_the_server_alone(tmp_path, capsys):
    """A state file whose process group now belongs to another program (pid reuse after a
    reboot) stops nothing: a one-line note, the state file removed, the program still alive."""
    import json
    import subprocess
    import sys

    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        state = tmp_path / local_server.STATE
        state.parent.mkdir(parents=True)
        recorded = {"cmdline": [sys.executable, "-m", "mlflow", "server"], "start": 1}
        state.write_text(json.dumps({"pgid": other.pid, "url": "x", "identity": recorded}))
        local_server.stop(tmp_path)
        assert other.poll() is None  # still running
        assert not state.exists()
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"process group {other.pid}" in err
        # the same group recorded with its own identity is stopped
        state.write_text(
            json.dumps(
                {"pgid": other.pid, "url": "x", "identity": local_server.identity(other.pid)}
            )
        )
        local_server.stop(tmp_path)
        assert other.wait(timeout=15) is not None
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_identity_is_the_command_line_and_start_time():
    import os

    me = local_server.identity(os.getpid())
    assert me is not None and me["cmdline"] and isinstance(me["start"], int)
    assert local_server.identity(2**22 + 12345) is None  # no such process
