"""The two ways a job talks to MLflow, behind one small interface (`Store`).

- `RestStore`: an MLflow tracking server (`http(s)://` URIs) through its REST API (version 2.0,
  https://mlflow.org/docs/latest/rest-api.html) with the standard library only. A job then
  does not import MLflow at all: MLflow's own import and its SQL store cost 4-8 s of CPU per job
  (benchmarks/README.md), more than many smoke jobs' work. Artifacts go through the server's
  artifact proxy (`mlflow-artifacts:` artifact URIs, the default of `mlflow server`); any other
  artifact location is written by MLflow's own client, imported for that call only.
- `MlflowStore`: everything else (`sqlite:///...`, `databricks`, `file:` ...) through
  `mlflow.tracking.MlflowClient`, and any URI when `ASCL_MLFLOW_CLIENT=mlflow` is set.

Authentication and TLS as MLflow's client reads them: `MLFLOW_TRACKING_TOKEN` (bearer) or
`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (basic); `MLFLOW_TRACKING_INSECURE_TLS`
(no certificate check), `MLFLOW_TRACKING_SERVER_CERT_PATH` (the CA bundle to trust) and
`MLFLOW_TRACKING_CLIENT_CERT_PATH` (a client certificate, with its key in the same file).
Searches follow `next_page_token` until `max_results` runs are read. Artifacts are streamed from
their file, never read into memory whole. A failed call is an `MlflowError` carrying the
server's `error_code` (e.g. RESOURCE_ALREADY_EXISTS), the HTTP status and whether it is
transient (a connection error, HTTP 429 or 5xx; with the server's `Retry-After`), which is what
`ascl.tracking` retries.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol


@dataclass(frozen=True)
class RunRecord:
    """What the pipeline reads back of a run."""

    run_id: str
    experiment_id: str
    run_name: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)


class Store(Protocol):
    def experiment_id(self, name: str) -> str | None: ...
    def create_experiment(self, name: str) -> str: ...
    def create_run(self, experiment_id: str, tags: dict[str, str], run_name: str) -> str: ...
    def get_run(self, run_id: str) -> RunRecord: ...
    def set_status(self, run_id: str, status: str) -> None: ...
    def search_runs(
        self, experiment_ids: list[str], filter_string: str, max_results: int, order_by=None
    ) -> list[RunRecord]: ...
    def log_batch(
        self,
        run_id: str,
        metrics: list[tuple[str, float, int, int]] = (),
        params: list[tuple[str, str]] = (),
        tags: list[tuple[str, str]] = (),
    ) -> None: ...
    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None: ...


def open_store(uri: str) -> Store:
    """The store for a tracking URI (see the module's docstring for which one)."""
    rest = uri.startswith(("http://", "https://"))
    official = os.environ.get("ASCL_MLFLOW_CLIENT") == "mlflow"
    if rest and not official:
        return RestStore(uri)
    return MlflowStore(uri)


class MlflowError(RuntimeError):
    """A failed REST call: `error_code` and HTTP status are in the message; `status` is the
    HTTP status (None: no answer), `transient` whether a retry may succeed (no answer, 429 or
    5xx), `retry_after` the seconds the server asked to wait (None: not said)."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def _retry_after(value: str | None) -> float | None:
    """Seconds of a Retry-After header (delta-seconds; an HTTP date is read as 1 s)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def tls_context() -> ssl.SSLContext | None:
    """The TLS settings of MLflow's client as an SSL context (None: the defaults)."""
    insecure = _truthy("MLFLOW_TRACKING_INSECURE_TLS")
    ca = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    client = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
    if not (insecure or ca or client):
        return None
    context = ssl.create_default_context(cafile=ca or None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client:
        context.load_cert_chain(client)
    return context


def _now_ms() -> int:
    return int(time.time() * 1000)


class RestStore:
    def __init__(self, uri: str, timeout: float = 60.0, page_size: int = 1000) -> None:
        self.base = uri.rstrip("/")
        self.timeout = timeout
        self.page_size = page_size  # runs per search request (MLflow's own limit: 50000)
        self._artifact_uris: dict[str, str] = {}
        self._tls = tls_context()

    def _headers(self) -> dict[str, str]:
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        if token:
            return {"Authorization": f"Bearer {token}"}
        if user:
            secret = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
            return {"Authorization": "Basic " + base64.b64encode(secret).decode()}
        return {}

    def _call(
        self,
        method: str,
        endpoint: str,
        body: dict | None = None,
        query: dict | None = None,
        data: bytes | BinaryIO | None = None,
        content_type: str = "application/json",
        length: int | None = None,
    ) -> dict[str, Any]:
        url = f"{self.base}/api/2.0/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if body is not None:
            data = json.dumps(body).encode()
        headers = self._headers()
        if data is not None:
            headers["Content-Type"] = content_type
        if length is not None:  # a file object: streamed in blocks by http.client
            headers["Content-Length"] = str(length)
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._tls
            ) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace")
            try:
                detail = json.loads(text)
                text = f"{detail.get('error_code', '')}: {detail.get('message', text)}"
            except ValueError:
                pass
            raise MlflowError(
                f"MLflow {endpoint}: HTTP {err.code} {text}"[:2000],
                status=err.code,
                retry_after=_retry_after(err.headers.get("Retry-After") if err.headers else None),
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise MlflowError(f"MLflow {endpoint}: connection failed ({err})") from None
        return json.loads(raw) if raw.strip() else {}

    @staticmethod
    def _record(run: dict) -> RunRecord:
        info, data = run["info"], run.get("data", {})
        tags = {t["key"]: t.get("value", "") for t in data.get("tags", [])}
        return RunRecord(
            run_id=info["run_id"],
            experiment_id=info["experiment_id"],
            run_name=info.get("run_name", tags.get("mlflow.runName", "")),
            status=info.get("status", ""),
            tags=tags,
        )

    def experiment_id(self, name: str) -> str | None:
        try:
            got = self._call(
                "GET", "mlflow/experiments/get-by-name", query={"experiment_name": name}
            )
        except MlflowError as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(err):
                return None
            raise
        return got["experiment"]["experiment_id"]

    def create_experiment(self, name: str) -> str:
        return self._call("POST", "mlflow/experiments/create", {"name": name})["experiment_id"]

    def create_run(self, experiment_id: str, tags: dict[str, str], run_name: str) -> str:
        body = {
            "experiment_id": experiment_id,
            "start_time": _now_ms(),
            "run_name": run_name,
            "tags": [{"key": k, "value": str(v)} for k, v in tags.items()],
        }
        info = self._call("POST", "mlflow/runs/create", body)["run"]["info"]
        self._artifact_uris[info["run_id"]] = info.get("artifact_uri", "")
        return info["run_id"]

    def get_run(self, run_id: str) -> RunRecord:
        run = self._call("GET", "mlflow/runs/get", query={"run_id": run_id})["run"]
        self._artifact_uris[run_id] = run["info"].get("artifact_uri", "")
        return self._record(run)

    def set_status(self, run_id: str, status: str) -> None:
        body: dict[str, Any] = {"run_id": run_id, "status": status}
        if status != "RUNNING":
            body["end_time"] = _now_ms()
        self._call("POST", "mlflow/runs/update", body)

    def search_runs(
        self, experiment_ids: list[str], filter_string: str, max_results: int, order_by=None
    ) -> list[RunRecord]:
        runs: list[RunRecord] = []
        token = None
        while len(runs) < max_results:
            body = {
                "experiment_ids": experiment_ids,
                "filter": filter_string,
                "max_results": min(self.page_size, max_results - len(runs)),
                "order_by": list(order_by or []),
            }
            if token:
                body["page_token"] = token
            got = self._call("POST", "mlflow/runs/search", body)
            runs += [self._record(r) for r in got.get("runs", [])]
            token = got.get("next_page_token")
            if not token:
                break
        return runs

    def log_batch(self, run_id, metrics=(), params=(), tags=()) -> None:
        body = {
            "run_id": run_id,
            "metrics": [
                {"key": k, "value": v, "timestamp": ts, "step": step} for k, v, ts, step in metrics
            ],
            "params": [{"key": k, "value": v} for k, v in params],
            "tags": [{"key": k, "value": v} for k, v in tags],
        }
        self._call("POST", "mlflow/runs/log-batch", body)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        if run_id not in self._artifact_uris:
            self.get_run(run_id)
        root = self._artifact_uris[run_id]
        if not root.startswith("mlflow-artifacts:"):  # an artifact store of its own: S3, ...
            MlflowStore(self.base).log_artifact(run_id, path, artifact_path)
            return
        parsed = urllib.parse.urlparse(root)
        rel = "/".join(p for p in (parsed.path.strip("/"), artifact_path, Path(path).name) if p)
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            self._call(
                "PUT",
                "mlflow-artifacts/artifacts/" + urllib.parse.quote(rel),
                data=f,
                content_type=content_type,
                length=os.fstat(f.fileno()).st_size,
            )


class MlflowStore:
    """MLflow's own client (imports MLflow: a few seconds of CPU)."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)

    @staticmethod
    def _record(run) -> RunRecord:
        return RunRecord(
            run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
            run_name=run.info.run_name,
            status=run.info.status,
            tags=dict(run.data.tags),
        )

    def experiment_id(self, name: str) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else None

    def create_experiment(self, name: str) -> str:
        return self.client.create_experiment(name)

    def create_run(self, experiment_id: str, tags: dict[str, str], run_name: str) -> str:
        return self.client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id

    def get_run(self, run_id: str) -> RunRecord:
        return self._record(self.client.get_run(run_id))

    def set_status(self, run_id: str, status: str) -> None:
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status)

    def search_runs(
        self, experiment_ids: list[str], filter_string: str, max_results: int, order_by=None
    ) -> list[RunRecord]:
        runs = self.client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=max_results, order_by=order_by
        )
        return [self._record(r) for r in runs]

    def log_batch(self, run_id, metrics=(), params=(), tags=()) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, step) for k, v, ts, step in metrics],
            params=[Param(k, v) for k, v in params],
            tags=[RunTag(k, v) for k, v in tags],
        )

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, path, artifact_path)
