"""What the workflow's own parse costs: `snakemake -n` of the whole DAG against a one-rule
workflow (the floor: Snakemake's start-up), medians of N runs, interleaved so that a change in
the machine's load hits both.

    python benchmarks/dry_run.py [--configfile config/smoke.yaml] [--runs 5]

The goal (issue: caches that are right) is the full dry run within 1 s of the one-rule one. The
first full run after an edit of the package parses its modules once (`ascl.codehash`); the
figure is the warm one, as a user re-running the workflow sees it, and the cold one is printed
beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
GOAL_S = 1.0


def _time(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/smoke.yaml")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one-rule"
        one.mkdir()
        (one / "Snakefile").write_text('rule all:\n    output: "x"\n    shell: "touch {output}"\n')
        env = {**os.environ, "ASCL_CACHE_DIR": str(Path(tmp) / "cache")}
        full_cmd = [str(SNAKEMAKE), "-n", "-q", "--cores", "1", "--configfile", args.configfile]
        cold = _time(full_cmd, REPO, env)  # an empty code-hash cache
        full, floor = [], []
        for _ in range(args.runs):
            full.append(_time(full_cmd, REPO, env))
            floor.append(_time([str(SNAKEMAKE), "-n", "-q", "--cores", "1"], one, env))
    f, o = statistics.median(full), statistics.median(floor)
    print(
        f"full DAG ({args.configfile}) dry run: {f:.2f} s "
        f"(median of {args.runs}; cold {cold:.2f} s)"
    )
    print(f"one-rule workflow dry run:  {o:.2f} s")
    verdict = "met" if f - o <= GOAL_S else "missed"
    print(f"difference {f - o:.2f} s against the {GOAL_S:.0f} s goal: {verdict}")


if __name__ == "__main__":
    main()
