"""End-to-end tests of the SLURM profiles against a real single-node SLURM cluster.

The cluster is started with ``scripts/slurm-local.sh start`` (needs root; installs
SLURM, slurmdbd and MariaDB with apt-get when missing) and stopped again at the end of the
session. It keeps job accounting as production clusters do, so the user profile ``./slurm``
runs unchanged (the SLURM plugin's default ``sacct`` status checks); ``tests/slurm-profile``
exercises the ``squeue`` status path with short waits.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = REPO / "scripts" / "slurm-local.sh"
TEST_PROFILE = REPO / "tests" / "slurm-profile"
USER_PROFILE = REPO / "slurm"
PARTITION = "debug"

# Environment variables read by the user-facing profile (slurm/config.yaml).
PROFILE_ENV_VARS = ("ASCL_SLURM_PARTITION", "ASCL_SLURM_ACCOUNT")

SNAKEFILE = """\
rule all:
    input:
        "downstream.txt",


rule gpu_job:
    output:
        "gpu.txt",
    resources:
        gpu=1,
        runtime=5,
        mem_mb=500,
        cpus_per_task=1,
    shell:
        "echo SLURM_JOB_ID=$SLURM_JOB_ID > {output}; "
        "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES >> {output}"


rule downstream:
    input:
        "gpu.txt",
    output:
        "downstream.txt",
    shell:
        "cat {input} > {output}; echo downstream-ok >> {output}"
"""


def _slurm_unavailable_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "local SLURM cluster needs Linux"
    if os.geteuid() != 0:
        return "local SLURM cluster needs root (scripts/slurm-local.sh installs packages)"
    if shutil.which("timeout") is None:
        return "coreutils `timeout` not found"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "neither slurmctld nor apt-get is available to provide SLURM"
    return None


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_ENV_VARS}
    env.update(extra or {})
    return env


def _script(action: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SLURM_SCRIPT), action],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """A running single-node SLURM cluster (partition ``debug``, one fake GPU).

    Started by ``scripts/slurm-local.sh start`` and stopped at the end of the
    session, unless it was already running before the session started.
    """
    reason = _slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    was_running = _script("status", timeout=30).returncode == 0
    try:
        # the first start installs the packages with apt-get
        started = _script("start", timeout=900)
        if started.returncode != 0:
            pytest.fail(
                "scripts/slurm-local.sh start failed "
                f"(rc={started.returncode}):\n{started.stdout}\n{started.stderr}"
            )
        yield {
            "partition": PARTITION,
            "test_profile": str(TEST_PROFILE),
            "user_profile": str(USER_PROFILE),
        }
    finally:
        if not was_running:
            stopped = _script("stop", timeout=120)
            if stopped.returncode != 0:
                print(f"slurm-local.sh stop failed:\n{stopped.stdout}\n{stopped.stderr}")


def run_snakemake_slurm(
    workdir: Path | str,
    *args: str,
    timeout: int = 300,
    profile: Path | str = TEST_PROFILE,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run snakemake in ``workdir`` with a SLURM profile, killed after ``timeout`` s.

    ``env`` adds to the current environment, from which the variables read by the
    user-facing profile are removed. stdout and stderr are combined in ``stdout``.
    """
    workdir = Path(workdir)
    cmd = [
        "timeout",
        "-s",
        "KILL",
        str(timeout),
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(profile),
        "--directory",
        str(workdir),
        *args,
    ]
    return subprocess.run(
        cmd,
        cwd=workdir,
        env=_clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout + 30,
        check=False,
    )


def _read_gpu_output(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


def _sacct_states(job_ids: list[str]) -> dict[str, str]:
    """Job id -> state, as the accounting database has it (`sacct`)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--format=JobIdRaw,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return dict(line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)


def _scontrol_job(job_id: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def gpu_workflow(tmp_path: Path) -> Path:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    return tmp_path


@pytest.mark.slurm
def test_gpu_job_runs_through_sbatch(slurm_cluster: dict[str, str], gpu_workflow: Path) -> None:
    result = run_snakemake_slurm(gpu_workflow, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:]

    values = _read_gpu_output(gpu_workflow / "gpu.txt")
    job_id = values.get("SLURM_JOB_ID", "")
    assert re.fullmatch(r"\d+", job_id), f"no SLURM job id in the job output: {values}"
    assert values.get("CUDA_VISIBLE_DEVICES") == "0", values

    assert (gpu_workflow / "downstream.txt").read_text().splitlines()[-1] == "downstream-ok"
    assert f"submitted with SLURM jobid {job_id}" in result.stdout

    logs = gpu_workflow / ".snakemake" / "slurm_logs"
    assert (logs / "rule_gpu_job" / f"{job_id}.log").is_file(), sorted(logs.rglob("*"))
    downstream_logs = list((logs / "rule_downstream").glob("*.log"))
    assert len(downstream_logs) == 1, sorted(logs.rglob("*"))


@pytest.mark.slurm
def test_user_profile_submits_with_env_partition(
    slurm_cluster: dict[str, str], gpu_workflow: Path
) -> None:
    """slurm/config.yaml, unchanged (status through sacct), takes the partition from
    $ASCL_SLURM_PARTITION; the job is in the accounting database."""
    result = run_snakemake_slurm(
        gpu_workflow,
        "gpu.txt",
        timeout=300,
        profile=USER_PROFILE,
        env={"ASCL_SLURM_PARTITION": slurm_cluster["partition"]},
    )
    assert result.returncode == 0, result.stdout[-5000:]

    values = _read_gpu_output(gpu_workflow / "gpu.txt")
    job_id = values.get("SLURM_JOB_ID", "")
    assert re.fullmatch(r"\d+", job_id), values
    assert values.get("CUDA_VISIBLE_DEVICES") == "0", values

    job = _scontrol_job(job_id)
    assert f"Partition={slurm_cluster['partition']}" in job, job
    assert "Requeue=1" in job, job
    assert _sacct_states([job_id]) == {job_id: "COMPLETED"}


@pytest.mark.parametrize(
    ("env", "expected", "absent"),
    [
        ({}, [], ["slurm_partition=", "slurm_account="]),
        (
            {"ASCL_SLURM_PARTITION": "gpu-a100", "ASCL_SLURM_ACCOUNT": "12345"},
            ["slurm_partition=gpu-a100", "slurm_account=12345"],
            [],
        ),
    ],
)
def test_user_profile_resources_from_env(
    gpu_workflow: Path, env: dict[str, str], expected: list[str], absent: list[str]
) -> None:
    """Dry run (no cluster needed): the profile's default resources follow the env."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(USER_PROFILE), "--dry-run"],
        cwd=gpu_workflow,
        env=_clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    resource_lines = [ln for ln in result.stdout.splitlines() if "resources:" in ln]
    assert resource_lines, result.stdout
    for line in resource_lines:
        assert "runtime=" in line, line
        for item in expected:
            assert item in line, line
        for item in absent:
            assert item not in line, line


@pytest.mark.slurm
def test_pipeline_slice_runs_through_slurm(slurm_cluster: dict[str, str], tmp_path: Path) -> None:
    """Table 8 of the smoke DAG (its two ASCL rows) through sbatch with the user profile
    `./slurm` unchanged (its partition from the environment, job states from sacct): two
    pre-trainings, their finetunings and evaluations run as SLURM jobs (downloads and
    aggregation stay local), the accounting database lists them COMPLETED, outputs are right."""
    from tests.test_workflow import workdir_with

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    rows = params["paper"]["table8"]["rows"]
    params["paper"]["table8"]["rows"] = {k: v for k, v in rows.items() if k.endswith("ASCL")}
    wd = workdir_with(tmp_path, params=params)
    result = run_snakemake_slurm(
        wd,
        "table8",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "--configfile",
        str(wd / "config" / "smoke.yaml"),
        timeout=900,
        profile=USER_PROFILE,
        env={
            "MLFLOW_TRACKING_URI": f"sqlite:///{wd / 'mlflow.db'}",
            "ASCL_SLURM_PARTITION": slurm_cluster["partition"],
        },
    )
    assert result.returncode == 0, result.stdout[-5000:]
    # Snakemake job -> SLURM job, and Snakemake job -> rule (the profile deletes the SLURM logs
    # of successful jobs, as the plugin does by default)
    submitted = dict(
        re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", result.stdout)
    )
    rules = dict(re.findall(r"Finished jobid: (\d+) \(Rule: (\w+)\)", result.stdout))
    submitted_rules = sorted(rules[job] for job in submitted)
    assert submitted_rules == sorted(["pretrain", "finetune", "evaluate_pgd"] * 2), result.stdout
    job_ids = list(submitted.values())
    assert _sacct_states(job_ids) == dict.fromkeys(job_ids, "COMPLETED")
    table = (wd / "results" / "paper" / "table8.md").read_text()
    for row in ("Same BN / ASCL", "Separated BN / ASCL"):
        assert f"| {row} |" in table


@pytest.mark.slurm
def test_requeued_pretraining_resumes_from_checkpoint(
    slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    """A pre-training job that SLURM requeues (`scontrol requeue`, as on preemption or node
    failure) after its first checkpoint runs its batch script again, resumes from that
    checkpoint and ends bit-identical to an uninterrupted local run."""
    import time

    from ascl.data import prepare_dataset
    from tests.test_faults import (
        ENCODER,
        PRE_CKPT,
        PRE_LOG,
        SNAKEFILE,
        assert_same_weights,
        fault_fired,
        inspect_checkpoints,
        job_env,
        snakemake,
        tiny_workdir,
        write_fault_site,
    )

    digits = prepare_dataset("digits10", tmp_path / "digits10.npz")
    wd = tiny_workdir(tmp_path / "run", digits)
    # the first attempt pauses once epoch-1.pt is written; the requeued one does not rewrite it
    env = job_env(wd, "pretrain:pause:epoch-1.pt", write_fault_site(tmp_path / "site"))
    cmd = [
        *("timeout", "-s", "KILL", "600", sys.executable, "-m", "snakemake", ENCODER),
        *("--profile", str(TEST_PROFILE), "--directory", str(wd), "-s", str(SNAKEFILE)),
        *("--configfile", str(wd / "config" / "tiny.yaml")),
        *("--slurm-init-seconds-before-status-checks", "3"),
    ]
    out_file = tmp_path / "snakemake.out"
    with (
        open(out_file, "w") as out,
        subprocess.Popen(cmd, cwd=wd, env=_clean_env(env), stdout=out, stderr=out) as proc,
    ):
        try:
            deadline = time.monotonic() + 300
            while not fault_fired(wd):
                assert proc.poll() is None, out_file.read_text()[-5000:]
                assert time.monotonic() < deadline, "the job never wrote its first checkpoint"
                time.sleep(0.2)
            job_id = re.search(r"slurm_job=(\d+)", fault_fired(wd)).group(1)
            assert inspect_checkpoints(wd / PRE_CKPT) == ([1], [])
            requeue = subprocess.run(
                ["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=30
            )
            assert requeue.returncode == 0, requeue.stderr
            # SLURM holds a requeued job for the credential lifetime (120 s) before it may start
            # again; once it is pending, let it start now to keep the test short.
            while "JobState=PENDING" not in _scontrol_job(job_id):
                assert proc.poll() is None and time.monotonic() < deadline + 60
                time.sleep(0.2)
            # slurmd refuses a credential created in the same second as the requeue revoked
            # the old one ("Job credential revoked"): start it a little later
            time.sleep(2)
            subprocess.run(
                ["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                check=True,
                capture_output=True,
                timeout=30,
            )
            # meanwhile, the uninterrupted reference run, locally
            reference = tiny_workdir(tmp_path / "reference", digits)
            local = snakemake(reference, ENCODER)
            assert local.returncode == 0, local.stderr[-3000:]
            proc.wait(timeout=480)
        finally:
            if proc.poll() is None:
                proc.kill()
    output = out_file.read_text()
    assert proc.returncode == 0, output[-5000:]
    assert f"submitted with SLURM jobid {job_id}" in output
    assert re.search(r"Restarts=1\b", _scontrol_job(job_id)), _scontrol_job(job_id)
    assert "resumed from epoch 1\n" in (wd / PRE_LOG).read_text()
    assert_same_weights(wd / ENCODER, reference / ENCODER)
    assert inspect_checkpoints(wd / PRE_CKPT) == ([2, 3], [])
