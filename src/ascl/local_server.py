"""The workflow's own MLflow tracking server, for runs on one machine.

With `tracking.server: auto` (params.yaml) and no `MLFLOW_TRACKING_URI` set, a local workflow
run (`make smoke`, `snakemake --cores N`) starts `mlflow server` on a free loopback port over the
project's default store (`sqlite:///mlflow.db`, artifacts in `mlartifacts/`) before its first
job, points every job at it, and stops it at the end. Every job then logs through the REST API
(`ascl.mlflow_stores.RestStore`) without importing MLflow: one process pays MLflow's import and
SQL store once, instead of each of the DAG's jobs (benchmarks/README.md). The store is the same
file as without the server: `mlflow ui` shows the same runs either way.

Cluster runs (`--profile slurm`) and runs with `MLFLOW_TRACKING_URI` set are left alone: jobs
on other nodes cannot reach a server on the submitting machine's loopback; they log to the
tracking server the user names. A server left behind by a killed workflow (its process group is
in `.snakemake/ascl-mlflow-server.json`) is stopped by the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STATE = Path(".snakemake") / "ascl-mlflow-server.json"
LOG = Path("logs") / "mlflow-server.log"
START_TIMEOUT_S = 180.0


def wanted(setting: str, local_exec: bool) -> bool:
    """Whether a workflow run should start its own server."""
    return setting == "auto" and local_exec and not os.environ.get("MLFLOW_TRACKING_URI")


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


_started: dict[int, subprocess.Popen] = {}  # servers of this process, by process group


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the id is someone else's now
        return False
    return True


def stop(root: str | Path = ".") -> None:
    """Stop the server recorded in `root` (its whole process group), if any."""
    state = Path(root) / STATE
    if not state.is_file():
        return
    with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
        pgid = int(json.loads(state.read_text())["pgid"])
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        proc = _started.pop(pgid, None)
        if proc is not None:  # ours: reap it, or it stays a zombie of this process
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10.0)
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
            if proc is not None:
                proc.wait()
    state.unlink(missing_ok=True)


def launch(store: str, artifacts: str, port: int, *, cwd: Path, log) -> subprocess.Popen:
    """`mlflow server` over `store` (artifacts served from `artifacts`) on loopback `port`, one
    worker, in a process group of its own, output to the open file `log`."""
    cmd = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", store, "--artifacts-destination", artifacts),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def start(root: str | Path = ".", store: str = "sqlite:///mlflow.db") -> str:
    """Start the server over `store` (relative to `root`), wait until it answers, set
    `MLFLOW_TRACKING_URI` for this process and its children, and return the URL."""
    root = Path(root)
    stop(root)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (root / LOG).parent.mkdir(parents=True, exist_ok=True)
    (root / STATE).parent.mkdir(parents=True, exist_ok=True)
    with open(root / LOG, "ab") as log:
        proc = launch(store, "mlartifacts", port, cwd=root, log=log)
    _started[proc.pid] = proc
    tmp = (root / STATE).with_suffix(".tmp")
    tmp.write_text(json.dumps({"pgid": proc.pid, "url": url}) + "\n")
    os.replace(tmp, root / STATE)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(root)
            raise RuntimeError(
                f"the local MLflow server did not start (see {LOG}); set MLFLOW_TRACKING_URI "
                "or tracking.server: off to log without it"
            )
        time.sleep(0.25)
    os.environ["MLFLOW_TRACKING_URI"] = url
    return url
