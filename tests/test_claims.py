"""The claims report: the encoding of the paper's claims, the tests behind each verdict (against
independent references: scipy's t-test on raw samples, brute-force enumeration), and the
`ascl claims` job."""

from __future__ import annotations

import csv
import itertools
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


def test_every_claim_holds_on_the_published_numbers():
    """The encoding test: on the paper's own numbers every claim it makes holds; only claims
    about figures the paper gives as plots (no numbers in its text) cannot be tested there."""
    published = load_published()
    rows = C.evaluate_claims(CLAIMS, C.published_cells(published), None, published)
    by_status = {}
    for r in rows:
        by_status.setdefault(r["status"], []).append(r["id"])
    assert set(by_status) <= {C.HOLDS, C.NOT_REPORTED}, by_status
    assert by_status[C.NOT_REPORTED] == ["f6-ra-non-increasing"]
    assert len(by_status[C.HOLDS]) == len(CLAIMS["items"]) - 1


def test_every_claim_cell_names_a_table_row_and_metric_of_params():
    for cid, spec in CLAIMS["items"].items():
        if spec.get("kind", "compare") != "compare":
            fig = PARAMS["figures"][spec["figure"]]
            for label in (spec.get("a"), spec.get("b")):
                assert label is None or label in fig["models"], (cid, label)
            continue
        for ref in (spec["a"], spec["b"]):
            if isinstance(ref, str):
                table, row, metric = C.parse_cell(ref)
                assert row in PARAMS["paper"][table]["rows"], (cid, ref)
                assert metric in PARAMS["paper"][table]["metrics"], (cid, ref)


def _raw(mean: float, std: float, n: int, seed: int) -> np.ndarray:
    """n values with exactly this mean and sample std."""
    z = np.random.default_rng(seed).standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + std * z


@pytest.mark.parametrize(
    ("a", "b", "shift"),
    [
        ((55.0, 2.0, 3), (50.0, 1.0, 3), 0.0),
        ((50.2, 0.5, 4), (50.0, 3.0, 5), 0.0),
        ((48.0, 1.0, 3), (50.0, 1.0, 3), -1.0),
        ((10.0, 4.0, 6), (12.0, 0.3, 2), 0.5),
    ],
)
def test_welch_matches_scipy_on_raw_samples(a, b, shift):
    xa, xb = _raw(*a, seed=1), _raw(*b, seed=2)
    ref = stats.ttest_ind(xa, xb + shift, equal_var=False, alternative="greater").pvalue
    p = C.welch_greater(C.Sample(*a), C.Sample(*b), shift)
    assert p == pytest.approx(ref, rel=1e-9)


def test_one_sample_bound_matches_scipy():
    x = _raw(3.0, 1.5, 4, seed=3)
    ref = stats.ttest_1samp(x, 5.0, alternative="less").pvalue
    assert C.welch_greater(C.Sample(5.0), C.Sample(3.0, 1.5, 4)) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("n", [5, 10, 19])
def test_sign_test_matches_enumeration(n):
    outcomes = list(itertools.product((0, 1), repeat=n)) if n <= 10 else None
    for wins in range(n + 1):
        if outcomes is not None:
            ref = sum(sum(o) >= wins for o in outcomes) / len(outcomes)
        else:  # 2^19 outcomes: count them by the number of ones instead
            ref = sum(math.comb(n, k) for k in range(n + 1) if k >= wins) / 2**n
        assert C.sign_test_greater(wins, n) == pytest.approx(ref)


S = C.Sample


@pytest.mark.parametrize(
    ("a", "op", "b", "expected"),
    [
        (S(60, 1, 3), ">", S(50, 1, 3), C.HOLDS),
        (S(40, 1, 3), ">", S(50, 1, 3), C.FAILS),
        (S(51, 5, 3), ">", S(50, 5, 3), C.INCONCLUSIVE),
        (S(60, 1, 1), ">", S(50, 1, 3), C.INCONCLUSIVE),  # one seed: no spread, no verdict
        (S(50.5, 0.1, 3), ">=", S(50, 0.1, 3), C.HOLDS),
        (S(49.5, 0.1, 3), ">=", S(50, 0.1, 3), C.HOLDS),  # within the 1-point margin
        (S(45, 0.1, 3), ">=", S(50, 0.1, 3), C.FAILS),
        (S(49, 3, 3), ">=", S(50, 3, 3), C.INCONCLUSIVE),
        (S(0.2, 0.1, 3), "<", S(5.0), C.HOLDS),
        (S(0.0, 0.0, 3), "<", S(5.0), C.HOLDS),  # every seed exactly 0
        (S(30, 2, 3), "<", S(5.0), C.FAILS),
        (S(53.09), ">", S(44.05), C.HOLDS),  # published: exact values
        (S(44.05), ">", S(53.09), C.FAILS),
    ],
)
def test_compare_verdicts(a, op, b, expected):
    assert C.compare(a, op, b, alpha=0.05, margin=1.0).status == expected


def test_majority_verdicts():
    assert C.majority(18, 19).status == C.HOLDS
    assert C.majority(2, 19).status == C.FAILS
    assert C.majority(11, 19).status == C.INCONCLUSIVE
    assert C.majority(10, 19, exact=True).status == C.HOLDS
    assert C.majority(9, 19, exact=True).status == C.FAILS


def test_non_increasing_verdicts():
    down = [(0, [90, 91, 89]), (10, [50, 52, 51]), (20, [40, 41, 42])]
    assert C.non_increasing({"m": down}, tolerance=1.0).status == C.HOLDS
    jump = [(0, [50, 51, 49]), (10, [60, 61, 59])]
    assert C.non_increasing({"m": down, "n": jump}, tolerance=1.0).status == C.FAILS
    noisy = [(0, [50, 40, 60]), (10, [55, 45, 65])]
    assert C.non_increasing({"m": noisy}, tolerance=1.0).status == C.INCONCLUSIVE
    small = [(0, [50, 50, 50]), (10, [50.5, 50.5, 50.5])]  # a rise within the tolerance
    assert C.non_increasing({"m": small}, tolerance=1.0).status == C.HOLDS


def test_bad_cell_is_one_line():
    with pytest.raises(C.ClaimError, match="expected '<table>/<row>/<metric>'"):
        C.parse_cell("table1-ASCL")
    spec = {
        "items": {
            "x": {
                "claim": "c",
                "source": "s",
                "quote": "q",
                "a": "table1/Nope/sa",
                "op": ">",
                "b": 1.0,
            }
        }
    }
    cells = {("table1", "ASCL", "sa"): C.Sample(80.0, 1.0, 3)}  # table1 built, no row "Nope"
    with pytest.raises(C.ClaimError, match="claims.items.x: no value for cell 'table1/Nope/sa'"):
        C.evaluate_claims(spec, cells, {})


def _table_csv(path, rows):
    """A table CSV in `ascl table`'s form: rows of (row, sa mean, sa std, n)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "row",
                "method",
                "strategy",
                "target",
                "sa_mean",
                "sa_std",
                "sa_published",
                "sa_diff",
                "n_seeds",
                "status",
            ]
        )
        for name, mean, std, n in rows:
            w.writerow([name, "m", "LAF", "source", mean, std, "", "", n, "ok"])
    return path


def test_claims_job_writes_every_output(tmp_path, capsys):
    """`ascl claims` on hand-made tables and figure files: one holds, one fails, one
    inconclusive, a majority and a curve claim; Markdown, CSV, JSON and HTML agree."""
    t = _table_csv(
        tmp_path / "table9.csv",
        [("A", 80, 1, 3), ("B", 70, 1, 3), ("C", 79, 6, 3), ("D", 90, 1, 3)],
    )
    figs = []
    for seed in range(3):
        corr = tmp_path / f"corruptions-a{seed}.csv"
        corr.write_text(
            "corruption,severity,accuracy\n"
            + "".join(f"c{k},1,{60 + k + seed}\n" for k in range(6))
        )
        corr_b = tmp_path / f"corruptions-b{seed}.csv"
        corr_b.write_text(
            "corruption,severity,accuracy\n" + "".join(f"c{k},1,{50 + seed}\n" for k in range(6))
        )
        strength = tmp_path / f"strength-{seed}.csv"
        strength.write_text("kind,value,ra\nsteps,0,80\nsteps,10,40\neps,0,80\neps,8,40\n")
        figs += [f"fig1/A={corr}", f"fig1/B={corr_b}", f"fig6/A={strength}"]
    spec = {
        "alpha": 0.05,
        "items": {
            "h": {"claim": "A > B", "a": "table9/A/sa", "op": ">", "b": "table9/B/sa"},
            "f": {"claim": "B > D", "a": "table9/B/sa", "op": ">", "b": "table9/D/sa"},
            "i": {"claim": "C > A", "a": "table9/C/sa", "op": ">", "b": "table9/A/sa"},
            "m": {"claim": "A most", "kind": "majority", "figure": "fig1", "a": "A", "b": "B"},
            "n": {"claim": "curves", "kind": "non_increasing", "figure": "fig6"},
        },
    }
    for item in spec["items"].values():
        item |= {"source": "sec. 0", "quote": "a sentence"}
    out = {k: tmp_path / f"claims.{k}" for k in ("md", "csv", "json", "html")}
    args = ["claims", "--claims", json.dumps(spec), "--tables", str(t)]
    args += [a for f in figs for a in ("--figure", f)]
    args += [x for k, p in out.items() for x in (f"--out-{k}", str(p))]
    assert main(args) == 0
    with out["csv"].open() as f:
        status = {r["id"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"h": C.HOLDS, "f": C.FAILS, "i": C.INCONCLUSIVE, "m": C.HOLDS, "n": C.HOLDS}
    metrics = json.loads(out["json"].read_text())
    assert metrics["h"]["holds"] == 1 and metrics["f"]["fails"] == 1
    assert metrics["m"]["effect"] == 6.0  # A wins on all six corruptions
    md = out["md"].read_text()
    assert "2 hold, 1 fail, 1 inconclusive" not in md  # five claims: 3 hold
    assert "3 hold, 1 fail, 1 inconclusive of 5 claims" in md
    assert "<table>" in out["html"].read_text()
    printed = capsys.readouterr().out
    assert "fails  B > D" in printed


def test_claims_job_missing_cell_is_one_line(tmp_path, capsys):
    t = _table_csv(tmp_path / "table9.csv", [("A", 80, 1, 3)])
    spec = {
        "items": {
            "x": {
                "claim": "c",
                "source": "s",
                "quote": "q",
                "a": "table9/Z/sa",
                "op": ">",
                "b": 1.0,
            }
        }
    }
    out = tmp_path / "c.md"
    code = main(
        [
            "claims",
            "--claims",
            json.dumps(spec),
            "--tables",
            str(t),
            "--out-md",
            str(out),
            "--out-csv",
            str(tmp_path / "c.csv"),
        ]
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "table9/Z/sa" in err


def test_learning_check_lists_rows_below_twice_chance(tmp_path):
    t = _table_csv(tmp_path / "table9.csv", [("A", 80, 1, 3), ("B", 19.9, 1, 3), ("C", 20, 0, 3)])
    rows = C.learning_check(
        C.table_cells([t]), C.table_targets([t]), {"source": 10.0, "stl10": 10, "cifar100": 1}
    )
    assert {r["row"]: r["learns"] for r in rows} == {"A": True, "B": False, "C": True}
    md = "\n".join(C.learning_markdown(rows, 2.0))
    assert "2 of 3 table rows do" in md and "| table9 | B | 19.90 ± 1.00 (3) | 10 |" in md


def test_claims_outside_the_configuration_are_not_evaluated(tmp_path):
    """A params slice without the claim's table or figure marks it 'not configured' (and
    says so in the summary line) instead of failing."""
    t = _table_csv(tmp_path / "table9.csv", [("A", 80, 1, 3), ("B", 70, 1, 3)])
    spec = {
        "items": {
            "h": {"claim": "A > B", "a": "table9/A/sa", "op": ">", "b": "table9/B/sa"},
            "t": {"claim": "other table", "a": "table1/ASCL/sa", "op": ">", "b": 1.0},
            "m": {"claim": "other metric", "a": "table9/A/ra_aa", "op": ">", "b": 1.0},
            "f": {"claim": "curves", "kind": "non_increasing", "figure": "fig6"},
        }
    }
    for r in spec["items"].values():
        r |= {"source": "s", "quote": "q"}
    rows = C.evaluate_claims(spec, C.table_cells([t]), {})
    assert {r["id"]: r["status"] for r in rows} == {
        "h": C.HOLDS,
        "t": C.NOT_CONFIGURED,
        "m": C.NOT_CONFIGURED,
        "f": C.NOT_CONFIGURED,
    }
    md = C.to_markdown(C.evaluate_claims(spec, C.table_cells([t]), {}), None, "T")
    assert "1 hold, 0 fail, 0 inconclusive of 1 claims (3 more read tables or figures" in md
