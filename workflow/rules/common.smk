import hashlib
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from ascl import config as ascl_config

try:
    ascl_config.validate_params(config)
except ascl_config.ParamsError as err:
    sys.exit(f"ascl: error: {err}")
validate(config, "../../src/ascl/params.schema.yaml")

DATA = config["data"]["root"]
SEEDS = config["seeds"]
SRC = Path(workflow.basedir).parent / "src" / "ascl"
# Python modules each job kind runs; their content hash is a param, so code changes rerun jobs.
CODE = {
    "download": [
        "data/__init__.py",
        "data/download.py",
        "data/formats.py",
        "data/offline.py",
    ],
    "pretrain": [
        "pretrain.py",
        "objectives.py",
        "losses.py",
        "attacks.py",
        "models.py",
        "augment.py",
        "engine.py",
        "checkpoint.py",
    ],
    "finetune": [
        "finetune.py",
        "losses.py",
        "attacks.py",
        "models.py",
        "augment.py",
        "engine.py",
        "checkpoint.py",
    ],
    "evaluate": ["evaluate.py", "attacks.py", "models.py", "losses.py"],
    "table": ["report.py"],
}


wildcard_constraints:
    method=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    strategy=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    target=r"source|stl10|cifar100",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    seed=r"\d+",
    table=r"table[1-8]",


def code_hash(kind):
    digest = hashlib.sha256()
    for name in CODE[kind]:
        path = SRC / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


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


def encoder_path(method, seed):
    return f"results/pretrain/{method}/seed{seed}/encoder.pt"


def model_dir(method, strategy, target, seed):
    return f"results/finetune/{method}/{strategy}/{target}/seed{seed}"


def pgd_metrics_path(method, strategy, target, seed):
    return f"results/evaluate/{method}/{strategy}/{target}/seed{seed}/pgd.json"


def table_inputs(wildcards):
    rows = config["paper"][wildcards.table]["rows"].values()
    return sorted(
        {
            pgd_metrics_path(
                r["method"], r["strategy"], r.get("target", "source"), seed
            )
            for r in rows
            for seed in SEEDS
        }
    )


def table_spec(table):
    """A table's spec for `ascl table`; rows as a list so their order survives JSON."""
    spec = config["paper"][table]
    return {
        "table": table,
        "title": spec["title"],
        "metrics": spec["metrics"],
        "rows": [[name, row] for name, row in spec["rows"].items()],
        "seeds": SEEDS,
    }


def all_targets():
    tables = [f"results/paper/{t}.md" for t in sorted(config["paper"])]
    return tables + ["results/metrics.json"]


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
