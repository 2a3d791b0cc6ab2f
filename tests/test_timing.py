"""Where a job's time goes (ascl.timing): phases add up, nested phases count once, and every
job's log ends with one parsable timing line."""

from __future__ import annotations

import time

import pytest

from ascl import timing
from ascl.cli import main


def test_phases_add_up_and_nest_once():
    timing.reset()
    with timing.phase("imports"):
        time.sleep(0.05)
        with timing.phase("tracking"):  # inside imports: counted as imports only
            time.sleep(0.05)

    @timing.timed("inputs")
    def load() -> int:
        time.sleep(0.03)
        return 7

    assert load() == 7
    time.sleep(0.02)  # work
    s = timing.summary("unit")
    assert s["imports"] == pytest.approx(0.10, abs=0.04)
    assert s["tracking"] == 0.0
    assert s["inputs"] == pytest.approx(0.03, abs=0.03)
    assert s["work"] >= 0.02
    assert s["total"] == pytest.approx(s["imports"] + s["inputs"] + s["work"], abs=0.005)


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown timing phase 'gpu'"), timing.phase("gpu"):
        pass


def test_a_job_reports_its_timing_on_stderr(tmp_path, capsys):
    table = tmp_path / "table1.csv"
    table.write_text("row,sa_mean\nASCL,50.0\n")
    out = tmp_path / "metrics.json"
    assert main(["summary", str(table), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    (rec,) = timing.parse(err)
    assert rec["command"] == "summary" and set(rec) == {"command", "total", *timing.PHASES, "work"}
    assert 0 <= rec["imports"] <= rec["total"] and rec["tracking"] == 0.0


def test_a_failed_job_reports_only_its_error(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ascl: error:") and not timing.parse("\n".join(err))
