"""The registry of the evaluation jobs: one `Evaluation` entry per evaluation command, read by
the command line (`ascl.cli`, `ascl.evaluations.cli`), the params checks and settings
(`ascl.config`), the code hashes (`ascl.codehash`) and the workflow (its figure inputs).

Metadata only (standard library): the jobs themselves live in `ascl.evaluations.<key>`, imported
by name where a command runs. See `ascl.evaluations` for the table of evaluations and how to add
one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Evaluation:
    """One evaluation command: its params key (`evaluate.<key>`, the settings' kind, the module
    `ascl.evaluations.<key>`), job function, help, what --out holds, what --data takes ("npz":
    a prepared data set, "dir": a directory of corrupted sets, None: no data set), the extra
    command-line options it takes (`ascl.evaluations.cli.OPTIONS`), and the file of its
    evaluation directory that a figure plots (None: no figure reads it)."""

    key: str
    function: str
    help: str
    out: str = "metrics JSON"
    data: str | None = "npz"
    options: tuple[str, ...] = ()
    figure_output: str | None = None


# command -> Evaluation: the one list of evaluations, read by the command line, the params
# checks (ascl.config) and the workflow (figure inputs). The PGD evaluation (`ascl evaluate`,
# ascl.evaluations.pgd) is the model's own metrics job and is run by ascl.cli.
REGISTRY = {
    "autoattack": Evaluation(
        "autoattack",
        "run_autoattack",
        "RA under AutoAttack (standard) and SA (Tables 1, 5)",
        options=("state",),
    ),
    "blackbox-craft": Evaluation(
        "blackbox",
        "run_blackbox_craft",
        "craft PGD examples on a source model (Table 2)",
        out="crafted set (.npz)",
        options=("name",),
    ),
    "blackbox-eval": Evaluation(
        "blackbox",
        "run_blackbox_eval",
        "accuracy of a target model on crafted sets of other sources (Table 2)",
        data=None,
        options=("target_name", "source"),
    ),
    "corruptions": Evaluation(
        "corruptions",
        "run_corruptions",
        "accuracy per corruption and severity (Fig. 1, 7)",
        data="dir",
        options=("out_csv",),
        figure_output="corruptions.csv",
    ),
    "tsne": Evaluation(
        "tsne",
        "run_tsne",
        "t-SNE of the penultimate features (Fig. 3)",
        out="CSV (x, y, label)",
        figure_output="tsne.csv",
    ),
    "inversion": Evaluation(
        "inversion",
        "run_inversion",
        "feature inversion maps (Fig. 2)",
        out="CSV (seed, seed_kind, component, before, after)",
        options=("out_npz",),
        figure_output="inversion.npz",
    ),
    "landscape-input": Evaluation(
        "landscape_input",
        "run_landscape_input",
        "input loss landscape (Fig. 4)",
        out="CSV (a, b, loss)",
        figure_output="landscape_input.csv",
    ),
    "landscape-weight": Evaluation(
        "landscape_weight",
        "run_landscape_weight",
        "weight loss landscape (Fig. 5)",
        out="CSV (alpha, loss, clean_loss)",
        figure_output="landscape_weight.csv",
    ),
    "strength": Evaluation(
        "strength",
        "run_strength",
        "RA vs PGD steps and radius (Fig. 6)",
        out="CSV (kind, value, ra)",
        figure_output="strength.csv",
    ),
}
# The settings keys (`evaluate.<key>` sections of params.yaml), in registry order.
EVALUATIONS = tuple(dict.fromkeys(e.key for e in REGISTRY.values()))
# {key: output file} of the evaluations a figure can plot.
FIGURE_OUTPUTS = {e.key: e.figure_output for e in REGISTRY.values() if e.figure_output}
