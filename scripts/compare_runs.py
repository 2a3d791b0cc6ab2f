"""Whether two runs of the workflow computed the same things: every file of `results/` of run A
against run B, by content.

    python scripts/compare_runs.py RUN_A RUN_B [--json out.json]

- checkpoints (.pt): every tensor (model weights, optimiser state, ...) bit-identical
  (`torch.equal`, same dtype); other entries (settings, code hashes, fingerprints) are listed
  where they differ, as metadata;
- .npz: every array identical; .csv, .md: identical text;
- .json: identical values, keys naming run ids, times or file hashes listed as metadata;
- run_id.txt, .html and .png (run ids, time stamps, renderer) are not compared.

Prints one line per kind of file and every difference; exits 1 if any computed value differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

SKIP = {".html", ".png"}
META_KEYS = ("run_id", "time", "seconds", "hash", "fingerprint", "code", "settings", "env")


def _is_meta(key: str) -> bool:
    return any(m in key.lower() for m in META_KEYS)


def compare_tree(a, b, where: str, meta: list[str], values: list[str]) -> None:
    """Walk two loaded objects side by side; tensors and numbers must be equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{where}.{key}"
            if _is_meta(str(key)):
                if key not in a or key not in b or repr(a[key]) != repr(b[key]):
                    meta.append(sub)
                continue
            if key not in a or key not in b:
                values.append(f"{sub}: only in {'B' if key not in a else 'A'}")
                continue
            compare_tree(a[key], b[key], sub, meta, values)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            values.append(f"{where}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            compare_tree(x, y, f"{where}[{i}]", meta, values)
    elif isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            values.append(f"{where}: tensors differ")
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        values.append(f"{where}: {a!r} vs {b!r}")


def compare_file(a: Path, b: Path, name: str, meta: list[str], values: list[str]) -> None:
    if a.suffix == ".pt":
        load = dict(map_location="cpu", weights_only=False)
        compare_tree(torch.load(a, **load), torch.load(b, **load), name, meta, values)
    elif a.suffix == ".npz":
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            for key in sorted(set(x.files) | set(y.files)):
                if key not in x.files or key not in y.files:
                    values.append(f"{name}:{key}: only in one run")
                elif not np.array_equal(x[key], y[key]):
                    values.append(f"{name}:{key}: arrays differ")
    elif a.suffix == ".json":
        compare_tree(json.loads(a.read_text()), json.loads(b.read_text()), name, meta, values)
    elif a.read_bytes() != b.read_bytes():
        values.append(f"{name}: contents differ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--json", help="write the counts and differences here")
    args = parser.parse_args()
    files_a = {
        p.relative_to(args.run_a) for p in (args.run_a / "results").rglob("*") if p.is_file()
    }
    files_b = {
        p.relative_to(args.run_b) for p in (args.run_b / "results").rglob("*") if p.is_file()
    }
    meta: list[str] = []
    values = [f"{p}: only in A" for p in sorted(files_a - files_b)]
    values += [f"{p}: only in B" for p in sorted(files_b - files_a)]
    counts: dict[str, int] = {}
    for rel in sorted(files_a & files_b):
        if rel.suffix in SKIP or rel.name == "run_id.txt":
            continue
        counts[rel.suffix] = counts.get(rel.suffix, 0) + 1
        compare_file(args.run_a / rel, args.run_b / rel, str(rel), meta, values)
    for suffix, n in sorted(counts.items()):
        print(f"{n:5d} {suffix} files compared")
    print(f"{len(values)} computed values differ; {len(meta)} metadata entries differ")
    for line in values:
        print(f"  value: {line}")
    kinds = sorted({m.rsplit(".", 1)[-1] for m in meta})
    print(f"  metadata keys that differ: {', '.join(kinds) or 'none'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"counts": counts, "values": values, "metadata": meta}, indent=1)
        )
    return 1 if values else 0


if __name__ == "__main__":
    sys.exit(main())
