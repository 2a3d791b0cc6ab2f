"""Paper tables from metrics files: one row per table row of params.paper, mean ± std over seeds."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from ascl.checkpoint import atomic_write_text


def metrics_path(results: Path, row: dict, seed: int, evaluation: str = "pgd") -> Path:
    target = row.get("target", "source")
    return (
        results
        / "evaluate"
        / row["method"]
        / row["strategy"]
        / target
        / f"seed{seed}"
        / f"{evaluation}.json"
    )


def read_metrics(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def build_table(spec: dict, results: str | Path) -> list[dict]:
    """Rows {"row", "method", "strategy", "target", "n_seeds", <metric>: (mean, std)}."""
    results = Path(results)
    rows = []
    items = spec["rows"].items() if isinstance(spec["rows"], dict) else spec["rows"]
    for name, row in items:
        per_seed = [read_metrics(metrics_path(results, row, s)) for s in spec["seeds"]]
        out = {
            "row": name,
            "method": row["method"],
            "strategy": row["strategy"],
            "target": row.get("target", "source"),
            "n_seeds": len(per_seed),
        }
        for metric in spec["metrics"]:
            missing = [s for s, m in zip(spec["seeds"], per_seed, strict=True) if metric not in m]
            if missing:
                raise KeyError(f"metric {metric!r} missing for row {name!r} (seeds {missing})")
            out[metric] = mean_std([float(m[metric]) for m in per_seed])
        rows.append(out)
    return rows


def to_markdown(spec: dict, rows: list[dict]) -> str:
    header = ["Row", "Method", "Finetuning", "Target", *spec["metrics"], "Seeds"]
    lines = [
        f"## {spec['title']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        cells = [r["row"], r["method"], r["strategy"], r["target"]]
        cells += [f"{r[m][0]:.2f} ± {r[m][1]:.2f}" for m in spec["metrics"]]
        cells.append(str(r["n_seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(spec: dict, rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    metric_cols = [c for m in spec["metrics"] for c in (f"{m}_mean", f"{m}_std")]
    writer.writerow(["row", "method", "strategy", "target", *metric_cols, "n_seeds"])
    for r in rows:
        values = [f"{v:.4f}" for m in spec["metrics"] for v in r[m]]
        writer.writerow([r["row"], r["method"], r["strategy"], r["target"], *values, r["n_seeds"]])
    return buf.getvalue()


def write_table(spec: dict, results: str | Path, out_md: str | Path, out_csv: str | Path) -> None:
    rows = build_table(spec, results)
    atomic_write_text(out_csv, to_csv(spec, rows))
    atomic_write_text(out_md, to_markdown(spec, rows))


def summarize(csv_paths: list[str | Path]) -> dict:
    """{table: {row: {metric: mean}}} from table CSVs (the DVC metrics file)."""
    summary: dict = {}
    for path in csv_paths:
        path = Path(path)
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        summary[path.stem] = {
            r["row"]: {k[: -len("_mean")]: float(v) for k, v in r.items() if k.endswith("_mean")}
            for r in rows
        }
    return summary
