"""MLflow tracking of pipeline runs.

The tracking URI is `MLFLOW_TRACKING_URI` if set, else `sqlite:///mlflow.db` in the working
directory (the project root when run through the workflow). Runs are created through the client
API so that several processes can log at once; every call is retried with backoff when the store
is busy (SQLite's "database is locked" under concurrent writers). A run that raises ends FAILED.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "ascl"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


@contextlib.contextmanager
def _store_lock(uri: str):
    """Serialise first access to a SQLite store across processes: MLflow creates and migrates
    the schema on first use, and two jobs doing that at once corrupt the migration."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _retry(fn: Callable[[], T], attempts: int = 8, base_delay: float = 0.2) -> T:
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - only transient store errors are retried
            transient = any(
                s in str(err).lower()
                for s in ("locked", "busy", "timed out", "connection", "503", "502")
            )
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(base_delay * 2**attempt)
    raise AssertionError("unreachable")


def params_hash(settings: dict) -> str:
    """Short stable hash of a settings dict (tag `params_hash`)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def source_hash() -> str:
    """Short hash of the package's Python sources (part of checkpoint fingerprints)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def file_hash(path: str | Path) -> str:
    """Short sha256 of a file's content (inputs in checkpoint fingerprints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become JSON strings."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


class Run:
    """One MLflow run; use as a context manager. Disabled runs (enabled=False) log nothing."""

    def __init__(
        self,
        name: str,
        *,
        params: dict | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        experiment: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.name = name
        self.params = params or {}
        self.tags = tags or {}
        self.parent_run_id = parent_run_id
        self.experiment = experiment or os.environ.get("ASCL_EXPERIMENT", DEFAULT_EXPERIMENT)
        self.enabled = enabled
        self.run_id: str | None = None
        self._client = None

    def _create_experiment(self, client) -> str:
        """Create the experiment; if another job created it meanwhile (a tracking server has no
        file lock), use theirs."""
        try:
            return _retry(lambda: client.create_experiment(self.experiment))
        except Exception as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err):
                raise
            exp = _retry(lambda: client.get_experiment_by_name(self.experiment))
            if exp is None:
                raise
            return exp.experiment_id

    def __enter__(self) -> Run:
        if not self.enabled:
            return self
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        uri = tracking_uri()
        with _store_lock(uri):
            self._client = MlflowClient(uri)
            client = self._client
            exp = _retry(lambda: client.get_experiment_by_name(self.experiment))
            exp_id = exp.experiment_id if exp is not None else self._create_experiment(client)
        tags = {MLFLOW_RUN_NAME: self.name, "git_commit": git_commit(), **self.tags}
        if self.parent_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = self.parent_run_id
        run = _retry(lambda: client.create_run(exp_id, tags=tags, run_name=self.name))
        self.run_id = run.info.run_id
        self.log_params(self.params)
        return self

    def log_params(self, params: dict) -> None:
        if not self.enabled or not params:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            _retry(lambda chunk=chunk: self._client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        _retry(lambda: self._client.log_batch(self.run_id, metrics=items))

    def set_tags(self, tags: dict[str, str]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self._client.log_batch(self.run_id, tags=items))

    def log_artifact(self, path: str | Path) -> None:
        if self.enabled and Path(path).is_file():
            _retry(lambda: self._client.log_artifact(self.run_id, str(path)))

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.enabled or self.run_id is None:
            return
        status = "FINISHED" if exc_type is None else "FAILED"
        if exc is not None:
            with contextlib.suppress(Exception):  # the original error matters more
                self.set_tags({"error": f"{exc_type.__name__}: {exc}"[:5000]})
        _retry(lambda: self._client.set_terminated(self.run_id, status))
