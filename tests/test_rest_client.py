"""The REST client of the jobs (`ascl.mlflow_stores.RestStore`) and the retry policy of
`ascl.tracking._retry`: searches that span pages, retries on HTTP status (429 and 5xx, with
Retry-After) and on lost connections but never on another 4xx, streamed uploads, MLflow's TLS
settings. Against a real `mlflow server` (test_faults' fixture) where the server can show it,
against a stub HTTP server for what a healthy server never answers (429, 503)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import tracemalloc
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ascl import mlflow_stores, tracking
from ascl.mlflow_stores import MlflowError, RestStore

from .test_faults import mlflow_server  # noqa: F401


def test_search_reads_every_page(mlflow_server):  # noqa: F811
    store = RestStore(mlflow_server, page_size=2)
    exp = store.create_experiment("pages")
    made = {store.create_run(exp, {"k": str(i)}, f"r{i}") for i in range(5)}
    got = store.search_runs([exp], "", max_results=100)
    assert {r.run_id for r in got} == made and len(got) == 5  # three pages of 2, 2, 1
    assert len(store.search_runs([exp], "", max_results=3)) == 3


def test_a_4xx_naming_503_is_not_retried(mlflow_server, monkeypatch):  # noqa: F811
    """A 404 whose message holds "503" (the run id) fails at once: decided by status."""
    store = RestStore(mlflow_server)
    calls = []
    monkeypatch.setattr(tracking.time, "sleep", lambda s: calls.append(s))
    with pytest.raises(MlflowError) as err:
        tracking._retry(lambda: store.get_run("deadbeef503"))
    assert err.value.status == 404 and not err.value.transient and "503" in str(err.value)
    assert calls == []


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next of `script`: (status, headers, body)."""

    script: list = []
    seen: list = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        type(self).seen.append((self.command, self.path, length))
        while length > 0:  # drain the body in blocks
            length -= len(self.rfile.read(min(length, 1 << 16)))
        status, headers, body = type(self).script.pop(0)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        data = json.dumps(body).encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server names them

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.script, _Stub.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


RUN = {"run": {"info": {"run_id": "r1", "experiment_id": "0", "status": "RUNNING"}}}


def test_429_then_success_waits_retry_after(stub, monkeypatch):
    _Stub.script = [
        (429, {"Retry-After": "3"}, {"error_code": "RATE_LIMITED"}),
        (503, {}, {"error_code": "TEMPORARILY_UNAVAILABLE"}),
        (200, {}, RUN),
    ]
    waits = []
    monkeypatch.setattr(tracking.time, "sleep", lambda s: waits.append(s))
    got = tracking._retry(lambda: RestStore(stub).get_run("r1"), base_delay=0.2)
    assert got.run_id == "r1" and len(_Stub.seen) == 3
    assert waits == [3.0, 0.2 * 2]  # the server's Retry-After, then the backoff of attempt 1


def test_a_plain_4xx_is_raised_at_once(stub, monkeypatch):
    _Stub.script = [(400, {}, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"})]
    monkeypatch.setattr(tracking.time, "sleep", lambda s: pytest.fail("retried a 400"))
    with pytest.raises(MlflowError, match="INVALID_PARAMETER_VALUE"):
        tracking._retry(lambda: RestStore(stub).get_run("r1"))


def test_a_lost_connection_is_transient():
    err = pytest.raises(MlflowError, RestStore("http://127.0.0.1:9").get_run, "r1").value
    assert err.status is None and err.transient


def test_upload_is_streamed_not_read_whole(stub, tmp_path):
    """A 32 MiB artifact goes up with Python allocations far below its size."""
    path = tmp_path / "big.bin"
    size = 32 << 20
    with path.open("wb") as f:
        f.truncate(size)
    store = RestStore(stub)
    store._artifact_uris["r1"] = "mlflow-artifacts:/0/r1/artifacts"
    _Stub.script = [(200, {}, {})]
    tracemalloc.start()
    try:
        store.log_artifact("r1", str(path), "files")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (method, url, length) = _Stub.seen[0]
    assert method == "PUT" and url.endswith("/0/r1/artifacts/files/big.bin") and length == size
    assert peak < size // 8, f"peak Python allocation {peak} bytes for a {size}-byte file"


def test_upload_to_a_real_server_round_trips(mlflow_server, tmp_path):  # noqa: F811
    store = RestStore(mlflow_server)
    exp = store.create_experiment("upload")
    run_id = store.create_run(exp, {}, "u")
    path = tmp_path / "a.txt"
    path.write_bytes(b"x" * 100_000)
    store.log_artifact(run_id, str(path), "d")
    local = MlflowClient(mlflow_server).download_artifacts(run_id, "d/a.txt", str(tmp_path / "o"))
    assert Path(local).read_bytes() == path.read_bytes()


def test_mlflows_tls_settings(monkeypatch, tmp_path):
    for k in (
        "MLFLOW_TRACKING_INSECURE_TLS",
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
        "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    ):
        monkeypatch.delenv(k, raising=False)
    assert mlflow_stores.tls_context() is None
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    ctx = mlflow_stores.tls_context()
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    monkeypatch.delenv("MLFLOW_TRACKING_INSECURE_TLS")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(FileNotFoundError):
        mlflow_stores.tls_context()
    # an https URI stays on the REST client whatever the TLS settings
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
    assert isinstance(mlflow_stores.open_store("https://example.invalid"), RestStore)
