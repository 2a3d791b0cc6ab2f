"""Fault injection: nothing is lost and nothing half-written is trusted.

- Kill and resume: pre-training, finetuning and evaluation jobs of the real workflow are SIGKILLed
  at chosen points (mid-epoch, while a checkpoint is written, between its write and its rename,
  right after a checkpoint, after the last checkpoint, while the final output is written, during
  an evaluation, and Snakemake's whole process group). Rerunning the same `snakemake` command
  resumes from the newest complete checkpoint and ends with weights bit-identical to an
  uninterrupted run (CPU). The checkpoint directory never holds a truncated checkpoint: every
  `epoch-N.pt` loads, killed writes leave only hidden `.tmp` files that nothing reads.
- Downloads killed or stalled mid-transfer leave no archive or data set a later run would trust.
- Malformed params stop the real `snakemake` entry with one line naming the key, writing nothing.
- Several jobs logging at once to an MLflow tracking server lose no metric.

The faults are injected without hooks in the package: the jobs run with a `sitecustomize.py`
(written by the tests, put on PYTHONPATH, active only when ASCL_TEST_FAULT is set) that wraps
functions of `ascl.engine` and `ascl.checkpoint` when they are imported and SIGKILLs the process
at the requested point:

    ASCL_TEST_FAULT=<job>:step:<n>          at the n-th batch (the training loop's to_float)
    ASCL_TEST_FAULT=<job>:segv:<n>          a segmentation fault (not a kill) at the n-th batch
    ASCL_TEST_FAULT=<job>:torn:<file>       half-way through writing <file> (fsynced temp file)
    ASCL_TEST_FAULT=<job>:unrenamed:<file>  after the temp file of <file> is complete, before the
                                            rename
    ASCL_TEST_FAULT=<job>:after:<file>      right after <file> is renamed into place
    ASCL_TEST_FAULT=<job>:pause:<file>      no kill: sleep 10 minutes after <file> is written (the
                                            test kills or requeues the job meanwhile)

<job> is the `ascl` subcommand (pretrain, finetune, evaluate). When the fault fires, the process
writes the fault and its SLURM job id, if any, to $ASCL_TEST_FAULT_MARK.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import warnings
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ascl import checkpoint, config, local_server
from ascl.data import ArchiveError, DownloadError, load_dataset, prepare_dataset, stamp_made_with
from ascl.data import download as download_mod
from ascl.data.formats import downscale_npz

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEFILE = REPO / "workflow" / "Snakefile"

ENCODER = "results/pretrain/ascl/seed0/encoder.pt"
PRE_RUN_ID = "results/pretrain/ascl/seed0/run_id.txt"
PRE_CKPT = "checkpoints/pretrain/ascl/seed0"
PRE_LOG = "logs/pretrain/ascl/seed0.log"
MODEL = "results/finetune/ascl/LAF/source/seed0/model.pt"
FT_RUN_ID = "results/finetune/ascl/LAF/source/seed0/run_id.txt"
FT_CKPT = "checkpoints/finetune/ascl/LAF/source/seed0"
FT_LOG = "logs/finetune/ascl/LAF/source/seed0.log"
METRICS = "results/evaluate/ascl/LAF/source/seed0/pgd.json"

# Over config/smoke.yaml: ResNet width 4, 64 training images (4 batches of 16 per epoch),
# 3 pre-training epochs, 2 finetuning epochs, PGD-1: each job takes seconds on one CPU core.
TINY = {
    "device": "cpu",
    "data": {"max_train": 64, "max_test": 32},
    "model": {"width": 4, "proj_hidden": 8, "proj_dim": 4},
    "pretrain": {"epochs": 3, "batch_size": 16, "attack": {"steps": 1}},
    "finetune": {
        "batch_size": 16,
        "attack": {"steps": 1},
        "strategies": {s: {"epochs": 2} for s in ("LSF", "LAF", "FSF", "FAF")},
    },
    "evaluate": {"batch_size": 32, "pgd": {"steps": 1}},
    "tracking": {"experiment": "ascl-faults"},
}

SITECUSTOMIZE = '''
"""Test-only fault injection for ascl jobs (see tests/test_faults.py)."""
import os
import sys

_SPEC = os.environ.get("ASCL_TEST_FAULT", "")
if _SPEC:
    import importlib.abc
    import signal
    import time

    _JOB, _KIND, _ARG = _SPEC.split(":", 2)

    def _ours():
        return _JOB in sys.argv[1:2]

    def _fire():
        mark = os.environ.get("ASCL_TEST_FAULT_MARK")
        if mark:
            with open(mark, "w") as f:
                f.write(f"{_SPEC} slurm_job={os.environ.get('SLURM_JOB_ID', '')}\\n")
        if _KIND == "pause":
            time.sleep(600)
        if _KIND == "segv":  # a real segmentation fault, as a crash in native code
            import ctypes

            ctypes.string_at(0)
        os.kill(os.getpid(), signal.SIGKILL)

    def _patch_engine(mod):
        if _KIND not in ("step", "segv"):
            return
        real, calls = mod.to_float, [0]

        def to_float(x):
            if _ours():
                calls[0] += 1
                if calls[0] == int(_ARG):
                    _fire()
            return real(x)

        mod.to_float = to_float

    _tear = [False]

    class _Torn:
        """A file whose write() stores half the bytes durably, then the process dies."""

        def __init__(self, f):
            self._f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def write(self, data):
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            os.fsync(self._f.fileno())
            _fire()

    class _Os:
        def __getattr__(self, name):
            return getattr(os, name)

        def fdopen(self, fd, *args, **kwargs):
            f = os.fdopen(fd, *args, **kwargs)
            return _Torn(f) if _tear[0] else f

        def replace(self, src, dst):
            hit = os.path.basename(dst) == _ARG and _ours()
            if hit and _KIND == "unrenamed":
                _fire()
            os.replace(src, dst)
            if hit and _KIND in ("after", "pause"):
                _fire()

    class _Tempfile:
        def __getattr__(self, name):
            import tempfile

            return getattr(tempfile, name)

        def mkstemp(self, *args, prefix=None, **kwargs):
            import tempfile

            _tear[0] = _KIND == "torn" and prefix == f".{_ARG}." and _ours()
            return tempfile.mkstemp(*args, prefix=prefix, **kwargs)

    def _patch_checkpoint(mod):
        mod.os = _Os()
        mod.tempfile = _Tempfile()

    _PATCHES = {"ascl.engine": _patch_engine, "ascl.checkpoint": _patch_checkpoint}

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in _PATCHES:
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    real_exec = spec.loader.exec_module

                    def exec_module(module, real_exec=real_exec):
                        real_exec(module)
                        _PATCHES[name](module)

                    spec.loader.exec_module = exec_module
                    return spec
            return None

    sys.meta_path.insert(0, _Finder())
'''


# ---------------------------------------------------------------------------------------------
# Helpers shared with tests/test_slurm_cluster.py


def write_fault_site(directory: Path) -> Path:
    """A directory holding the fault-injecting sitecustomize.py (put it on PYTHONPATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


def tiny_workdir(wd: Path, digits: Path) -> Path:
    """A run directory: params.yaml, config/tiny.yaml (smoke + TINY) and the digits10 data set."""
    (wd / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", wd / "params.yaml")
    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    tiny = config.deep_merge(smoke, TINY)
    (wd / "config" / "tiny.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    data = wd / tiny["data"]["root"] / f"{tiny['data']['source']}.npz"
    data.parent.mkdir(parents=True, exist_ok=True)
    # as `ascl download --image-size` makes it (the jobs refuse a file of another size)
    size = tiny["data"].get("image_size")
    if size:
        downscale_npz(digits, data, size)
    else:
        shutil.copy(digits, data)
    stamp_made_with(data, {"dataset": tiny["data"]["source"], "image_size": size})
    return wd


def job_env(wd: Path, fault: str | None = None, site: Path | None = None) -> dict[str, str]:
    """Environment of a workflow run (one thread per job); with `fault`, the injected fault."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCL_TEST_FAULT")}
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        ASCL_PROGRESS="0",
    )
    if fault is not None:
        assert site is not None
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
        env["ASCL_TEST_FAULT"] = fault
        env["ASCL_TEST_FAULT_MARK"] = str(wd / "fault-fired.txt")
    return env


def snakemake_cmd(wd: Path, *args: str) -> list[str]:
    return [
        str(BIN / "snakemake"),
        "-s",
        str(SNAKEFILE),
        "-d",
        str(wd),
        "--configfile",
        str(wd / "config" / "tiny.yaml"),
        *args,
    ]


def snakemake(
    wd: Path,
    *args: str,
    fault: str | None = None,
    site: Path | None = None,
    timeout: int = 600,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["timeout", "-s", "KILL", str(timeout), *snakemake_cmd(wd, "--cores", "1", *args)],
        capture_output=True,
        text=True,
        env=job_env(wd, fault, site),
        cwd=wd,
    )


def fault_fired(wd: Path) -> str:
    mark = wd / "fault-fired.txt"
    return mark.read_text() if mark.exists() else ""


def inspect_checkpoints(ckpt_dir: Path) -> tuple[list[int], list[Path]]:
    """(epochs, leftover temp files) of a checkpoint directory. Every `epoch-N.pt` must load
    (weights_only) with epoch N; anything else but the job's MLflow run id must be a temp file
    of a killed write."""
    epochs, leftovers = [], []
    if not ckpt_dir.is_dir():
        return epochs, leftovers
    for path in sorted(ckpt_dir.iterdir()):
        m = checkpoint.CKPT_PATTERN.match(path.name)
        if m:
            assert checkpoint.load(path)["epoch"] == int(m.group(1)), path
            epochs.append(int(m.group(1)))
        elif path.name != "mlflow_run_id":  # the job's MLflow run id (tracking.job_run)
            assert re.fullmatch(r"\.epoch-\d+\.pt\..+\.tmp", path.name), path
            leftovers.append(path)
    return sorted(epochs), leftovers


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = checkpoint.load(a)["model"], checkpoint.load(b)["model"]
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{a} and {b} differ in {different[:5]}"


def tail(proc: subprocess.CompletedProcess, n: int = 4000) -> str:
    return (proc.stdout + proc.stderr)[-n:]


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return prepare_dataset("digits10", tmp_path_factory.mktemp("digits") / "digits10.npz")


@pytest.fixture(scope="module")
def fault_site(tmp_path_factory) -> Path:
    return write_fault_site(tmp_path_factory.mktemp("fault-site"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits) -> Path:
    """An uninterrupted run of the pre-training target."""
    wd = tiny_workdir(tmp_path_factory.mktemp("reference"), digits)
    proc = snakemake(wd, ENCODER)
    assert proc.returncode == 0, tail(proc)
    return wd


@pytest.fixture(scope="module")
def reference_eval(reference) -> Path:
    """The reference run continued through finetuning (LAF) and evaluation."""
    proc = snakemake(reference, METRICS)
    assert proc.returncode == 0, tail(proc)
    return reference


# ---------------------------------------------------------------------------------------------
# Kill and resume: pre-training


@dataclass(frozen=True)
class Kill:
    fault: str
    epochs_left: list[int]  # complete checkpoints left by the killed job
    leftovers: int  # temp files left in the checkpoint directory
    resumes_from: int | None  # epoch the rerun resumes from (None: starts afresh)


PRETRAIN_KILLS = {
    "mid-epoch-1": Kill("pretrain:step:2", [], 0, None),
    "mid-epoch-2": Kill("pretrain:step:6", [1], 0, 1),
    "during-checkpoint-write": Kill("pretrain:torn:epoch-2.pt", [1], 1, 1),
    "checkpoint-written-not-renamed": Kill("pretrain:unrenamed:epoch-2.pt", [1], 1, 1),
    "right-after-checkpoint": Kill("pretrain:after:epoch-2.pt", [1, 2], 0, 2),
    "after-last-checkpoint": Kill("pretrain:after:epoch-3.pt", [1, 2, 3], 0, 3),
    "during-final-output-write": Kill("pretrain:torn:encoder.pt", [2, 3], 0, 3),
}
DEFAULT_RUN = {"during-checkpoint-write"}  # the others are slow (~20 s each)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=() if n in DEFAULT_RUN else pytest.mark.slow) for n in PRETRAIN_KILLS],
)
def test_killed_pretraining_resumes_bit_identical(name, reference, digits, fault_site, tmp_path):
    """SIGKILL the pre-training job at one point; the killed run fails without its outputs and
    leaves only complete checkpoints (plus ignored temp files); the same command then resumes
    from the newest complete checkpoint and ends with the uninterrupted run's exact weights."""
    kill = PRETRAIN_KILLS[name]
    wd = tiny_workdir(tmp_path / "run", digits)
    killed = snakemake(wd, ENCODER, fault=kill.fault, site=fault_site)
    assert killed.returncode != 0, tail(killed)
    assert fault_fired(wd).startswith(kill.fault), tail(killed)
    assert not (wd / ENCODER).exists() and not (wd / PRE_RUN_ID).exists()
    epochs, leftovers = inspect_checkpoints(wd / PRE_CKPT)
    assert epochs == kill.epochs_left and len(leftovers) == kill.leftovers
    for tmp in leftovers:  # a torn write really is truncated; the loader never looks at it
        if "torn" in kill.fault:
            with pytest.raises(checkpoint.CheckpointError):
                checkpoint.load(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback needed: nothing truncated is visible
        state = checkpoint.load_latest(wd / PRE_CKPT)
    assert (state or {}).get("epoch") == (max(epochs) if epochs else None)
    if "encoder.pt" in kill.fault:  # the torn output is a hidden temp file nothing reads
        names = [p.name for p in (wd / ENCODER).parent.iterdir()]
        assert len(names) == 1 and re.fullmatch(r"\.encoder\.pt\..+\.tmp", names[0]), names

    rerun = snakemake(wd, ENCODER)
    assert rerun.returncode == 0, tail(rerun)
    log = (wd / PRE_LOG).read_text()
    if kill.resumes_from is None:
        assert "resumed from epoch" not in log, log
    else:
        assert f"resumed from epoch {kill.resumes_from}\n" in log, log
    assert_same_weights(wd / ENCODER, reference / ENCODER)
    epochs, leftovers = inspect_checkpoints(wd / PRE_CKPT)
    assert max(epochs) == 3 and leftovers == []
    assert "Nothing to be done" in tail(snakemake(wd, ENCODER, "-n"))


def test_segfaulting_job_leaves_traceback_and_named_signal(digits, fault_site, tmp_path):
    """A pre-training job that dies of a segmentation fault in native code (a real one, at its
    second batch) leaves the Python traceback of the crash in its log (faulthandler), and the
    workflow names the signal, in the log and on its own stderr; no output is written."""
    wd = tiny_workdir(tmp_path / "run", digits)
    proc = snakemake(wd, ENCODER, fault="pretrain:segv:2", site=fault_site)
    assert proc.returncode != 0, tail(proc)
    log = (wd / PRE_LOG).read_text()
    assert "Fatal Python error: Segmentation fault" in log, log
    assert re.search(r'File ".*ascl/engine\.py", line \d+ in _run_epoch', log), log
    named = "ascl: job killed by signal SIGSEGV (exit status 139)"
    assert named in log and named in proc.stderr, tail(proc)
    assert not (wd / ENCODER).exists()


@pytest.mark.slow
def test_killed_snakemake_process_group_resumes(reference, digits, tmp_path):
    """The whole process group (Snakemake and its job) is SIGKILLed once the first checkpoint
    exists, as on a node crash. Snakemake's lock and incomplete-output markers survive, so the
    plain rerun refuses to start; after `--unlock`, `--rerun-incomplete` resumes and ends
    bit-identical."""
    wd = tiny_workdir(tmp_path / "run", digits)
    proc = subprocess.Popen(
        snakemake_cmd(wd, "--cores", "1", ENCODER),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=job_env(wd),
        cwd=wd,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (wd / PRE_CKPT / "epoch-1.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    epochs, _ = inspect_checkpoints(wd / PRE_CKPT)
    assert epochs and not (wd / ENCODER).exists()

    plain = snakemake(wd, ENCODER)
    assert plain.returncode != 0
    assert "--unlock" in tail(plain) or "--rerun-incomplete" in tail(plain), tail(plain)
    assert snakemake(wd, "--unlock").returncode == 0
    rerun = snakemake(wd, "--rerun-incomplete", ENCODER)
    assert rerun.returncode == 0, tail(rerun)
    assert re.search(r"resumed from epoch [123]\n", (wd / PRE_LOG).read_text())
    assert_same_weights(wd / ENCODER, reference / ENCODER)


# ---------------------------------------------------------------------------------------------
# Kill and rerun: finetuning and evaluation


DOWNSTREAM_KILLS = {
    # name: (fault, outputs removed from a copy of the finished reference run before the test)
    "finetune-mid-epoch-2": ("finetune:step:6", [MODEL, FT_RUN_ID, FT_CKPT, FT_LOG, METRICS]),
    "evaluate-mid-pgd": ("evaluate:step:2", [METRICS]),
    "evaluate-during-metrics-write": ("evaluate:torn:pgd.json", [METRICS]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DOWNSTREAM_KILLS))
def test_killed_downstream_job_reruns_identically(name, reference_eval, fault_site, tmp_path):
    """A killed finetuning job resumes from its checkpoint; a killed evaluation job leaves no
    metrics file and its rerun writes exactly the uninterrupted run's metrics."""
    fault, remove = DOWNSTREAM_KILLS[name]
    wd = tmp_path / "run"
    shutil.copytree(reference_eval, wd, symlinks=True)
    for rel in remove:
        path = wd / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    killed = snakemake(wd, METRICS, fault=fault, site=fault_site)
    assert killed.returncode != 0 and fault_fired(wd).startswith(fault), tail(killed)
    assert not (wd / METRICS).exists()
    if fault.startswith("finetune"):
        assert not (wd / MODEL).exists()
        assert inspect_checkpoints(wd / FT_CKPT) == ([1], [])
    rerun = snakemake(wd, METRICS)
    assert rerun.returncode == 0, tail(rerun)
    if fault.startswith("finetune"):
        assert "resumed from epoch 1\n" in (wd / FT_LOG).read_text()
        assert_same_weights(wd / MODEL, reference_eval / MODEL)
    expected = json.loads((reference_eval / METRICS).read_text())
    assert json.loads((wd / METRICS).read_text()) == expected


# ---------------------------------------------------------------------------------------------
# Corrupt newest checkpoint, end to end


def test_corrupt_newest_checkpoint_falls_back_and_stays_identical(tiny_params, toy_data, tmp_path):
    """A newest checkpoint damaged on disk (here: truncated after the fact) is skipped with a
    warning; training resumes from the one before and still ends bit-identical."""
    from ascl.pretrain import run_pretrain

    settings = config.pretrain_settings(tiny_params, "ascl")
    common = dict(settings=settings, data=toy_data, seed=1, track=False)
    run_pretrain(**common, out=tmp_path / "full.pt", ckpt_dir=tmp_path / "ck_full")
    ck = tmp_path / "ck"
    run_pretrain(**common, out=tmp_path / "resumed.pt", ckpt_dir=ck, stop_after_epoch=2)
    newest = ck / "epoch-2.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"epoch-2\.pt.*falling back"):
        run_pretrain(**common, out=tmp_path / "resumed.pt", ckpt_dir=ck)
    assert_same_weights(tmp_path / "resumed.pt", tmp_path / "full.pt")
    assert inspect_checkpoints(ck) == ([2, 3], [])  # the damaged file was replaced


def test_checkpoints_of_other_settings_are_not_resumed(tiny_params, toy_data, tmp_path, capfd):
    """Checkpoints left by a killed job with other settings are discarded, not resumed: the
    run starts afresh and equals an uninterrupted run of the new settings."""
    from ascl.pretrain import run_pretrain

    old = config.pretrain_settings(tiny_params, "ascl")
    new = config.pretrain_settings(
        config.deep_merge(tiny_params, {"pretrain": {"lr": 0.05}}), "ascl"
    )
    common = dict(data=toy_data, seed=0, track=False)
    run_pretrain(old, **common, out=tmp_path / "x.pt", ckpt_dir=tmp_path / "ck", stop_after_epoch=2)
    capfd.readouterr()
    run_pretrain(new, **common, out=tmp_path / "resumed.pt", ckpt_dir=tmp_path / "ck")
    assert "belong to other settings or code; starting afresh" in capfd.readouterr().err
    run_pretrain(new, **common, out=tmp_path / "full.pt", ckpt_dir=tmp_path / "ck_full")
    assert_same_weights(tmp_path / "resumed.pt", tmp_path / "full.pt")


def test_non_finite_weights_after_last_step_write_nothing(tiny_params, toy_data, tmp_path):
    """An update that makes the weights infinite in an epoch's last step (whose loss was still
    finite) stops the job before that state reaches a checkpoint or the output."""
    from ascl.engine import NonFiniteLossError
    from ascl.pretrain import run_pretrain

    p = config.deep_merge(tiny_params, {"pretrain": {"epochs": 1, "batch_size": 64, "lr": 3e38}})
    with pytest.raises(NonFiniteLossError, match="non-finite weights"):
        run_pretrain(
            config.pretrain_settings(p, "ascl"),
            data=toy_data,  # 48 images: a single batch per epoch
            out=tmp_path / "enc.pt",
            seed=0,
            ckpt_dir=tmp_path / "ck",
            track=False,
        )
    assert not (tmp_path / "enc.pt").exists()
    assert inspect_checkpoints(tmp_path / "ck") == ([], [])


# ---------------------------------------------------------------------------------------------
# Downloads killed or stalled mid-transfer


class _StallingHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        with srv.lock:
            srv.hits += 1
            mode = srv.modes.pop(0) if len(srv.modes) > 1 else srv.modes[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(srv.blob)))
        self.end_headers()
        if mode == "ok":
            self.wfile.write(srv.blob)
            return
        # "stall": half the body, then silence until the test ends
        self.wfile.write(srv.blob[: len(srv.blob) // 2])
        self.wfile.flush()
        srv.release.wait(60)

    def log_message(self, *args):
        pass


@pytest.fixture
def stalling_server():
    """Serves `blob` at any path; each request takes the next of `modes` ('ok' or 'stall'), the
    last one repeating."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    httpd.daemon_threads = True
    httpd.lock, httpd.release, httpd.hits = threading.Lock(), threading.Event(), 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/cifar-10-binary.tar.gz"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02})
    thread.daemon = True
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def _cifar10_blob() -> tuple[bytes, dict]:
    from tests.test_data import cifar10_archive

    return cifar10_archive()


KILLED_DOWNLOAD = textwrap.dedent(
    """
    import sys
    from ascl.data import download, prepare_dataset
    download.CHUNK = 4096  # small reads, so that the partial file grows before the stall
    prepare_dataset("cifar10", sys.argv[1], url=sys.argv[2], md5=sys.argv[3],
                    cache_dir=sys.argv[4], timeout=120, retries=0)
    """
)


def test_killed_download_leaves_nothing_trusted(stalling_server, tmp_path):
    """SIGKILL a download mid-transfer: only the `.part` file remains (no archive, no data set);
    the next run does not trust it, downloads afresh and removes it."""
    blob, expected = _cifar10_blob()
    digest = hashlib.md5(blob).hexdigest()
    stalling_server.blob, stalling_server.modes = blob, ["stall", "ok"]
    out, cache = tmp_path / "c10.npz", tmp_path / "cache"
    part = cache / "cifar-10-binary.tar.gz.part"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_DOWNLOAD, str(out), stalling_server.url, digest, str(cache)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (part.exists() and part.stat().st_size > 0):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "download did not start"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in cache.iterdir()) == [part.name]
    assert 0 < part.stat().st_size < len(blob)
    assert not out.exists()

    prepare_dataset("cifar10", out, url=stalling_server.url, md5=digest, cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-binary.tar.gz"]
    assert (cache / "cifar-10-binary.tar.gz").read_bytes() == blob
    np.testing.assert_array_equal(load_dataset(out).x_train.numpy(), expected["x_train"])


def test_download_stalling_mid_body_is_bounded(stalling_server, tmp_path, monkeypatch):
    """Headers and half the body arrive, then the server goes silent: each attempt ends after
    the socket timeout, the retries are bounded, and nothing is left behind."""
    monkeypatch.setattr(download_mod, "BACKOFF_S", 0.01)
    blob, _ = _cifar10_blob()
    stalling_server.blob, stalling_server.modes = blob, ["stall"]
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"after 2 attempt\(s\): timed out") as err:
        prepare_dataset(
            "cifar10",
            tmp_path / "c.npz",
            url=stalling_server.url,
            md5=hashlib.md5(blob).hexdigest(),
            cache_dir=tmp_path / "cache",
            timeout=1,
            retries=1,
        )
    assert "\n" not in str(err.value)
    assert time.monotonic() - start < 15 and stalling_server.hits == 2
    assert list((tmp_path / "cache").iterdir()) == [] and not (tmp_path / "c.npz").exists()


def test_truncated_archive_with_matching_md5_is_a_clear_error(stalling_server, tmp_path):
    """A mirror serving a truncated archive (its md5 given with --md5) fails while reading the
    archive, with one line naming it, and writes no data set."""
    blob, _ = _cifar10_blob()
    truncated = blob[: len(blob) // 2]
    stalling_server.blob, stalling_server.modes = truncated, ["ok"]
    out = tmp_path / "c.npz"
    with pytest.raises(ArchiveError, match=r"cifar10: cifar-10-binary\.tar\.gz .*tar archive") as e:
        prepare_dataset(
            "cifar10",
            out,
            url=stalling_server.url,
            md5=hashlib.md5(truncated).hexdigest(),
            cache_dir=tmp_path / "cache",
        )
    assert "\n" not in str(e.value)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


# ---------------------------------------------------------------------------------------------
# Malformed params through the real workflow entry


def _bad_params(case: str) -> tuple[dict, str]:
    from tests.test_config import BAD

    for what, params, key in BAD:
        if what == case:
            return params, key
    raise KeyError(case)


@pytest.mark.parametrize(
    ("case", "dry"),
    [
        ("unknown strategy in a table", True),
        ("table naming a missing model", False),
    ],
)
def test_bad_params_stop_snakemake_with_one_line(case, dry, tmp_path):
    """`snakemake [-n]` on a malformed params.yaml exits non-zero before any job, prints exactly
    one line naming the key, and writes nothing but Snakemake's own run log."""
    params, key = _bad_params(case)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = ["-n"] if dry else ["--cores", "1"]
    proc = subprocess.run(
        ["timeout", "-s", "KILL", "300", str(BIN / "snakemake"), "-s", str(SNAKEFILE), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ascl: error: params: "), lines
    assert key in lines[0], lines
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = [str(p) for p in after if p not in before]
    # only Snakemake's own run log (a non-dry run opens it before reading the Snakefile)
    assert all(p == ".snakemake" or p.startswith(".snakemake/log") for p in new), new


# ---------------------------------------------------------------------------------------------
# Tracking under load: a local MLflow tracking server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free loopback port with a SQLite backend; stopped afterwards."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = local_server.free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 (closed in teardown)
    proc = local_server.launch(
        f"sqlite:///{root / 'server.db'}", str(root / "artifacts"), port, cwd=root, log=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        with _suppress_lookup():
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with _suppress_lookup():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _suppress_lookup():
    import contextlib

    return contextlib.suppress(ProcessLookupError)


SERVER_WRITER = textwrap.dedent(
    """
    import sys
    from ascl.tracking import Run
    i, steps = int(sys.argv[1]), int(sys.argv[2])
    with Run(f"writer{i}", params={"writer": i, "nested": {"w": i}}, tags={"writer": str(i)},
             experiment=sys.argv[3]) as run:
        for step in range(steps):
            run.log_metrics({"loss": float(i + step), "acc": step / steps}, step=step)
    print(run.run_id)
    """
)


def test_concurrent_jobs_logging_to_tracking_server(mlflow_server, tmp_path):
    """8 processes log at once through `ascl.tracking.Run` to an MLflow server: every run ends
    FINISHED with its params, tags and every metric at every step."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    experiment = "server-load"
    client.create_experiment(experiment)  # as after the first job; see the race test below
    steps, n = 25, 8
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SERVER_WRITER, str(i), str(steps), experiment],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(n)
    ]
    run_ids = {}
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        run_ids[i] = out.strip().splitlines()[-1]
    assert len(set(run_ids.values())) == n
    for i, run_id in run_ids.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params == {"writer": str(i), "nested.w": str(i)}
        assert run.data.tags["writer"] == str(i)
        expected = {
            "loss": [(s, float(i + s)) for s in range(steps)],
            "acc": [(s, s / steps) for s in range(steps)],
        }
        for key, points in expected.items():
            history = client.get_metric_history(run_id, key)
            assert sorted((m.step, m.value) for m in history) == points, (i, key)


def test_experiment_created_concurrently_by_another_job(mlflow_server, monkeypatch):
    """Two jobs start on a new experiment: both look it up (absent), the other creates it
    first. This job must use it instead of failing (8 processes starting at once on a fresh
    experiment hit this about every second run)."""
    from mlflow.tracking import MlflowClient

    from ascl.mlflow_stores import RestStore
    from ascl.tracking import Run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    experiment = "created-concurrently"
    real_lookup = RestStore.experiment_id
    calls = []

    def lookup_then_lose_the_race(self, name):
        calls.append(name)
        if len(calls) == 1:  # the other job creates it right after our lookup
            MlflowClient(mlflow_server).create_experiment(name)
            return None
        return real_lookup(self, name)

    monkeypatch.setattr(RestStore, "experiment_id", lookup_then_lose_the_race)
    with Run("late", experiment=experiment) as run:
        run.log_metrics({"m": 1.0}, step=0)
    assert len(calls) == 2  # looked up, lost the race on create, looked up again
    exp = MlflowClient(mlflow_server).get_experiment_by_name(experiment)
    assert MlflowClient(mlflow_server).get_run(run.run_id).info.experiment_id == exp.experiment_id
