"""Pre-training job: one method (objective + switches) on one data set with one seed."""

from __future__ import annotations

from pathlib import Path

import torch

from ascl import checkpoint
from ascl.augment import AugmentConfig, simclr_view, weak_view
from ascl.data import load_dataset
from ascl.engine import fit, place_model, resolve_device, subset
from ascl.models import PretrainNet
from ascl.objectives import (
    ROTATION_CLASSES,
    ACLObjective,
    AdvCLObjective,
    ASCLObjective,
    AttackConfig,
    RoCLObjective,
    RotationObjective,
    SupervisedObjective,
    acl_terms,
    advcl_terms,
    ascl_terms,
    rocl_terms,
    rotation_terms,
    simclr_terms,
    supcon_terms,
    supervised_terms,
)
from ascl.pseudo_labels import cluster_counts, load_pseudo_labels
from ascl.tracking import Run, file_hash, params_hash, source_hash


def build_pretrain_net(settings: dict, num_classes: int) -> PretrainNet:
    """The method's PretrainNet; the objective decides the optional heads (rotation, pseudo)."""
    m = settings["model"]
    spec = settings["objective"]
    pseudo = spec.get("pseudo_labels")
    return PretrainNet(
        num_classes,
        width=m["width"],
        proj_hidden=m["proj_hidden"],
        proj_dim=m["proj_dim"],
        bn=m["bn"],
        rotation_classes=ROTATION_CLASSES if spec["objective"] == "rotation" else 0,
        pseudo_classes=cluster_counts(pseudo["clusters"]) if pseudo else (),
    )


def make_step(settings: dict, model: PretrainNet):
    """The per-batch function of the method's objective: (x, y, generator) -> loss terms.

    x: (B, 3, H, W) images in [0, 1]; y: (B,) class labels, or for an objective with pseudo
    labels (advcl) the (B, K) pseudo labels of its K clusterings (see run_pretrain).
    """
    spec = settings["objective"]
    train = settings["train"]
    aug = AugmentConfig.from_dict(settings["augment"])
    attack = AttackConfig.from_settings(train["attack"])
    tau = train["temperature"]
    name = spec["objective"]
    if name == "supervised":
        supervised = SupervisedObjective(
            adversary=spec.get("adversary", "pgd"), trades_beta=spec.get("trades_beta", 6.0)
        )
        return lambda x, y, g: supervised_terms(
            model, weak_view(x, aug, g), y, supervised, attack, g
        )
    if name == "rotation":
        rotation = RotationObjective(
            lambda_rotation=spec.get("lambda_rotation", 0.5),
            adversarial=spec.get("adversarial", True),
        )
        return lambda x, y, g: rotation_terms(model, weak_view(x, aug, g), y, rotation, attack, g)
    if name == "simclr":
        return lambda x, y, g: simclr_terms(
            model, simclr_view(x, aug, g), simclr_view(x, aug, g), tau
        )
    if name == "supcon":
        base = spec.get("base_temperature")
        return lambda x, y, g: supcon_terms(
            model, simclr_view(x, aug, g), simclr_view(x, aug, g), y, tau, base
        )
    if name == "rocl":
        rocl = RoCLObjective(lambda_reg=spec.get("lambda_reg", 1 / 256), temperature=tau)
        return lambda x, y, g: rocl_terms(
            model, simclr_view(x, aug, g), simclr_view(x, aug, g), rocl, attack, g
        )
    if name == "acl":
        acl = ACLObjective(
            lambda_clean=spec.get("lambda_clean", 0.5),
            lambda_adv=spec.get("lambda_adv", 0.5),
            temperature=tau,
        )
        return lambda x, y, g: acl_terms(
            model, simclr_view(x, aug, g), simclr_view(x, aug, g), acl, attack, g
        )
    if name == "advcl":
        advcl = AdvCLObjective(
            lambda_ce=spec.get("lambda_ce", 0.2),
            hf_radius=spec.get("hf_radius", 8.0),
            base_temperature=spec.get("base_temperature", 0.07),
            temperature=tau,
        )
        return lambda x, y, g: advcl_terms(
            model,
            weak_view(x, aug, g),
            simclr_view(x, aug, g),
            simclr_view(x, aug, g),
            y,
            advcl,
            attack,
            g,
        )
    if name == "ascl":
        objective = ASCLObjective(
            lambda_at=spec.get("lambda_at", 1.0),
            lambda_cl=spec.get("lambda_cl", 0.5),
            lambda_ascl=spec.get("lambda_ascl", 0.2),
            attack_source=spec.get("attack_source", "ensemble"),
            temperature=train["temperature"],
            reading=spec.get("reading", ASCLObjective.reading),
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
    pseudo_labels: str | Path | None = None,
) -> dict[str, float]:
    """Train, then write the encoder checkpoint `out` (atomic). Returns final train metrics.

    pseudo_labels: the .npz of `ascl pseudo-labels`, required exactly when the objective has a
    `pseudo_labels` spec (advcl); its rows must be the same (subset of the) training images, in
    the same order. The training targets are then those pseudo labels, (N, K).
    """
    from ascl.config import ParamsError

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


def load_pretrained(path: str | Path, map_location="cpu") -> tuple[PretrainNet, dict]:
    """Rebuild a PretrainNet from an encoder checkpoint written by run_pretrain."""
    state = checkpoint.load(path, map_location)
    if state.get("kind") != "pretrain":
        raise checkpoint.CheckpointError(f"{path}: not a pre-training checkpoint")
    model = build_pretrain_net(state["settings"], state["num_classes"])
    model.load_state_dict(state["model"])
    return model, state
