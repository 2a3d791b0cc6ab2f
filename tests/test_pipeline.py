"""Pre-training, finetuning and evaluation jobs end to end on a toy set (CPU, seconds)."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from ascl import checkpoint, config
from ascl.artifacts import load_classifier, load_pretrained
from ascl.cli import main
from ascl.engine import NonFiniteLossError
from ascl.finetune import run_finetune
from ascl.pretrain import run_pretrain
from ascl.tracking import tracking_uri


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_bit_identical(tiny_params, toy_data, tmp_path):
    """A run stopped after epoch 1 and resumed from its checkpoint ends with exactly the weights
    of an uninterrupted run (model, optimiser, schedule and RNG state restored)."""
    settings = config.pretrain_settings(tiny_params, "ascl")
    run_pretrain(
        settings,
        data=toy_data,
        out=tmp_path / "full.pt",
        seed=3,
        ckpt_dir=tmp_path / "ck_full",
        track=False,
    )
    run_pretrain(
        settings,
        data=toy_data,
        out=tmp_path / "resumed.pt",
        seed=3,
        ckpt_dir=tmp_path / "ck_resumed",
        track=False,
        stop_after_epoch=1,
    )
    assert not (tmp_path / "resumed.pt").exists()
    assert [e for e, _ in checkpoint.epoch_checkpoints(tmp_path / "ck_resumed")] == [1]
    run_pretrain(
        settings,
        data=toy_data,
        out=tmp_path / "resumed.pt",
        seed=3,
        ckpt_dir=tmp_path / "ck_resumed",
        track=False,
    )
    full = checkpoint.load(tmp_path / "full.pt")["model"]
    resumed = checkpoint.load(tmp_path / "resumed.pt")["model"]
    assert _state_equal(full, resumed)


def test_different_seeds_differ(tiny_params, toy_data, tmp_path):
    settings = config.pretrain_settings(
        config.deep_merge(tiny_params, {"pretrain": {"epochs": 1}}), "ascl"
    )
    for seed in (0, 1):
        run_pretrain(settings, data=toy_data, out=tmp_path / f"s{seed}.pt", seed=seed, track=False)
    a = checkpoint.load(tmp_path / "s0.pt")["model"]
    b = checkpoint.load(tmp_path / "s1.pt")["model"]
    assert not _state_equal(a, b)


@pytest.mark.parametrize("strategy", ["LSF", "LAF", "FSF", "FAF", "rLE"])
def test_finetune_strategies(tiny_params, toy_data, tmp_path, strategy):
    """Linear strategies change only the head (encoder weights and BN statistics untouched);
    full strategies change the encoder."""
    pre = tmp_path / "enc.pt"
    p = config.deep_merge(tiny_params, {"pretrain": {"epochs": 1}})
    run_pretrain(config.pretrain_settings(p, "ascl"), data=toy_data, out=pre, seed=0, track=False)
    run_finetune(
        config.finetune_settings(p, strategy),
        encoder=pre,
        data=toy_data,
        out=tmp_path / "clf.pt",
        seed=0,
        track=False,
    )
    encoder_before = load_pretrained(pre)[0].encoder.state_dict()
    model, state = load_classifier(tmp_path / "clf.pt")
    encoder_after = model.encoder.state_dict()
    assert state["branch"] == "adv"
    assert _state_equal(encoder_before, encoder_after) == (strategy in ("LSF", "LAF", "rLE"))
    assert model.head.weight.abs().sum() > 0


def test_cli_pipeline_and_run_tree(tiny_params, toy_data, tmp_path):
    """pretrain -> finetune -> evaluate through the CLI: metrics JSON with SA and RA at both radii,
    RA <= SA, and MLflow runs nested encoder > finetune > evaluation."""
    pfile = tmp_path / "params.yaml"
    pfile.write_text(json.dumps(tiny_params))
    enc, clf, met = tmp_path / "enc.pt", tmp_path / "clf.pt", tmp_path / "m.json"
    rid = tmp_path / "run_id.txt"
    assert (
        main(
            [
                "pretrain",
                "--params",
                str(pfile),
                "--method",
                "ascl",
                "--data",
                str(toy_data),
                "--out",
                str(enc),
                "--run-id-out",
                str(rid),
                "--tag",
                "rule=pretrain",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "finetune",
                "--params",
                str(pfile),
                "--strategy",
                "LAF",
                "--encoder",
                str(enc),
                "--data",
                str(toy_data),
                "--out",
                str(clf),
            ]
        )
        == 0
    )
    settings = config.evaluate_settings(tiny_params)
    assert (
        main(
            [
                "evaluate",
                "--settings",
                config.settings_json(settings),
                "--model",
                str(clf),
                "--data",
                str(toy_data),
                "--out",
                str(met),
            ]
        )
        == 0
    )
    metrics = json.loads(met.read_text())
    assert set(metrics) == {"sa", "ra_pgd_eps8", "ra_pgd_eps16", "n_test"}
    assert metrics["n_test"] == 24
    assert all(0 <= metrics[k] <= metrics["sa"] <= 100 for k in ("ra_pgd_eps8", "ra_pgd_eps16"))
    client = MlflowClient(tracking_uri())
    pre_id = rid.read_text().strip()
    clf_id = checkpoint.load(clf)["run_id"]
    assert client.get_run(clf_id).data.tags["mlflow.parentRunId"] == pre_id
    assert client.get_run(pre_id).data.tags["rule"] == "pretrain"
    assert client.get_run(pre_id).info.status == "FINISHED"
    history = client.get_metric_history(pre_id, "train/loss")
    assert len(history) == tiny_params["pretrain"]["epochs"]


def test_non_finite_loss_stops_without_output(tiny_params, toy_data, tmp_path):
    """A diverging run stops with a clear error, its MLflow run is FAILED, no encoder written."""
    p = config.deep_merge(tiny_params, {"pretrain": {"lr": 1.0e30, "epochs": 2}})
    settings = config.pretrain_settings(p, "ascl")
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        run_pretrain(
            settings,
            data=toy_data,
            out=tmp_path / "enc.pt",
            seed=0,
            run_id_out=tmp_path / "rid",
            tags={"test": "nan"},
        )
    assert not (tmp_path / "enc.pt").exists()
    run_id = (tmp_path / "rid").read_text().strip()
    assert MlflowClient(tracking_uri()).get_run(run_id).info.status == "FAILED"


def test_cli_missing_input_is_one_line(tmp_path, capsys, tiny_params):
    code = main(
        [
            "evaluate",
            "--settings",
            config.settings_json(config.evaluate_settings(tiny_params)),
            "--model",
            str(tmp_path / "none.pt"),
            "--data",
            str(tmp_path / "none.npz"),
            "--out",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ascl: error: data set not found: {tmp_path / 'none.npz'}"]
    assert not (tmp_path / "m.json").exists()
