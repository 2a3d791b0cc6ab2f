"""Params validation: every malformed file stops with one line naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from ascl import config
from ascl.cli import main

from .conftest import ROOT


def _base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _mutate(path: str, value=None, delete: bool = False) -> dict:
    p = copy.deepcopy(_base())
    keys = path.split(".")
    node = p
    for k in keys[:-1]:
        node = node[k]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return p


BAD = [
    ("unknown top-level key", _mutate("learning_rate", 0.1), "learning_rate"),
    ("unknown nested key", _mutate("pretrain.lr_decay", 0.1), "pretrain.lr_decay"),
    ("wrong type", _mutate("pretrain.epochs", "ten"), "pretrain.epochs"),
    ("negative eps", _mutate("pretrain.attack.eps", -8), "pretrain.attack.eps"),
    ("lambda out of range", _mutate("methods.ascl.lambda_cl", -0.5), "methods.ascl.lambda_cl"),
    ("empty method list", _mutate("methods", {}), "methods"),
    ("unknown objective", _mutate("methods.ascl.objective", "moco"), "methods.ascl.objective"),
    (
        "unknown attack source",
        _mutate("methods.ascl.attack_source", "both"),
        "methods.ascl.attack_source",
    ),
    ("unknown bn", _mutate("methods.ascl.bn", "shared"), "methods.ascl.bn"),
    (
        "unknown strategy in a table",
        _mutate("paper.table7.rows.LSF.strategy", "XYZ"),
        "paper.table7.rows.'LSF'.strategy",
    ),
    (
        "table naming a missing model",
        _mutate("paper.table5.rows.Full model.method", "nope"),
        "paper.table5.rows.'Full model'.method",
    ),
    ("missing section", _mutate("evaluate", delete=True), "evaluate"),
    ("empty seeds", _mutate("seeds", []), "seeds"),
    ("bad device", _mutate("device", "tpu"), "device"),
    ("probability above 1", _mutate("augment.grayscale_p", 1.5), "augment.grayscale_p"),
    (
        "all weights zero",
        _mutate(
            "methods.ascl", {"objective": "ascl", "lambda_at": 0, "lambda_cl": 0, "lambda_ascl": 0}
        ),
        "methods.ascl",
    ),
    (
        "decreasing milestones",
        _mutate("pretrain.lr_milestones", [0.8, 0.6]),
        "pretrain.lr_milestones",
    ),
    ("bad eval branch", _mutate("model.eval_branch", "natural"), "model.eval_branch"),
    ("zero epochs", _mutate("pretrain.epochs", 0), "pretrain.epochs"),
    (
        "figure of an unknown evaluation",
        _mutate("figures.fig6.evaluation", "psnr"),
        "figures.fig6.evaluation",
    ),
    (
        "figure naming a missing model",
        _mutate("figures.fig1.models.ASCL.method", "nope"),
        "figures.fig1.models.'ASCL'.method",
    ),
    (
        "matrix naming an unknown strategy",
        _mutate("paper.table2.models.AT.strategy", "XYZ"),
        "paper.table2.models.'AT'.strategy",
    ),
    ("unknown figure", _mutate("figures.fig9", {"title": "x"}), "figures"),
]


def test_shipped_params_are_valid(smoke_params):
    """params.yaml alone and merged with the smoke overrides both validate."""
    config.load_params(ROOT / "params.yaml")
    assert smoke_params["data"]["source"] == "digits10"


@pytest.mark.parametrize(("what", "params", "key"), BAD, ids=[b[0] for b in BAD])
def test_bad_params_name_the_key(what, params, key, tmp_path, capsys):
    """Each malformed file fails validation with one line that names the offending key, via the
    CLI too, and the CLI writes nothing."""
    with pytest.raises(config.ParamsError) as err:
        config.validate_params(params)
    message = str(err.value)
    assert "\n" not in message
    assert key in message, message
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(params))
    out = tmp_path / "out" / "encoder.pt"
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    code = main(
        [
            "pretrain",
            "--params",
            str(path),
            "--method",
            "ascl",
            "--data",
            str(data),
            "--out",
            str(out),
            "--no-track",
        ]
    )
    assert code == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("ascl: error:")
    assert not out.parent.exists()


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(config.ParamsError, match="not found"):
        config.load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(config.ParamsError, match="not valid YAML"):
        config.load_params(bad)


def test_yaml_is_loaded_safely(tmp_path):
    """A YAML tag that would construct a Python object is refused, not executed."""
    evil = tmp_path / "evil.yaml"
    evil.write_text("seeds: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(config.ParamsError, match="not valid YAML"):
        config.load_params(evil)


def test_override_merge_is_deep():
    merged = config.deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]})
    assert merged == {"a": {"b": 1, "c": 3}, "d": [2]}


def test_job_settings_hold_only_what_the_job_uses(smoke_params):
    """Changing an ASCL-only switch changes the ASCL pre-training settings and nothing else."""
    changed = config.deep_merge(smoke_params, {"methods": {"ascl": {"lambda_cl": 0.7}}})
    for method in smoke_params["methods"]:
        same = config.pretrain_settings(smoke_params, method) == config.pretrain_settings(
            changed, method
        )
        assert same == (method != "ascl")
    for strategy in smoke_params["finetune"]["strategies"]:
        assert config.finetune_settings(smoke_params, strategy) == config.finetune_settings(
            changed, strategy
        )
    assert config.evaluate_settings(smoke_params) == config.evaluate_settings(changed)


def test_method_pretrain_overrides(smoke_params):
    p = config.deep_merge(smoke_params, {"methods": {"ascl-at": {"pretrain": {"epochs": 9}}}})
    config.validate_params(p)
    assert config.pretrain_settings(p, "ascl-at")["train"]["epochs"] == 9
    assert (
        config.pretrain_settings(p, "ascl")["train"]["epochs"] == smoke_params["pretrain"]["epochs"]
    )


def test_grid_from_tables(smoke_params):
    jobs = config.finetune_jobs(smoke_params)
    assert ("ascl", "LAF", "stl10") in jobs and ("ascl", "FSF", "source") in jobs
    assert set(config.pretrain_methods(smoke_params)) <= set(smoke_params["methods"])
    assert config.target_dataset(smoke_params, "cifar100") == "digits20"
