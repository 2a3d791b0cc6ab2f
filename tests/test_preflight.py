"""`ascl preflight` times every job kind the params need with the jobs' own code and prints
the projected wall time of each kind and of the DAG; on a CPU it says it ran at reduced size."""

from __future__ import annotations

import re

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
