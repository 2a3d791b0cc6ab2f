"""Every paper figure is drawn from fixed evaluation outputs into a non-empty PNG (atomically);
malformed inputs are one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ascl import figures
from ascl.cli import main
from ascl.data import CIFAR10C_CORRUPTIONS, FormatError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write(path, header, rows):
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def corruption_csv(path, shift):
    rows = [
        (c, s, round(90 - 4 * s - 2 * (i % 5) + shift, 2))
        for i, c in enumerate(CIFAR10C_CORRUPTIONS)
        for s in range(1, 6)
    ]
    return write(path, ("corruption", "severity", "accuracy"), rows)


def tsne_csv(path, seed):
    rng = np.random.default_rng(seed)
    rows = [
        (round(float(rng.normal(3 * (k % 5), 1)), 3), round(float(rng.normal(k // 5, 1)), 3), k)
        for k in range(10)
        for _ in range(8)
    ]
    return write(path, ("x", "y", "label"), rows)


def input_csv(path, curvature):
    grid = [-8.0, -4.0, 0.0, 4.0, 8.0]
    rows = [
        (a, b, round(0.5 + curvature * (a / 8) ** 2 + 0.1 * (b / 8) ** 2, 4))
        for a in grid
        for b in grid
    ]
    return write(path, ("a", "b", "loss"), rows)


def weight_csv(path, sharpness):
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    rows = [(a, 1 + sharpness * a * a, 0.3 + sharpness * a * a / 2) for a in alphas]
    return write(path, ("alpha", "loss", "clean_loss"), rows)


def strength_csv(path, level):
    rows = [("steps", k, level - 10 * math.log1p(k)) for k in (0, 10, 20, 50, 100)]
    rows += [("eps", e, level * math.exp(-e / 10)) for e in (0, 4, 8, 16, 32)]
    return write(path, ("kind", "value", "ra"), rows)


def inversion_npz(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        seeds=rng.random((3, 3, 16, 16), dtype=np.float32),
        images=rng.random((3, 2, 3, 16, 16), dtype=np.float32),
        components=np.array([0, 5]),
        seed_kind=np.array(["image", "image", "noise"]),
        labels=np.array([1, 2, -1]),
    )
    return path


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "name, make",
    [
        ("fig1", lambda d, i: corruption_csv(d / f"c{i}.csv", 3 * i)),
        ("fig2", lambda d, i: inversion_npz(d / f"i{i}.npz", i)),
        ("fig3", lambda d, i: tsne_csv(d / f"t{i}.csv", i)),
        ("fig4", lambda d, i: input_csv(d / f"l{i}.csv", 1 + i)),
        ("fig5", lambda d, i: weight_csv(d / f"w{i}.csv", 1 + i)),
        ("fig6", lambda d, i: strength_csv(d / f"s{i}.csv", 80 - 10 * i)),
        ("fig7", lambda d, i: corruption_csv(d / f"c{i}.csv", 3 * i)),
    ],
)
def test_figure_writes_png(tmp_path, name, make):
    labels = ["ASCL", "AT"] if name != "fig7" else ["AT", "AT + CL", "ASCL"]
    inputs = {label: make(tmp_path, i) for i, label in enumerate(labels)}
    out = tmp_path / "out" / f"{name}.png"
    assert figures.draw(name, inputs, out=out, caption="offline stand-in data (digits10)") == out
    check_png(out)


def test_figure_cli_and_one_line_errors(tmp_path, capsys):
    a = corruption_csv(tmp_path / "a.csv", 0)
    b = corruption_csv(tmp_path / "b.csv", 5)
    out = tmp_path / "fig1.png"
    code = main(
        ["figure", "fig1", "--input", f"ASCL={a}", "--input", f"Hendrycks={b}", "--out", str(out),
         "--caption", "digits10-c stand-in", "--title", "Fig. 1 (smoke)"]
    )  # fmt: skip
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    check_png(out)
    bad = write(tmp_path / "bad.csv", ("corruption", "accuracy"), [("fog", 1.0)])
    with pytest.raises(FormatError, match="missing column"):
        figures.fig1({"X": bad}, out=tmp_path / "x.png")
    code = main(["figure", "fig1", "--input", f"X={bad}", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing column(s) severity" in err[0]
    code = main(["figure", "fig6", "--input", "no-label", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["ascl: error: --input 'no-label': expected LABEL=PATH"]
    code = main(["figure", "fig6", "--input", f"A={tmp_path / 'nope.csv'}", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"ascl: error: figure input not found: {tmp_path / 'nope.csv'}"]
    assert not (tmp_path / "x.png").exists()
