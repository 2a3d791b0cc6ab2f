"""The paper's qualitative claims, tested on our tables and figures or on the published numbers.

Each claim (params.yaml `claims:`) is one of these kinds, with the sentence of the paper it
encodes (cells are ``"<table>/<row>/<metric>"``; row names may hold "/": the table is before
the first, the metric after the last; Table 2's rows are ``"<target> <- <source>"``, metric
``ra``):

- ``compare`` - ``a op b`` (op ``>`` or ``<``): a is a cell, b a cell (Welch's unequal-variance
  t-test) or a number (one-sample t-test of a against that bound, e.g. "RA ≈ 0" as RA < 5).
- ``diff_of_diffs`` - ``(a[0] - a[1]) op (b[0] - b[1])``, four cells (e.g. "the gap of ACL is
  larger than that of ASCL"): a Welch-type test, effect ``(a1 - a2) - (b1 - b2)``, variance the
  sum of var/n of the four samples, Welch-Satterthwaite degrees of freedom.
- ``figure_gain`` - model a's mean gain over model b across a figure's points (corruptions; for
  a strength figure every attacked point, steps > 0 or eps > 0) is ``op bound`` (default > 0).
  The seed is the unit: one gain per seed (same seed on both sides), a one-sample t-test over
  seeds. The count of points won by the seed means is shown, descriptive only.
- ``figure_wins`` - model a wins on at least ``at_least: [k, n]`` (k of n) of the figure's
  points: per seed, the fraction of points won (ties count half) is tested against
  ``(k - 1/2) / n`` (one-sample t-test over seeds).
- ``non_increasing`` - the strength figure's curves never rise (descriptive: the largest rise is
  shown, no verdict).

Verdicts. A measured claim is evaluated only where every row it reads learned in every seed
(SA >= ``learns_factor`` x chance of the row's target role; figure models: their own clean
point, or for corruption figures their mean corrupted accuracy) and, for a robust-accuracy
cell of an adversarially trained row (finetuning not in ``standard_strategies``), where that
row's ``robust_metric`` is above every ``attack_free`` row's in every seed; otherwise it is
``not evaluable``, naming the rows and seeds. Each evaluable claim has the one-sided p of its
claimed direction and of the opposite one; Holm's step-down correction runs over one family
holding both p's of every decided claim (so the chance of any wrong verdict, holds or fails,
is at most ``alpha``). ``holds``: the adjusted claimed-direction p is below alpha; ``fails``:
the adjusted opposite-direction p is; else ``inconclusive``, with the way the effect leans.
Published numbers are exact (n = 0): always evaluable, compared directly. ``not reported``: the
paper gives the claim's figure as a plot only. ``descriptive``: shown, not counted.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ascl.errors import ClaimError  # noqa: F401 - raised here, re-exported

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
NOT_EVALUABLE, DESCRIPTIVE = "not evaluable", "descriptive"
NOT_REPORTED = "not reported"  # published: the paper shows this figure as a plot only
NOT_CONFIGURED = "not configured"  # the claim's table or figure is not built by this params
KINDS = ("compare", "diff_of_diffs", "figure_gain", "figure_wins", "non_increasing")
OPS = (">", "<")
COUNTED = (HOLDS, FAILS, INCONCLUSIVE, NOT_EVALUABLE)


@dataclass(frozen=True)
class Sample:
    """A cell: mean, sample std, number of seeds and the per-seed values with their seeds;
    n = 0 marks an exact (published) value."""

    mean: float
    std: float = 0.0
    n: int = 0
    values: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()

    @property
    def exact(self) -> bool:
        return self.n == 0

    @classmethod
    def of(cls, values: list[float], seeds: list[int] | None = None) -> Sample:
        if not values:
            raise ValueError("a sample needs at least one value")
        return cls(
            statistics.fmean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0,
            len(values),
            tuple(values),
            tuple(seeds if seeds is not None else range(len(values))),
        )


@dataclass(frozen=True)
class TTest:
    """Signed effect with its 95 % CI and the one-sided p-values of effect > 0 and < 0."""

    effect: float
    ci_low: float
    ci_high: float
    p_greater: float
    p_less: float
    df: float | None = None


# ---------------------------------------------------------------------------------------------
# Tests


def t_test(effect: float, samples: list[Sample], level: float = 0.95) -> TTest:
    """t-test of a linear contrast with coefficients ±1 of independent samples: its variance
    is the sum of var/n (exact samples add none), Welch-Satterthwaite degrees of freedom. With
    no variance at all the sign of the effect is certain (p 0 or 1; 1 both ways at 0)."""
    from scipy import stats

    measured = [s for s in samples if not s.exact]
    if any(s.n < 2 for s in measured):
        raise ValueError("a t-test needs at least 2 values on a measured side")
    parts = [s.std**2 / s.n for s in measured]
    se2 = sum(parts)
    if se2 == 0.0:
        return TTest(effect, effect, effect, float(effect <= 0), float(effect >= 0))
    df = se2**2 / sum(v**2 / (s.n - 1) for v, s in zip(parts, measured, strict=True) if v)
    se = math.sqrt(se2)
    t = effect / se
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p_greater, p_less = float(stats.t.sf(t, df)), float(stats.t.cdf(t, df))
    return TTest(effect, effect - half, effect + half, p_greater, p_less, df)


def welch(a: Sample, b: Sample) -> TTest:
    """Welch's unequal-variance t-test of mean(a) - mean(b); b exact: a one-sample t-test."""
    return t_test(a.mean - b.mean, [a, b])


def diff_of_diffs(a1: Sample, a2: Sample, b1: Sample, b2: Sample) -> TTest:
    """Welch-type test of (a1 - a2) - (b1 - b2) on four independent samples."""
    return t_test((a1.mean - a2.mean) - (b1.mean - b2.mean), [a1, a2, b1, b2])


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (in the input's order)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------------------------------------
# Reading cells


def parse_cell(ref: str) -> tuple[str, str, str]:
    """ "table5/AT + Sup CL/ra_pgd_eps8" -> ("table5", "AT + Sup CL", "ra_pgd_eps8")."""
    table, sep, rest = ref.partition("/")
    row, sep2, metric = rest.rpartition("/")
    if not (sep and sep2 and table and row and metric):
        raise ClaimError(f"claim cell {ref!r}: expected '<table>/<row>/<metric>'")
    return table, row, metric


def _per_seed(path: Path, r: dict, metric: str) -> Sample:
    if f"{metric}_seeds" not in r or "seeds" not in r:
        raise ClaimError(f"{path}: no per-seed values ({metric}_seeds, seeds); rebuild the table")
    values = [float(v) for v in r[f"{metric}_seeds"].split(";")]
    seeds = [int(s) for s in r["seeds"].split(";")]
    if len(values) != len(seeds):
        raise ClaimError(f"{path}: row {r['row']!r}: {metric}_seeds and seeds differ in length")
    return Sample.of(values, seeds)


def table_cells(csv_paths: list[str | Path]) -> dict[tuple[str, str, str], Sample]:
    """Measured cells of the tables' CSVs (`ascl table`), with their per-seed values; Table 2's
    cells are keyed "<target> <- <source>"."""
    cells = {}
    for path in map(Path, csv_paths):
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                row = f"{r['row']} <- {r['source']}" if "source" in r else r["row"]
                for key, value in r.items():
                    if key.endswith("_mean") and value:
                        metric = key[: -len("_mean")]
                        cells[(path.stem, row, metric)] = _per_seed(path, r, metric)
    return cells


def table_rows(csv_paths: list[str | Path]) -> dict[tuple[str, str], dict[str, str]]:
    """{(table, row): {"method", "strategy", "target"}} of the tables' measured rows (Table 2:
    its models, by target row)."""
    out = {}
    for path in map(Path, csv_paths):
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                if r.get("method"):
                    out[(path.stem, r["row"])] = {k: r[k] for k in ("method", "strategy", "target")}
    return out


def published_cells(published: dict) -> dict[tuple[str, str, str], Sample]:
    """Exact cells of the published tables (ascl/reference/published.yaml)."""
    cells = {}
    for table, rows in published.items():
        if not table.startswith("table"):
            continue
        for row, metrics in rows.items():
            for key, value in (metrics or {}).items():
                if value is None:
                    continue
                if table == "table2":  # {target: {source: ra}}
                    cells[(table, f"{row} <- {key}", "ra")] = Sample(float(value))
                else:
                    cells[(table, row, key)] = Sample(float(value))
    return cells


def _cell(cells: dict, ref, where: str) -> Sample:
    if isinstance(ref, int | float):
        return Sample(float(ref))
    key = parse_cell(ref)
    if key not in cells:
        raise ClaimError(f"{where}: no value for cell {ref!r}")
    return cells[key]


# ---------------------------------------------------------------------------------------------
# Does every model learn? Are the adversarially trained rows robust?


@dataclass(frozen=True)
class Check:
    """One row's per-seed check: its values, the per-seed level to reach and the seeds that
    do not reach it."""

    table: str
    row: str
    values: Sample
    level: str
    failing: tuple[int, ...]


def _models(cells: dict, info: dict, metric: str) -> dict[tuple, Sample]:
    """{(method, strategy, target): Sample} of `metric` over every table."""
    out = {}
    for (table, row, m), s in cells.items():
        if m == metric and (table, row) in info:
            out[tuple(info[(table, row)].values())] = s
    return out


def _row_value(cells: dict, info: dict, table: str, row: str, metric: str) -> Sample | None:
    """The row's own cell, else the same model's cell in another table."""
    if (table, row, metric) in cells:
        return cells[(table, row, metric)]
    if (table, row) not in info:
        return None
    return _models(cells, info, metric).get(tuple(info[(table, row)].values()))


def learning_check(
    cells: dict[tuple[str, str, str], Sample],
    info: dict[tuple[str, str], dict[str, str]],
    chance: dict[str, float],
    factor: float = 2.0,
) -> dict[tuple[str, str], Check | None]:
    """Every measured row: do its per-seed SA values all reach `factor` x chance of its target
    role (chance in % per role: 100 / classes)? None: no SA of that model is measured."""
    out: dict[tuple[str, str], Check | None] = {}
    for (table, row), meta in sorted(info.items()):
        sa = _row_value(cells, info, table, row, "sa")
        if sa is None:
            out[(table, row)] = None
            continue
        level = factor * chance[meta["target"]]
        failing = tuple(s for s, v in zip(sa.seeds, sa.values, strict=True) if v < level)
        out[(table, row)] = Check(table, row, sa, f"{level:g}", failing)
    return out


def robustness_check(
    cells: dict[tuple[str, str, str], Sample],
    info: dict[tuple[str, str], dict[str, str]],
    attack_free: list[str],
    standard: list[str],
    metric: str = "ra_pgd_eps8",
) -> dict[tuple[str, str], Check]:
    """Every adversarially trained row (finetuning not standard, not an attack-free row): is its
    `metric` above every attack-free row's in every seed (same seed; a seed they lack: their
    largest value)? Empty when no attack-free row is measured."""
    free = [(t, r) for t, _, r in (ref.partition("/") for ref in attack_free)]
    refs = [cells[(t, r, metric)] for t, r in free if (t, r, metric) in cells]
    if not refs:
        return {}
    top = max(v for s in refs for v in s.values)
    by_seed: dict[int, float] = {}
    for s in refs:
        for seed, v in zip(s.seeds, s.values, strict=True):
            by_seed[seed] = max(by_seed.get(seed, -math.inf), v)
    out = {}
    for (table, row), meta in sorted(info.items()):
        if meta["strategy"] in standard or (table, row) in free:
            continue
        ra = _row_value(cells, info, table, row, metric)
        if ra is None:
            continue
        failing = tuple(
            s for s, v in zip(ra.seeds, ra.values, strict=True) if v <= by_seed.get(s, top)
        )
        level = " / ".join(f"{by_seed[s]:.2f}" if s in by_seed else f"{top:.2f}" for s in ra.seeds)
        out[(table, row)] = Check(table, row, ra, level, failing)
    return out


def _seeds(seeds) -> str:
    return ", ".join(str(s) for s in seeds)


def _rows_read(ref) -> list[tuple[str, str]]:
    """(table, row) pairs a cell reads: Table 2's "<target> <- <source>" reads both models."""
    if not isinstance(ref, str):
        return []
    table, row, _ = parse_cell(ref)
    target, sep, source = row.partition(" <- ")
    return [(table, target), (table, source)] if sep else [(table, row)]


def _robust_rows(ref) -> list[tuple[str, str]]:
    """(table, row) whose robustness a cell measures: an RA cell's row (Table 2: the target)."""
    if not isinstance(ref, str) or not parse_cell(ref)[2].startswith("ra"):
        return []
    return _rows_read(ref)[:1]


@dataclass
class Checks:
    """The learning and robustness checks of a measured run (None: not configured)."""

    learning: dict[tuple[str, str], Check | None] | None = None
    robustness: dict[tuple[str, str], Check] = field(default_factory=dict)
    figure_learning: dict[tuple[str, str], Check] = field(default_factory=dict)

    def problems(self, refs: list) -> list[str]:
        out = []
        for t, r in dict.fromkeys(p for ref in refs for p in _rows_read(ref)):
            if self.learning is None:
                break
            check = self.learning.get((t, r))
            if check is None:
                out.append(f"{t}/{r} has no SA to check that it learned")
            elif check.failing:
                out.append(f"{t}/{r} did not learn in seeds {_seeds(check.failing)}")
        for t, r in dict.fromkeys(p for ref in refs for p in _robust_rows(ref)):
            check = self.robustness.get((t, r))
            if check is not None and check.failing:
                out.append(
                    f"{t}/{r}'s RA is not above the attack-free rows' in seeds "
                    f"{_seeds(check.failing)}"
                )
        return out


# ---------------------------------------------------------------------------------------------
# Evaluating the claims


@dataclass
class _Result:
    status: str
    a: str = ""
    b: str = ""
    test: TTest | None = None
    effect: float | None = None  # exact (published) comparisons and descriptive values
    note: str = ""


def _show(s: Sample) -> str:
    if s.exact:
        return f"{s.mean:.2f}"
    return f"{s.mean:.2f} ± {s.std:.2f} ({s.n})"


def _exact_or_test(effect: float, samples: list[Sample], a: str, b: str) -> _Result:
    if all(s.exact for s in samples):
        return _Result("exact", a, b, effect=effect)
    short = [s for s in samples if not s.exact and s.n < 2]
    if short:
        return _Result(NOT_EVALUABLE, a, b, note="fewer than 2 seeds on a measured side")
    return _Result("test", a, b, test=t_test(effect, samples))


def _configured(refs: list, cells: dict) -> bool:
    columns = {(t, m) for t, _, m in cells}  # (table, metric) pairs this run computed
    return all((parse_cell(r)[0], parse_cell(r)[2]) in columns for r in refs)


def _table_claim(spec: dict, kind: str, cells: dict, published: dict | None, checks, where):
    refs = [spec["a"], spec["b"]] if kind == "compare" else [*spec["a"], *spec["b"]]
    named = [r for r in refs if isinstance(r, str)]
    if published is None and not _configured(named, cells):
        return _Result(NOT_CONFIGURED, note="its table or metric is not in this configuration")
    if published is not None and any(parse_cell(r) not in cells for r in named):
        return _Result(NOT_REPORTED, note="no published value")
    samples = [_cell(cells, r, where) for r in refs]
    if kind == "compare":
        effect = samples[0].mean - samples[1].mean
        shown = [_show(s) for s in samples]
    else:
        effect = (samples[0].mean - samples[1].mean) - (samples[2].mean - samples[3].mean)
        shown = [
            " − ".join(_show(s) for s in samples[:2]),
            " − ".join(_show(s) for s in samples[2:]),
        ]
    if checks is not None and (problems := checks.problems(named)):
        return _Result(NOT_EVALUABLE, *shown, note="; ".join(problems))
    return _exact_or_test(effect, samples, *shown)


def evaluate_claims(
    claims: dict,
    cells: dict[tuple[str, str, str], Sample],
    figures: dict | None = None,
    published: dict | None = None,
    checks: Checks | None = None,
) -> list[dict]:
    """One row per claim: id, kind, claim, op, source, quote, status, a, b, effect, ci_low,
    ci_high, the one-sided p's (raw and Holm-adjusted), the deciding p, direction, note.

    claims: params.yaml `claims:` ({alpha, items: {id: spec}, ...}).
    cells: measured (`table_cells`) or published (`published_cells`) cells.
    figures: measured figure data {fig: {label: {seed: data}}} (`load_figure_inputs`); None
    with `published` evaluates on the published numbers.
    checks: the learning and robustness checks of a measured run (None: none applied).
    """
    alpha = claims.get("alpha", 0.05)
    results = []
    for cid, spec in claims["items"].items():
        kind = spec.get("kind", "compare")
        where = f"claims.items.{cid}"
        op = spec.get("op", ">")
        if op not in OPS:
            raise ClaimError(f"{where}: op must be one of {', '.join(OPS)}, got {op!r}")
        if kind in ("compare", "diff_of_diffs"):
            if kind == "diff_of_diffs" and not (len(spec["a"]) == len(spec["b"]) == 2):
                raise ClaimError(f"{where}: diff_of_diffs needs a and b of two cells each")
            result = _table_claim(spec, kind, cells, published, checks, where)
        elif kind in ("figure_gain", "figure_wins"):
            result = _figure_claim(spec, kind, figures, published, checks, where)
        elif kind == "non_increasing":
            result = _non_increasing(spec, figures, published)
        else:
            raise ClaimError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        results.append((cid, spec, kind, op, result))
    return _decide(results, alpha)


def _decide(results: list, alpha: float) -> list[dict]:
    """Holm over one family: the claimed- and the opposite-direction p of every tested claim."""
    family = []
    for _, _, _, op, r in results:
        if r.test is not None:
            g, less = r.test.p_greater, r.test.p_less
            family += [g, less] if op == ">" else [less, g]
    adjusted = iter(holm(family))
    rows = []
    for cid, spec, kind, op, r in results:
        sign = 1 if op == ">" else -1
        row = {
            "id": cid,
            "kind": kind,
            "claim": spec["claim"],
            "op": op,
            "source": spec["source"],
            "quote": spec["quote"],
            "status": r.status,
            "a": r.a,
            "b": r.b,
            "effect": r.effect,
            "ci_low": None,
            "ci_high": None,
            "p_claimed": None,
            "p_opposite": None,
            "p_claimed_adj": None,
            "p_opposite_adj": None,
            "p_raw": None,
            "p_adjusted": None,
            "direction": "",
            "note": r.note,
        }
        effect = r.test.effect if r.test is not None else r.effect
        if effect is not None and r.status != NOT_EVALUABLE:
            row["direction"] = "for" if sign * effect > 0 else "against" if effect else "none"
        if r.status == "exact":
            row["status"] = HOLDS if row["direction"] == "for" else FAILS
        if r.test is not None:
            t = r.test
            p_c, p_o = (t.p_greater, t.p_less) if op == ">" else (t.p_less, t.p_greater)
            adj_c, adj_o = next(adjusted), next(adjusted)
            status = HOLDS if adj_c < alpha else FAILS if adj_o < alpha else INCONCLUSIVE
            against = status == FAILS or (status == INCONCLUSIVE and row["direction"] == "against")
            deciding = (p_o, adj_o) if against else (p_c, adj_c)
            row |= {
                "status": status,
                "effect": t.effect,
                "ci_low": t.ci_low,
                "ci_high": t.ci_high,
                "p_claimed": p_c,
                "p_opposite": p_o,
                "p_claimed_adj": adj_c,
                "p_opposite_adj": adj_o,
                "p_raw": deciding[0],
                "p_adjusted": deciding[1],
            }
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Figures


def _points(data, drop_clean: bool = True) -> dict:
    """A seed's figure data as {point: value}: corruptions as they are; strength curves keyed
    (sweep, value), without the attack-free points (value 0) unless asked."""
    if isinstance(data, dict):
        return data
    return {(k, v): ra for k, v, ra in data if v != 0 or not drop_clean}


def _clean(data) -> float:
    """A figure model's accuracy without attack: the strength curves' value-0 point; for a
    corruption figure, the mean corrupted accuracy (at most its clean accuracy)."""
    if isinstance(data, dict):
        return statistics.fmean(data.values())
    clean = [ra for _, v, ra in data if v == 0]
    return statistics.fmean(clean or [ra for _, _, ra in data])  # no clean point: RA <= SA


def figure_learning(
    figures: dict, chance: float, factor: float = 2.0
) -> dict[tuple[str, str], Check]:
    """Every figure model: does its accuracy without attack (`_clean`) reach `factor` x chance
    (of the source data set) in every seed?"""
    out = {}
    for fig, models in sorted(figures.items()):
        for label, per_seed in models.items():
            seeds = sorted(per_seed)
            s = Sample.of([_clean(per_seed[k]) for k in seeds], seeds)
            level = factor * chance
            failing = tuple(k for k, v in zip(seeds, s.values, strict=True) if v < level)
            out[(fig, label)] = Check(fig, label, s, f"{level:g}", failing)
    return out


def _figure_claim(spec, kind, figures, published, checks, where) -> _Result:
    fig = spec["figure"]
    if figures is None:
        ref = (published or {}).get("figures", {}).get(fig) or {}
        if kind == "figure_gain" and "mean_gain" in ref:
            bound = spec.get("bound", 0.0)
            gain = ref["mean_gain"]
            return _Result("exact", f"{gain:.2f}", f"{bound:g}", effect=gain - bound)
        if kind == "figure_wins" and "wins" in ref:
            k, n = spec["at_least"]
            frac = ref["wins"] / ref["of"]
            shown = f"{ref['wins']}/{ref['of']}"
            return _Result("exact", shown, f"≥ {k}/{n}", effect=frac - (k - 0.5) / n)
        return _Result(NOT_REPORTED, note="the paper gives this figure as a plot only")
    data = figures.get(fig)
    if data is None:
        return _Result(NOT_CONFIGURED, note="its figure is not in this configuration")
    if spec["a"] not in data or spec["b"] not in data:
        raise ClaimError(f"{where}: figure {fig!r} lacks model {spec['a']!r} or {spec['b']!r}")
    if checks is not None:
        problems = [
            f"{fig}/{label} did not learn in seeds {_seeds(c.failing)}"
            for label in (spec["a"], spec["b"])
            if (c := checks.figure_learning.get((fig, label))) is not None and c.failing
        ]
        if problems:
            return _Result(NOT_EVALUABLE, note="; ".join(problems))
    a, b = data[spec["a"]], data[spec["b"]]
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ClaimError(f"{where}: the two models of {fig} share no seed")
    gains, wins = [], []
    for s in seeds:
        pa, pb = _points(a[s]), _points(b[s])
        if set(pa) != set(pb):
            raise ClaimError(f"{where}: the two models of {fig} cover different points")
        if not pa:
            raise ClaimError(f"{where}: figure {fig!r} has no attacked points to compare")
        gains.append(statistics.fmean(pa[k] - pb[k] for k in pa))
        wins.append(sum((pa[k] > pb[k]) + 0.5 * (pa[k] == pb[k]) for k in pa))
    n = len(pa)
    mean_a = {k: statistics.fmean(_points(a[s])[k] for s in seeds) for k in pa}
    mean_b = {k: statistics.fmean(_points(b[s])[k] for s in seeds) for k in pa}
    won = sum((mean_a[k] > mean_b[k]) + 0.5 * (mean_a[k] == mean_b[k]) for k in pa)
    note = f"seed means win {won:g} of {n} points (descriptive)"
    if kind == "figure_gain":
        sample = Sample.of(gains, seeds)
        bound = Sample(float(spec.get("bound", 0.0)))
        shown = f"gain {_show(sample)}"
        result = _exact_or_test(sample.mean - bound.mean, [sample, bound], shown, _show(bound))
    else:
        k, n_claim = spec["at_least"]
        sample = Sample.of([w / n for w in wins], seeds)
        bound = Sample((k - 0.5) / n_claim)
        per_seed = ", ".join(f"{w:g}" for w in wins)
        shown = f"wins {per_seed} of {n} (per seed)"
        result = _exact_or_test(
            sample.mean - bound.mean, [sample, bound], shown, f"≥ {k}/{n_claim}"
        )
        note += "; effect in fractions of the points"
    result.note = "; ".join(x for x in (result.note, note) if x)
    return result


def _non_increasing(spec, figures, published) -> _Result:
    fig = spec["figure"]
    if figures is None:
        return _Result(NOT_REPORTED, note="the paper gives this figure as a plot only")
    data = figures.get(fig)
    if not data:
        return _Result(NOT_CONFIGURED, note="its figure is not in this configuration")
    worst, worst_at = -math.inf, ""
    for label, per_seed in data.items():
        seeds = sorted(per_seed)
        for sweep in spec.get("sweeps", ["steps", "eps"]):
            xs = sorted({v for k, v, _ in per_seed[seeds[0]] if k == sweep})
            means = [
                statistics.fmean(
                    ra for s in seeds for k, v, ra in per_seed[s] if (k, v) == (sweep, x)
                )
                for x in xs
            ]
            for x0, x1, m0, m1 in zip(xs, xs[1:], means, means[1:], strict=False):
                if m1 - m0 > worst:
                    worst, worst_at = m1 - m0, f"{label} ({sweep}): {x0:g} -> {x1:g}"
    note = f"largest rise of the seed means {worst:+.2f} points at {worst_at}"
    return _Result(DESCRIPTIVE, effect=worst, note=note)


# ---------------------------------------------------------------------------------------------
# Output


COLUMNS = (
    "id", "status", "claim", "kind", "op", "a", "b", "effect", "ci_low", "ci_high", "p_raw",
    "p_adjusted", "p_claimed", "p_claimed_adj", "p_opposite", "p_opposite_adj", "direction",
    "note", "paper", "source", "quote",
)  # fmt: skip
MARK = {
    HOLDS: "✅ holds",
    FAILS: "❌ fails",
    INCONCLUSIVE: "❔ inconclusive",
    NOT_EVALUABLE: "⛔ not evaluable",
    DESCRIPTIVE: "descriptive",
    NOT_REPORTED: "–",
    NOT_CONFIGURED: "not configured",
}


def _num(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_num(r.get(c)) for c in COLUMNS])
    return buf.getvalue()


def counts_line(rows: list[dict]) -> str:
    n = {s: sum(r["status"] == s for r in rows) for s in (*COUNTED, DESCRIPTIVE, NOT_CONFIGURED)}
    extra = []
    if n[DESCRIPTIVE]:
        extra.append(f"{n[DESCRIPTIVE]} descriptive only")
    if n[NOT_CONFIGURED]:
        extra.append(f"{n[NOT_CONFIGURED]} read tables or figures not built here")
    return (
        f"{n[HOLDS]} hold, {n[FAILS]} fail, {n[INCONCLUSIVE]} inconclusive, "
        f"{n[NOT_EVALUABLE]} not evaluable of {len(rows)} claims"
        + (f" ({'; '.join(extra)})." if extra else ".")
    )


def _effect_cell(r: dict) -> str:
    if r["effect"] is None:
        return ""
    if r["ci_low"] is None:
        return f"{r['effect']:+.2f}"
    return f"{r['effect']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"


def _p_cell(r: dict) -> str:
    return "" if r["p_raw"] is None else f"{r['p_raw']:.2g} ({r['p_adjusted']:.2g})"


def to_markdown(
    rows: list[dict],
    published_rows: list[dict] | None,
    title: str,
    sections: list[str] | None = None,
    alpha: float = 0.05,
) -> str:
    pub = {r["id"]: r for r in published_rows or []}
    lines = [
        f"# {title}",
        "",
        counts_line(rows),
        "",
        "| claim | ours | effect a − b [95 % CI] | p (adj.) | leans | paper's numbers | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = f" ({r['note']})" if r["note"] else ""
        leans = f"leans {r['direction']}" if r["status"] == INCONCLUSIVE else ""
        paper = ""
        if r["id"] in pub:
            p = pub[r["id"]]
            paper = MARK[p["status"]] + (f" {p['effect']:+.2f}" if p["effect"] is not None else "")
        lines.append(
            f"| {r['claim']} | {MARK[r['status']]}{note} | {_effect_cell(r)} | {_p_cell(r)} "
            f"| {leans} | {paper} | {r['source']} |"
        )
    tested = sum(r["p_claimed"] is not None for r in rows)
    lines += [
        "",
        f"Each measured claim: one-sided t-tests of the claimed and of the opposite direction "
        f"(Welch for a vs b, one-sample over seeds vs a number or for a figure's per-seed gain); "
        f"Holm's correction over one family of {2 * tested} p-values (both directions of the "
        f"{tested} tested claims), alpha {alpha:g}. p: the deciding direction's (claimed for "
        "holds, opposite for fails, the leaning one otherwise), raw (Holm-adjusted). Effect: "
        "a − b (difference of differences, gain or win fraction minus the bound) with its "
        "Welch-Satterthwaite 95 % CI. Paper's numbers: the verdict on the published values.",
    ]
    lines += sections or []
    lines += ["", "## Quotes", ""]
    lines += [f"- **{r['claim']}** ({r['source']}): “{r['quote']}”" for r in rows]
    return "\n".join(lines) + "\n"


def learning_markdown(
    checks: dict, figure_checks: dict, factor: float, chance_note: str = ""
) -> list[str]:
    rows = [c for c in checks.values() if c is not None]
    unknown = sorted(f"{t}/{r}" for (t, r), c in checks.items() if c is None)
    figs = list(figure_checks.values())
    failing = [c for c in rows + figs if c.failing]
    lines = [
        "",
        f"## Does every model learn? (SA at least {factor:g} x chance in every seed)",
        "",
        f"{len(rows) - sum(bool(c.failing) for c in rows)} of {len(rows)} table rows and "
        f"{len(figs) - sum(bool(c.failing) for c in figs)} of {len(figs)} figure models do"
        + (
            " (figure models: their clean point, or their mean corrupted accuracy)."
            if figs
            else "."
        )
        + chance_note,
    ]
    if unknown:
        lines += ["", f"Rows with no SA measured (not evaluable): {', '.join(unknown)}."]
    if failing:
        lines += [
            "",
            "| table | row | SA per seed | level | seeds below |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {c.table} | {c.row} | {_values(c.values)} | {c.level} | {_seeds(c.failing)} |"
            for c in failing
        ]
    return lines


def _values(s: Sample) -> str:
    return ", ".join(f"{k}: {v:.2f}" for k, v in zip(s.seeds, s.values, strict=True))


def robustness_markdown(checks: dict[tuple[str, str], Check], attack_free: list[str]) -> list[str]:
    lines = [
        "",
        "## Are the adversarially trained rows robust? (RA-PGD above the attack-free rows' "
        f"({', '.join(attack_free)}) in every seed)",
        "",
    ]
    if not checks:
        return [*lines, "No attack-free row is measured here; the check is not applied."]
    bad = [c for c in checks.values() if c.failing]
    lines.append(f"{len(checks) - len(bad)} of {len(checks)} adversarially trained rows are.")
    lines += ["", "| table | row | RA per seed | attack-free per seed | seeds not above |"]
    lines.append("|---|---|---|---|---|")
    lines += [
        f"| {c.table} | {c.row} | {_values(c.values)} | {c.level} | {_seeds(c.failing) or '—'} |"
        for c in checks.values()
    ]
    return lines


def to_html(markdown: str) -> str:
    """The Markdown report as a self-contained HTML page (for the Snakemake report)."""
    import html

    lines = markdown.splitlines()
    title = lines[0].lstrip("# ")

    def row(cells: list[str], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in cells) + "</tr>"

    parts, table = [], []
    for ln in [*lines[1:], ""]:
        if ln.startswith("|"):
            if not ln.startswith("|---"):
                table.append(ln.strip("|").split("|"))
            continue
        if table:
            head, *body = table
            parts.append(f"<table>{row(head, 'th')}" + "".join(row(c, "td") for c in body))
            parts[-1] += "</table>"
            table = []
        if ln.startswith("## "):
            parts.append(f"<h4>{html.escape(ln[3:])}</h4>")
        elif ln:
            parts.append(f"<p>{html.escape(ln)}</p>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px}</style>"
        f"</head><body><h3>{html.escape(title)}</h3>" + "".join(parts) + "</body></html>\n"
    )


def metrics(rows: list[dict]) -> dict:
    """{id: {status, holds, fails, effect, ci_low, ci_high, p_raw, p_adjusted, direction}} for
    `dvc metrics show`."""
    out = {}
    for r in rows:
        entry = {
            "status": r["status"],
            "holds": int(r["status"] == HOLDS),
            "fails": int(r["status"] == FAILS),
        }
        for key in ("effect", "ci_low", "ci_high", "p_raw", "p_adjusted"):
            if r[key] is not None:
                entry[key] = round(r[key], 6)
        if r["direction"]:
            entry["direction"] = r["direction"]
        out[r["id"]] = entry
    return out


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
    """["fig1/ASCL=path", ...] (one item per seed; the seed is the path's "seed<k>" folder, else
    the item's position) -> {fig: {label: {seed: data}}}."""
    figures: dict = {}
    for item in items:
        key, sep, path = item.partition("=")
        fig, sep2, label = key.partition("/")
        if not (sep and sep2 and path):
            raise ClaimError(f"--figure {item!r}: expected '<fig>/<model label>=<file>'")
        per_seed = figures.setdefault(fig, {}).setdefault(label, {})
        m = re.search(r"(?:^|/)seed(\d+)(?:/|$)", str(Path(path).parent))
        seed = int(m.group(1)) if m else len(per_seed)
        if seed in per_seed:
            raise ClaimError(f"--figure {item!r}: seed {seed} of {fig}/{label} given twice")
        per_seed[seed] = read_figure_file(path)
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
    cells, info = table_cells(table_csvs), table_rows(table_csvs)
    figures = load_figure_inputs(figure_items)
    checks, sections = Checks(), []
    factor = claims.get("learns_factor", 2.0)
    if "chance" in claims:
        checks.learning = learning_check(cells, info, claims["chance"], factor)
        checks.figure_learning = figure_learning(figures, claims["chance"]["source"], factor)
        sections += learning_markdown(checks.learning, checks.figure_learning, factor)
    attack_free = claims.get("attack_free", [])
    if attack_free:
        standard = claims.get("standard_strategies", ["LSF", "FSF"])
        metric = claims.get("robust_metric", "ra_pgd_eps8")
        checks.robustness = robustness_check(cells, info, attack_free, standard, metric)
        sections += robustness_markdown(checks.robustness, attack_free)
    rows = evaluate_claims(claims, cells, figures, checks=checks)
    paper = evaluate_claims(claims, published_cells(published), None, published)
    for r, p in zip(rows, paper, strict=True):
        r["paper"] = p["status"]
    from ascl.environment import environment_tags

    env = environment_tags()
    sections += [
        "",
        "## Environment",
        "",
        f"This report: Python {env['env.python']}, torch {env['env.torch']}, packages hash "
        f"{env['env.packages_hash']} (`ascl.environment`), {env['env.platform']}. Every "
        "training and evaluation run of the tables carries the same `env.*` tags in MLflow, with "
        "its CUDA / cuDNN build and device.",
    ]
    md = to_markdown(rows, paper, title, sections, claims.get("alpha", 0.05))
    atomic_write_text(out_csv, to_csv(rows))
    if out_json is not None:
        atomic_write_text(out_json, json.dumps(metrics(rows), indent=2) + "\n")
    if out_html is not None:
        atomic_write_text(out_html, to_html(md))
    atomic_write_text(out_md, md)
    return rows
