"""Loading, merging and validating params files; resolving the settings of one job.

A params file (params.yaml, optionally followed by override files such as config/smoke.yaml)
is merged key by key, validated against `params.schema.yaml` and cross-checked. Every problem
is reported as one line naming the key. Jobs do not see the whole file: `pretrain_settings`,
`finetune_settings` and `evaluate_settings` resolve exactly the values one job depends on, which
is also what the workflow hands to Snakemake's params trigger.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ascl.errors import ParamsError  # noqa: F401 - raised here, re-exported
from ascl.registry import EVALUATIONS, FIGURE_OUTPUTS

SCHEMA_PATH = Path(str(resources.files("ascl") / "params.schema.yaml"))


# Evaluations whose outputs a figure can plot (params `figures.<fig>.evaluation`).


def read_yaml(path: str | Path) -> Any:
    """Safe-load one YAML file; a missing or unparsable file is a one-line ParamsError."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}") from None


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict update: override's leaves replace base's; returns a new dict."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when built
    """yaml.SafeLoader that also reads YAML 1.2 / JSON floats without a dot (1e-06, 5E+3) as
    numbers; YAML 1.1 reads them as strings, so a params file written by json.dumps would carry
    a string weight decay."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def job_settings(settings_json: str | None, params_files: list[str] | None, resolve) -> dict:
    """One job's settings: the resolved JSON the workflow passes (--settings), or
    `resolve(params)` of the merged params files (--params, by hand). Bad input is a one-line
    ParamsError."""
    if settings_json:
        try:
            settings = json.loads(settings_json)
        except json.JSONDecodeError as err:
            raise ParamsError(f"--settings: not valid JSON ({err.msg})") from None
        if not isinstance(settings, dict) or "kind" not in settings:
            raise ParamsError("--settings: expected the JSON object of one job's settings")
        return settings
    if not params_files:
        raise ParamsError("give --params FILE (repeatable) or --settings JSON")
    return resolve(load_params(*params_files))


def parse_tags(items: list[str]) -> dict[str, str]:
    """["KEY=VALUE", ...] (--tag) -> {KEY: VALUE}."""
    tags = {}
    for item in items:
        if "=" not in item:
            raise ParamsError(f"--tag {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        tags[key] = value
    return tags


def load_params(*paths: str | Path) -> dict:
    """Merge the given params files in order and validate the result."""
    if not paths:
        raise ParamsError("no params file given")
    merged: dict = {}
    for path in paths:
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ParamsError(f"{path}: top level must be a mapping")
        merged = deep_merge(merged, data)
    validate_params(merged)
    return merged


@functools.lru_cache(maxsize=1)
def _validator():
    """The params schema's validator, built once per process."""
    import jsonschema

    schema = yaml.load(SCHEMA_PATH.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader
    return jsonschema.Draft202012Validator(schema)


def _key_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_params(params: dict) -> None:
    """Schema validation plus cross-references; raises ParamsError naming the first bad key."""
    errors = sorted(_validator().iter_errors(params), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            unknown = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            raise ParamsError(
                f"params: unknown key {'.'.join([_key_path(err), unknown[0]])!r}".replace(
                    "'<top level>.", "'"
                )
            )
        if err.validator == "required":
            raise ParamsError(f"params: {_key_path(err)}: {err.message}")
        raise ParamsError(f"params: {_key_path(err)}: {err.message}")
    _check_references(params)


# Objectives whose loss is a weighted sum: (weight keys, default weight when a key is absent).
# Loss weights of the objectives that have several (each required by the schema, so the
# objective dataclasses in ascl.objectives hold the only defaults).
_WEIGHTED_OBJECTIVES = {
    "ascl": ("lambda_at", "lambda_cl", "lambda_ascl"),
    "acl": ("lambda_clean", "lambda_adv"),
}


def _check_references(params: dict) -> None:
    for name in params.get("recipes", {}).get("peer", {}):
        if name not in params["methods"]:
            raise ParamsError(f"params: recipes.peer.{name}: unknown method")
    for name, method in params["methods"].items():
        if method["objective"] in _WEIGHTED_OBJECTIVES:
            keys = _WEIGHTED_OBJECTIVES[method["objective"]]
            if sum(method.get(k, 0.0) for k in keys) <= 0:
                raise ParamsError(f"params: methods.{name}: all loss weights are zero")
        source = pseudo_label_source(params, name)
        if source is not None:
            where = f"params: methods.{name}.pseudo_labels.from"
            if source not in params["methods"]:
                raise ParamsError(
                    f"{where}: unknown method {source!r} (known: {', '.join(params['methods'])})"
                )
            if pseudo_label_source(params, source) is not None:
                raise ParamsError(f"{where}: method {source!r} itself needs pseudo labels")
    for key, ref in model_refs(params):
        where = f"params: {key}"
        if ref["method"] not in params["methods"]:
            raise ParamsError(
                f"{where}.method: unknown method {ref['method']!r} "
                f"(known: {', '.join(params['methods'])})"
            )
        if ref["strategy"] not in params["finetune"]["strategies"]:
            raise ParamsError(
                f"{where}.strategy: unknown strategy {ref['strategy']!r} "
                f"(known: {', '.join(params['finetune']['strategies'])})"
            )
        target = ref.get("target", "source")
        if target != "source" and target not in params["data"]["transfer"]:
            raise ParamsError(f"{where}.target: no data set for role {target!r} in data.transfer")
    for fig, spec in params.get("figures", {}).items():
        if spec["evaluation"] not in FIGURE_OUTPUTS:
            raise ParamsError(
                f"params: figures.{fig}.evaluation: unknown evaluation {spec['evaluation']!r} "
                f"(known: {', '.join(FIGURE_OUTPUTS)})"
            )
    matrices = [t for t, spec in params["paper"].items() if spec.get("kind") == "matrix"]
    if len(matrices) > 1:
        raise ParamsError(f"params: paper.{matrices[1]}.kind: only one matrix table (Table 2)")
    milestones = params["pretrain"]["lr_milestones"]
    if milestones != sorted(milestones):
        raise ParamsError("params: pretrain.lr_milestones: must be increasing")


def _method_pretrain(params: dict, method: str) -> dict:
    if method not in params["methods"]:
        raise ParamsError(
            f"params: methods: unknown method {method!r} (known: {', '.join(params['methods'])})"
        )
    spec = params["methods"][method]
    train = deep_merge(params["pretrain"], spec.get("pretrain", {}))
    if params.get("protocol", "paper") == "peer":
        recipe = params.get("recipes", {}).get("peer", {}).get(method, {})
        train = deep_merge(train, recipe.get("pretrain", {}))
    return train


def pretrain_settings(params: dict, method: str) -> dict:
    """Everything one pre-training job depends on (JSON-serialisable)."""
    train = _method_pretrain(params, method)
    spec = {k: v for k, v in params["methods"][method].items() if k != "pretrain"}
    return {
        "kind": "pretrain",
        "method": method,
        "objective": spec,
        "train": train,
        "model": {k: params["model"][k] for k in ("width", "proj_hidden", "proj_dim")}
        | {"bn": spec.get("bn", "separated")},
        "augment": params["augment"],
        "data": _data_caps(params),
        "device": params["device"],
        "memory_format": params.get("memory_format", "auto"),
        "compile": params.get("compile", False),
        **backend_switches(params),
    }


def pseudo_label_source(params: dict, method: str) -> str | None:
    """The method whose encoder makes `method`'s pseudo labels (AdvCL), or None."""
    if method not in params["methods"]:
        raise ParamsError(
            f"params: methods: unknown method {method!r} (known: {', '.join(params['methods'])})"
        )
    spec = params["methods"][method].get("pseudo_labels")
    return spec["from"] if spec else None


def pseudo_label_settings(params: dict, method: str) -> dict:
    """Everything the pseudo-labels job of `method` depends on (JSON-serialisable)."""
    source = pseudo_label_source(params, method)
    if source is None:
        raise ParamsError(f"params: methods.{method}: the method uses no pseudo labels")
    spec = params["methods"][method]["pseudo_labels"]
    return {
        "kind": "pseudo_labels",
        "method": method,
        "from": source,
        "clusters": spec["clusters"],
        "data": _data_caps(params),
        "device": params["device"],
    }


def finetune_settings(params: dict, strategy: str) -> dict:
    """Everything one finetuning job depends on (JSON-serialisable)."""
    ft = params["finetune"]
    if strategy not in ft["strategies"]:
        raise ParamsError(
            f"params: finetune.strategies: unknown strategy {strategy!r} "
            f"(known: {', '.join(ft['strategies'])})"
        )
    own = ft["strategies"][strategy]
    return {
        "kind": "finetune",
        "strategy": strategy,
        "batch_size": ft["batch_size"],
        "momentum": ft["momentum"],
        "weight_decay": ft["weight_decay"],
        "lr_milestones": [],
        "lr_gamma": 1.0,
        "trades_beta": ft["trades_beta"],
        "precision": ft.get("precision", "auto"),
        **own,  # a strategy's own batch size, weight decay, schedule
        "attack": {**ft["attack"], **own.get("attack", {})},
        "eval_branch": params["model"]["eval_branch"],
        "augment": params["augment"],
        "data": _data_caps(params),
        "device": params["device"],
        "memory_format": params.get("memory_format", "auto"),
        "compile": params.get("compile", False),
        **backend_switches(params),
    }


def evaluate_settings(params: dict) -> dict:
    """Everything one PGD evaluation job depends on (JSON-serialisable)."""
    return {
        "kind": "evaluate",
        # the section's own keys (the schema's; the others are the evaluations' sections)
        **{k: params["evaluate"][k] for k in ("batch_size", "pgd")},
        "data": _data_caps(params),
        "device": params["device"],
        "compile": params.get("compile", False),
        **backend_switches(params),
    }


def evaluation_settings(params: dict, kind: str) -> dict:
    """Everything one job of evaluation `kind` (a key of `ascl.registry.EVALUATIONS`, e.g.
    "autoattack") depends on: its `evaluate.<kind>` section, the evaluation batch size (unless
    the section sets its own), the data caps and the device (JSON-serialisable)."""
    if kind not in EVALUATIONS:
        raise ParamsError(f"unknown evaluation {kind!r} (known: {', '.join(EVALUATIONS)})")
    if kind not in params["evaluate"]:
        raise ParamsError(f"params: evaluate.{kind}: section missing")
    return {
        "kind": kind,
        "batch_size": params["evaluate"]["batch_size"],
        **params["evaluate"][kind],
        "data": _data_caps(params),
        "device": params["device"],
        **backend_switches(params),
    }


def backend_switches(params: dict) -> dict:
    """The CUDA backend switches of every training and evaluation job (`cudnn_benchmark`,
    `tf32`; applied by `ascl.engine.setup_device`, on CUDA only)."""
    return {
        "cudnn_benchmark": params.get("cudnn_benchmark", False),
        "tf32": params.get("tf32", False),
    }


def _data_caps(params: dict) -> dict:
    data = params["data"]
    return {
        "max_train": data.get("max_train"),
        "max_test": data.get("max_test"),
        "image_size": data.get("image_size"),
    }


def settings_json(settings: dict) -> str:
    """Canonical JSON of a settings dict (sorted keys), used on command lines and for hashing."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def target_dataset(params: dict, target: str) -> str:
    """Data set name of a target role: 'source' or a key of data.transfer."""
    if target == "source":
        return params["data"]["source"]
    return params["data"]["transfer"][target]


def model_refs(params: dict) -> list[tuple[str, dict]]:
    """Every finetuned model the paper's tables and figures name, as (params key, reference).

    A reference is {method, strategy, [target]}; table rows marked `published_only` name none.
    """
    refs = []
    for table, spec in params["paper"].items():
        for row, ref in spec.get("rows", {}).items():
            if not ref.get("published_only"):
                refs.append((f"paper.{table}.rows.{row!r}", ref))
        for model, ref in spec.get("models", {}).items():
            refs.append((f"paper.{table}.models.{model!r}", ref))
    for fig, spec in params.get("figures", {}).items():
        for model, ref in spec["models"].items():
            refs.append((f"figures.{fig}.models.{model!r}", ref))
    return refs


def finetune_jobs(params: dict) -> list[tuple[str, str, str]]:
    """Sorted unique (method, strategy, target) triples the paper's tables and figures need."""
    jobs = {
        (ref["method"], ref["strategy"], ref.get("target", "source"))
        for _, ref in model_refs(params)
    }
    return sorted(jobs)


def pretrain_methods(params: dict) -> list[str]:
    """Methods whose encoders the paper's tables and figures need (with pseudo-label sources)."""
    methods = {method for method, _, _ in finetune_jobs(params)}
    sources = {pseudo_label_source(params, m) for m in methods} - {None}
    return sorted(methods | sources)
