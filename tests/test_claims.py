"""The claims report: the encoding of the paper's claims, the tests behind each verdict (against
independent references: scipy's t-tests on raw samples, explicit loops), the evaluability checks
and the `ascl claims` job."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from ascl import claims as C
from ascl import config
from ascl.cli import main
from ascl.report import load_published
from tests.conftest import ROOT

PARAMS = config.load_params(ROOT / "params.yaml")
CLAIMS = PARAMS["claims"]
S = C.Sample


def test_every_claim_holds_on_the_published_numbers():
    """The encoding test: on the paper's own numbers every claim it makes holds; only claims
    about figures the paper gives as plots (no numbers in its text) cannot be tested there."""
    published = load_published()
    rows = C.evaluate_claims(CLAIMS, C.published_cells(published), None, published)
    by_status: dict[str, list[str]] = {}
    for r in rows:
        by_status.setdefault(r["status"], []).append(r["id"])
    assert set(by_status) == {C.HOLDS, C.NOT_REPORTED}, by_status
    plotted = [
        cid for cid, spec in CLAIMS["items"].items() if spec.get("figure") in ("fig6", "fig7")
    ]
    assert by_status[C.NOT_REPORTED] == plotted and len(plotted) == 8
    assert len(by_status[C.HOLDS]) == len(CLAIMS["items"]) - len(plotted)
    # published numbers are exact: no p-value, the effect is the published difference
    t8 = next(r for r in rows if r["id"] == "t8-gap-acl-gt-ascl-pgd")
    assert t8["p_raw"] is None
    assert t8["effect"] == pytest.approx((52.11 - 35.60) - (53.09 - 50.15))


def test_the_encoding_names_the_papers_claims():
    items = CLAIMS["items"]
    ops = {spec.get("op") for spec in items.values()}
    assert ops <= {">", "<", None}  # no non-inferiority within a margin
    assert items["t8-gap-acl-gt-ascl-pgd"]["kind"] == "diff_of_diffs"
    assert items["f1-wins-18-of-19"]["at_least"] == [18, 19]
    assert "18 out of 19" in items["f1-wins-18-of-19"]["quote"]
    ensemble = [cid for cid in items if cid.startswith("t6-ensemble-gt-")]
    assert {cid.rsplit("-", 1)[1] for cid in ensemble} == {"sa", "pgd8", "pgd16"}  # SA and RA
    assert {k for k, s in items.items() if s.get("kind") == "figure_gain" and s["figure"] == "fig6"}
    for spec in items.values():
        assert spec["quote"] and spec["source"] and spec["claim"]


def test_every_claim_cell_names_a_table_row_and_metric_of_params():
    for cid, spec in CLAIMS["items"].items():
        if "figure" in spec:
            fig = PARAMS["figures"][spec["figure"]]
            for label in (spec.get("a"), spec.get("b")):
                assert label is None or label in fig["models"], (cid, label)
            continue
        refs = [spec["a"], spec["b"]] if spec.get("kind", "compare") == "compare" else []
        refs += [*spec["a"], *spec["b"]] if spec.get("kind") == "diff_of_diffs" else []
        for ref in refs:
            if isinstance(ref, str):
                table, row, metric = C.parse_cell(ref)
                paper = PARAMS["paper"][table]
                assert metric in paper["metrics"], (cid, ref)
                if "models" in paper:  # Table 2: "<target> <- <source>"
                    target, _, source = row.partition(" <- ")
                    assert {target, source} <= set(paper["models"]) and target != source
                else:
                    assert row in paper["rows"], (cid, ref)
    for ref in CLAIMS["attack_free"]:
        table, _, row = ref.partition("/")
        assert row in PARAMS["paper"][table]["rows"]


def _raw(mean: float, std: float, n: int, seed: int) -> np.ndarray:
    """n values with exactly this mean and sample std."""
    z = np.random.default_rng(seed).standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + std * z


CASES = [
    ((55.0, 2.0, 3), (50.0, 1.0, 3)),
    ((50.2, 0.5, 4), (50.0, 3.0, 5)),
    ((48.0, 1.0, 3), (50.0, 1.0, 3)),
    ((10.0, 4.0, 6), (12.0, 0.3, 2)),
]


@pytest.mark.parametrize(("a", "b"), CASES)
def test_welch_p_and_ci_match_scipy_on_raw_samples(a, b):
    xa, xb = _raw(*a, seed=1), _raw(*b, seed=2)
    t = C.welch(S.of(list(xa)), S.of(list(xb)))
    for alternative, p in (("greater", t.p_greater), ("less", t.p_less)):
        ref = stats.ttest_ind(xa, xb, equal_var=False, alternative=alternative).pvalue
        assert p == pytest.approx(ref, rel=1e-9)
    ci = stats.ttest_ind(xa, xb, equal_var=False).confidence_interval(0.95)
    assert (t.ci_low, t.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert t.effect == pytest.approx(xa.mean() - xb.mean())


def test_one_sample_matches_scipy():
    x = _raw(3.0, 1.5, 4, seed=3)
    t = C.welch(S.of(list(x)), S(5.0))
    for alternative, p in (("less", t.p_less), ("greater", t.p_greater)):
        assert p == pytest.approx(stats.ttest_1samp(x, 5.0, alternative=alternative).pvalue)
    ci = stats.ttest_1samp(x, 5.0).confidence_interval(0.95)  # CI of the mean
    assert (t.ci_low, t.ci_high) == pytest.approx((ci.low - 5.0, ci.high - 5.0))


def test_diff_of_diffs_matches_a_brute_force_computation():
    xs = [_raw(52, 1.0, 3, 4), _raw(36, 3.0, 4, 5), _raw(53, 0.5, 3, 6), _raw(50, 2.0, 5, 7)]
    t = C.diff_of_diffs(*(S.of(list(x)) for x in xs))
    means, var_means = [], []
    for x in xs:  # explicit loops: mean, sample variance, variance of the mean
        m = sum(x) / len(x)
        v = sum((xi - m) ** 2 for xi in x) / (len(x) - 1)
        means.append(m)
        var_means.append(v / len(x))
    effect = (means[0] - means[1]) - (means[2] - means[3])
    se2 = sum(var_means)
    df = se2**2 / sum(v**2 / (len(x) - 1) for v, x in zip(var_means, xs, strict=True))
    tstat = effect / math.sqrt(se2)
    assert t.effect == pytest.approx(effect)
    assert t.df == pytest.approx(df)
    assert t.p_greater == pytest.approx(stats.t.sf(tstat, df))
    assert t.p_less == pytest.approx(stats.t.cdf(tstat, df))
    half = stats.t.ppf(0.975, df) * math.sqrt(se2)
    assert (t.ci_low, t.ci_high) == pytest.approx((effect - half, effect + half))
    # with the b side exact it is Welch's test of a1 vs a2, shifted by the exact difference
    t2 = C.diff_of_diffs(S.of(list(xs[0])), S.of(list(xs[1])), S(3.0), S(1.0))
    ref = stats.ttest_ind(xs[0], xs[1] + 2.0, equal_var=False, alternative="greater")
    assert t2.p_greater == pytest.approx(ref.pvalue)


def test_holm_matches_an_explicit_step_down_loop():
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04, 0.5]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    expected = [0.0] * m
    for k in range(m):  # adjusted p_(k) = max over j <= k of min(1, (m - j) p_(j))
        expected[order[k]] = max(min(1.0, (m - j) * p[order[j]]) for j in range(k + 1))
    assert C.holm(p) == pytest.approx(expected)
    assert C.holm([0.01, 0.02]) == pytest.approx([0.02, 0.02])
    assert C.holm([]) == []


def _spec(**items) -> dict:
    for item in items.values():
        item.setdefault("source", "s")
        item.setdefault("quote", "q")
        item.setdefault("claim", "c")
    return {"alpha": 0.05, "items": items}


def _s(values, seeds=None) -> C.Sample:
    return S.of([float(v) for v in values], seeds)


def test_verdicts_with_holm_and_both_directions():
    cells = {
        ("t", "A", "sa"): _s([60, 61, 59]),
        ("t", "B", "sa"): _s([50, 51, 49]),
        ("t", "C", "sa"): _s([50, 51, 49]),
    }
    spec = _spec(
        h={"a": "t/A/sa", "op": ">", "b": "t/B/sa"},
        f={"a": "t/B/sa", "op": ">", "b": "t/A/sa"},  # reversed effect
        i={"a": "t/B/sa", "op": ">", "b": "t/C/sa"},  # equal samples
        lt={"a": "t/A/sa", "op": "<", "b": 70.0},
    )
    rows = {r["id"]: r for r in C.evaluate_claims(spec, cells, {})}
    assert {k: r["status"] for k, r in rows.items()} == {
        "h": C.HOLDS,
        "f": C.FAILS,
        "i": C.INCONCLUSIVE,
        "lt": C.HOLDS,
    }
    # the family: both one-sided p's of the four tested claims, Holm-adjusted together
    family = [p for r in rows.values() for p in (r["p_claimed"], r["p_opposite"])]
    adjusted = C.holm(family)
    assert [p for r in rows.values() for p in (r["p_claimed_adj"], r["p_opposite_adj"])] == (
        pytest.approx(adjusted)
    )
    f = rows["f"]  # fails: the p that decided is the opposite direction's
    ref = stats.ttest_ind([60, 61, 59], [50, 51, 49], equal_var=False, alternative="greater")
    assert f["p_raw"] == f["p_opposite"] == pytest.approx(ref.pvalue)
    assert f["p_adjusted"] == f["p_opposite_adj"] and f["direction"] == "against"
    assert f["effect"] == pytest.approx(-10.0) and f["ci_high"] < 0
    assert rows["h"]["p_raw"] == rows["h"]["p_claimed"] and rows["h"]["direction"] == "for"
    i = rows["i"]
    assert i["effect"] == 0 and i["p_claimed"] == pytest.approx(0.5) and i["direction"] == "none"


def test_holm_turns_a_lone_significant_result_inconclusive_among_many():
    cells = {("t", "A", "sa"): _s([53, 54, 52]), ("t", "B", "sa"): _s([50, 50.5, 49.5])}
    one = _spec(x={"a": "t/A/sa", "op": ">", "b": "t/B/sa"})
    assert C.evaluate_claims(one, cells, {})[0]["status"] == C.HOLDS
    many = _spec(**{f"x{k}": {"a": "t/A/sa", "op": ">", "b": "t/B/sa"} for k in range(10)})
    rows = C.evaluate_claims(many, cells, {})
    assert {r["status"] for r in rows} == {C.INCONCLUSIVE}
    assert all(r["direction"] == "for" for r in rows)


def test_exact_values_are_compared_directly():
    cells = {("t", "A", "sa"): S(53.09), ("t", "B", "sa"): S(44.05)}
    spec = _spec(
        h={"a": "t/A/sa", "op": ">", "b": "t/B/sa"},
        f={"a": "t/A/sa", "op": "<", "b": "t/B/sa"},
    )
    rows = C.evaluate_claims(spec, cells, None, {})
    assert [r["status"] for r in rows] == [C.HOLDS, C.FAILS]
    assert rows[0]["p_raw"] is None and rows[0]["effect"] == pytest.approx(9.04)


def _table_csv(path, rows, seeds=(0, 1, 2), target="source", metric="sa", strategy="LAF"):
    """A table CSV in `ascl table`'s form: rows of (row, per-seed values)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["row", "method", "strategy", "target"]
            + [f"{metric}_{k}" for k in ("mean", "std", "published", "diff", "seeds")]
            + ["seeds", "n_seeds", "status"]
        )
        for name, values in rows:
            s = S.of([float(v) for v in values])
            w.writerow(
                [name, name.lower(), strategy, target, s.mean, s.std, "", ""]
                + [";".join(map(str, values)), ";".join(map(str, seeds)), len(values), "ok"]
            )
    return path


def test_a_row_that_does_not_learn_in_one_seed_makes_its_claims_not_evaluable(tmp_path):
    t = _table_csv(tmp_path / "table9.csv", [("A", [80, 81, 79]), ("B", [50, 15, 52])])
    cells, info = C.table_cells([t]), C.table_rows([t])
    learning = C.learning_check(cells, info, {"source": 10.0})
    assert learning[("table9", "B")].failing == (1,) and not learning[("table9", "A")].failing
    spec = _spec(x={"a": "table9/A/sa", "op": ">", "b": "table9/B/sa"})
    checks = C.Checks(learning=learning)
    row = C.evaluate_claims(spec, cells, {}, checks=checks)[0]
    assert row["status"] == C.NOT_EVALUABLE
    assert row["note"] == "table9/B did not learn in seeds 1"
    assert row["p_raw"] is None
    # the seed mean (39) is above 2 x chance: only the per-seed check catches it
    assert cells[("table9", "B", "sa")].mean >= 20
    md = "\n".join(C.learning_markdown(learning, {}, 2.0))
    assert (
        "1 of 2 table rows" in md and "| table9 | B | 0: 50.00, 1: 15.00, 2: 52.00 | 20 | 1 |" in md
    )


def test_robustness_check_per_seed(tmp_path):
    """An adversarially trained row whose RA is not above the attack-free rows' in some seed
    makes the claims comparing its RA not evaluable; standard-finetuned rows are not checked."""
    ra = "ra_pgd_eps8"
    t1 = _table_csv(tmp_path / "table1.csv", [("SimCLR", [1, 9, 2]), ("SCL", [3, 1, 1])], metric=ra)
    t9 = _table_csv(tmp_path / "table9.csv", [("A", [40, 41, 42]), ("B", [30, 8, 35])], metric=ra)
    t8 = _table_csv(tmp_path / "table8.csv", [("L", [2, 2, 2])], metric=ra, strategy="LSF")
    cells, info = C.table_cells([t1, t9, t8]), C.table_rows([t1, t9, t8])
    checks = C.robustness_check(cells, info, ["table1/SimCLR", "table1/SCL"], ["LSF", "FSF"], ra)
    assert set(checks) == {("table9", "A"), ("table9", "B")}
    assert checks[("table9", "B")].failing == (1,)  # 8 <= max(9, 1) in seed 1
    assert checks[("table9", "A")].failing == ()
    spec = _spec(
        x={"a": f"table9/A/{ra}", "op": ">", "b": f"table9/B/{ra}"},
        y={"a": f"table8/L/{ra}", "op": "<", "b": 5.0},
    )
    rows = C.evaluate_claims(spec, cells, {}, checks=C.Checks(robustness=checks))
    assert rows[0]["status"] == C.NOT_EVALUABLE and "table9/B" in rows[0]["note"]
    assert "seeds 1" in rows[0]["note"] and rows[1]["status"] != C.NOT_EVALUABLE


def test_black_box_cells_read_both_models(tmp_path):
    """Table 2's cells "<target> <- <source>": read from the matrix CSV; the learning check of
    both models uses their SA in another table."""
    path = tmp_path / "table2.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        keys = ("row", "source", "method", "strategy", "target", "ra_mean", "ra_std")
        w.writerow([*keys, "ra_published", "ra_diff", "ra_seeds", "seeds", "n_seeds", "status"])
        for tgt, src, vals in (("A", "B", [60, 61, 62]), ("B", "A", [50, 51, 49])):
            s = S.of([float(v) for v in vals])
            per_seed = ";".join(map(str, vals))
            w.writerow(
                [tgt, src, tgt.lower(), "LAF", "source", s.mean, s.std, "", ""]
                + [per_seed, "0;1;2", 3, "ok"]
            )
    t1 = _table_csv(tmp_path / "table1.csv", [("A", [80, 81, 82]), ("B", [70, 5, 71])])
    cells, info = C.table_cells([path, t1]), C.table_rows([path, t1])
    assert cells[("table2", "A <- B", "ra")].values == (60.0, 61.0, 62.0)
    learning = C.learning_check(cells, info, {"source": 10.0})
    assert learning[("table2", "B")].failing == (1,)
    spec = _spec(x={"a": "table2/A <- B/ra", "op": ">", "b": "table2/B <- A/ra"})
    row = C.evaluate_claims(spec, cells, {}, checks=C.Checks(learning=learning))[0]
    assert row["status"] == C.NOT_EVALUABLE and row["note"] == "table2/B did not learn in seeds 1"
    published = C.published_cells(load_published())
    assert published[("table2", "AT <- ASCL", "ra")].mean == 59.39


def _corruptions(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "corruption,severity,accuracy\n" + "".join(f"c{k},1,{v}\n" for k, v in enumerate(values))
    )
    return str(path)


def test_figure_gain_uses_the_seed_as_the_unit(tmp_path):
    a = {0: [60, 62, 50, 70], 1: [61, 60, 52, 69], 2: [59, 63, 49, 72]}
    b = {0: [55, 62, 52, 60], 1: [57, 61, 50, 60], 2: [50, 60, 51, 64]}
    items = []
    for seed in range(3):
        items.append(f"fig1/A={_corruptions(tmp_path / f'seed{seed}/a/corruptions.csv', a[seed])}")
        items.append(f"fig1/B={_corruptions(tmp_path / f'seed{seed}/b/corruptions.csv', b[seed])}")
    figures = C.load_figure_inputs(items)
    assert sorted(figures["fig1"]["A"]) == [0, 1, 2]
    spec = _spec(
        g={"kind": "figure_gain", "figure": "fig1", "a": "A", "op": ">", "b": "B"},
        w={"kind": "figure_wins", "figure": "fig1", "a": "A", "op": ">", "b": "B",
           "at_least": [3, 4]},
    )  # fmt: skip
    rows = {r["id"]: r for r in C.evaluate_claims(spec, {}, figures)}
    gains = [np.mean(np.subtract(a[s], b[s])) for s in range(3)]
    ref = stats.ttest_1samp(gains, 0.0, alternative="greater").pvalue
    assert rows["g"]["p_claimed"] == pytest.approx(ref)
    assert rows["g"]["effect"] == pytest.approx(np.mean(gains))
    # wins per seed with ties as half: seed 0: 2 + 0.5 of 4; seed 1: 3; seed 2: 3
    fractions = [2.5 / 4, 3 / 4, 3 / 4]
    ref = stats.ttest_1samp(fractions, 2.5 / 4, alternative="greater").pvalue
    assert rows["w"]["p_claimed"] == pytest.approx(ref)
    assert "seed means win 3 of 4 points (descriptive)" in rows["g"]["note"]
    assert "wins 2.5, 3, 3 of 4" in rows["w"]["a"]


def test_figure_models_that_do_not_learn_are_not_evaluable(tmp_path):
    items = []
    for seed, low in enumerate([5, 50, 50]):
        items.append(
            f"fig1/A={_corruptions(tmp_path / f'seed{seed}/a/corruptions.csv', [low] * 3)}"
        )
        items.append(f"fig1/B={_corruptions(tmp_path / f'seed{seed}/b/corruptions.csv', [40] * 3)}")
    figures = C.load_figure_inputs(items)
    checks = C.Checks(figure_learning=C.figure_learning(figures, 10.0))
    spec = _spec(g={"kind": "figure_gain", "figure": "fig1", "a": "A", "op": ">", "b": "B"})
    row = C.evaluate_claims(spec, {}, figures, checks=checks)[0]
    assert row["status"] == C.NOT_EVALUABLE and row["note"] == "fig1/A did not learn in seeds 0"


def test_non_increasing_is_descriptive():
    curves = {0: [("steps", 0, 90), ("steps", 10, 50), ("steps", 20, 52)]}
    figures = {"fig6": {"m": {0: curves[0], 1: curves[0]}}}
    spec = _spec(n={"kind": "non_increasing", "figure": "fig6", "sweeps": ["steps"]})
    row = C.evaluate_claims(spec, {}, figures)[0]
    assert row["status"] == C.DESCRIPTIVE and row["effect"] == pytest.approx(2.0)
    assert "m (steps): 10 -> 20" in row["note"] and row["p_claimed"] is None


def test_bad_cell_is_one_line():
    with pytest.raises(C.ClaimError, match="expected '<table>/<row>/<metric>'"):
        C.parse_cell("table1-ASCL")
    spec = _spec(x={"a": "table1/Nope/sa", "op": ">", "b": 1.0})
    cells = {("table1", "ASCL", "sa"): _s([80, 81, 79])}  # table1 built, no row "Nope"
    with pytest.raises(C.ClaimError, match="claims.items.x: no value for cell 'table1/Nope/sa'"):
        C.evaluate_claims(spec, cells, {})
    with pytest.raises(C.ClaimError, match="op must be one of >, <"):
        C.evaluate_claims(_spec(x={"a": "table1/ASCL/sa", "op": ">=", "b": 1.0}), cells, {})


def test_claims_job_writes_every_output(tmp_path, capsys):
    """`ascl claims` on hand-made tables and figure files: holds, fails, inconclusive, not
    evaluable, a figure claim and a descriptive curve; Markdown, CSV, JSON and HTML agree."""
    t = _table_csv(
        tmp_path / "table9.csv",
        [("A", [80, 81, 79]), ("B", [70, 71, 69]), ("C", [76, 88, 79]), ("D", [90, 91, 89])]
        + [("E", [80, 10, 81])],
    )
    figs = []
    for seed in range(3):
        corr = _corruptions(tmp_path / f"seed{seed}/a/corruptions.csv", [60 + k for k in range(6)])
        corr_b = _corruptions(tmp_path / f"seed{seed}/b/corruptions.csv", [50 + seed] * 6)
        strength = tmp_path / f"seed{seed}/strength.csv"
        strength.write_text("kind,value,ra\nsteps,0,80\nsteps,10,40\neps,0,80\neps,8,40\n")
        figs += [f"fig1/A={corr}", f"fig1/B={corr_b}", f"fig6/A={strength}"]
    spec = _spec(
        h={"claim": "A > B", "a": "table9/A/sa", "op": ">", "b": "table9/B/sa"},
        f={"claim": "B > D", "a": "table9/B/sa", "op": ">", "b": "table9/D/sa"},
        i={"claim": "C > A", "a": "table9/C/sa", "op": ">", "b": "table9/A/sa"},
        e={"claim": "E > B", "a": "table9/E/sa", "op": ">", "b": "table9/B/sa"},
        m={"claim": "A gains", "kind": "figure_gain", "figure": "fig1", "a": "A", "b": "B"},
        n={"claim": "curves", "kind": "non_increasing", "figure": "fig6"},
    )
    spec |= {"chance": {"source": 10.0, "stl10": 10.0, "cifar100": 1.0}}
    out = {k: tmp_path / f"claims.{k}" for k in ("md", "csv", "json", "html")}
    args = ["claims", "--claims", json.dumps(spec), "--tables", str(t)]
    args += [a for f in figs for a in ("--figure", f)]
    args += [x for k, p in out.items() for x in (f"--out-{k}", str(p))]
    assert main(args) == 0
    with out["csv"].open() as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "h": C.HOLDS,
        "f": C.FAILS,
        "i": C.INCONCLUSIVE,
        "e": C.NOT_EVALUABLE,
        "m": C.HOLDS,
        "n": C.DESCRIPTIVE,
    }
    assert rows["e"]["note"] == "table9/E did not learn in seeds 1"
    assert rows["f"]["direction"] == "against" and rows["f"]["p_raw"] == rows["f"]["p_opposite"]
    for key in ("effect", "ci_low", "ci_high", "p_raw", "p_adjusted"):
        assert rows["h"][key] != ""
    metrics = json.loads(out["json"].read_text())
    assert metrics["h"]["holds"] == 1 and metrics["f"]["fails"] == 1
    assert metrics["i"]["status"] == C.INCONCLUSIVE and metrics["i"]["direction"] == "for"
    assert metrics["m"]["effect"] == pytest.approx(11.5)  # 62.5 - 51 (mean over seeds)
    md = out["md"].read_text()
    lines = md.splitlines()
    assert lines[2] == (
        "2 hold, 1 fail, 1 inconclusive, 1 not evaluable of 6 claims (1 descriptive only)."
    )
    assert lines[4].startswith("| claim | ours | effect a − b [95 % CI] | p (adj.) | leans |")
    assert "leans for" in md and "Does every model learn?" in md and "## Quotes" in md
    assert md.index("Does every model learn?") < md.index("## Quotes")
    html = out["html"].read_text()
    assert html.count("<table>") == 2 and "<h4>Quotes</h4>" in html
    printed = capsys.readouterr().out
    assert "fails  B > D" in printed


def test_claims_job_missing_cell_is_one_line(tmp_path, capsys):
    t = _table_csv(tmp_path / "table9.csv", [("A", [80, 81, 79])])
    spec = _spec(x={"a": "table9/Z/sa", "op": ">", "b": 1.0})
    out = tmp_path / "c.md"
    args = ["claims", "--claims", json.dumps(spec), "--tables", str(t), "--out-md", str(out)]
    code = main([*args, "--out-csv", str(tmp_path / "c.csv")])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "table9/Z/sa" in err


def test_table_without_per_seed_values_is_one_line(tmp_path):
    path = tmp_path / "table9.csv"
    path.write_text(
        "row,method,strategy,target,sa_mean,sa_std,n_seeds,status\nA,a,LAF,source,80,1,3,ok\n"
    )
    with pytest.raises(C.ClaimError, match="no per-seed values"):
        C.table_cells([path])


def test_claims_outside_the_configuration_are_not_evaluated(tmp_path):
    """A params slice without the claim's table or figure marks it 'not configured' (and
    says so in the summary line) instead of failing."""
    t = _table_csv(tmp_path / "table9.csv", [("A", [80, 81, 79]), ("B", [70, 71, 69])])
    spec = _spec(
        h={"a": "table9/A/sa", "op": ">", "b": "table9/B/sa"},
        t={"a": "table1/ASCL/sa", "op": ">", "b": 1.0},
        m={"a": "table9/A/ra_aa", "op": ">", "b": 1.0},
        f={"kind": "non_increasing", "figure": "fig6"},
    )
    rows = C.evaluate_claims(spec, C.table_cells([t]), {})
    assert {r["id"]: r["status"] for r in rows} == {
        "h": C.HOLDS,
        "t": C.NOT_CONFIGURED,
        "m": C.NOT_CONFIGURED,
        "f": C.NOT_CONFIGURED,
    }
    md = C.to_markdown(rows, None, "T")
    assert "1 hold, 0 fail, 0 inconclusive, 0 not evaluable of 4 claims (3 read tables" in md
