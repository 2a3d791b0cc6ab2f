"""Every model's SA and PGD-20 RA (8/255) per seed on the source data set, from a finished run's
PGD evaluations (results/evaluate/<method>/<strategy>/source/seed<k>/pgd.json), as one CSV.

    python scripts/collect_seeds.py RESULTS_DIR OUT.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path


def collect(results: Path) -> list[dict]:
    rows = []
    for f in sorted(results.glob("evaluate/*/*/source/seed*/pgd.json")):
        d = json.loads(f.read_text())
        seed_dir, strategy, method = f.parents[0], f.parents[2], f.parents[3]
        rows.append(
            {
                "method": method.name,
                "finetuning": strategy.name,
                "seed": int(seed_dir.name.removeprefix("seed")),
                "sa": round(d["sa"], 2),
                "ra_pgd_eps8": round(d["ra_pgd_eps8"], 2),
                "n_test": d["n_test"],
            }
        )
    return sorted(rows, key=lambda r: (r["method"], r["finetuning"], r["seed"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="the run's results/ directory")
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    rows = collect(args.results)
    if not rows:
        ap.error(f"no PGD evaluations under {args.results}/evaluate")
    tmp = args.out.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, args.out)
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
