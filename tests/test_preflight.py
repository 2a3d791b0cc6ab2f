"""`ascl preflight` times every job kind the params need with the jobs' own code and prints
the projected wall time of each kind and of the DAG; on a CPU it says it ran at reduced size."""

from __future__ import annotations

import re

import pytest

from ascl import config
from ascl.cli import main

from .conftest import ROOT


def test_preflight_times_every_job_kind_and_projects_the_dag(capsys):
    params = [str(ROOT / "params.yaml"), str(ROOT / "config" / "smoke.yaml")]
    assert main(["preflight", *params, "--steps", "1", "--cpu-batch", "4", "--cpu-width", "4"]) == 0
    out = capsys.readouterr().out
    p = config.load_params(*params)
    rows = {
        (m.group(1), m.group(2)): m
        for m in re.finditer(r"^\| (\w+) \| ([\w.+-]+) \| (\d+) \| ([\d.]+) \|", out, re.M)
    }
    expected = {("pretrain", m) for m in config.pretrain_methods(p)}
    expected |= {("finetune", s) for _, s, _ in config.finetune_jobs(p)}
    expected.add(("evaluate", f"PGD-{p['evaluate']['pgd']['steps']}"))
    assert set(rows) == expected
    assert all(float(m.group(4)) > 0 for m in rows.values())  # every step was timed
    n_jobs = {s: 0 for _, s, _ in config.finetune_jobs(p)}
    for _, s, _ in config.finetune_jobs(p):
        n_jobs[s] += len(p["seeds"])
    assert {s: int(rows[("finetune", s)].group(3)) for s in n_jobs} == n_jobs
    assert "Whole DAG" in out and "reduced size" in out


@pytest.mark.parametrize(("n", "batch"), [(50_000, 512), (1438, 32), (100, 512), (1024, 512)])
def test_steps_per_epoch_are_the_loops_own(n, batch):
    import torch

    from ascl.engine import epoch_batches
    from ascl.preflight import steps_per_epoch

    assert steps_per_epoch(n, batch) == len(epoch_batches(n, batch, torch.Generator()))


@pytest.mark.parametrize("bf16", [False, True])
def test_steps_are_timed_under_the_jobs_precision(bf16):
    """The timed step runs under bf16 autocast exactly when the job's would."""
    import torch

    from ascl.preflight import _time_steps

    w = torch.nn.Parameter(torch.ones(3 * 32 * 32, 10))
    seen = []

    def step(x, y, g):
        seen.append(torch.is_autocast_enabled("cpu"))
        return {"loss": (x.flatten(1) @ w).float().logsumexp(1).mean()}

    seconds, flops = _time_steps(step, [w], 4, 2, torch.device("cpu"), bf16)
    assert seconds > 0 and flops == 0.0 and seen == [bf16] * 3  # warm-up + 2 timed steps
