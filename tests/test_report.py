"""Paper tables from fixed metrics files: rows, values, published numbers, differences."""

import csv
import json
import math

import pytest

from ascl import cli
from ascl.report import (
    NOT_COMPUTED,
    PUBLISHED_ONLY,
    build_table,
    load_published,
    metrics_path,
    required_files,
    summarize,
    write_table,
)

SPEC = {
    "table": "table1",
    "title": "Table 1",
    "metrics": ["ra_pgd_eps8", "ra_aa", "sa"],
    "rows": [
        ["AT", {"method": "at", "strategy": "E2E"}],
        ["Selfie", {"published_only": True}],
        ["ASCL", {"method": "ascl", "strategy": "LAF"}],
    ],
    "seeds": [0, 1],
}
PUBLISHED = {
    "table1": {
        "AT": {"ra_pgd_eps8": 44.0, "ra_aa": 40.0, "sa": 84.0},
        "Selfie": {"ra_pgd_eps8": 37.65, "ra_aa": None, "sa": 74.3},
        "ASCL": {"ra_pgd_eps8": 53.0, "ra_aa": 45.0, "sa": 81.0},
    }
}
VALUES = {  # (method, seed) -> pgd metrics, autoattack metrics
    ("at", 0): ({"sa": 80.0, "ra_pgd_eps8": 40.0}, {"ra_aa": 30.0}),
    ("at", 1): ({"sa": 82.0, "ra_pgd_eps8": 44.0}, {"ra_aa": 34.0}),
    ("ascl", 0): ({"sa": 70.0, "ra_pgd_eps8": 50.0}, {"ra_aa": 41.0}),
    ("ascl", 1): ({"sa": 76.0, "ra_pgd_eps8": 52.0}, {"ra_aa": 43.0}),
}


def write_metrics(results, skip=()):
    rows = {
        "at": {"method": "at", "strategy": "E2E"},
        "ascl": {"method": "ascl", "strategy": "LAF"},
    }
    for (method, seed), (pgd, aa) in VALUES.items():
        for evaluation, data in (("pgd", pgd), ("autoattack", aa)):
            if (method, seed, evaluation) in skip:
                continue
            path = metrics_path(results, rows[method], seed, evaluation)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data))


def by_hand(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def test_rows_values_and_differences(tmp_path):
    write_metrics(tmp_path)
    rows = build_table(SPEC, tmp_path, PUBLISHED)
    assert [r["row"] for r in rows] == ["AT", "Selfie", "ASCL"]  # order kept, nothing dropped
    for r, method in ((rows[0], "at"), (rows[2], "ascl")):
        assert r["status"] == "ok" and r["n_seeds"] == 2
        for metric, idx in (("sa", 0), ("ra_pgd_eps8", 0), ("ra_aa", 1)):
            mean, std = by_hand([VALUES[(method, s)][idx][metric] for s in (0, 1)])
            cell = r[metric]
            assert cell["mean"] == pytest.approx(mean) and cell["std"] == pytest.approx(std)
            assert cell["published"] == PUBLISHED["table1"][r["row"]][metric]
            assert cell["diff"] == pytest.approx(mean - cell["published"])
    selfie = rows[1]
    assert selfie["status"] == PUBLISHED_ONLY and selfie["sa"]["mean"] is None
    assert selfie["sa"]["published"] == 74.3 and selfie["ra_aa"]["published"] is None


def test_markdown_and_csv(tmp_path):
    write_metrics(tmp_path)
    md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    write_table(SPEC, tmp_path, md, out_csv, PUBLISHED)
    text = md.read_text()
    assert "| AT | at | E2E | source | 42.00 ± 2.83 | 44.00 | -2.00 |" in text
    assert "| Selfie | — | — | — | — | 37.65 | — |" in text and "published only" in text
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["row"] for r in rows] == ["AT", "Selfie", "ASCL"]
    assert float(rows[2]["sa_mean"]) == pytest.approx(73.0)
    assert float(rows[2]["sa_diff"]) == pytest.approx(-8.0)
    assert rows[1]["sa_mean"] == "" and rows[1]["status"] == PUBLISHED_ONLY
    # per-seed values, in the order of the seeds column (read by the claims report)
    assert rows[0]["seeds"] == "0;1" and rows[1]["seeds"] == "" and rows[1]["sa_seeds"] == ""
    for r, method in ((rows[0], "at"), (rows[2], "ascl")):
        for metric, idx in (("sa", 0), ("ra_pgd_eps8", 0), ("ra_aa", 1)):
            per_seed = [float(v) for v in r[f"{metric}_seeds"].split(";")]
            assert per_seed == [VALUES[(method, s)][idx][metric] for s in (0, 1)]
    summary = summarize([out_csv])
    assert summary == {
        "t": {
            "AT": pytest.approx({"ra_pgd_eps8": 42.0, "ra_aa": 32.0, "sa": 81.0}),
            "ASCL": pytest.approx({"ra_pgd_eps8": 51.0, "ra_aa": 42.0, "sa": 73.0}),
        }
    }


def test_missing_metrics_file_is_named(tmp_path):
    write_metrics(tmp_path, skip={("ascl", 1, "autoattack")})
    missing = metrics_path(tmp_path, {"method": "ascl", "strategy": "LAF"}, 1, "autoattack")
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_table(SPEC, tmp_path, PUBLISHED)
    rows = build_table(SPEC, tmp_path, PUBLISHED, partial=True)
    assert rows[2]["status"] == NOT_COMPUTED and rows[2]["ra_aa"]["mean"] is None
    assert rows[2]["sa"]["mean"] == pytest.approx(73.0)  # what exists is still shown
    assert missing in required_files(SPEC, tmp_path)


def test_cli_missing_file_one_line(tmp_path, capsys):
    code = cli.main(
        [
            "table",
            "--spec",
            json.dumps(SPEC),
            "--results",
            str(tmp_path),
            "--out-md",
            str(tmp_path / "t.md"),
            "--out-csv",
            str(tmp_path / "t.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ascl: error: metrics file not found: ")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.md").exists() and not (tmp_path / "t.csv").exists()


MATRIX = {
    "table": "table2",
    "kind": "matrix",
    "title": "Table 2",
    "metrics": ["ra"],
    "models": [
        ["AT", {"method": "at", "strategy": "E2E"}],
        ["ASCL", {"method": "ascl", "strategy": "LAF"}],
        ["ACL", {"method": "acl", "strategy": "FAF"}],
    ],
    "seeds": [0],
}


def test_matrix_excludes_diagonal_and_orients_target_rows(tmp_path):
    ra = {
        "at": {"ascl/LAF": 60.0, "acl/FAF": 66.0},
        "ascl": {"at/E2E": 62.0, "acl/FAF": 67.0},
        "acl": {"at/E2E": 53.0, "ascl/LAF": 51.0},
    }
    models = dict(MATRIX["models"])
    for row in models.values():
        path = metrics_path(tmp_path, row, 0, "blackbox")
        path.parent.mkdir(parents=True)
        path.write_text(
            json.dumps({"target": f"{row['method']}/{row['strategy']}", "ra": ra[row["method"]]})
        )
    published = load_published()
    rows = build_table(MATRIX, tmp_path, published)
    pairs = {(r["row"], r["source"]): r["ra"] for r in rows}
    assert len(rows) == 6 and all(t != s for t, s in pairs)
    assert pairs[("AT", "ASCL")]["mean"] == 60.0
    assert pairs[("AT", "ASCL")]["published"] == 59.39  # target AT, source ASCL in the paper
    assert pairs[("ASCL", "AT")]["published"] == 62.16
    assert pairs[("AT", "ASCL")]["diff"] == pytest.approx(60.0 - 59.39)
    md = tmp_path / "m.md"
    write_table(MATRIX, tmp_path, md, tmp_path / "m.csv", published)
    with (tmp_path / "m.csv").open() as f:
        by_pair = {(r["row"], r["source"]): r for r in csv.DictReader(f)}
    assert (
        by_pair[("AT", "ASCL")]["ra_seeds"] == "60.0000" and by_pair[("AT", "ASCL")]["seeds"] == "0"
    )
    lines = [ln for ln in md.read_text().splitlines() if ln.startswith("| AT ")]
    assert lines and lines[0].split("|")[2].strip() == "×"


def test_published_transcription_covers_the_paper():
    published = load_published()
    assert sorted(published) == ["figures"] + [f"table{i}" for i in range(1, 9)]
    # Fig. 1 as its text states it (sec. 4.2.3.2): better on 18 of 19 corruptions, +5.55 mean
    assert published["figures"]["fig1"] == {"wins": 18, "of": 19, "mean_gain": 5.55}
    assert published["table1"]["ASCL"] == {"ra_pgd_eps8": 53.09, "ra_aa": 45.70, "sa": 81.67}
    assert published["table6"]["Ensemble"]["ra_pgd_eps16"] == 23.01
    assert "ASCL" not in published["table2"]["ASCL"]  # the diagonal is not reported


def test_html_page(tmp_path):
    write_metrics(tmp_path)
    page = tmp_path / "t.html"
    write_table(SPEC, tmp_path, tmp_path / "t.md", tmp_path / "t.csv", PUBLISHED, out_html=page)
    text = page.read_text()
    assert text.count("<tr>") == 4  # header + 3 rows
    assert "<td>42.00 ± 2.83</td><td>44.00</td><td>-2.00</td>" in text
