"""The jobs of the workflow's DAG for a params file, stage by stage, and the dvc.yaml made from
them.

The workflow (`workflow/rules/*.smk`) takes its target lists and each job's table, figure and
evaluation inputs from the functions here, and `stage_jobs` lists, for one params file, every
job of every stage (`ascl.registry.STAGES`) with everything its command line carries. dvc.yaml is
generated from that (`ascl dvc-yaml`): each stage's `params` are the keys its jobs read, found
by running `stage_jobs` on a params mapping that records every key read (`stage_reads`), over
params.yaml and each `config/*.yaml` override, under both protocols; its `deps` are the code its
job kinds' hashes cover (`ascl.codehash`) and its rules. So a params change makes `dvc status`
mark the stages whose jobs change, and no hand-kept list can fall behind the code.

Standard library, yaml and the params layer only: the workflow imports this at parse time.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ascl import codehash, config
from ascl.registry import FIGURE_OUTPUTS, KINDS, REGISTRY, STAGES

EVAL_DIR = "results/evaluate/{method}/{strategy}/{target}/seed{seed}"
# Evaluation output file -> the evaluation key whose settings make it ("pgd": `ascl evaluate`).
_OUTPUT_KIND = {
    "pgd.json": "pgd",
    "autoattack.json": "autoattack",
    "blackbox.json": "blackbox",
    "blackbox_examples.npz": "blackbox",
    "corruptions.json": "corruptions",
    **{out: key for key, out in FIGURE_OUTPUTS.items()},
    "inversion.csv": "inversion",
}
# Evaluation keys whose jobs read the corrupted sets (data.corruptions) instead of a test split.
_CORRUPTION_KINDS = {e.key for e in REGISTRY.values() if e.data == "dir"}


def dataset_file(params: dict, name: str) -> str:
    """The prepared data set `name`."""
    return f"{params['data']['root']}/{name}.npz"


def corruptions_dir(params: dict) -> str:
    """The directory of the corrupted test sets (one .npz per corruption)."""
    return f"{params['data']['root']}/{params['data']['corruptions']}"


def encoder_path(method: str, seed: int | str) -> str:
    return f"results/pretrain/{method}/seed{seed}/encoder.pt"


def model_dir(method: str, strategy: str, target: str, seed: int | str) -> str:
    return f"results/finetune/{method}/{strategy}/{target}/seed{seed}"


def eval_file(ref: dict, seed: int | str, name: str) -> str:
    """Output `name` of the evaluation of model `ref` ({method, strategy, [target]})."""
    return (
        f"results/evaluate/{ref['method']}/{ref['strategy']}/"
        f"{ref.get('target', 'source')}/seed{seed}/{name}"
    )


def table_spec(params: dict, table: str) -> dict:
    """A table's spec for `ascl table`; rows as lists so their order survives JSON."""
    spec = params["paper"][table]
    out = {
        "table": table,
        "kind": spec.get("kind", "rows"),
        "title": spec["title"],
        "metrics": spec["metrics"],
        "seeds": params["seeds"],
    }
    for key in ("rows", "models"):
        if key in spec:
            out[key] = [[name, ref] for name, ref in spec[key].items()]
    return out


def table_files(params: dict, table: str) -> list[str]:
    """Every evaluation output table `table` reads."""
    from ascl.report import required_files

    return [str(p) for p in required_files(table_spec(params, table), "results")]


def figure_files(params: dict, fig: str) -> list[tuple[str, str]]:
    """[(model label, evaluation output)] of a figure, in params order (first seed)."""
    spec = params["figures"][fig]
    name = FIGURE_OUTPUTS[spec["evaluation"]]
    seed = params["seeds"][0]
    return [(label, eval_file(ref, seed, name)) for label, ref in spec["models"].items()]


def figure_caption(params: dict, fig: str) -> str:
    d, m = params["data"], params["model"]
    offline = " (offline stand-in data)" if d["source"].startswith("digits") else ""
    return (
        f"data {d['source']}{offline}, ResNet-18 width {m['width']}, "
        f"{params['pretrain']['epochs']} pre-training epochs, seed {params['seeds'][0]}"
    )


def blackbox_models(params: dict) -> dict:
    """{name: model reference} of the black-box matrix (Table 2), or {}."""
    for spec in params["paper"].values():
        if spec.get("kind") == "matrix":
            return spec["models"]
    return {}


def blackbox_others(params: dict, method: str, strategy: str) -> list[dict]:
    """The other models of the black-box matrix (the diagonal is excluded)."""
    return [
        ref
        for ref in blackbox_models(params).values()
        if (ref["method"], ref["strategy"]) != (method, strategy)
    ]


def claim_figure_files(params: dict) -> list[tuple[str, str]]:
    """[("<fig>/<model label>", evaluation output)] of every seed, for the figures that
    params.yaml `claims:` reads (the figures themselves show the first seed only)."""
    items = params.get("claims", {}).get("items", {}).values()
    out = []
    figures = {c["figure"] for c in items if "figure" in c} & set(params.get("figures", {}))
    for fig in sorted(figures):
        spec = params["figures"][fig]
        name = FIGURE_OUTPUTS[spec["evaluation"]]
        for label, ref in spec["models"].items():
            out += [(f"{fig}/{label}", eval_file(ref, seed, name)) for seed in params["seeds"]]
    return out


def evaluation_targets(params: dict) -> list[str]:
    """Every evaluation output the tables and figures read, plus PGD for every finetuned model
    of every seed (also those only a figure, which shows the first seed, uses)."""
    files = {
        EVAL_DIR.format(method=m, strategy=st, target=t, seed=s) + "/pgd.json"
        for m, st, t in config.finetune_jobs(params)
        for s in params["seeds"]
    }
    for table in params["paper"]:
        files |= set(table_files(params, table))
    for fig in params.get("figures", {}):
        files |= {path for _, path in figure_files(params, fig)}
    return sorted(files)


def _evaluation_job(params: dict, path: str) -> dict:
    """What the evaluation job writing `path` runs with: its settings and data."""
    *_, method, strategy, target, _seed, name = path.split("/")
    key = _OUTPUT_KIND[name]
    if key == "pgd":
        settings = config.evaluate_settings(params)
    else:
        settings = config.evaluation_settings(params, key)
    if key in _CORRUPTION_KINDS:
        data = corruptions_dir(params)
    else:
        data = dataset_file(params, config.target_dataset(params, target))
    job = {"settings": settings, "data": data}
    if name == "blackbox.json":
        job["sources"] = blackbox_others(params, method, strategy)
    return job


def _data_jobs(params: dict) -> dict[str, Any]:
    data = params["data"]
    urls = data.get("urls", {})
    size = data.get("image_size")
    out = {
        dataset_file(params, name): {"url": urls.get(name, ""), "image_size": size}
        for name in sorted({data["source"], *data["transfer"].values()})
    }
    out[corruptions_dir(params)] = {"url": urls.get(data["corruptions"], ""), "image_size": size}
    return out


def _pretrain_jobs(params: dict) -> dict[str, Any]:
    out = {}
    data = dataset_file(params, params["data"]["source"])
    for method in config.pretrain_methods(params):
        job = {"settings": config.pretrain_settings(params, method), "data": data}
        source = config.pseudo_label_source(params, method)
        for seed in params["seeds"]:
            out[encoder_path(method, seed)] = job
            if source is not None:
                out[f"pseudo_labels/{method}/seed{seed}"] = {
                    "settings": config.pseudo_label_settings(params, method),
                    "data": data,
                }
    return out


def _finetune_jobs(params: dict) -> dict[str, Any]:
    out = {}
    for method, strategy, target in config.finetune_jobs(params):
        job = {
            "settings": config.finetune_settings(params, strategy),
            "data": dataset_file(params, config.target_dataset(params, target)),
        }
        for seed in params["seeds"]:
            out[model_dir(method, strategy, target, seed)] = job
    return out


def _evaluate_jobs(params: dict) -> dict[str, Any]:
    return {path: _evaluation_job(params, path) for path in evaluation_targets(params)}


def _paper_jobs(params: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in params["paper"]:
        out[f"table/{table}"] = table_spec(params, table)
    for fig in params.get("figures", {}):
        out[f"figure/{fig}"] = {
            "files": figure_files(params, fig),
            "title": params["figures"][fig]["title"],
            "caption": figure_caption(params, fig),
        }
    if "claims" in params:
        out["claims"] = {"claims": params["claims"], "figures": claim_figure_files(params)}
    return out


_STAGE_JOBS = {
    "data": _data_jobs,
    "pretrain": _pretrain_jobs,
    "finetune": _finetune_jobs,
    "evaluate": _evaluate_jobs,
    "paper": _paper_jobs,
}


def stage_jobs(params: dict, stage: str) -> dict[str, Any]:
    """{job: what its command carries} of every job of `stage` (a key of
    `ascl.registry.STAGES`) for `params`: the jobs that exist and, for each, its settings and
    the data it reads (its code and its input files are the DAG's own business). Two params
    files give the same value iff the stage runs the same jobs with the same settings."""
    return _STAGE_JOBS[stage](params)


class _Recorder(dict):
    """A params mapping that records the path of every key read into `log`: a leaf's path when
    it is read, a mapping's path when it is read whole (iterated, copied, serialised), and the
    path of a key asked for but absent."""

    def __init__(self, data: dict, path: tuple, log: set) -> None:
        super().__init__(data)
        self._path = path
        self._log = log

    def _read(self, key, value):
        if isinstance(value, dict):
            return _Recorder(value, (*self._path, key), self._log)
        self._log.add((*self._path, key))
        return value

    def __getitem__(self, key):
        return self._read(key, super().__getitem__(key))

    def get(self, key, default=None):
        if dict.__contains__(self, key):
            return self[key]
        self._log.add((*self._path, key))
        return default

    def __contains__(self, key) -> bool:
        self._log.add((*self._path, key))
        return super().__contains__(key)

    def _whole(self) -> None:
        self._log.add(self._path)

    def items(self):
        self._whole()
        return super().items()

    def values(self):
        self._whole()
        return super().values()

    def keys(self):
        self._whole()
        return super().keys()

    def __iter__(self):
        self._whole()
        return super().__iter__()

    def __len__(self) -> int:
        self._whole()
        return super().__len__()

    def __deepcopy__(self, memo):
        self._whole()
        return copy.deepcopy(dict(super().items()), memo)


def stage_reads(params: dict) -> dict[str, set[tuple]]:
    """{stage: paths of the params keys its jobs read} (`stage_jobs` on a recording copy)."""
    reads = {}
    for stage in STAGES:
        log: set[tuple] = set()
        # serialised, as the workflow does: what a job carries counts as read
        config.settings_json(stage_jobs(_Recorder(params, (), log), stage))
        reads[stage] = log
    return reads


def _properties(node: dict, defs: dict) -> dict:
    """The fixed properties of a schema node (through `$ref` and `allOf`)."""
    if "$ref" in node:
        node = defs[node["$ref"].split("/")[-1]]
    props = dict(node.get("properties", {}))
    for sub in node.get("allOf", []):
        props |= _properties(sub, defs)
    return props


def _static_prefix(path: tuple, schema: dict) -> tuple:
    """The part of `path` through fixed schema properties: a key of a free-form mapping (a
    method, table, figure, strategy name) ends it, so the whole mapping is one DVC param."""
    node, out = schema, []
    for key in path:
        props = _properties(node, schema.get("$defs", {}))
        if key not in props:
            break
        out.append(key)
        node = props[key]
    return tuple(out)


def _present(path: tuple, params: dict) -> tuple:
    """The longest prefix of `path` present in `params` (DVC refuses absent params keys)."""
    node, out = params, []
    for key in path:
        if not isinstance(node, dict) or key not in node:
            break
        out.append(key)
        node = node[key]
    return tuple(out)


def dvc_params(reads: Iterable[tuple], schema: dict, params: dict) -> list[str]:
    """The DVC params entries ("a.b.c") covering `reads`: each cut to its fixed part and to
    what params.yaml holds, nested entries dropped under a covering one, in schema order."""
    paths = {_present(_static_prefix(p, schema), params) for p in reads}
    paths.discard(())
    kept = [p for p in paths if not any(q != p and p[: len(q)] == q for q in paths)]
    order = list(schema["properties"])
    kept.sort(key=lambda p: (order.index(p[0]) if p[0] in order else len(order), p))
    return [".".join(p) for p in kept]


def params_variants(root: Path) -> list[dict]:
    """The params a stage's jobs may read: params.yaml alone and with each `config/*.yaml`
    override, each under both protocols (`recipes` are read under `protocol: peer` only)."""
    base = root / "params.yaml"
    files = [[base], *([base, f] for f in sorted((root / "config").glob("*.yaml")))]
    out = []
    for group in files:
        params = config.load_params(*group)
        for protocol in ("paper", "peer"):
            out.append(config.deep_merge(params, {"protocol": protocol}))
    return out


def stage_params(root: Path) -> dict[str, list[str]]:
    """{stage: the DVC params entries of its jobs' reads} over `params_variants(root)`."""
    schema = yaml.safe_load(config.SCHEMA_PATH.read_text())
    base = config.load_params(root / "params.yaml")
    reads: dict[str, set[tuple]] = {stage: set() for stage in STAGES}
    for params in params_variants(root):
        for stage, paths in stage_reads(params).items():
            reads[stage] |= paths
    return {stage: dvc_params(paths, schema, base) for stage, paths in reads.items()}


def stage_code(root: Path) -> dict[str, list[str]]:
    """{stage: the package files the code hashes of its job kinds cover, relative to root}."""
    src = root / "src" / "ascl"
    out: dict[str, set[str]] = {stage: set() for stage in STAGES}
    for kind in KINDS.values():
        files = codehash.package_files(kind.entries, src)
        out[kind.stage] |= {p.relative_to(root).as_posix() for p in files}
    return {stage: sorted(files) for stage, files in out.items()}


_HEADER = """\
# Generated by `ascl dvc-yaml` (make dvc-yaml) from the job registry (ascl.registry.KINDS) and
# the jobs of each stage (ascl.dag.stage_jobs); tests/test_dvc.py checks that this file is what
# the command writes. Do not edit by hand.
#
# DVC tracks the pipeline's artifacts and parameters; the job graph itself lives in Snakemake
# only. Each stage asks Snakemake for one layer of targets, so DVC decides *whether* a layer is
# stale (the params its jobs read, the code their hashes cover, its rules or inputs changed)
# and Snakemake decides *which jobs* inside it rerun (per-job params, code and input triggers).
# Outputs persist: Snakemake, not DVC, removes what it rebuilds. Set SNAKEMAKE_PROFILE=slurm
# to dispatch `dvc repro` to the cluster. Every output is cached, so `dvc push` / `dvc pull`
# share all of them (README, "Sharing results"). `tracking` and `resources` change where runs
# are logged and how jobs are scheduled, never an output, and are in no stage.
"""

_PLOTS = """
# `dvc plots show` / `dvc plots diff`: every table's headline numbers (ours vs the paper) and the
# paper's figures as rendered by the workflow.
plots:
  - results/paper/table1.csv: {x: ra_pgd_eps8_mean, y: row, template: bar_horizontal,
                               title: "Table 1: PGD-20 robust accuracy (ours)"}
  - results/paper/table5.csv: {x: ra_pgd_eps8_mean, y: row, template: bar_horizontal,
                               title: "Table 5: PGD-20 robust accuracy by objective component"}
  - results/paper/table7.csv: {x: ra_pgd_eps8_mean, y: row, template: bar_horizontal,
                               title: "Table 7: PGD-20 robust accuracy by finetuning strategy"}
""" + "".join(f"  - results/paper/figures/fig{i}.png\n" for i in range(1, 8))

# What each stage asks Snakemake for, its inputs and its outputs.
_TARGETS = {
    "data": "data_all",
    "pretrain": "pretrain_all",
    "finetune": "finetune_all",
    "evaluate": "evaluate_all",
    "paper": "all",
}
_OUTS = {
    "data": "resources/data",
    "pretrain": "results/pretrain",
    "finetune": "results/finetune",
    "evaluate": "results/evaluate",
    "paper": "results/paper",
}


def dvc_yaml(root: Path) -> str:
    """The text of dvc.yaml for the repository at `root`."""
    params = stage_params(root)
    code = stage_code(root)
    stages: dict[str, Any] = {}
    previous = None
    for stage, rules in STAGES.items():
        resources = " --resources gpu=1" if stage != "paper" else ""
        deps = [_OUTS[previous]] if previous else []
        deps += [*code[stage], "workflow/Snakefile", "workflow/rules/common.smk", rules]
        stages[stage] = {
            "cmd": f"snakemake {_TARGETS[stage]} --cores all{resources}",
            "deps": deps,
            "params": params[stage],
            "outs": [{_OUTS[stage]: {"persist": True}}],
        }
        if stage == "paper":
            stages[stage]["metrics"] = ["results/metrics.json"]
        previous = stage
    body = yaml.safe_dump({"stages": stages}, sort_keys=False, width=100)
    return _HEADER + body + _PLOTS
