"""The registries of the workflow's jobs: `KINDS`, one `JobKind` per kind of job (its command,
the module of its job function, the code its hash covers, its DVC stage), and `REGISTRY`, one
`Evaluation` per evaluation command. The command line (`ascl.cli`, `ascl.evaluations.cli`), the
params checks and settings (`ascl.config`), the code hashes (`ascl.codehash`), the workflow and
the generated dvc.yaml (`ascl.dag`) read them; nothing else lists job kinds.

Metadata only (standard library): the jobs themselves live in the modules named here, imported by
name where a command runs. See docs/architecture.md for how to add a job kind or an evaluation.
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


# The DAG's layers, in order: each is one DVC stage (`ascl.dag`) and one rules file.
STAGES = {
    "data": "workflow/rules/data.smk",
    "pretrain": "workflow/rules/pretrain.smk",
    "finetune": "workflow/rules/finetune.smk",
    "evaluate": "workflow/rules/evaluate.smk",
    "paper": "workflow/rules/report.smk",
}


@dataclass(frozen=True)
class JobKind:
    """One kind of workflow job: its name (the code-hash key, `ascl.codehash.code_hash(name)`),
    its DVC stage (a key of `STAGES`), the module holding its job function (imported first by
    the command line, so that a job's log tells import time from work), the `ascl` commands
    that run it, and further modules its code hash covers (`code`: entry modules whose imports
    are followed)."""

    name: str
    stage: str
    module: str
    commands: tuple[str, ...] = ()
    code: tuple[str, ...] = ()

    @property
    def entries(self) -> list[str]:
        """Entry modules of the code hash: the job's module and `code`."""
        return [self.module, *self.code]


def _kinds() -> dict[str, JobKind]:
    kinds = [
        JobKind("download", "data", "ascl.data", ("download",)),
        JobKind("download_corruptions", "data", "ascl.data.corrupt", code=("ascl.data",)),
        JobKind("pseudo_labels", "pretrain", "ascl.pseudo_labels", ("pseudo-labels",)),
        JobKind("pretrain", "pretrain", "ascl.pretrain", ("pretrain",)),
        JobKind("finetune", "finetune", "ascl.finetune", ("finetune",)),
        JobKind("evaluate", "evaluate", "ascl.evaluations.pgd", ("evaluate",)),
        # each evaluation kind its own hash: editing one evaluation reruns its jobs only
        *(
            JobKind(
                f"evaluations.{key}",
                "evaluate",
                f"ascl.evaluations.{key}",
                tuple(c for c, e in REGISTRY.items() if e.key == key),
                ("ascl.evaluations.cli",),
            )
            for key in EVALUATIONS
        ),
        JobKind("table", "paper", "ascl.report", ("table", "summary")),
        JobKind("claims", "paper", "ascl.claims", ("claims",)),
        JobKind("figure", "paper", "ascl.figures", ("figure",), ("ascl.evaluations.cli",)),
    ]
    return {k.name: k for k in kinds}


# name -> JobKind: every kind of job the workflow runs.
KINDS = _kinds()


def command_module(command: str) -> str | None:
    """The module of the job a command runs (None: the command is not a job)."""
    for kind in KINDS.values():
        if command in kind.commands:
            return kind.module
    return None
