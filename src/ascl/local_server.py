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
PORT_ATTEMPTS = 3


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


def identity(pid: int) -> dict | None:
    """What identifies process `pid` across reboots and pid reuse: its command line and start
    time (Linux /proc), or None where it cannot be read (gone, or no /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (start time in clock ticks since boot) counts from after the ")" of the name
    start = int(stat.rpartition(")")[2].split()[19])
    return {"cmdline": [a.decode(errors="replace") for a in cmdline if a], "start": start}


def stop(root: str | Path = ".") -> None:
    """Stop the server recorded in `root` (its whole process group), if it is still that
    server: a recorded group whose leader is gone or is another program now (pid reuse after a
    reboot) is left alone, with a one-line note."""
    state = Path(root) / STATE
    if not state.is_file():
        return
    with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
        recorded = json.loads(state.read_text())
        pgid = int(recorded["pgid"])
        proc = _started.pop(pgid, None)
        if proc is None and identity(pgid) != recorded.get("identity"):
            if _group_alive(pgid):
                print(
                    f"ascl: {state} names process group {pgid}, which is no longer the MLflow "
                    "server it recorded; left alone",
                    file=sys.stderr,
                )
            state.unlink(missing_ok=True)
            return
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
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


def _port_taken(log: Path, offset: int) -> bool:
    """Whether the server's log since `offset` says its port was taken."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace").lower()
    return "address already in use" in text or "errno 98" in text


def start(root: str | Path = ".", store: str = "sqlite:///mlflow.db") -> str:
    """Start the server over `store` (relative to `root`), wait until it answers, set
    `MLFLOW_TRACKING_URI` for this process and its children, and return the URL."""
    root = Path(root)
    stop(root)
    (root / LOG).parent.mkdir(parents=True, exist_ok=True)
    (root / STATE).parent.mkdir(parents=True, exist_ok=True)
    # The port is free when chosen and bound by the server itself a moment later: another
    # program may take it in between, and the server then exits at once; try another port.
    for _attempt in range(PORT_ATTEMPTS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_start = (root / LOG).stat().st_size if (root / LOG).exists() else 0
        with open(root / LOG, "ab") as log:
            proc = launch(store, "mlartifacts", port, cwd=root, log=log)
        _started[proc.pid] = proc
        tmp = (root / STATE).with_suffix(".tmp")
        record = {"pgid": proc.pid, "url": url, "identity": identity(proc.pid)}
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, root / STATE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = url
            return url
        port_taken = proc.poll() is not None and _port_taken(root / LOG, log_start)
        stop(root)
        if not port_taken:
            break
    raise RuntimeError(
        f"the local MLflow server did not start (see {LOG}); set MLFLOW_TRACKING_URI "
        "or tracking.server: off to log without it"
    )
