"""The paper's evaluations beyond PGD accuracy, one module and one job function each.

=================  =======================================  ====================================
settings key       job function (module)                    paper
=================  =======================================  ====================================
autoattack         run_autoattack (autoattack)              RA-AA, Tables 1 and 5
blackbox           run_blackbox_craft / run_blackbox_eval   Table 2 (transfer attacks)
corruptions        run_corruptions (corruptions)            Fig. 1 and 7 (CIFAR-10-C)
tsne               run_tsne (tsne)                          Fig. 3
inversion          run_inversion (inversion)                Fig. 2 (eq. 11)
landscape_input    run_landscape_input (landscape_input)    Fig. 4
landscape_weight   run_landscape_weight (landscape_weight)  Fig. 5
strength           run_strength (strength)                  Fig. 6
=================  =======================================  ====================================

`REGISTRY` lists them; adding one is a module with its job function (built on
`common.evaluation_job`), one `REGISTRY` entry, its `evaluate.<key>` params (and schema) and its
workflow rule. Each job takes the settings resolved by
`ascl.config.evaluation_settings(params, key)`, the
finetuned classifier checkpoint(s), the data, its output path(s), the seed, and logs its metrics
to an MLflow child run of the model's run. Modules are imported lazily (torch, scikit-learn and
AutoAttack are only loaded by the job that needs them).
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
