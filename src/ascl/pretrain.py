"""Pre-training job: one method (objective + switches) on one data set with one seed."""

from __future__ import annotations

from pathlib import Path

import torch

from ascl import checkpoint
from ascl.artifacts import build_pretrain_net, cluster_counts, load_pseudo_labels
from ascl.attacks import AttackConfig, eps_warmup_factor, pixel_units, scaled_attack
from ascl.augment import AugmentConfig
from ascl.codehash import code_hash
from ascl.data import image_size_setting, load_dataset
from ascl.engine import compile_encoder, fit, make_generator, place_model, recipe, setup_device
from ascl.errors import ParamsError
from ascl.models import PretrainNet
from ascl.objectives import build_objective
from ascl.tensors import subset
from ascl.tracking import file_hash, job_run, params_hash


class PretrainStep:
    """The per-batch function of a method's objective: (x, y, generator) -> loss terms.

    x: (B, 3, H, W) images in [0, 1]; y: (B,) class labels, or for an objective with pseudo
    labels (advcl) the (B, K) pseudo labels of its K clusterings (see run_pretrain).
    `set_epoch(e)` applies the ε warm-up of `pretrain.eps_warmup` (`attacks.eps_warmup_factor`)
    to every attack of the objective during epoch e (0-based); without a warm-up it changes
    nothing.
    """

    def __init__(self, settings: dict, model: PretrainNet) -> None:
        train = settings["train"]
        self.objective = build_objective(settings["objective"], train["temperature"])
        self.model = model
        self.aug = AugmentConfig.from_dict(settings["augment"])
        self.full_attack = AttackConfig.from_settings(train["attack"])
        self.attack = self.full_attack
        self.epochs = train["epochs"]
        self.eps_warmup = train.get("eps_warmup", 0.0)

    def set_epoch(self, epoch: int) -> None:
        factor = eps_warmup_factor(epoch, self.epochs, self.eps_warmup)
        self.attack = scaled_attack(self.full_attack, factor)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        return self.objective.step(self.model, self.aug, self.attack)(x, y, generator)


def make_step(settings: dict, model: PretrainNet) -> PretrainStep:
    """The per-batch function of the method's objective (`PretrainStep`), at epoch 0."""
    step = PretrainStep(settings, model)
    step.set_epoch(0)
    return step


# Model selection (`pretrain.model_selection: best_pgd`): Rice et al. (2020) keep the epoch of
# best PGD-10 accuracy on 1000 held-out training images.
SELECTION_PGD_STEPS = 10


def split_for_selection(x: torch.Tensor, y: torch.Tensor, train: dict):
    """(x, y) minus the held-out images of model selection, and the held-out (x, y) or None.

    x: (N, 3, H, W), y: (N,). The `selection_holdout` images are a fixed (seed 0) random subset,
    the same for every method and seed."""
    if train.get("model_selection", "last") == "last":
        return x, y, None
    n = train["selection_holdout"]
    if not 0 < n < len(x):
        raise ParamsError(
            f"pretrain.selection_holdout: {n} of {len(x)} training images cannot be held out"
        )
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(x.device)
    keep, hold = perm[n:].sort().values, perm[:n].sort().values
    return x[keep], y[keep], (x[hold], y[hold])


class _Head(torch.nn.Module):
    """The pre-training net's classifier on one BN branch, as a plain classifier."""

    def __init__(self, net: PretrainNet, branch: str) -> None:
        super().__init__()
        self.net, self.branch = net, branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.branch)


def selection_score(model: PretrainNet, held_out, train: dict):
    """The `fit` selection score: PGD-10 accuracy (%) of the classifier head (adversarial
    branch) on the held-out images, at the pre-training attack's radius and step size."""
    from ascl.metrics import robust_accuracy

    x, y = held_out
    attack = train["attack"]
    head = _Head(model, "adv")
    return lambda: robust_accuracy(
        head,
        x,
        y,
        eps=pixel_units(attack["eps"]),
        alpha=pixel_units(attack["alpha"]),
        steps=SELECTION_PGD_STEPS,
        random_start=True,
        batch_size=train["batch_size"],
        seed=0,
    )


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
    checkpoint_every: dict | None = None,
) -> dict[str, float]:
    """Train, then write the encoder checkpoint `out` (atomic). Returns final train metrics.

    pseudo_labels: the .npz of `ascl pseudo-labels`, required exactly when the objective has a
    `pseudo_labels` spec (advcl); its rows must be the same (subset of the) training images, in
    the same order. The training targets are then those pseudo labels, (N, K).
    checkpoint_every: the `fit` checkpoint intervals (`checkpoint_every_epochs`,
    `checkpoint_every_minutes`); how the job runs, not part of its settings.
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
    device = setup_device(settings)
    torch.manual_seed(seed)
    ds = load_dataset(data, image_size_setting(settings))
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
    train = settings["train"]
    if needs and train.get("model_selection", "last") != "last":
        raise ParamsError(
            f"pretrain: method {method!r} trains on pseudo labels; model_selection: best_pgd "
            "needs class labels"
        )
    x, y, held_out = split_for_selection(x, y, train)
    model = place_model(
        build_pretrain_net(settings, ds.num_classes),
        device,
        settings.get("memory_format", "auto"),
    )
    compile_encoder(model, settings.get("compile", False))
    generator = make_generator(seed, device)
    name = f"pretrain/{settings['method']}/seed{seed}"
    tags = {
        "stage": "pretrain",
        "method": settings["method"],
        "seed": str(seed),
        "params_hash": params_hash(settings),
        **(tags or {}),
    }
    with job_run(
        name,
        params=settings,
        tags=tags,
        track=track,
        ckpt_dir=ckpt_dir,
        run_id_out=run_id_out,
    ) as run:
        step = make_step(settings, model)
        metrics = fit(
            model=model,
            parameters=list(model.parameters()),
            step=step,
            epoch_start=step.set_epoch,
            x_train=x,
            y_train=y,
            **recipe(train),
            **(checkpoint_every or {}),
            generator=generator,
            ckpt_dir=ckpt_dir,
            run=run,
            desc=name,
            stop_after_epoch=stop_after_epoch,
            select=selection_score(model, held_out, train) if held_out else None,
            fingerprint=params_hash(settings)
            + code_hash("pretrain")
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
        run.tag_output(out)
    return metrics
