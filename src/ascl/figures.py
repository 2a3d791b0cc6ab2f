"""The paper's figures, drawn from the outputs of the evaluation jobs (`ascl.evaluations`).

One function per figure, each called with labelled inputs in display order (e.g.
``{"ASCL": "corruptions.csv", "AT": "..."}``), the output PNG path, a caption (a subtitle under
the plots, e.g. "offline stand-in data: digits10-c") and an optional title:

- fig1: accuracy per corruption (mean over severities), bars per model (ASCL vs a comparison);
  input: corruptions CSV (corruption, severity, accuracy)
- fig2: feature inversion maps, one block of rows per model (seed, then one image per
  component); input: inversion .npz
- fig3: t-SNE panels, one per model, points coloured by class; input: t-SNE CSV (x, y, label)
- fig4: input loss landscapes, one 3-D surface per model; input: CSV (a, b, loss)
- fig5: weight loss landscape curves, all models on one axis; input: CSV (alpha, loss, ...)
- fig6: RA vs PGD steps (left) and vs radius (right); input: strength CSV (kind, value, ra)
- fig7: fig1's bars for several models (the component ablation)

Matplotlib is used without pyplot (Agg canvas, no global state). The PNG is written to a
temporary file in the target directory and renamed into place.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ascl.errors import FormatError, ParamsError

DPI = 120


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _finish(fig, out: str | Path, title: str, caption: str) -> Path:
    fig.suptitle(title, fontsize=12)
    if caption:
        fig.supxlabel(caption, fontsize=8, style="italic")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _rows(path: str | Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    from ascl.evaluations.common import read_csv

    return read_csv(path, columns)


def _float(row: dict[str, str], key: str, path) -> float:

    try:
        return float(row[key])
    except (TypeError, ValueError):
        raise FormatError(f"{path}: column {key!r}: not a number: {row[key]!r}") from None


# ---------------------------------------------------------------------------------------------
# Fig. 1 and 7: corruptions


def corruption_means(path: str | Path) -> dict[str, float]:
    """{corruption: mean accuracy over severities} of a corruptions CSV, in file order."""
    sums: dict[str, list[float]] = {}
    for row in _rows(path, ("corruption", "severity", "accuracy")):
        sums.setdefault(row["corruption"], []).append(_float(row, "accuracy", path))
    return {c: sum(v) / len(v) for c, v in sums.items()}


def _corruption_bars(inputs: dict[str, str | Path], out, caption: str, title: str) -> Path:
    means = {label: corruption_means(path) for label, path in inputs.items()}
    names = list(next(iter(means.values())))
    for label, m in means.items():
        missing = [c for c in names if c not in m]
        if missing:
            raise FormatError(f"{inputs[label]}: no rows for {', '.join(missing)}")
    groups = [*names, "mean"]
    fig = _figure(max(8.0, 0.55 * len(groups) * max(1, len(inputs)) ** 0.5 + 2), 4.8)
    ax = fig.add_subplot()
    width = 0.8 / len(inputs)
    x = np.arange(len(groups))
    for i, (label, m) in enumerate(means.items()):
        values = [m[c] for c in names]
        values.append(sum(values) / len(values))
        ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=label)
    ax.set_xticks(x, [g.replace("_", " ") for g in groups], rotation=60, ha="right")
    ax.set_ylabel("accuracy (%), mean over severities 1-5")
    ax.set_xlabel("corruption")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="model")
    return _finish(fig, out, title, caption)


def fig1(inputs: dict[str, str | Path], *, out, caption: str = "", title: str | None = None):
    """Bars per corruption: ASCL vs a comparison model (Fig. 1)."""
    return _corruption_bars(
        inputs, out, caption, title or "Fig. 1: accuracy under common corruptions"
    )


def fig7(inputs: dict[str, str | Path], *, out, caption: str = "", title: str | None = None):
    """Bars per corruption for several models: the objective's components (Fig. 7)."""
    return _corruption_bars(
        inputs,
        out,
        caption,
        title or "Fig. 7: components of the objective under common corruptions",
    )


# ---------------------------------------------------------------------------------------------
# Fig. 2: feature inversion


def _inversion(path: str | Path) -> dict[str, np.ndarray]:

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"inversion file not found: {path}")
    keys = ("seeds", "images", "components", "seed_kind")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise FormatError(f"{path}: missing key(s) {', '.join(missing)}")
            return {k: npz[k] for k in keys}
    except (ValueError, OSError) as err:
        raise FormatError(f"{path}: not an inversion file ({str(err).splitlines()[0]})") from None


def _image(arr: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) for imshow."""
    return np.clip(arr.transpose(1, 2, 0), 0, 1)


def fig2(inputs: dict[str, str | Path], *, out, caption: str = "", title: str | None = None):
    """Feature inversion maps: per model, one row per seed (seed, then each component)."""
    data = {label: _inversion(path) for label, path in inputs.items()}
    n_rows = sum(len(d["seeds"]) for d in data.values())
    n_cols = 1 + max(len(d["components"]) for d in data.values())
    fig = _figure(max(6.5, 1.3 * n_cols + 1.2), 1.3 * n_rows + 1.2)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    r = 0
    for label, d in data.items():
        for s in range(len(d["seeds"])):
            row = axes[r]
            row[0].imshow(_image(d["seeds"][s]), interpolation="nearest")
            row[0].set_ylabel(f"{label}\n{d['seed_kind'][s]} seed", fontsize=8)
            for k, comp in enumerate(d["components"]):
                row[1 + k].imshow(_image(d["images"][s, k]), interpolation="nearest")
                if r == 0 or s == 0:
                    row[1 + k].set_title(f"component {int(comp)}", fontsize=8)
            if r == 0 or s == 0:
                row[0].set_title("seed input", fontsize=8)
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
            for ax in row[1 + len(d["components"]) :]:
                ax.axis("off")
            r += 1
    return _finish(
        fig,
        out,
        title or "Fig. 2: feature inversion maps\n(inputs maximising one component, from the seed)",
        caption,
    )


# ---------------------------------------------------------------------------------------------
# Fig. 3: t-SNE


def fig3(inputs: dict[str, str | Path], *, out, caption: str = "", title: str | None = None):
    """t-SNE of the penultimate features, one panel per model, coloured by class."""
    n = len(inputs)
    fig = _figure(4.2 * n + 1.4, 4.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    handles = {}
    for ax, (label, path) in zip(axes, inputs.items(), strict=True):
        rows = _rows(path, ("x", "y", "label"))
        xy = np.array([[_float(r, "x", path), _float(r, "y", path)] for r in rows])
        labels = np.array([int(float(r["label"])) for r in rows])
        classes = np.unique(labels)
        cmap = _class_colors(int(labels.max()) + 1)
        for k in classes:
            sel = labels == k
            handles[int(k)] = ax.scatter(
                xy[sel, 0], xy[sel, 1], s=6, color=cmap[int(k)], label=f"class {k}"
            )
        ax.set_title(f"{label} ({len(rows)} test images)")
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    keys = sorted(handles)
    fig.legend(
        [handles[k] for k in keys],
        [f"class {k}" for k in keys],
        loc="outside right center",
        markerscale=2,
        fontsize=8,
    )
    return _finish(fig, out, title or "Fig. 3: t-SNE of the penultimate representation", caption)


def _class_colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Fig. 4: input loss landscape


def landscape_grid(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a values (P,), b values (Q,), loss (P, Q)) of an input-landscape CSV."""

    rows = _rows(path, ("a", "b", "loss"))
    a = sorted({_float(r, "a", path) for r in rows})
    b = sorted({_float(r, "b", path) for r in rows})
    loss = np.full((len(a), len(b)), np.nan)
    ia, ib = {v: i for i, v in enumerate(a)}, {v: i for i, v in enumerate(b)}
    for r in rows:
        loss[ia[float(r["a"])], ib[float(r["b"])]] = _float(r, "loss", path)
    if np.isnan(loss).any():
        raise FormatError(f"{path}: the (a, b) points do not form a full grid")
    return np.array(a), np.array(b), loss


def fig4(inputs: dict[str, str | Path], *, out, caption: str = "", title: str | None = None):
    """Input loss landscapes: one surface per model over (adversarial, random) directions."""
    n = len(inputs)
    fig = _figure(4.6 * n + 0.6, 4.6)
    grids = {label: landscape_grid(path) for label, path in inputs.items()}
    top = max(float(g[2].max()) for g in grids.values())
    for i, (label, (a, b, loss)) in enumerate(grids.items()):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        A, B = np.meshgrid(a, b, indexing="ij")
        ax.plot_surface(A, B, loss, cmap="viridis", vmin=0, vmax=top, linewidth=0)
        ax.set_zlim(0, top * 1.05 if top > 0 else 1)
        ax.set_title(label)
        ax.set_xlabel("adversarial dir. (1/255)", fontsize=8)
        ax.set_ylabel("random dir. (1/255)", fontsize=8)
        ax.set_zlabel("cross-entropy loss", fontsize=8)
    return _finish(fig, out, title or "Fig. 4: input loss landscape around test images", caption)


# ---------------------------------------------------------------------------------------------
# Fig. 5: weight loss landscape


def fig5(inputs: dict[str, str | Path], *, out, caption: str = "", title: str | None = None):
    """Adversarial loss vs filter-normalised weight perturbation α, one curve per model."""
    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot()
    for label, path in inputs.items():
        rows = sorted(_rows(path, ("alpha", "loss")), key=lambda r: _float(r, "alpha", path))
        alpha = [_float(r, "alpha", path) for r in rows]
        line = ax.plot(alpha, [_float(r, "loss", path) for r in rows], marker="o", ms=3)
        if all(r.get("clean_loss") not in (None, "") for r in rows):
            ax.plot(
                alpha,
                [_float(r, "clean_loss", path) for r in rows],
                ls="--",
                color=line[0].get_color(),
                alpha=0.6,
            )
        line[0].set_label(label)
    ax.plot([], [], ls="-", color="grey", label="adversarial loss (solid)")
    ax.plot([], [], ls="--", color="grey", label="clean loss (dashed)")
    ax.set_xlabel("weight perturbation α (filter-normalised direction)")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, out, title or "Fig. 5: weight loss landscape", caption)


# ---------------------------------------------------------------------------------------------
# Fig. 6: attack strength


def strength_curves(path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """{"steps" | "eps": (values, ra)} of a strength CSV, values ascending."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in _rows(path, ("kind", "value", "ra")):
        curves.setdefault(r["kind"], []).append((_float(r, "value", path), _float(r, "ra", path)))
    return {k: ([v for v, _ in sorted(p)], [ra for _, ra in sorted(p)]) for k, p in curves.items()}


def fig6(inputs: dict[str, str | Path], *, out, caption: str = "", title: str | None = None):
    """Robust accuracy vs PGD steps (left) and vs radius ε (right), one curve per model."""
    fig = _figure(10.0, 4.2)
    left, right = fig.subplots(1, 2)
    for label, path in inputs.items():
        curves = strength_curves(path)
        if "steps" in curves:
            left.plot(*curves["steps"], marker="o", ms=3, label=label)
        if "eps" in curves:
            right.plot(*curves["eps"], marker="o", ms=3, label=label)
    left.set_xlabel("PGD steps")
    left.set_title("varying steps (fixed ε)", fontsize=10)
    right.set_xlabel("perturbation budget ε (×1/255)")
    right.set_title("varying radius (fixed steps)", fontsize=10)
    for ax in (left, right):
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(
        fig, out, title or "Fig. 6: robustness under attacks of varying strength", caption
    )


FIGURES: dict[str, Callable[..., Path]] = {
    "fig1": fig1,
    "fig2": fig2,
    "fig3": fig3,
    "fig4": fig4,
    "fig5": fig5,
    "fig6": fig6,
    "fig7": fig7,
}


def draw(
    name: str,
    inputs: dict[str, str | Path],
    *,
    out: str | Path,
    caption: str = "",
    title: str | None = None,
) -> Path:
    """Draw figure `name` ("fig1".."fig7") from labelled inputs into the PNG `out`."""

    if name not in FIGURES:
        raise ParamsError(f"unknown figure {name!r} (known: {', '.join(FIGURES)})")
    if not inputs:
        raise ParamsError(f"{name}: no inputs")
    return FIGURES[name](inputs, out=out, caption=caption, title=title)
