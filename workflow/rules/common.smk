import atexit
import hashlib
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from ascl import codehash as ascl_codehash
from ascl import config as ascl_config
from ascl import registry as ascl_registry
from ascl import local_server as ascl_local_server
from ascl import report as ascl_report

try:
    ascl_config.validate_params(config)
except ascl_config.ParamsError as err:
    sys.exit(f"ascl: error: {err}")
# set_default=False: the schema has boolean subschemas (per-objective keys), and every
# default lives in params.yaml itself.
validate(config, "../../src/ascl/params.schema.yaml", set_default=False)

DATA = config["data"]["root"]
# data.image_size: every set is stored downscaled (a param: a change rebuilds the data)
IMAGE_SIZE_ARG = (
    f"--image-size {config['data']['image_size']}"
    if config["data"].get("image_size")
    else ""
)
SEEDS = config["seeds"]
SRC = Path(workflow.basedir).parent / "src" / "ascl"
# Output file of each evaluation a figure can plot (ascl.registry.REGISTRY).
FIGURE_INPUT = ascl_registry.FIGURE_OUTPUTS
EVAL_DIR = "results/evaluate/{method}/{strategy}/{target}/seed{seed}"
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
    return f"{DATA}/{name}.npz"


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
    return f"{DATA}/{config['data']['corruptions']}"


def blackbox_models():
    """{name: model reference} of the black-box matrix (Table 2), or {}."""
    for spec in config["paper"].values():
        if spec.get("kind") == "matrix":
            return spec["models"]
    return {}


def _blackbox_others(wildcards):
    me = (wildcards.method, wildcards.strategy)
    return [
        ref
        for ref in blackbox_models().values()
        if (ref["method"], ref["strategy"]) != me
    ]


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


def eval_file(ref, seed, name):
    return (
        f"results/evaluate/{ref['method']}/{ref['strategy']}/"
        f"{ref.get('target', 'source')}/seed{seed}/{name}"
    )


def figure_files(fig):
    """[(model label, evaluation output)] of a figure, in params order (first seed)."""
    spec = config["figures"][fig]
    name = FIGURE_INPUT[spec["evaluation"]]
    return [
        (label, eval_file(ref, SEEDS[0], name)) for label, ref in spec["models"].items()
    ]


def figure_inputs(wildcards):
    return [path for _, path in figure_files(wildcards.fig)]


def figure_args(wildcards):
    return " ".join(
        f"--input {shlex.quote(f'{label}={path}')}"
        for label, path in figure_files(wildcards.fig)
    )


def figure_caption(fig):
    d, m = config["data"], config["model"]
    offline = " (offline stand-in data)" if d["source"].startswith("digits") else ""
    return (
        f"data {d['source']}{offline}, ResNet-18 width {m['width']}, "
        f"{config['pretrain']['epochs']} pre-training epochs, seed {SEEDS[0]}"
    )


def evaluation_targets():
    """Every evaluation output the tables and figures read, plus PGD for every finetuned model."""
    files = {
        f"{EVAL_DIR}/pgd.json".format(method=m, strategy=st, target=t, seed=s)
        for m, st, t in ascl_config.finetune_jobs(config)
        for s in SEEDS
    }
    for table in config["paper"]:
        files |= {
            str(p) for p in ascl_report.required_files(table_spec(table), "results")
        }
    for fig in config.get("figures", {}):
        files |= {path for _, path in figure_files(fig)}
    return sorted(files)


def encoder_path(method, seed):
    return f"results/pretrain/{method}/seed{seed}/encoder.pt"


def model_dir(method, strategy, target, seed):
    return f"results/finetune/{method}/{strategy}/{target}/seed{seed}"


def pgd_metrics_path(method, strategy, target, seed):
    return f"results/evaluate/{method}/{strategy}/{target}/seed{seed}/pgd.json"


def table_spec(table):
    """A table's spec for `ascl table`; rows as lists so their order survives JSON."""
    spec = config["paper"][table]
    out = {
        "table": table,
        "kind": spec.get("kind", "rows"),
        "title": spec["title"],
        "metrics": spec["metrics"],
        "seeds": SEEDS,
    }
    for key in ("rows", "models"):
        if key in spec:
            out[key] = [[name, ref] for name, ref in spec[key].items()]
    return out


def table_inputs(wildcards):
    return [
        str(p)
        for p in ascl_report.required_files(table_spec(wildcards.table), "results")
    ]


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
    items = config.get("claims", {}).get("items", {}).values()
    out = []
    figures = {c["figure"] for c in items if "figure" in c} & set(
        config.get("figures", {})
    )
    for fig in sorted(figures):
        spec = config["figures"][fig]
        name = FIGURE_INPUT[spec["evaluation"]]
        for label, ref in spec["models"].items():
            out += [(f"{fig}/{label}", eval_file(ref, seed, name)) for seed in SEEDS]
    return out


def claim_figure_args(wildcards):
    return " ".join(
        f"--figure {shlex.quote(f'{key}={path}')}" for key, path in claim_figure_files()
    )


# The package is run by the interpreter that runs the workflow (it imports ascl above).
# Lint notes, kept on purpose: (1) "uses variable ASCL/JOB_ENV from outside of the rule": the
# interpreter path and thread count are not results' inputs; as params they would rerun every
# job when the environment moves. (2) "specify a conda environment or container": the software
# is the project's pinned virtual environment (pyproject.toml), shared by every rule.
ASCL = f"{shlex.quote(sys.executable)} -m ascl"
# Environment of every training/evaluation job: its MLflow experiment and CPU thread count.
JOB_ENV = (
    f"ASCL_EXPERIMENT={shlex.quote(config['tracking']['experiment'])} "
    "OMP_NUM_THREADS={resources.cpus_per_task}"
)
# Environment of the report jobs (tables, claims, figures): the experiment whose `paper` run
# receives their outputs (ascl.tracking.log_paper_outputs).
PAPER_ENV = f"ASCL_EXPERIMENT={shlex.quote(config['tracking']['experiment'])} "
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
