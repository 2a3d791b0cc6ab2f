"""The one training loop shared by pre-training and finetuning.

Data live on the training device as uint8 tensors; each epoch draws a permutation from an
explicit generator on that device (`make_generator`: augmentation parameters and PGD's random
starts come from it too, so no random number is copied from the host), each step turns a batch
into floats in [0, 1] and hands it to a `step` function that returns named loss terms (the total
under "loss"). The loop owns the optimiser, the piecewise learning-rate schedule, atomic
checkpoints at epoch ends (model, optimiser, schedule, epoch and generator state, so that a
resumed run ends bit-identical to an uninterrupted one on the same device: every N epochs, every
M minutes, after the last epoch and on a preemption signal, `checkpoint.checkpoint_due`),
progress bars, tracking and the non-finite-loss guard.

A step reads nothing back to the host (tests/test_sync_free.py): the loss terms stay on the
device and are read every `FINITE_CHECK_STEPS` steps and at the end of every epoch, before a
checkpoint or an output can be written, where a non-finite term stops the job.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn

from ascl import checkpoint
from ascl.errors import MemoryFormatError, NonFiniteLossError  # noqa: F401 - re-exported
from ascl.tensors import to_float
from ascl.tracking import Run

StepFn = Callable[[Tensor, Tensor, torch.Generator], dict[str, Tensor]]
# Steps between two reads of the loss terms (their finiteness, the progress bar): one
# host-device synchronisation per this many steps and one at every epoch's end. A non-finite
# term is reported with the batch it first appeared in; the steps after it in the same window
# have run but nothing of them is written.
FINITE_CHECK_STEPS = 20
PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
# oneDNN's AVX2 kernel for the backward pass (w.r.t. the input) of a 1x1 stride-2 convolution
# in channels-last layout (brgconv_strided:avx2 backward_data) writes out of bounds when the
# convolution has 2..7 input channels: glibc aborts ("free(): invalid next size"), segfaults,
# or, on other shapes, memory is corrupted silently. Measured on torch 2.14.1 with
# ONEDNN_MAX_CPU_ISA=AVX2 for in_channels 1..24 (docs/reliability.md); 1 and >= 8 are clean.
UNSAFE_CHANNELS_LAST_IN_CHANNELS = range(2, 8)


def unsafe_channels_last_convs(model: nn.Module) -> list[str]:
    """Names of the convolutions of `model` whose channels-last backward pass on CPU runs the
    corrupting oneDNN kernel above (1x1 kernel, stride > 1, 2..7 input channels)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
        and m.kernel_size == (1, 1)
        and max(m.stride) > 1
        and m.in_channels in UNSAFE_CHANNELS_LAST_IN_CHANNELS
    ]


def resolve_memory_format(
    spec: str, model: nn.Module, device: torch.device | str
) -> torch.memory_format:
    """The memory format `model` trains and evaluates in on `device`.

    'auto' -> channels-last (NHWC convolutions: the same math, 1.3-1.6x faster training steps
    on CPU at widths 8-32, benchmarks/README.md) unless the model is run on the CPU and has a
    convolution listed by `unsafe_channels_last_convs` (ResNet-18 base width 2..7), then
    contiguous (NCHW); 'contiguous' -> always NCHW; 'channels_last' -> NHWC, refused with
    MemoryFormatError on the CPU for a model with an unsafe convolution.
    """
    if spec not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {spec!r}")
    if spec == "contiguous":
        return torch.contiguous_format
    unsafe = unsafe_channels_last_convs(model) if torch.device(device).type == "cpu" else []
    if spec == "channels_last" and unsafe:
        raise MemoryFormatError(
            f"memory_format: channels_last corrupts memory on CPU for 1x1 stride-2 convolutions "
            f"with 2..7 input channels ({unsafe[0]}, ...); use auto or contiguous"
        )
    return torch.contiguous_format if unsafe else torch.channels_last


def place_model(model: nn.Module, device: torch.device, memory_format: str = "auto") -> nn.Module:
    """Move `model` to `device` in the memory format `resolve_memory_format` picks."""
    return model.to(device, memory_format=resolve_memory_format(memory_format, model, device))


def compile_encoder(model: nn.Module, enabled: bool = True) -> nn.Module:
    """`torch.compile` the model's ResNet-18 encoder in place (params.yaml `compile`): every
    forward and backward through it (attack steps, views, losses) runs the compiled graph, and
    the state dict keeps its keys. The heads and the losses stay eager. Returns `model`."""
    if enabled:
        model.encoder.compile()
    return model


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The training jobs' random-number generator, seeded with `seed`, on `device` (the training
    device): the epoch's permutation, the augmentation parameters and PGD's random starts are
    drawn where they are used. On the CPU its stream is `torch.Generator().manual_seed(seed)`'s.
    """
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def configure_backends(device: torch.device, *, cudnn_benchmark: bool, tf32: bool) -> None:
    """Apply params.yaml's `cudnn_benchmark` (cuDNN times the algorithms of every new convolution
    shape and keeps the fastest) and `tf32` (fp32 convolutions and matmuls on TF32 tensor cores:
    10-bit mantissa products) on a CUDA `device`. Process-wide switches; on any other device
    nothing is changed, so CPU results do not depend on them."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)


def setup_device(settings: dict) -> torch.device:
    """The device of a job's settings (`resolve_device` of "device") with the backend switches
    of its settings applied (`configure_backends`; absent switches are off)."""
    device = resolve_device(settings.get("device", "auto"))
    configure_backends(
        device,
        cudnn_benchmark=settings.get("cudnn_benchmark", False),
        tf32=settings.get("tf32", False),
    )
    return device


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> the first visible CUDA device if any (CUDA_VISIBLE_DEVICES applies), else CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available")
    return device


def resolve_precision(precision: str, device: torch.device | str) -> bool:
    """Whether training steps on `device` run under bf16 autocast.

    'auto' -> bf16 on CUDA (tensor cores; attack and loss values stay within the tolerances of
    tests/test_precision.py), fp32 elsewhere (on CPU bf16 was not faster, benchmarks/README.md,
    so CPU runs keep their exact fp32 results); 'fp32' -> never; 'bf16' -> on any device (CPU
    included, for tests). Evaluation never autocasts.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.device(device).type == "cuda"
    return precision == "bf16"


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """Index batches (each (batch_size,) int64) of one shuffled epoch, drawn on the generator's
    device and sliced from one permutation there; the last partial batch is dropped unless it
    is the only one (contrastive losses want full batches)."""
    perm = torch.randperm(n, generator=generator, device=generator.device)
    if n <= batch_size:
        return [perm]
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def milestone_epochs(epochs: int, fractions: list[float]) -> list[int]:
    """Epochs at which the lr decays: round(f * epochs) for each fraction f."""
    return [max(1, round(f * epochs)) for f in fractions]


OPTIMIZERS = ("sgd", "lars")
SCHEDULES = ("step", "cosine")


def lr_factor(
    epoch: int,
    epochs: int,
    *,
    schedule: str = "step",
    milestones: list[float] = (),
    gamma: float = 0.1,
    warmup_epochs: int = 0,
) -> float:
    """Multiplier of the base lr during epoch `epoch` (0-based) of `epochs`.

    Warm-up: (epoch + 1) / warmup_epochs for the first warmup_epochs epochs. Then "step":
    gamma ** (number of milestone epochs <= epoch), milestones as fractions of `epochs`
    (the paper's piecewise schedule); "cosine": 0.5 * (1 + cos(pi * t)), t the fraction of the
    epochs after warm-up already done (SimCLR/ACL/SupContrast, per epoch).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    if schedule == "step":
        return gamma ** sum(epoch >= m for m in milestone_epochs(epochs, list(milestones)))
    t = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * t))


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), in the form
    of SimCLR's LARS that ACL and RoCL use: for a weight matrix or kernel (ndim > 1) the step is
    d = g + wd * w scaled by the trust ratio eta * ||w|| / ||d||; biases and batch-norm
    parameters (ndim <= 1) are neither adapted nor decayed. v <- momentum * v + lr * d;
    w <- w - v."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta}
        )

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim API
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    w_norm, d_norm = torch.linalg.norm(p), torch.linalg.norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (d_norm > 0),
                        group["eta"] * w_norm / d_norm,
                        torch.ones_like(w_norm),
                    )
                    d = d * trust
                state = self.state[p]
                buf = state.get("momentum_buffer")
                buf = (
                    d * group["lr"]
                    if buf is None
                    else buf.mul_(group["momentum"]).add_(d, alpha=group["lr"])
                )
                state["momentum_buffer"] = buf
                p.sub_(buf)
        return None


def make_optimizer(
    name: str, parameters: list[nn.Parameter], lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """ "sgd": torch's SGD with momentum (the paper); "lars": `LARS` (ACL, RoCL)."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    schedule: str,
    milestones: list[float],
    gamma: float,
    warmup_epochs: int,
):
    """Per-epoch lr schedule of `lr_factor`. The paper's step schedule without warm-up is
    torch's MultiStepLR (the same values, and the same floating-point results as before the
    other schedules existed)."""
    if schedule == "step" and warmup_epochs == 0:
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestone_epochs(epochs, milestones), gamma=gamma
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda e: lr_factor(
            e,
            epochs,
            schedule=schedule,
            milestones=milestones,
            gamma=gamma,
            warmup_epochs=warmup_epochs,
        ),
    )


# The keys of a job's settings that are `fit` arguments (its training recipe).
RECIPE_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "lr_milestones",
    "lr_gamma",
    "precision",
    "optimizer",
    "schedule",
    "warmup_epochs",
)


def recipe(settings: dict) -> dict:
    """The `fit` keyword arguments of a training recipe (a pre-training job's `train`
    settings, a finetuning job's settings); keys it does not set keep `fit`'s defaults."""
    return {k: settings[k] for k in RECIPE_KEYS if k in settings}


def fit(
    *,
    model: nn.Module,
    parameters: list[nn.Parameter],
    step: StepFn,
    x_train: Tensor,
    y_train: Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    lr_milestones: list[float],
    lr_gamma: float,
    generator: torch.Generator,
    ckpt_dir: str | Path | None,
    run: Run,
    set_train_mode: Callable[[], None] | None = None,
    desc: str = "train",
    stop_after_epoch: int | None = None,
    fingerprint: str = "",
    precision: str = "auto",
    optimizer: str = "sgd",
    schedule: str = "step",
    warmup_epochs: int = 0,
    select: Callable[[], float] | None = None,
    epoch_start: Callable[[int], None] | None = None,
    checkpoint_every_epochs: int = 1,
    checkpoint_every_minutes: float = 0.0,
    finite_check_steps: int = FINITE_CHECK_STEPS,
) -> dict[str, float]:
    """Train `parameters` of `model`; returns the last epoch's mean loss terms.

    epoch_start: called with the 0-based epoch before each epoch runs (also the first epoch
    after a resume), e.g. the pre-training's ε warm-up (`pretrain.PretrainStep.set_epoch`).

    select: model selection. Called after every epoch (model in whatever mode it returns to),
    its score (higher is better, e.g. PGD accuracy on held-out images) is logged as
    `select/score`; at the end the weights of the best-scoring epoch are restored and
    `selected_epoch` is added to the returned terms. None: the last epoch's weights.

    optimizer ("sgd" | "lars"), schedule ("step": x lr_gamma at the lr_milestones fractions of
    the epochs | "cosine") and warmup_epochs (linear) as `make_optimizer` / `lr_factor`.

    x_train: (N, 3, H, W) uint8 on the device; y_train: (N,) int64 on the device; generator: on
    the same device (`make_generator`), else ValueError. Resumes from the newest readable
    checkpoint in ckpt_dir whose `fingerprint` (settings and code of the job) matches;
    checkpoints of other settings or code are removed; one whose generator was on another kind
    of device is refused (CheckpointError: its random streams cannot be continued there).
    `stop_after_epoch` ends the call early (tests) after writing a checkpoint.

    Loss terms are read back every `finite_check_steps` steps and at every epoch's end; a
    non-finite term raises NonFiniteLossError (one line, naming the batch) before anything of
    that epoch is checkpointed, logged or returned.

    Checkpoints (with ckpt_dir) are written at epoch ends: after every
    `checkpoint_every_epochs`-th epoch (0: never by count), once `checkpoint_every_minutes` have
    passed since the last one (0: never by time), after the last epoch, and when SIGTERM or
    SIGUSR1 arrived during the epoch: then `checkpoint.Preempted` is raised (one line on stderr,
    exit status 75) unless that was the last epoch, which ends normally. Without ckpt_dir the
    signals keep their default actions.

    `precision` (see `resolve_precision`): with bf16, each `step` call (augmentation, attacks and
    losses) runs under bf16 autocast; inputs, δ, x + δ, the weights, their gradients and the
    optimiser stay fp32, and the backward pass and update run outside autocast.
    """
    if generator.device.type != x_train.device.type:
        raise ValueError(
            f"fit: the generator is on {generator.device.type}, the data on "
            f"{x_train.device.type}; make it with engine.make_generator(seed, device)"
        )
    bf16 = resolve_precision(precision, x_train.device)
    optimizer = make_optimizer(optimizer, parameters, lr, momentum, weight_decay)
    scheduler = make_scheduler(
        optimizer,
        epochs,
        schedule=schedule,
        milestones=lr_milestones,
        gamma=lr_gamma,
        warmup_epochs=warmup_epochs,
    )
    start_epoch, state = 0, None
    if ckpt_dir is not None:
        state = checkpoint.load_latest(ckpt_dir, map_location=x_train.device)
        if state is not None and state.get("fingerprint") != fingerprint:
            print(
                f"[{desc}] checkpoints in {ckpt_dir} belong to other settings or code; "
                "starting afresh",
                file=sys.stderr,
            )
            checkpoint.clear_epochs(ckpt_dir)
            state = None
        if state is not None:
            saved_on = state.get("generator_device", "cpu")
            if saved_on != generator.device.type:
                raise checkpoint.CheckpointError(
                    f"[{desc}] the checkpoints in {ckpt_dir} continue random streams of a "
                    f"{saved_on} generator, this run's is on {generator.device.type}; resume on "
                    f"a {saved_on} device or delete the directory to start afresh"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"].cpu())
            start_epoch = state["epoch"]
            print(f"[{desc}] resumed from epoch {start_epoch}", file=sys.stderr)
    means: dict[str, float] = {}
    best = state.get("best") if state is not None else None
    last_save = time.monotonic()
    # Signals are only caught where a checkpoint can keep the progress.
    with checkpoint.PreemptionFlag() if ckpt_dir is not None else nullcontext() as preempt:
        for epoch in range(start_epoch, epochs):
            if epoch_start is not None:
                epoch_start(epoch)
            (set_train_mode or model.train)()
            means = _run_epoch(
                step,
                x_train,
                y_train,
                batch_size,
                generator,
                optimizer,
                desc=f"{desc} {epoch + 1}/{epochs}",
                bf16=bf16,
                check_every=finite_check_steps,
            )
            _check_finite_state(model, f"{desc} epoch {epoch + 1}")
            means["lr"] = optimizer.param_groups[0]["lr"]
            scheduler.step()
            run.log_metrics({f"train/{k}": v for k, v in means.items()}, step=epoch + 1)
            if select is not None:
                score = float(select())
                run.log_metrics({"select/score": score}, step=epoch + 1)
                if best is None or score > best["score"]:
                    best = {
                        "score": score,
                        "epoch": epoch + 1,
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    }
            stopping = stop_after_epoch is not None and epoch + 1 >= stop_after_epoch
            signalled = preempt.name if preempt is not None else None
            if ckpt_dir is not None and checkpoint.checkpoint_due(
                epoch + 1,
                epochs,
                every_epochs=checkpoint_every_epochs,
                every_minutes=checkpoint_every_minutes,
                minutes_since_last=(time.monotonic() - last_save) / 60,
                stop=stopping or signalled is not None,
            ):
                saved = checkpoint.save_epoch(
                    {
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "generator": generator.get_state(),
                        "generator_device": generator.device.type,
                        "fingerprint": fingerprint,
                        "best": best,
                    },
                    ckpt_dir,
                    epoch + 1,
                )
                last_save = time.monotonic()
                if signalled is not None and epoch + 1 < epochs:
                    message = (
                        f"[{desc}] {signalled} received: stopped after epoch {epoch + 1}/{epochs}"
                        f", checkpoint {saved}; exit status {checkpoint.PREEMPTED_EXIT_STATUS} "
                        "(run again to resume)"
                    )
                    print(message, file=sys.stderr)
                    raise checkpoint.Preempted(message)
            if stopping:
                break
    if select is not None and best is not None:
        model.load_state_dict(best["model"])
        means = {**means, "selected_epoch": float(best["epoch"])}
    return means


def _check_finite_state(model: nn.Module, where: str) -> None:
    """The loss guard sees the losses of the epoch's steps, computed before their updates; the
    update of an epoch's last step is only seen here, before it could reach a checkpoint or the
    job's output. One read-back for all floating-point tensors of the state dict."""
    floats = {k: t for k, t in model.state_dict().items() if t.is_floating_point()}
    if not floats:
        return
    finite = torch.stack([torch.isfinite(t).all() for t in floats.values()]).tolist()
    bad = [name for name, ok in zip(floats, finite, strict=True) if not ok]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteLossError(
            f"non-finite weights ({', '.join(bad[:3])}{more}) after {where}; "
            "lower the learning rate or check the data"
        )


def _run_epoch(
    step: StepFn,
    x_train: Tensor,
    y_train: Tensor,
    batch_size: int,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    desc: str,
    bf16: bool = False,
    check_every: int = FINITE_CHECK_STEPS,
) -> dict[str, float]:
    """One epoch of `step`s with their updates; returns the mean loss terms (weighted by batch
    size) and images_per_s. The terms stay on the device: they are read back (`_read_terms`)
    every `check_every` steps and after the last one."""
    from tqdm import tqdm

    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    batches = epoch_batches(len(x_train), batch_size, generator)
    sums: dict[str, float] = {}
    pending: list[tuple[int, int, dict[str, Tensor]]] = []  # (batch index, images, terms)
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(
        batches,
        desc=desc,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
        disable=os.environ.get("ASCL_PROGRESS", "1") == "0",
    )

    def read_pending() -> None:
        values = _read_terms(pending, sums, desc)
        pending.clear()
        rate = seen / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(
            {k: f"{v:.3f}" for k, v in values.items()} | {"img/s": f"{rate:.0f}"}, refresh=False
        )

    for i, idx in enumerate(bar):
        terms = train_step(step, x_train, y_train, idx, generator, optimizer, bf16=bf16)
        pending.append((i, len(idx), terms))
        seen += len(idx)
        if len(pending) >= check_every:
            read_pending()
    if pending:
        read_pending()
    bar.close()
    means = {k: v / max(seen, 1) for k, v in sums.items()}
    means["images_per_s"] = seen / max(time.perf_counter() - t0, 1e-9)
    return means


def train_step(
    step: StepFn,
    x_train: Tensor,
    y_train: Tensor,
    idx: Tensor,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    *,
    bf16: bool = False,
) -> dict[str, Tensor]:
    """One optimiser step of `fit` on the batch idx (B,) int64 of x_train (N, 3, H, W) uint8 and
    y_train (N, ...), all on one device: `step` (under bf16 autocast if `bf16`), backward pass,
    update. Returns the detached loss terms, () tensors left on the device: nothing is read
    back to the host (tests/test_sync_free.py)."""
    x = to_float(x_train[idx])
    y = y_train[idx]
    # Autocast changes the compute dtype of matmul/conv-like ops only; element-wise ops keep
    # fp32 inputs fp32, so the views, δ and x + δ stay fp32 (attacks.pgd).
    with torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
        terms = step(x, y, generator)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    return {k: v.detach() for k, v in terms.items()}


def _read_terms(
    pending: list[tuple[int, int, dict[str, Tensor]]], sums: dict[str, float], desc: str
) -> dict[str, float]:
    """Read the loss terms of the `pending` steps (batch index, images, {name: () tensor}) back
    in one transfer, add each term times the batch's images to `sums` in step order, and return
    the last step's values; NonFiniteLossError names the first step with a non-finite term."""
    names = list(pending[0][2])
    stacked = torch.stack([torch.stack([t[k].float() for k in names]) for _, _, t in pending])
    for (batch, images, _), row in zip(pending, stacked.tolist(), strict=True):
        values = dict(zip(names, row, strict=True))
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss term(s) {', '.join(bad)} at {desc}, batch {batch} ({values}); "
                "lower the learning rate or check the data"
            )
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * images
    return values
