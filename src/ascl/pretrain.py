"""Pre-training job: one method (objective + switches) on one data set with one seed."""

from __future__ import annotations

from pathlib import Path

import torch

from ascl import checkpoint
from ascl.augment import AugmentConfig, simclr_view, weak_view
from ascl.data import load_dataset
from ascl.engine import CHANNELS_LAST, fit, resolve_device, subset
from ascl.models import PretrainNet
from ascl.objectives import ASCLObjective, AttackConfig, ascl_terms
from ascl.tracking import Run, file_hash, params_hash, source_hash


def build_pretrain_net(settings: dict, num_classes: int) -> PretrainNet:
    m = settings["model"]
    return PretrainNet(
        num_classes,
        width=m["width"],
        proj_hidden=m["proj_hidden"],
        proj_dim=m["proj_dim"],
        bn=m["bn"],
    )


def make_step(settings: dict, model: PretrainNet):
    """The per-batch function of the method's objective: (x, y, generator) -> loss terms."""
    spec = settings["objective"]
    train = settings["train"]
    aug = AugmentConfig.from_dict(settings["augment"])
    attack = AttackConfig.from_settings(train["attack"])
    if spec["objective"] == "ascl":
        objective = ASCLObjective(
            lambda_at=spec.get("lambda_at", 1.0),
            lambda_cl=spec.get("lambda_cl", 0.5),
            lambda_ascl=spec.get("lambda_ascl", 0.2),
            attack_source=spec.get("attack_source", "ensemble"),
            temperature=train["temperature"],
        )

        def step(x, y, g):
            return ascl_terms(
                model,
                weak_view(x, aug, g),
                simclr_view(x, aug, g),
                simclr_view(x, aug, g),
                y,
                objective,
                attack,
                g,
            )

        return step
    raise ValueError(f"unknown objective {spec['objective']!r}")


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
) -> dict[str, float]:
    """Train, then write the encoder checkpoint `out` (atomic). Returns final train metrics."""
    device = resolve_device(settings["device"])
    torch.manual_seed(seed)
    ds = load_dataset(data)
    x, y = subset(ds.x_train, ds.y_train, settings["data"]["max_train"], seed=0)
    x, y = x.to(device), y.to(device)
    model = build_pretrain_net(settings, ds.num_classes).to(device, memory_format=CHANNELS_LAST)
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
            fingerprint=params_hash(settings) + source_hash() + file_hash(data),
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


def load_pretrained(path: str | Path, map_location="cpu") -> tuple[PretrainNet, dict]:
    """Rebuild a PretrainNet from an encoder checkpoint written by run_pretrain."""
    state = checkpoint.load(path, map_location)
    if state.get("kind") != "pretrain":
        raise checkpoint.CheckpointError(f"{path}: not a pre-training checkpoint")
    model = build_pretrain_net(state["settings"], state["num_classes"])
    model.load_state_dict(state["model"])
    return model, state
