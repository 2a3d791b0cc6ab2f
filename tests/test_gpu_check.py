"""`make gpu-check` (benchmarks/gpu_check.py): its CPU dry run runs the training code of a few
job kinds and reports every figure, labelled as a dry run; its sync counter flags exactly the
ops that make a host wait for a GPU."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import torch

from tests.conftest import ROOT


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_sync_counter_flags_read_backs_and_masks_only():
    gc = _module()
    x = torch.arange(6.0, requires_grad=True)
    with gc.SyncCounter() as counter:
        y = (x * 2 + 1).sum()  # stays on the device
        y.backward()
        torch.where(x > 2, x, torch.zeros_like(x)).sum()  # a masked sum: no read-back
    assert counter.count == 0
    rows = torch.tensor([0, 1])  # made from host data: a copy (counted when inside)
    with gc.SyncCounter() as counter:
        float(y.detach())  # item
        bool((x > 2).any())
        x.detach()[x.detach() > 2]  # boolean-mask indexing
        torch.nonzero(x)
        x.detach()[rows]  # integer indexing: no read-back
    assert counter.count == 4, counter.ops
    assert counter.ops["_local_scalar_dense"] == 2 and counter.ops["nonzero"] == 1


def test_dry_run_reports_every_figure(tmp_path, capsys):
    """The CPU dry run of two methods (one with pseudo labels) and one strategy: versions, a
    row per job kind with its figures, the DAG's hours, everything said to be a CPU dry run;
    the JSON holds the same."""
    gc = _module()
    out = tmp_path / "check.json"
    args = ["--dry", "--methods", "at,advcl", "--strategies", "LSF", "--json", str(out)]
    assert gc.main(args) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("gpu-check [CPU DRY RUN]: measured on the CPU"), lines[0]
    assert re.search(r"^versions: torch \S+, CUDA \S+, cuDNN \S*, Python \S+", text, re.M)
    assert "syncs counted by a dispatch mode" in text
    rows = [ln for ln in lines if re.match(r"\| (pretrain|finetune) \|", ln)]
    assert [ln.split("|")[1:3] for ln in rows] == [
        [" pretrain ", " at "],
        [" pretrain ", " advcl "],
        [" finetune ", " LSF "],
    ]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 11
        batch, syncs, per_epoch, step_s, rate = map(float, cells[2:7])
        assert batch == 8 and syncs >= 0 and per_epoch >= 0 and step_s > 0 and rate > 0
        assert cells[7] == "–"  # peak memory: CUDA only
        assert float(cells[8]) >= 0 and int(cells[9]) >= 1 and float(cells[10]) >= 0
    assert re.search(r"^DAG \(\d+ seed\(s\)\) \[CPU DRY RUN\]: [\d.]+ device-hours", text, re.M)
    result = json.loads(out.read_text())
    assert result["dry"] is True and result["versions"]["device"] == "CPU"
    assert [r["name"] for r in result["rows"]] == ["at", "advcl", "LSF"]
    assert all(r["job_h"] > 0 and r["total_h"] >= r["job_h"] for r in result["rows"])
    assert result["dag_hours"] == sum(r["total_h"] for r in result["rows"])
    assert all(r["syncs_per_step"] == int(r["syncs_per_step"]) for r in result["rows"])
