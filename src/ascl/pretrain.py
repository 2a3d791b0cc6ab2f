"""Pre-training job: one method (objective + switches) on one data set with one seed."""

from __future__ import annotations

from pathlib import Path

import torch

from ascl import checkpoint
from ascl.artifacts import build_pretrain_net, cluster_counts, load_pseudo_labels
from ascl.attacks import AttackConfig
from ascl.augment import AugmentConfig
from ascl.data import load_dataset
from ascl.engine import fit, place_model, resolve_device, subset
from ascl.errors import ParamsError
from ascl.models import PretrainNet
from ascl.objectives import build_objective
from ascl.tracking import Run, file_hash, params_hash, source_hash


def make_step(settings: dict, model: PretrainNet):
    """The per-batch function of the method's objective: (x, y, generator) -> loss terms.

    x: (B, 3, H, W) images in [0, 1]; y: (B,) class labels, or for an objective with pseudo
    labels (advcl) the (B, K) pseudo labels of its K clusterings (see run_pretrain).
    """
    spec = settings["objective"]
    train = settings["train"]
    aug = AugmentConfig.from_dict(settings["augment"])
    attack = AttackConfig.from_settings(train["attack"])
    return build_objective(spec, train["temperature"]).step(model, aug, attack)


def run_pretrain(
    settings: dict,
    *,
    data: str | Path,
    out: str | Path,
    seed: int,
    ckpt_dir: str | Path | None = None,
    run_id_out: str | Path | None = None,
    tags: dict[str, str] | None = None,
    track: bool = True,
    stop_after_epoch: int | None = None,
    pseudo_labels: str | Path | None = None,
) -> dict[str, float]:
    """Train, then write the encoder checkpoint `out` (atomic). Returns final train metrics.

    pseudo_labels: the .npz of `ascl pseudo-labels`, required exactly when the objective has a
    `pseudo_labels` spec (advcl); its rows must be the same (subset of the) training images, in
    the same order. The training targets are then those pseudo labels, (N, K).
    """

    needs = settings["objective"].get("pseudo_labels")
    method = settings["method"]
    if needs and pseudo_labels is None:
        raise ParamsError(
            f"pretrain: method {method!r} needs --pseudo-labels (from method "
            f"{needs['from']!r}, made by `ascl pseudo-labels`)"
        )
    if pseudo_labels is not None and not needs:
        raise ParamsError(f"pretrain: method {method!r} does not use pseudo labels")
    device = resolve_device(settings["device"])
    torch.manual_seed(seed)
    ds = load_dataset(data)
    x, y = subset(ds.x_train, ds.y_train, settings["data"]["max_train"], seed=0)
    if needs:
        y = load_pseudo_labels(
            pseudo_labels,
            n_train=len(ds.x_train),
            max_train=settings["data"]["max_train"],
            clusters=cluster_counts(needs["clusters"]),
            data_hash=file_hash(data),
        )
    x, y = x.to(device), y.to(device)
    model = place_model(
        build_pretrain_net(settings, ds.num_classes),
        device,
        settings.get("memory_format", "auto"),
    )
    generator = torch.Generator().manual_seed(seed)
    train = settings["train"]
    name = f"pretrain/{settings['method']}/seed{seed}"
    tags = {
        "stage": "pretrain",
        "method": settings["method"],
        "seed": str(seed),
        "params_hash": params_hash(settings),
        **(tags or {}),
    }
    with Run(name, params=settings, tags=tags, enabled=track) as run:
        if run_id_out is not None and run.run_id:
            checkpoint.atomic_write_text(run_id_out, run.run_id + "\n")
        metrics = fit(
            model=model,
            parameters=list(model.parameters()),
            step=make_step(settings, model),
            x_train=x,
            y_train=y,
            epochs=train["epochs"],
            batch_size=train["batch_size"],
            lr=train["lr"],
            momentum=train["momentum"],
            weight_decay=train["weight_decay"],
            lr_milestones=train["lr_milestones"],
            lr_gamma=train["lr_gamma"],
            generator=generator,
            ckpt_dir=ckpt_dir,
            run=run,
            desc=name,
            stop_after_epoch=stop_after_epoch,
            precision=train.get("precision", "auto"),
            optimizer=train.get("optimizer", "sgd"),
            schedule=train.get("schedule", "step"),
            warmup_epochs=train.get("warmup_epochs", 0),
            fingerprint=params_hash(settings)
            + source_hash()
            + file_hash(data)
            + (file_hash(pseudo_labels) if pseudo_labels is not None else ""),
        )
        if stop_after_epoch is not None and stop_after_epoch < train["epochs"]:
            return metrics
        checkpoint.save(
            {
                "kind": "pretrain",
                "model": model.state_dict(),
                "num_classes": ds.num_classes,
                "settings": settings,
                "seed": seed,
                "run_id": run.run_id or "",
            },
            out,
        )
    return metrics
