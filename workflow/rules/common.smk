import atexit
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from ascl import codehash as ascl_codehash
from ascl import config as ascl_config
from ascl import dag as ascl_dag
from ascl import local_server as ascl_local_server

try:
    ascl_config.validate_params(config)
except ascl_config.ParamsError as err:
    sys.exit(f"ascl: error: {err}")
# set_default=False: the schema has boolean subschemas (per-objective keys), and every
# default lives in params.yaml itself.
validate(config, "../../src/ascl/params.schema.yaml", set_default=False)

# data.image_size: every set is stored downscaled (a param: a change rebuilds the data)
IMAGE_SIZE_ARG = (
    f"--image-size {config['data']['image_size']}"
    if config["data"].get("image_size")
    else ""
)
SEEDS = config["seeds"]
SRC = Path(workflow.basedir).parent / "src" / "ascl"
EVAL_DIR = ascl_dag.EVAL_DIR
EVAL_LOG = "logs/evaluate/{method}/{strategy}/{target}/seed{seed}"


wildcard_constraints:
    method=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    strategy=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    target=r"source|stl10|cifar100",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    seed=r"\d+",
    table=r"table[1-8]",
    fig=r"fig[1-7]",
    curve=r"tsne|landscape_input|landscape_weight|strength",


def code_hash(kind):
    """Hash of the package files a job kind imports (ascl.codehash): a param of every job, so
    editing a module reruns the jobs that import it."""
    return ascl_codehash.code_hash(kind, SRC)


def pseudo_label_source(method):
    return ascl_config.pseudo_label_source(config, method)


def pseudo_labels_input(wildcards):
    """The pseudo-labels file a method trains on (AdvCL), or nothing."""
    if pseudo_label_source(wildcards.method) is None:
        return []
    return f"results/pretrain/{wildcards.method}/seed{wildcards.seed}/pseudo_labels.npz"


def dataset_file(name):
    return ascl_dag.dataset_file(config, name)


def target_file(wildcards):
    return dataset_file(ascl_config.target_dataset(config, wildcards.target))


def pretrain_json(wildcards):
    return ascl_config.settings_json(
        ascl_config.pretrain_settings(config, wildcards.method)
    )


def finetune_json(wildcards):
    return ascl_config.settings_json(
        ascl_config.finetune_settings(config, wildcards.strategy)
    )


def evaluate_json(wildcards):
    return ascl_config.settings_json(ascl_config.evaluate_settings(config))


def res(kind, key):
    return config["resources"][kind][key]


def eval_resources():
    return {
        k: res("evaluate", k) for k in ("gpu", "runtime", "mem_mb", "cpus_per_task")
    }


def evaluation_json(kind):
    return lambda wildcards: ascl_config.settings_json(
        ascl_config.evaluation_settings(config, kind)
    )


def model_inputs(wildcards):
    """The finetuned model an evaluation job reads, and its MLflow run id (the parent run)."""
    d = model_dir(
        wildcards.method, wildcards.strategy, wildcards.target, wildcards.seed
    )
    return {"model": f"{d}/model.pt", "parent": f"{d}/run_id.txt"}


def corruptions_dir():
    return ascl_dag.corruptions_dir(config)


def _blackbox_others(wildcards):
    return ascl_dag.blackbox_others(config, wildcards.method, wildcards.strategy)


def blackbox_sources(wildcards):
    """Examples crafted on every other model of the matrix (the diagonal is excluded)."""
    return [
        eval_file(ref, wildcards.seed, "blackbox_examples.npz")
        for ref in _blackbox_others(wildcards)
    ]


def blackbox_source_args(wildcards):
    names = [f"{r['method']}/{r['strategy']}" for r in _blackbox_others(wildcards)]
    return " ".join(
        f"--source {shlex.quote(n)}={path}"
        for n, path in zip(names, blackbox_sources(wildcards), strict=True)
    )


eval_file = ascl_dag.eval_file
encoder_path = ascl_dag.encoder_path
model_dir = ascl_dag.model_dir


def figure_files(fig):
    """[(model label, evaluation output)] of a figure, in params order (first seed)."""
    return ascl_dag.figure_files(config, fig)


def figure_inputs(wildcards):
    return [path for _, path in figure_files(wildcards.fig)]


def figure_args(wildcards):
    return " ".join(
        f"--input {shlex.quote(f'{label}={path}')}"
        for label, path in figure_files(wildcards.fig)
    )


def figure_caption(fig):
    return ascl_dag.figure_caption(config, fig)


def evaluation_targets():
    """Every evaluation output the tables and figures read, plus PGD for every finetuned model."""
    return ascl_dag.evaluation_targets(config)


def table_spec(table):
    """A table's spec for `ascl table`; rows as lists so their order survives JSON."""
    return ascl_dag.table_spec(config, table)


def table_inputs(wildcards):
    return ascl_dag.table_files(config, wildcards.table)


def all_targets():
    tables = [f"results/paper/{t}.md" for t in sorted(config["paper"])]
    figures = [
        f"results/paper/figures/{f}.png" for f in sorted(config.get("figures", {}))
    ]
    # evaluation_targets(): every model of every seed gets at least its PGD evaluation, also
    # those only a figure (which shows the first seed) uses.
    claims = ["results/paper/claims.md"] if "claims" in config else []
    return [*tables, *figures, *claims, "results/metrics.json", *evaluation_targets()]


def claim_figure_files():
    """[("<fig>/<model label>", evaluation output)] of every seed, for the figures that
    params.yaml `claims:` reads (the figures themselves show the first seed only)."""
    return ascl_dag.claim_figure_files(config)


def claim_figure_args(wildcards):
    return " ".join(
        f"--figure {shlex.quote(f'{key}={path}')}" for key, path in claim_figure_files()
    )


# The package is run by the interpreter that runs the workflow (it imports ascl above), and
# every job logs to the params' MLflow experiment. Both reach the jobs through the environment
# (exported to cluster jobs), not through the command's text: Snakemake reruns a job whose
# command text changes ("code" trigger), and neither where the virtual environment lies nor
# the experiment's name changes a result (tests/test_dvc.py changes the experiment and plans
# nothing). Lint notes, kept on purpose: (1) "uses variable ASCL/JOB_ENV from outside of the
# rule": one command and thread-count prefix for every rule. (2) "specify a conda environment
# or container": the software is the project's locked virtual environment (requirements.lock),
# shared by every rule.
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.getenv("PATH", "")]),
    ASCL_EXPERIMENT=config["tracking"]["experiment"],
)


envvars:
    "ASCL_EXPERIMENT",


ASCL = f"{Path(sys.executable).name} -m ascl"
# Environment of every training/evaluation job: its CPU thread count.
JOB_ENV = "OMP_NUM_THREADS={resources.cpus_per_task}"
# Training jobs (pretrain, finetune) also checkpoint at the intervals of their resources (how a
# job runs, not what it computes: resources are no rerun trigger), and their shell ignores
# SIGTERM, so that a preemption or time-limit signal reaches the training process alone
# (which checkpoints and exits 75; slurm/config.yaml asks for it 10 minutes early).
TRAIN_ENV = f"trap '' TERM; {JOB_ENV}"
CHECKPOINT_ARGS = (
    "--checkpoint-every-epochs {resources.checkpoint_every_epochs} "
    "--checkpoint-every-minutes {resources.checkpoint_every_minutes}"
)
# Appended to every job's command: a job killed by a signal (exit status 128 + n in the shell:
# a segfault in native code, the OOM killer, a SIGKILL) names the signal in its log and on the
# workflow's stderr; a Python traceback of a native crash is in the log already (faulthandler).
REPORT_SIGNAL = (
    " || {{ rc=$?; if [ $rc -gt 128 ]; then"
    ' echo "ascl: job killed by signal SIG$(kill -l $((rc - 128))) (exit status $rc)"'
    " | tee -a {log} >&2; fi; exit $rc; }}"
)
# Arguments every evaluation job takes: its seed, the model, its MLflow parent run and tags.
EVAL_ARGS = (
    "--seed {wildcards.seed} --model {input.model} --parent-run-id $(cat {input.parent}) "
    "--tag wildcards=method={wildcards.method},strategy={wildcards.strategy},"
    "target={wildcards.target},seed={wildcards.seed}"
)


# A local run logs through its own MLflow server (ascl.local_server, params.yaml
# tracking.server); stopped when the run ends, however it ends.
LOCAL_SERVER = ascl_local_server.wanted(
    config["tracking"].get("server", "auto"), workflow.local_exec and not workflow.touch
)


onstart:
    if LOCAL_SERVER:
        atexit.register(ascl_local_server.stop)
        print(
            f"MLflow server of this run: {ascl_local_server.start()}",
            file=sys.stderr,
        )


onsuccess:
    if LOCAL_SERVER:
        ascl_local_server.stop()


onerror:
    if LOCAL_SERVER:
        ascl_local_server.stop()
