"""Wall time of the README's main job, and where it goes: the whole smoke DAG from scratch in a
fresh clone, with the fixed cost of every job (interpreter, imports, MLflow, inputs) against its
work, per job kind.

    python benchmarks/smoke_walltime.py [--cores 2] [--configfile config/smoke.yaml]
                                        [--source clone|worktree] [--json out.json] [--keep DIR]

`--source clone` (default) runs a `git clone` of this repository's HEAD; `worktree` copies the
working tree as it is (uncommitted changes included). The project's interpreter runs it with the
copy's `src/` first on PYTHONPATH, so the copy's code runs, not the installed package (venv
creation is not part of the figure); nothing is cached, MLflow writes the clone's own store.
Every job logs where its time went (`ascl.timing`: one `ascl: timing {...}` line per log); the
interpreter's own start (up to the command line's first line) is measured here once and added to
every job. Prints the wall time against the 10-minute goal, the jobs per kind, and the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from ascl.timing import PHASES, parse  # noqa: E402 - the package of the repository measured

GOAL_S = 600.0
FIXED = ("startup", *PHASES)


def _copy_source(dest: Path, source: str) -> None:
    if source == "clone":
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True)
        return
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def interpreter_start(wd: Path, repeats: int = 3) -> float:
    """Median wall time of starting Python and importing the command line (no job module)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ascl.cli"], cwd=wd, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def job_records(wd: Path, startup: float) -> list[dict]:
    records = []
    for log in sorted((wd / "logs").rglob("*.log")):
        for rec in parse(log.read_text(errors="replace")):
            rec["startup"] = startup
            rec["total"] += startup
            rec["log"] = log.relative_to(wd).as_posix()
            records.append(rec)
    return records


def kind_table(records: list[dict]) -> list[dict]:
    """Per job kind (command): jobs, mean seconds per phase, fixed share of the kind's time."""
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_kind[rec["command"]].append(rec)
    rows = []
    for kind, recs in sorted(by_kind.items(), key=lambda kv: -sum(r["total"] for r in kv[1])):
        n = len(recs)
        mean = {k: sum(r[k] for r in recs) / n for k in (*FIXED, "work", "total")}
        fixed = sum(mean[k] for k in FIXED)
        rows.append(
            {
                "kind": kind,
                "jobs": n,
                **{k: round(v, 2) for k, v in mean.items()},
                "fixed": round(fixed, 2),
                "fixed_share": round(fixed / mean["total"], 3) if mean["total"] else 0.0,
                "core_s": round(mean["total"] * n, 1),
            }
        )
    return rows


def print_report(wall: float, cores: int, rows: list[dict], n_jobs: int) -> None:
    print(
        f"DAG on {cores} cores: {wall:.0f} s wall, {n_jobs} jobs "
        f"({wall / GOAL_S:.2f} x the {GOAL_S:.0f} s goal: {'met' if wall <= GOAL_S else 'missed'})"
    )
    head = ["kind", "jobs", *FIXED, "work", "total", "fixed share", "job-s"]
    print("mean seconds per job:")
    print("  " + " ".join(f"{h:>12}" for h in head))
    for r in rows:
        cells = [r["kind"], r["jobs"], *(r[k] for k in FIXED), r["work"], r["total"]]
        cells += [f"{100 * r['fixed_share']:.0f} %", r["core_s"]]
        print("  " + " ".join(f"{c:>12}" for c in cells))
    job_s = sum(r["core_s"] for r in rows)
    fixed_s = sum(r["fixed"] * r["jobs"] for r in rows)
    print(
        f"jobs' time {job_s:.0f} job-s, of which fixed {fixed_s:.0f} job-s "
        f"({100 * fixed_s / job_s:.0f} %); {cores} x wall = {cores * wall:.0f} core-s "
        f"(the rest is Snakemake itself and idle cores at the DAG's narrow points)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", default="config/smoke.yaml")
    parser.add_argument("--source", choices=("clone", "worktree"), default="clone")
    parser.add_argument("--json", help="also write the figures as JSON")
    parser.add_argument("--keep", help="run in this (new) directory and keep it")
    args = parser.parse_args()
    if args.keep:
        wd = Path(args.keep).resolve()
        if wd.exists():
            parser.error(f"--keep: {wd} exists")
        wd.mkdir(parents=True)
        cleanup = None
    else:
        cleanup = tempfile.TemporaryDirectory()
        wd = Path(cleanup.name) / "repo"
        wd.mkdir()
    try:
        _copy_source(wd, args.source)
        startup = interpreter_start(wd)
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "--configfile",
            args.configfile,
            "--cores",
            str(args.cores),
            "--resources",
            f"gpu={args.cores}",
        ]
        # as `make smoke` runs: the default tracking (the clone's own store, through the
        # run's own server with tracking.server: auto)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        # the workflow and its jobs import the copy's package, not an installed one
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, (str(wd / "src"), os.environ.get("PYTHONPATH")))
        )
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        records = job_records(wd, startup)
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    rows = kind_table(records)
    print_report(wall, args.cores, rows, len(records))
    if args.json:
        out = {"wall_s": wall, "cores": args.cores, "startup_s": startup, "kinds": rows}
        out["configfile"] = args.configfile
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
