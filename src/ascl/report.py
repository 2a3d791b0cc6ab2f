"""Paper tables from metrics files, next to the published numbers.

A table spec (built by the workflow from params.yaml `paper:`) names its rows, each a
(method, finetuning strategy, target) triple or `published_only`, the metrics to show and the
seeds. Every value is the mean ± sample std over seeds, shown next to the published value
(`ascl/reference/published.yaml`) and the difference ours − published; the CSV also keeps the
per-seed values (`<metric>_seeds`, "v0;v1;..." in the order of the `seeds` column), which the
claims report (`ascl.claims`) tests. Rows are never dropped:
a row the pipeline does not train is marked "published only"; with `partial=True` a row whose
metrics files do not exist yet is marked "not computed" (otherwise that is an error naming the
file). Table 2 is a matrix (`kind: matrix`): rows are target models, columns source models of
transferred PGD examples, the diagonal excluded.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
from importlib import resources
from pathlib import Path

import yaml

from ascl.checkpoint import atomic_write_text

PUBLISHED_PATH = Path(str(resources.files("ascl") / "reference" / "published.yaml"))
# Evaluation (metrics file stem) that produces each metric; every other metric comes from "pgd".
METRIC_EVALUATION = {"ra_aa": "autoattack"}
MATRIX_EVALUATION = "blackbox"
OK, PUBLISHED_ONLY, NOT_COMPUTED = "ok", "published only", "not computed"


def evaluation_of(metric: str) -> str:
    """Stem of the metrics file holding `metric` ("pgd", "autoattack", ...)."""
    return METRIC_EVALUATION.get(metric, "pgd")


def model_id(row: dict) -> str:
    """Identifier of a finetuned model: "method/strategy" (used as a black-box source name)."""
    return f"{row['method']}/{row['strategy']}"


def metrics_path(results: Path, row: dict, seed: int, evaluation: str = "pgd") -> Path:
    target = row.get("target", "source")
    return (
        Path(results)
        / "evaluate"
        / row["method"]
        / row["strategy"]
        / target
        / f"seed{seed}"
        / f"{evaluation}.json"
    )


def required_files(spec: dict, results: str | Path) -> list[Path]:
    """Every metrics file a table spec reads (sorted, unique)."""
    files = set()
    for _, row in _items(spec["rows"] if spec.get("kind", "rows") == "rows" else spec["models"]):
        if row.get("published_only"):
            continue
        for seed in spec["seeds"]:
            if spec.get("kind", "rows") == "matrix":
                files.add(metrics_path(Path(results), row, seed, MATRIX_EVALUATION))
            else:
                for metric in spec["metrics"]:
                    files.add(metrics_path(Path(results), row, seed, evaluation_of(metric)))
    return sorted(files)


def read_metrics(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_published(path: str | Path | None = None) -> dict:
    """{table: {row: {metric: value | None}}} (table 2: {target: {source: value}})."""
    path = Path(path) if path is not None else PUBLISHED_PATH
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of tables")
    return data


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _items(rows) -> list:
    return list(rows.items()) if isinstance(rows, dict) else [tuple(r) for r in rows]


def _cell(values: list[float] | None, published: float | None) -> dict:
    """{"mean", "std", "published", "diff", "values"}; absent values are None."""
    mean = std = diff = None
    if values is not None:
        mean, std = mean_std(values)
        if published is not None:
            diff = mean - published
    return {"mean": mean, "std": std, "published": published, "diff": diff, "values": values}


def _seed_metrics(
    results: Path, row: dict, seeds: list[int], evaluation: str, partial: bool
) -> list[dict] | None:
    paths = [metrics_path(results, row, s, evaluation) for s in seeds]
    if partial and not all(p.is_file() for p in paths):
        return None
    return [read_metrics(p) for p in paths]


def build_table(
    spec: dict, results: str | Path, published: dict | None = None, partial: bool = False
) -> list[dict]:
    """One dict per row: row, method, strategy, target, n_seeds, status, <metric>: cell."""
    if spec.get("kind", "rows") == "matrix":
        return build_matrix(spec, results, published, partial)
    results = Path(results)
    paper = (published if published is not None else {}).get(spec["table"], {})
    rows = []
    for name, row in _items(spec["rows"]):
        ref = paper.get(name, {}) or {}
        out = {
            "row": name,
            "method": row.get("method", ""),
            "strategy": row.get("strategy", ""),
            "target": row.get("target", "source") if not row.get("published_only") else "",
            "n_seeds": 0,
            "status": OK,
        }
        if row.get("published_only"):
            out["status"] = PUBLISHED_ONLY
            for metric in spec["metrics"]:
                out[metric] = _cell(None, ref.get(metric))
            rows.append(out)
            continue
        for metric in spec["metrics"]:
            per_seed = _seed_metrics(results, row, spec["seeds"], evaluation_of(metric), partial)
            if per_seed is None:
                out["status"] = NOT_COMPUTED
                out[metric] = _cell(None, ref.get(metric))
                continue
            missing = [s for s, m in zip(spec["seeds"], per_seed, strict=True) if metric not in m]
            if missing:
                raise KeyError(f"metric {metric!r} missing for row {name!r} (seeds {missing})")
            out[metric] = _cell([float(m[metric]) for m in per_seed], ref.get(metric))
            out["n_seeds"] = len(per_seed)
        rows.append(out)
    return rows


def build_matrix(
    spec: dict, results: str | Path, published: dict | None = None, partial: bool = False
) -> list[dict]:
    """Table 2: one dict per (target, source) pair with target ≠ source; cell under "ra"."""
    results = Path(results)
    paper = (published if published is not None else {}).get(spec["table"], {})
    models = _items(spec["models"])
    rows = []
    for target_name, target in models:
        per_seed = _seed_metrics(results, target, spec["seeds"], MATRIX_EVALUATION, partial)
        for source_name, source in models:
            if source_name == target_name:
                continue
            ref = (paper.get(target_name) or {}).get(source_name)
            out = {
                "row": target_name,
                "source": source_name,
                "method": target["method"],
                "strategy": target["strategy"],
                "target": "source",
                "n_seeds": 0,
                "status": OK,
            }
            if per_seed is None:
                out["status"] = NOT_COMPUTED
                out["ra"] = _cell(None, ref)
            else:
                key = model_id(source)
                values = []
                for seed, m in zip(spec["seeds"], per_seed, strict=True):
                    ra = m.get("ra", {})
                    if key not in ra:
                        raise KeyError(
                            f"black-box result of {target_name!r} (seed {seed}) has no source "
                            f"{key!r}"
                        )
                    values.append(float(ra[key]))
                out["ra"] = _cell(values, ref)
                out["n_seeds"] = len(values)
            rows.append(out)
    return rows


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _ours(cell: dict, n_seeds: int) -> str:
    if cell["mean"] is None:
        return "—"
    return f"{cell['mean']:.2f} ± {cell['std']:.2f}" if n_seeds > 1 else f"{cell['mean']:.2f}"


def to_markdown(spec: dict, rows: list[dict]) -> str:
    lines = [f"## {spec['title']}", ""]
    if spec.get("kind", "rows") == "matrix":
        lines += _matrix_markdown(spec, rows)
    else:
        header = ["Row", "Method", "Finetuning", "Target"]
        for m in spec["metrics"]:
            header += [f"{m} (ours)", f"{m} (paper)", "Δ"]
        header += ["Seeds", "Status"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            cells = [r["row"], r["method"] or "—", r["strategy"] or "—", r["target"] or "—"]
            for m in spec["metrics"]:
                c = r[m]
                cells += [_ours(c, r["n_seeds"]), _fmt(c["published"]), _fmt(c["diff"], True)]
            cells += [str(r["n_seeds"]), r["status"]]
            lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(str(s) for s in spec["seeds"])
    lines += [
        "",
        f"Ours: mean ± sample std over seeds [{seeds}]; paper: published value; "
        "Δ = ours − paper (percentage points).",
    ]
    return "\n".join(lines) + "\n"


def _matrix_markdown(spec: dict, rows: list[dict]) -> list[str]:
    names = [name for name, _ in _items(spec["models"])]
    by_pair = {(r["row"], r["source"]): r for r in rows}
    header = ["Target \\ Source", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for target in names:
        cells = [target]
        for source in names:
            r = by_pair.get((target, source))
            if r is None:
                cells.append("×")
                continue
            c = r["ra"]
            paper, diff = _fmt(c["published"]), _fmt(c["diff"], True)
            cells.append(f"{_ours(c, r['n_seeds'])} (paper {paper}, Δ {diff})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Robust accuracy of the target (row) on PGD examples crafted on the source "
        "(column); × = the model itself, excluded.",
    ]
    return lines


def to_csv(spec: dict, rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    matrix = spec.get("kind", "rows") == "matrix"
    metrics = ["ra"] if matrix else spec["metrics"]
    parts = ("mean", "std", "published", "diff", "seeds")
    cols = [f"{m}_{k}" for m in metrics for k in parts]
    key_cols = ["row", "source"] if matrix else ["row"]
    header = [*key_cols, "method", "strategy", "target", *cols, "seeds", "n_seeds", "status"]
    writer.writerow(header)
    seeds = ";".join(str(s) for s in spec["seeds"])
    for r in rows:
        values = []
        for m in metrics:
            cell = r[m]
            values += ["" if cell[k] is None else f"{cell[k]:.4f}" for k in parts[:-1]]
            per_seed = cell.get("values")
            values.append("" if per_seed is None else ";".join(f"{v:.4f}" for v in per_seed))
        keys = [r["row"], r["source"]] if matrix else [r["row"]]
        measured = seeds if r["n_seeds"] else ""
        writer.writerow(
            [*keys, r["method"], r["strategy"], r["target"], *values, measured, r["n_seeds"]]
            + [r["status"]]
        )
    return buf.getvalue()


def to_html(spec: dict, rows: list[dict]) -> str:
    """A self-contained HTML page of the table (for the Snakemake report)."""
    md = to_markdown(spec, rows).splitlines()
    title, body, notes = md[0][3:], [], []
    for line in md[1:]:
        if line.startswith("|") and not line.startswith("|---"):
            body.append([c.strip() for c in line.strip("|").split("|")])
        elif line.strip():
            notes.append(line)
    head, *cells = body

    def row(items: list[str], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in items) + "</tr>"

    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>"
        f"<h3>{html.escape(title)}</h3><table>{row(head, 'th')}"
        + "".join(row(c, "td") for c in cells)
        + "</table>"
        + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
        + "</body></html>\n"
    )


def write_table(
    spec: dict,
    results: str | Path,
    out_md: str | Path,
    out_csv: str | Path,
    published: dict | None = None,
    partial: bool = False,
    out_html: str | Path | None = None,
) -> list[dict]:
    """Build one table and write its Markdown, CSV and HTML (atomically). Returns the rows."""
    published = load_published() if published is None else published
    rows = build_table(spec, results, published, partial)
    atomic_write_text(out_csv, to_csv(spec, rows))
    if out_html is not None:
        atomic_write_text(out_html, to_html(spec, rows))
    atomic_write_text(out_md, to_markdown(spec, rows))
    return rows


def summarize(csv_paths: list[str | Path]) -> dict:
    """{table: {row: {metric: mean}}} from table CSVs (the DVC metrics file).

    Rows without our value (published only, not computed) are left out; matrix rows are keyed
    "target <- source".
    """
    summary: dict = {}
    for path in csv_paths:
        path = Path(path)
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        table: dict = {}
        for r in rows:
            values = {
                k[: -len("_mean")]: float(v) for k, v in r.items() if k.endswith("_mean") and v
            }
            if not values:
                continue
            key = f"{r['row']} <- {r['source']}" if "source" in r else r["row"]
            table[key] = values
        summary[path.stem] = table
    return summary
