"""The paper's qualitative claims, tested on our tables and figures or on the published numbers.

Each claim (params.yaml `claims:`) is one of three kinds, with the sentence of the paper it
encodes:

- ``compare`` - ``a op b``: a is a table cell ``"<table>/<row>/<metric>"`` (row names may hold
  "/"; the table is before the first, the metric after the last), b a cell or a number.
  ``>``: a is larger (one-sided Welch t-test, significance level ``alpha``);
  ``>=``: a is not below b by more than ``margin`` percentage points (non-inferiority: the
  one-sided Welch test of a > b - margin); ``<``: a is below b (``b`` a number: a one-sample
  t-test against that bound, e.g. "RA ≈ 0" as RA < 5).
- ``majority`` - model a beats model b on most corruptions of a corruption figure: the seed means
  per corruption are compared and the count of wins gets a two-sided sign test.
- ``non_increasing`` - every model's curve of a strength figure never rises by more than
  ``tolerance`` points from one grid value to the next (Welch test of each rise).

Outcomes: ``holds`` (significant in the claimed direction), ``fails`` (significant in the
other), ``inconclusive`` (neither, or fewer than two seeds on a measured side); published numbers
are exact values without spread and are compared directly. ``not reported``: the paper shows the
claim only as a plot, so there is no published number to test.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from ascl.errors import ClaimError  # noqa: F401 - raised here, re-exported

HOLDS, FAILS, INCONCLUSIVE, NOT_REPORTED = "holds", "fails", "inconclusive", "not reported"
NOT_CONFIGURED = "not configured"  # the claim's table or figure is not built by this params
KINDS = ("compare", "majority", "non_increasing")
OPS = (">", ">=", "<")


@dataclass(frozen=True)
class Sample:
    """A cell: mean, sample std and number of seeds; n = 0 marks an exact (published) value."""

    mean: float
    std: float = 0.0
    n: int = 0

    @property
    def exact(self) -> bool:
        return self.n == 0

    @classmethod
    def of(cls, values: list[float]) -> Sample:
        return cls(
            statistics.fmean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0,
            len(values),
        )


@dataclass(frozen=True)
class Outcome:
    status: str
    a: str = ""  # the left side, as shown (mean ± std (n))
    b: str = ""
    effect: float | None = None  # a - b (compare), wins (majority), largest rise (curves)
    p: float | None = None
    note: str = ""


# ---------------------------------------------------------------------------------------------
# Tests


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    from scipy import stats

    return float(stats.t.sf(t, df))


def welch_greater(a: Sample, b: Sample, shift: float = 0.0) -> float:
    """One-sided p-value of mean(a) > mean(b) + shift (Welch's unequal-variance t-test).

    Exact samples (n = 0) are constants: they add no variance. With no variance on either side
    the comparison is certain (p = 0 or 1). A measured side needs n >= 2."""
    if a.n == 1 or b.n == 1:
        raise ValueError("Welch's test needs at least 2 values on a measured side")
    diff = a.mean - b.mean - shift
    va = a.std**2 / a.n if not a.exact else 0.0
    vb = b.std**2 / b.n if not b.exact else 0.0
    se2 = va + vb
    if se2 == 0.0:
        return 0.0 if diff > 0 else 1.0
    # Welch-Satterthwaite degrees of freedom (terms of exact sides vanish)
    den = (va**2 / (a.n - 1) if va else 0.0) + (vb**2 / (b.n - 1) if vb else 0.0)
    return _t_sf(diff / math.sqrt(se2), se2**2 / den)


def sign_test_greater(wins: int, n: int) -> float:
    """One-sided p-value of P(win) > 1/2 given `wins` of `n` (exact binomial)."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def _decide(p_claimed: float, p_against: float, alpha: float) -> str:
    if p_claimed < alpha:
        return HOLDS
    if p_against < alpha:
        return FAILS
    return INCONCLUSIVE


def compare(a: Sample, op: str, b: Sample, alpha: float = 0.05, margin: float = 0.0) -> Outcome:
    """Test `a op b` (see the module docstring); exact on both sides -> a direct comparison."""
    if op not in OPS:
        raise ClaimError(f"claim op must be one of {', '.join(OPS)}, got {op!r}")
    effect = a.mean - b.mean
    if a.exact and b.exact:
        ok = {">": effect > 0, ">=": effect >= -margin, "<": effect < 0}[op]
        return Outcome(HOLDS if ok else FAILS, _show(a), _show(b), effect)
    if any(s.n == 1 for s in (a, b)):
        return Outcome(INCONCLUSIVE, _show(a), _show(b), effect, None, "fewer than 2 seeds")
    if op == ">":
        p, p_against = welch_greater(a, b), welch_greater(b, a)
    elif op == ">=":
        p, p_against = welch_greater(a, b, -margin), welch_greater(b, a, margin)
    else:
        p, p_against = welch_greater(b, a), welch_greater(a, b)
    return Outcome(_decide(p, p_against, alpha), _show(a), _show(b), effect, p)


def majority(wins: int, n: int, alpha: float = 0.05, exact: bool = False) -> Outcome:
    """Model a beats b on most of n corruptions: sign test of `wins`; exact (published counts)
    -> holds iff wins > n / 2."""
    if exact:
        return Outcome(HOLDS if 2 * wins > n else FAILS, f"{wins}/{n}", "", float(wins))
    p, p_against = sign_test_greater(wins, n), sign_test_greater(n - wins, n)
    return Outcome(_decide(p, p_against, alpha), f"{wins}/{n}", "", float(wins), p)


def non_increasing(
    curves: dict[str, list[tuple[float, list[float]]]], tolerance: float, alpha: float = 0.05
) -> Outcome:
    """Every curve {label: [(x, per-seed values)]} (x ascending) never rises by more than
    `tolerance` from one point to the next: fails when some rise is significantly above it
    (Welch), holds when no mean rise exceeds it, inconclusive otherwise."""
    worst, worst_at, status, p_min = -math.inf, "", HOLDS, 1.0
    for label, points in curves.items():
        for (x0, v0), (x1, v1) in zip(points, points[1:], strict=False):
            s0, s1 = Sample.of(v0), Sample.of(v1)
            rise = s1.mean - s0.mean
            if rise > worst:
                worst, worst_at = rise, f"{label}: {x0:g} -> {x1:g}"
            if rise > tolerance:
                p = welch_greater(s1, s0, tolerance) if min(s0.n, s1.n) > 1 else 1.0
                p_min = min(p_min, p)
                status = FAILS if p < alpha else (status if status == FAILS else INCONCLUSIVE)
    return Outcome(
        status, "", "", worst, None if p_min == 1.0 else p_min, f"largest rise at {worst_at}"
    )


def _show(s: Sample) -> str:
    if s.exact:
        return f"{s.mean:.2f}"
    return f"{s.mean:.2f} ± {s.std:.2f} ({s.n})"


# ---------------------------------------------------------------------------------------------
# Reading cells


def parse_cell(ref: str) -> tuple[str, str, str]:
    """ "table5/AT + Sup CL/ra_pgd_eps8" -> ("table5", "AT + Sup CL", "ra_pgd_eps8")."""
    table, sep, rest = ref.partition("/")
    row, sep2, metric = rest.rpartition("/")
    if not (sep and sep2 and table and row and metric):
        raise ClaimError(f"claim cell {ref!r}: expected '<table>/<row>/<metric>'")
    return table, row, metric


def table_cells(csv_paths: list[str | Path]) -> dict[tuple[str, str, str], Sample]:
    """Measured cells of the tables' CSVs (`ascl table`): mean, sample std, number of seeds."""
    cells = {}
    for path in map(Path, csv_paths):
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                if "source" in r:  # the black-box matrix: cells "<target> <- <source>"
                    continue
                for key, value in r.items():
                    if key.endswith("_mean") and value:
                        metric = key[: -len("_mean")]
                        cells[(path.stem, r["row"], metric)] = Sample(
                            float(value), float(r[f"{metric}_std"] or 0.0), int(r["n_seeds"])
                        )
    return cells


def published_cells(published: dict) -> dict[tuple[str, str, str], Sample]:
    """Exact cells of the published tables (ascl/reference/published.yaml)."""
    cells = {}
    for table, rows in published.items():
        if not table.startswith("table") or table == "table2":
            continue
        for row, metrics in rows.items():
            for metric, value in (metrics or {}).items():
                if value is not None:
                    cells[(table, row, metric)] = Sample(float(value))
    return cells


def _cell(cells: dict, ref, where: str) -> Sample:
    if isinstance(ref, int | float):
        return Sample(float(ref))
    key = parse_cell(ref)
    if key not in cells:
        raise ClaimError(f"{where}: no value for cell {ref!r}")
    return cells[key]


# ---------------------------------------------------------------------------------------------
# Evaluating the claims


def evaluate_claims(
    claims: dict,
    cells: dict[tuple[str, str, str], Sample],
    figures: dict | None = None,
    published: dict | None = None,
) -> list[dict]:
    """One row per claim: id, kind, claim, source, quote and the Outcome's fields.

    claims: params.yaml `claims:` ({alpha, margin, tolerance, items: {id: spec}}).
    cells: measured (`table_cells`) or published (`published_cells`) cells.
    figures: measured figure data {fig: {label: [per-seed data]}} (corruptions: {corruption: %};
    strength: [(kind, value, ra)]); None with `published` evaluates on the published numbers.
    """
    alpha = claims.get("alpha", 0.05)
    rows = []
    for cid, spec in claims["items"].items():
        kind = spec.get("kind", "compare")
        where = f"claims.items.{cid}"
        if kind == "compare":
            refs = [r for r in (spec["a"], spec["b"]) if isinstance(r, str)]
            columns = {(t, m) for t, _, m in cells}  # (table, metric) pairs this run computed
            built = [(parse_cell(r)[0], parse_cell(r)[2]) in columns for r in refs]
            if published is None and not all(built):
                outcome = Outcome(
                    NOT_CONFIGURED, note="its table or metric is not in this configuration"
                )
            elif published is not None and any(parse_cell(r) not in cells for r in refs):
                outcome = Outcome(NOT_REPORTED, note="no published value")
            else:
                a, b = _cell(cells, spec["a"], where), _cell(cells, spec["b"], where)
                margin = spec.get("margin", claims.get("margin", 0))
                outcome = compare(a, spec["op"], b, alpha, margin)
        elif kind == "majority":
            outcome = _majority(spec, figures, published, alpha, where)
        elif kind == "non_increasing":
            outcome = _non_increasing(spec, figures, published, claims, alpha, where)
        else:
            raise ClaimError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        rows.append(
            {
                "id": cid,
                "kind": kind,
                "claim": spec["claim"],
                "source": spec["source"],
                "quote": spec["quote"],
                **outcome.__dict__,
            }
        )
    return rows


def _majority(spec, figures, published, alpha, where) -> Outcome:
    fig = spec["figure"]
    if figures is None:
        ref = (published or {}).get("figures", {}).get(fig)
        if not ref or "wins" not in ref:
            return Outcome(NOT_REPORTED, note="the paper gives this figure as a plot only")
        return majority(ref["wins"], ref["of"], alpha, exact=True)
    data = figures.get(fig)
    if data is None:
        return Outcome(NOT_CONFIGURED, note="its figure is not in this configuration")
    if spec["a"] not in data or spec["b"] not in data:
        raise ClaimError(f"{where}: figure {fig!r} lacks model {spec['a']!r} or {spec['b']!r}")
    mean_a, mean_b = _per_key_means(data[spec["a"]]), _per_key_means(data[spec["b"]])
    if set(mean_a) != set(mean_b):
        raise ClaimError(f"{where}: the two models of {fig} cover different corruptions")
    wins = sum(mean_a[c] > mean_b[c] for c in mean_a)
    outcome = majority(wins, len(mean_a), alpha)
    gain = statistics.fmean(mean_a[c] - mean_b[c] for c in mean_a)
    seeds = min(len(data[spec["a"]]), len(data[spec["b"]]))
    return Outcome(
        outcome.status,
        f"{wins}/{len(mean_a)} corruptions",
        "",
        float(wins),
        outcome.p,
        f"mean gain {gain:+.2f} points over {seeds} seed(s)",
    )


def _per_key_means(per_seed: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(d[k] for d in per_seed) for k in per_seed[0]}


def _non_increasing(spec, figures, published, claims, alpha, where) -> Outcome:
    fig = spec["figure"]
    if figures is None:
        return Outcome(NOT_REPORTED, note="the paper gives this figure as a plot only")
    data = figures.get(fig)
    if not data:
        return Outcome(NOT_CONFIGURED, note="its figure is not in this configuration")
    curves = {}
    for label, per_seed in data.items():
        for sweep in spec.get("sweeps", ["steps", "eps"]):
            xs = sorted({v for k, v, _ in per_seed[0] if k == sweep})
            curves[f"{label} ({sweep})"] = [
                (x, [next(ra for k, v, ra in rows if k == sweep and v == x) for rows in per_seed])
                for x in xs
            ]
    return non_increasing(curves, spec.get("tolerance", claims.get("tolerance", 1.0)), alpha)


# ---------------------------------------------------------------------------------------------
# Does every model learn?


def table_targets(csv_paths: list[str | Path]) -> dict[tuple[str, str], str]:
    """{(table, row): target role} of the tables' CSVs."""
    out = {}
    for path in map(Path, csv_paths):
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                if "source" not in r and r.get("target"):
                    out[(path.stem, r["row"])] = r["target"]
    return out


def learning_check(
    cells: dict[tuple[str, str, str], Sample],
    targets: dict[tuple[str, str], str],
    chance: dict[str, float],
    factor: float = 2.0,
) -> list[dict]:
    """Every measured row with a standard accuracy: does its mean SA reach `factor` x chance
    (chance in % per target role: 100 / number of classes)?"""
    rows = []
    for (table, row, metric), sample in sorted(cells.items()):
        if metric != "sa" or (table, row) not in targets:
            continue
        level = chance[targets[(table, row)]]
        rows.append(
            {
                "table": table,
                "row": row,
                "sa": sample,
                "chance": level,
                "learns": sample.mean >= factor * level,
            }
        )
    return rows


def learning_markdown(rows: list[dict], factor: float) -> list[str]:
    missing = [r for r in rows if not r["learns"]]
    lines = [
        "",
        f"## Does every model learn? (SA at least {factor:g} x chance)",
        "",
        f"{len(rows) - len(missing)} of {len(rows)} table rows do."
        + (" Rows below that level:" if missing else ""),
    ]
    if missing:
        lines += ["", "| table | row | SA | chance |", "|---|---|---|---|"]
        lines += [
            f"| {r['table']} | {r['row']} | {_show(r['sa'])} | {r['chance']:g} |" for r in missing
        ]
    return lines


# ---------------------------------------------------------------------------------------------
# Output


COLUMNS = ("id", "status", "claim", "a", "b", "effect", "p", "note", "source", "quote")
MARK = {
    HOLDS: "✅ holds",
    FAILS: "❌ fails",
    INCONCLUSIVE: "❔ inconclusive",
    NOT_REPORTED: "–",
    NOT_CONFIGURED: "not configured",
}


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(
            [
                "" if r[c] is None else (f"{r[c]:.4g}" if isinstance(r[c], float) else r[c])
                for c in COLUMNS
            ]
        )
    return buf.getvalue()


def to_markdown(
    rows: list[dict],
    published_rows: list[dict] | None,
    title: str,
    learning: list[str] | None = None,
) -> str:
    pub = {r["id"]: r["status"] for r in published_rows or []}
    counts = {s: sum(r["status"] == s for r in rows) for s in (HOLDS, FAILS, INCONCLUSIVE)}
    skipped = sum(r["status"] == NOT_CONFIGURED for r in rows)
    lines = [
        f"# {title}",
        "",
        f"{counts[HOLDS]} hold, {counts[FAILS]} fail, {counts[INCONCLUSIVE]} inconclusive "
        f"of {len(rows) - skipped} claims"
        + (f" ({skipped} more read tables or figures not built here)." if skipped else "."),
        "",
        "| claim | ours | a | b | a − b / wins | p | paper's numbers | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        effect = "" if r["effect"] is None else f"{r['effect']:+.2f}"
        p = "" if r["p"] is None else f"{r['p']:.3g}"
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(
            f"| {r['claim']} | {MARK[r['status']]}{note} | {r['a']} | {r['b']} | {effect} | {p} "
            f"| {MARK.get(pub.get(r['id'], ''), '')} | {r['source']} |"
        )
    lines += learning or []
    lines += ["", "Quotes:", ""]
    lines += [f"- **{r['claim']}** ({r['source']}): “{r['quote']}”" for r in rows]
    return "\n".join(lines) + "\n"


def to_html(markdown: str) -> str:
    """The Markdown table as a self-contained HTML page (for the Snakemake report)."""
    import html

    lines = markdown.splitlines()
    title = lines[0].lstrip("# ")
    table = [ln for ln in lines if ln.startswith("|") and not ln.startswith("|---")]
    rest = [ln for ln in lines[1:] if ln and not ln.startswith("|")]

    def row(cells: list[str], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in cells) + "</tr>"

    head, *body = [ln.strip("|").split("|") for ln in table]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px}</style>"
        f"</head><body><h3>{html.escape(title)}</h3><table>{row(head, 'th')}"
        + "".join(row(c, "td") for c in body)
        + "</table>"
        + "".join(f"<p>{html.escape(ln)}</p>" for ln in rest)
        + "</body></html>\n"
    )


def metrics(rows: list[dict]) -> dict:
    """{id: {"holds": 1|0, "fails": 1|0, "effect", "p"}} for `dvc metrics show`."""
    return {
        r["id"]: {
            "holds": int(r["status"] == HOLDS),
            "fails": int(r["status"] == FAILS),
            **({"effect": round(r["effect"], 4)} if r["effect"] is not None else {}),
            **({"p": round(r["p"], 6)} if r["p"] is not None else {}),
        }
        for r in rows
    }


# ---------------------------------------------------------------------------------------------
# Files


def read_figure_file(path: str | Path):
    """One seed's data of a figure model: corruptions.csv -> {corruption: mean % over
    severities}; strength.csv -> [(kind, value, ra)]."""
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if path.name.startswith("corruptions"):
        per: dict[str, list[float]] = {}
        for r in rows:
            per.setdefault(r["corruption"], []).append(float(r["accuracy"]))
        return {c: statistics.fmean(v) for c, v in per.items()}
    if path.name.startswith("strength"):
        return [(r["kind"], float(r["value"]), float(r["ra"])) for r in rows]
    raise ClaimError(f"{path}: not a corruptions or strength file")


def load_figure_inputs(items: list[str]) -> dict:
    """["fig1/ASCL=path", ...] (one item per seed) -> {fig: {label: [per-seed data]}}."""
    figures: dict = {}
    for item in items:
        key, sep, path = item.partition("=")
        fig, sep2, label = key.partition("/")
        if not (sep and sep2 and path):
            raise ClaimError(f"--figure {item!r}: expected '<fig>/<model label>=<file>'")
        figures.setdefault(fig, {}).setdefault(label, []).append(read_figure_file(path))
    return figures


def write_claims(
    claims: dict,
    table_csvs: list[str | Path],
    figure_items: list[str],
    *,
    out_md: str | Path,
    out_csv: str | Path,
    out_json: str | Path | None = None,
    out_html: str | Path | None = None,
    published: dict | None = None,
    title: str = "The paper's claims, measured",
) -> list[dict]:
    """Evaluate the claims on the tables and figure files (and on the published numbers, shown
    beside them) and write Markdown, CSV, JSON (`metrics`) and HTML, each atomically."""
    import json

    from ascl.checkpoint import atomic_write_text
    from ascl.report import load_published

    published = load_published() if published is None else published
    cells = table_cells(table_csvs)
    rows = evaluate_claims(claims, cells, load_figure_inputs(figure_items))
    paper = evaluate_claims(claims, published_cells(published), None, published)
    learning = None
    if "chance" in claims:
        factor = claims.get("learns_factor", 2.0)
        checked = learning_check(cells, table_targets(table_csvs), claims["chance"], factor)
        learning = learning_markdown(checked, factor)
    md = to_markdown(rows, paper, title, learning)
    atomic_write_text(out_csv, to_csv(rows))
    if out_json is not None:
        atomic_write_text(out_json, json.dumps(metrics(rows), indent=2) + "\n")
    if out_html is not None:
        atomic_write_text(out_html, to_html(md))
    atomic_write_text(out_md, md)
    return rows
