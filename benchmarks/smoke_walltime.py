"""Wall time of the README's main job: the whole smoke DAG from scratch in a temporary copy.

    python benchmarks/smoke_walltime.py [--cores 2]

Prints the wall time, the number of jobs per rule and the ratio to the 10-minute goal. The run
happens in a fresh directory (nothing cached), with its own MLflow store.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        (wd / "config").mkdir()
        shutil.copy(REPO / "params.yaml", wd / "params.yaml")
        shutil.copy(REPO / "config" / "smoke.yaml", wd / "config" / "smoke.yaml")
        bin_dir = Path(sys.executable).parent
        cmd = [
            str(bin_dir / "snakemake"),
            "-s",
            str(REPO / "workflow" / "Snakefile"),
            "-d",
            str(wd),
            "--configfile",
            str(wd / "config" / "smoke.yaml"),
            "--cores",
            str(args.cores),
            "--resources",
            f"gpu={args.cores}",
        ]
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{wd / 'mlflow.db'}"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        jobs = Counter(re.findall(r"^rule (\w+):", proc.stderr + proc.stdout, re.M))
    print(
        f"smoke DAG on {args.cores} cores: {wall:.0f} s wall "
        f"({wall / GOAL_S:.2f} x the {GOAL_S:.0f} s goal: {'met' if wall <= GOAL_S else 'missed'})"
    )
    for rule, n in sorted(jobs.items()):
        print(f"  {rule:<16} {n:>3} jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
