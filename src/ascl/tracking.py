"""MLflow tracking of pipeline runs.

The tracking URI is `MLFLOW_TRACKING_URI` if set, else `sqlite:///mlflow.db` in the working
directory (the project root when run through the workflow). Runs are created through the client
API so that several processes can log at once; every call is retried with backoff when the store
is busy (SQLite's "database is locked" under concurrent writers). A run that raises ends FAILED.

A training job keeps its run id next to its epoch checkpoints (`job_run`): its rerun after a
kill continues the same run. Any other run left RUNNING by a killed job (same name, parent and
workflow wildcards) is ended KILLED when that job starts again. Training runs carry the path and
md5 (DVC's content hash) of the artifact they wrote as tags; evaluation runs log their output
files as artifacts; the `paper` run of an experiment holds the tables, claims and figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ascl.environment import environment_tags
from ascl.mlflow_stores import MlflowError, Store, open_store
from ascl.timing import timed

T = TypeVar("T")
DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "ascl"
RUN_NAME_TAG = "mlflow.runName"  # MLflow's system tags (mlflow.utils.mlflow_tags)
PARENT_RUN_TAG = "mlflow.parentRunId"


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


def _transient(err: Exception) -> bool:
    """Whether a store error may pass on retry: the REST client says so itself (no answer,
    HTTP 429 or 5xx); MLflow's own client over SQLite fails transiently on a locked database."""
    if isinstance(err, MlflowError):
        return err.transient
    text = str(err).lower()
    return any(s in text for s in ("database is locked", "database is busy", "timed out"))


def _retry(fn: Callable[[], T], attempts: int = 8, base_delay: float = 0.2) -> T:
    """fn(), retried with exponential backoff (or the server's Retry-After) on transient store
    errors; any other error at once."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - only transient store errors are retried
            if not _transient(err) or attempt == attempts - 1:
                raise
            wait = getattr(err, "retry_after", None)
            time.sleep(base_delay * 2**attempt if wait is None else min(wait, 60.0))
    raise AssertionError("unreachable")


def params_hash(settings: dict) -> str:
    """Short stable hash of a settings dict (tag `params_hash`)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def file_hash(path: str | Path) -> str:
    """Short sha256 of a file's content (inputs in checkpoint fingerprints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def file_md5(path: str | Path) -> str:
    """md5 of a file's content, as DVC records it (dvc.lock, cache entry names)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _relative(path: str | Path) -> str:
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def _quote(value: str) -> str:
    """A value inside a single-quoted MLflow search string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


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
        resume_run_id: str | None = None,
    ) -> None:
        self.name = name
        self.resume_run_id = resume_run_id
        self.params = params or {}
        self.tags = tags or {}
        self.parent_run_id = parent_run_id
        self.experiment = experiment or os.environ.get("ASCL_EXPERIMENT", DEFAULT_EXPERIMENT)
        self.enabled = enabled
        self.run_id: str | None = None
        self._store: Store | None = None

    def _create_experiment(self, store: Store) -> str:
        """Create the experiment; if another job created it meanwhile (a tracking server has no
        file lock), use theirs."""
        try:
            return _retry(lambda: store.create_experiment(self.experiment))
        except Exception as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err):
                raise
            exp_id = _retry(lambda: store.experiment_id(self.experiment))
            if exp_id is None:
                raise
            return exp_id

    @timed("tracking")
    def __enter__(self) -> Run:
        if not self.enabled:
            return self
        uri = tracking_uri()
        with _store_lock(uri):
            self._store = store = open_store(uri)
            exp_id = _retry(lambda: store.experiment_id(self.experiment))
            if exp_id is None:
                exp_id = self._create_experiment(store)
        tags = {
            RUN_NAME_TAG: self.name,
            "git_commit": git_commit(),
            **environment_tags(),
            **self.tags,
        }
        if self.parent_run_id:
            tags[PARENT_RUN_TAG] = self.parent_run_id
        resumed = self._resumable(store, exp_id)
        if resumed is not None:
            self.run_id = resumed
            _retry(lambda: store.set_status(resumed, "RUNNING"))
            self.set_tags({"resumed": "true"})
            return self
        self._end_stale_runs(store, exp_id)
        self.run_id = _retry(lambda: store.create_run(exp_id, tags, self.name))
        self.log_params(self.params)
        return self

    def _resumable(self, store: Store, exp_id: str) -> str | None:
        """`resume_run_id` if that run exists in this experiment with the same name and
        params_hash (a killed job's own run), else None."""
        if not self.resume_run_id:
            return None
        try:
            old = _retry(lambda: store.get_run(self.resume_run_id))
        except Exception:  # noqa: BLE001 - a run id of another store: start a new run
            return None
        same = (
            old.experiment_id == exp_id
            and old.run_name == self.name
            and old.tags.get("params_hash") == self.tags.get("params_hash")
        )
        return old.run_id if same else None

    def _end_stale_runs(self, store: Store, exp_id: str) -> None:
        """End KILLED the runs of this job (same name, parent and workflow wildcards) that are
        still RUNNING: their process is gone, since the workflow runs a job once at a time."""
        query = [f"tags.mlflow.runName = '{_quote(self.name)}'", "attributes.status = 'RUNNING'"]
        if self.parent_run_id:
            query.append(f"tags.mlflow.parentRunId = '{_quote(self.parent_run_id)}'")
        if "wildcards" in self.tags:
            query.append(f"tags.wildcards = '{_quote(self.tags['wildcards'])}'")
        stale = _retry(lambda: store.search_runs([exp_id], " and ".join(query), max_results=50))
        for old in stale:
            _retry(lambda old=old: store.set_status(old.run_id, "KILLED"))

    @timed("tracking")
    def log_params(self, params: dict) -> None:
        if not self.enabled or not params:
            return
        items = [(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            _retry(lambda chunk=chunk: self._store.log_batch(self.run_id, params=chunk))

    @timed("tracking")
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.enabled or not metrics:
            return
        now = int(time.time() * 1000)
        items = [(k, float(v), now, step or 0) for k, v in metrics.items()]
        _retry(lambda: self._store.log_batch(self.run_id, metrics=items))

    @timed("tracking")
    def set_tags(self, tags: dict[str, str]) -> None:
        if not self.enabled:
            return
        items = [(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self._store.log_batch(self.run_id, tags=items))

    @timed("tracking")
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).is_file():
            _retry(lambda: self._store.log_artifact(self.run_id, str(path), artifact_path))

    @timed("tracking")
    def tag_output(self, path: str | Path) -> None:
        """Tag the run with the artifact it wrote: its path (as DVC tracks it, relative to the
        working directory when inside it) and md5 (DVC's content hash: the cache entry)."""
        if not self.enabled:
            return
        self.set_tags({"artifact.path": _relative(path), "artifact.md5": file_md5(path)})

    @timed("tracking")
    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.enabled or self.run_id is None:
            return
        status = "FINISHED" if exc_type is None else "FAILED"
        if exc is not None:
            with contextlib.suppress(Exception):  # the original error matters more
                self.set_tags({"error": f"{exc_type.__name__}: {exc}"[:5000]})
        _retry(lambda: self._store.set_status(self.run_id, status))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def job_run(
    name: str,
    *,
    params: dict,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    track: bool = True,
    ckpt_dir: str | Path | None = None,
    run_id_out: str | Path | None = None,
) -> Iterator[Run]:
    """The MLflow run of a training job. With `ckpt_dir` its run id is kept there beside the
    epoch checkpoints, so the rerun of a killed job continues the same run; `run_id_out`
    receives the run id (the parent of the next stage's runs)."""
    id_file = Path(ckpt_dir) / "mlflow_run_id" if ckpt_dir is not None else None
    resume = id_file.read_text().strip() if id_file is not None and id_file.is_file() else None
    with Run(
        name,
        params=params,
        tags=tags,
        parent_run_id=parent_run_id,
        enabled=track,
        resume_run_id=resume or None,
    ) as run:
        if run.run_id:
            if id_file is not None:
                id_file.parent.mkdir(parents=True, exist_ok=True)
                _write_text(id_file, run.run_id + "\n")
            if run_id_out is not None:
                _write_text(Path(run_id_out), run.run_id + "\n")
        yield run


PAPER_RUN = "paper"


@timed("tracking")
def log_paper_outputs(paths: Sequence[str | Path], artifact_path: str) -> None:
    """Log report outputs (tables, claims, figures) to the experiment's `paper` run (created
    on first use, reopened after), under `artifact_path`. Only inside the workflow's jobs, which
    name their experiment (ASCL_EXPERIMENT); a command run by hand logs nothing."""
    experiment = os.environ.get("ASCL_EXPERIMENT")
    if not experiment:
        return
    uri = tracking_uri()
    with _store_lock(uri):
        store = open_store(uri)
        exp_id = _retry(lambda: store.experiment_id(experiment))
        if exp_id is None:
            exp_id = Run(PAPER_RUN, experiment=experiment)._create_experiment(store)
        found = _retry(
            lambda: store.search_runs(
                [exp_id],
                f"tags.mlflow.runName = '{PAPER_RUN}'",
                max_results=1,
                order_by=["attributes.start_time ASC"],
            )
        )
        if found:
            run_id = found[0].run_id
        else:
            tags = {RUN_NAME_TAG: PAPER_RUN, "stage": "paper"}
            run_id = _retry(lambda: store.create_run(exp_id, tags, PAPER_RUN))
            _retry(lambda: store.set_status(run_id, "FINISHED"))
    # the environment of the latest report written into the run
    env = [(k, v) for k, v in environment_tags().items()]
    _retry(lambda: store.log_batch(run_id, tags=env))
    for path in paths:
        if Path(path).is_file():
            _retry(lambda path=path: store.log_artifact(run_id, str(path), artifact_path))
