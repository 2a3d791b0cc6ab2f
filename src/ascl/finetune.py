"""Finetuning job: a pre-trained encoder, a zero-initialised linear head, one strategy.

Strategies (Table 7): `params` linear (encoder frozen: eval mode, no gradients — the stop-gradient
of the linear evaluation protocol) or full (everything trained, encoder in train mode); `loss` ce
(standard finetuning on the weak view) or trades (adversarial finetuning: CE on the natural input
plus β·KL to an adversarial input that maximises the KL, crafted with the model in eval mode).
`head` zero (default: a zero-initialised head) or pretrained (the pre-training net's own trained
classifier is copied into the head; with `epochs: 0` this evaluates an end-to-end supervised
model as it was trained, the E2E strategy).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ascl import checkpoint
from ascl.artifacts import load_pretrained
from ascl.attacks import AttackConfig, attack_with_config, model_mode
from ascl.augment import AugmentConfig, weak_view
from ascl.codehash import code_hash
from ascl.data import image_size_setting, load_dataset
from ascl.engine import compile_encoder, fit, make_generator, place_model, recipe, setup_device
from ascl.errors import ParamsError
from ascl.losses import trades_kl, trades_loss
from ascl.models import Classifier, PretrainNet, ResNet18Encoder
from ascl.tensors import subset
from ascl.tracking import file_hash, job_run, params_hash


def trades_adversary(
    model: Classifier, x: torch.Tensor, attack: AttackConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """x + δ maximising KL(f(x) || f(x + δ)) (TRADES' inner maximisation)."""
    with torch.no_grad(), model_mode(model, train=False):
        logits_nat = model(x)
    return attack_with_config(
        model, lambda xa: trades_kl(logits_nat, model(xa)), x, attack, generator
    )


def ce_adversary(
    model: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: AttackConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """x + δ maximising CE(f(x + δ), y) (PGD-AT's and RoCL's robust linear evaluation's attack)."""
    return attack_with_config(model, lambda xa: F.cross_entropy(model(xa), y), x, attack, generator)


def build_classifier(
    encoder: ResNet18Encoder, num_classes: int, branch: str, linear: bool
) -> Classifier:
    model = Classifier(encoder, num_classes, branch)
    if linear:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    return model


def copy_pretrained_head(model: Classifier, pre: PretrainNet) -> None:
    """Copy the pre-training net's classifier into model.head (`head: pretrained`).

    Raises a one-line ParamsError when the class counts differ (e.g. on a transfer target).
    """

    have, want = pre.classifier.out_features, model.head.out_features
    if have != want:
        raise ParamsError(
            f"finetune: head: pretrained needs a data set with the encoder's {have} classes, "
            f"this one has {want}"
        )
    with torch.no_grad():
        model.head.weight.copy_(pre.classifier.weight)
        model.head.bias.copy_(pre.classifier.bias)


def make_step(settings: dict, model: Classifier):
    """The per-batch function of the strategy's loss: (x, y, generator) -> loss terms.

    x: (B, 3, H, W) in [0, 1], y: (B,). ce: CE of the weak view; trades: TRADES on the weak
    view; pgd: CE of the CE-PGD example of the weak view (RoCL's robust linear evaluation).
    """
    aug = AugmentConfig.from_dict(settings["augment"])
    attack = AttackConfig.from_settings(settings["attack"])
    beta = settings["trades_beta"]

    def step(x, y, g):
        x = weak_view(x, aug, g)
        if settings["loss"] == "ce":
            loss = F.cross_entropy(model(x), y)
            return {"ce": loss, "loss": loss}
        if settings["loss"] == "pgd":
            loss = F.cross_entropy(model(ce_adversary(model, x, y, attack, g)), y)
            return {"at": loss, "loss": loss}
        x_adv = trades_adversary(model, x, attack, g)
        logits_nat, logits_adv = model(x), model(x_adv)
        loss = trades_loss(logits_nat, logits_adv, y, beta)
        return {"ce": F.cross_entropy(logits_nat, y).detach(), "loss": loss}

    return step


def run_finetune(
    settings: dict,
    *,
    encoder: str | Path,
    data: str | Path,
    out: str | Path,
    seed: int,
    ckpt_dir: str | Path | None = None,
    parent_run_id: str | None = None,
    run_id_out: str | Path | None = None,
    tags: dict[str, str] | None = None,
    track: bool = True,
    checkpoint_every: dict | None = None,
) -> dict[str, float]:
    """Finetune and write the classifier checkpoint `out` (atomic). checkpoint_every: the
    `fit` checkpoint intervals (`checkpoint_every_epochs`, `checkpoint_every_minutes`)."""
    device = setup_device(settings)
    torch.manual_seed(seed)
    pre, pre_state = load_pretrained(encoder)
    ds = load_dataset(data, image_size_setting(settings))
    x, y = subset(ds.x_train, ds.y_train, settings["data"]["max_train"], seed=0)
    x, y = x.to(device), y.to(device)
    linear = settings["params"] == "linear"
    model = build_classifier(pre.encoder, ds.num_classes, settings["eval_branch"], linear)
    if settings.get("head", "zero") == "pretrained":
        copy_pretrained_head(model, pre)
    model = place_model(model, device, settings.get("memory_format", "auto"))
    compile_encoder(model, settings.get("compile", False))

    def set_train_mode() -> None:
        model.train()
        if linear:
            model.encoder.eval()

    name = f"finetune/{settings['strategy']}/seed{seed}"
    tags = {
        "stage": "finetune",
        "strategy": settings["strategy"],
        "seed": str(seed),
        "encoder_method": pre_state["settings"]["method"],
        "params_hash": params_hash(settings),
        **(tags or {}),
    }
    parent = parent_run_id or pre_state.get("run_id") or None
    with job_run(
        name,
        params=settings,
        tags=tags,
        parent_run_id=parent,
        track=track,
        ckpt_dir=ckpt_dir,
        run_id_out=run_id_out,
    ) as run:
        metrics = fit(
            model=model,
            parameters=[p for p in model.parameters() if p.requires_grad],
            step=make_step(settings, model),
            x_train=x,
            y_train=y,
            **recipe(settings),
            **(checkpoint_every or {}),
            generator=make_generator(seed, device),
            ckpt_dir=ckpt_dir,
            run=run,
            set_train_mode=set_train_mode,
            desc=name,
            fingerprint=params_hash(settings)
            + code_hash("finetune")
            + file_hash(encoder)
            + file_hash(data),
        )
        checkpoint.save(
            {
                "kind": "classifier",
                "model": model.state_dict(),
                "num_classes": ds.num_classes,
                "branch": settings["eval_branch"],
                "encoder_settings": pre_state["settings"],
                "settings": settings,
                "seed": seed,
                "run_id": run.run_id or "",
            },
            out,
        )
        run.tag_output(out)
    return metrics
