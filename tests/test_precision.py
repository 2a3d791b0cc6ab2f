"""The `precision` switch: bf16 autocast of the training step (`ascl.engine.fit`) against fp32.

bf16 is inexact, so it is on by default only on CUDA (`precision: auto`). These tests pin down
how far it moves the ASCL attacks and losses from fp32 on one fixed batch and fixed weights
(ResNet-18 width 8, batch 8, 16x16 images), using CPU bf16 autocast, which rounds the same
operations (convolutions and linear layers) to bf16:

* loss terms without an attack: each within LOSS_RTOL of fp32;
* PGD-3 from the same random start: every x + δ fp32, in the ε-ball and in [0, 1], the loss
  terms within PGD_LOSS_RTOL, and the bf16-crafted attack as strong as the fp32 one. The two
  attacks do part ways: where bf16 flips sign(∇δ) of a small gradient entry they step to
  different points (mean |difference| ~0.2 ε at this random initialisation, ~0.05 ε with BN in
  eval mode);
* parameter gradients of the total loss (no attack): within GRAD_RTOL in relative norm. This is
  large because train-mode BN at random initialisation amplifies any rounding: rounding only
  the convolutions' inputs, weights and outputs to bf16 while computing in fp64 gives the same
  ~0.31. With BN in eval mode (running statistics) the gradients are within EVAL_GRAD_RTOL. The
  direction agrees in both cases (cosine >= GRAD_MIN_COS).

Measured values (next to each constant) are ranges over 4 initialisations (x 2 batches for
the loss and gradient figures; torch 2.14, AVX-512 CPU); the tests use one of these cases.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ascl import config
from ascl.attacks import pgd
from ascl.engine import fit, place_model, resolve_precision
from ascl.models import PretrainNet
from ascl.objectives import ASCLObjective, AttackConfig, ascl_terms
from ascl.tracking import Run

LOSS_RTOL = 2e-2  # each loss term, no attack (measured <= 1.2e-2)
PGD_LOSS_RTOL = 5e-2  # each loss term after PGD-3 (measured <= 3.1e-2)
GRAD_RTOL = 0.5  # ‖Δg‖/‖g‖, train-mode BN at init (measured 0.32-0.38; fp32 vs fp64 ~1e-6)
EVAL_GRAD_RTOL = 0.1  # ‖Δg‖/‖g‖, eval-mode BN (measured 0.02-0.03)
GRAD_MIN_COS = 0.9  # cosine of the bf16 and fp32 gradients (measured >= 0.93)
PGD_DELTA_MEAN = 0.35  # mean |x+δ (bf16) - x+δ (fp32)| / ε after PGD-3 (measured 0.20-0.24)
PGD_MIN_STRENGTH = 0.8  # fp32 loss gain, bf16 attack / fp32 attack (measured 0.96-1.07)
EPS, ALPHA = 8 / 255, 2 / 255
SIZE, BATCH = 16, 8


def _model(seed: int = 0) -> PretrainNet:
    torch.manual_seed(seed)
    net = PretrainNet(10, width=8, proj_hidden=32, proj_dim=16, bn="separated")
    return place_model(net, torch.device("cpu")).train()


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x, v1, v2 = (torch.rand(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(3))
    y = torch.arange(BATCH) % 4
    return x, v1, v2, y


def _terms(model, batch, steps: int, bf16: bool, train: bool = True):
    """ASCL terms (eq. 10, default weights, ensemble attacks) and the parameter gradient of the
    total loss, on a copy of `model`; backward outside autocast, as in engine.fit."""
    m = copy.deepcopy(model).train(train)
    attack = AttackConfig(EPS, ALPHA, steps, random_start=steps > 0, train_mode=train)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        terms = ascl_terms(m, *batch, ASCLObjective(), attack, torch.Generator().manual_seed(7))
    terms["loss"].backward()
    grad = torch.cat([p.grad.double().flatten() for p in m.parameters() if p.grad is not None])
    assert all(p.dtype == torch.float32 for p in m.parameters())
    return {k: float(v.detach()) for k, v in terms.items()}, grad


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _grad_agreement(g_bf16: torch.Tensor, g_fp32: torch.Tensor) -> tuple[float, float]:
    rel = float((g_bf16 - g_fp32).norm() / g_fp32.norm())
    cos = float(F.cosine_similarity(g_bf16, g_fp32, dim=0))
    return rel, cos


@pytest.fixture(scope="module")
def no_attack():
    model, batch = _model(), _batch()
    return _terms(model, batch, 0, False), _terms(model, batch, 0, True)


def test_loss_terms_without_attack_within_tolerance(no_attack):
    (fp32, _), (bf16, _) = no_attack
    assert set(fp32) == {"at", "cl", "ascl", "loss"} == set(bf16)
    for key in fp32:
        assert _rel(bf16[key], fp32[key]) <= LOSS_RTOL, (key, bf16[key], fp32[key])


def test_parameter_gradients_within_tolerance(no_attack):
    (_, g_fp32), (_, g_bf16) = no_attack
    rel, cos = _grad_agreement(g_bf16, g_fp32)
    assert rel <= GRAD_RTOL and cos >= GRAD_MIN_COS, (rel, cos)


def test_parameter_gradients_eval_mode_bn_within_tolerance():
    """Without batch statistics (BN in eval mode) bf16 gradients are much closer to fp32."""
    model, batch = _model(), _batch()
    _, g_fp32 = _terms(model, batch, 0, False, train=False)
    _, g_bf16 = _terms(model, batch, 0, True, train=False)
    rel, cos = _grad_agreement(g_bf16, g_fp32)
    assert rel <= EVAL_GRAD_RTOL and cos >= GRAD_MIN_COS, (rel, cos)


def test_pgd_under_autocast_keeps_delta_fp32_in_ball_and_box():
    """PGD-3 on the AT loss inside bf16 autocast: every attacked input x + δ is fp32, the result
    lies in the ε-ball around x and in [0, 1], and it stays close to the fp32 attack."""
    model, (x, _, _, y) = _model(), _batch()
    x = x.clone()
    x[0] = 0.0  # pixels at the box edges
    x[1] = 1.0
    seen: list[torch.dtype] = []

    def loss_fn(xa):
        seen.append(xa.dtype)
        return F.cross_entropy(model(xa, "adv"), y)

    def attack(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return pgd(
                loss_fn,
                x,
                eps=EPS,
                alpha=ALPHA,
                steps=3,
                generator=torch.Generator().manual_seed(7),
                model=model,
                train_mode=True,
            )

    x_fp32 = attack(False)
    seen.clear()
    x_bf16 = attack(True)
    assert seen == [torch.float32] * 3
    assert x_bf16.dtype == torch.float32
    assert float((x_bf16 - x).abs().max()) <= EPS + 1e-6
    assert float(x_bf16.min()) >= 0.0 and float(x_bf16.max()) <= 1.0
    # Same random start; the runs part where bf16 flips sign(∇δ) of a small gradient entry.
    assert float((x_bf16 - x_fp32).abs().mean()) <= PGD_DELTA_MEAN * EPS
    # The bf16-crafted attack is as strong: it raises the fp32 loss as much as the fp32 attack.
    with torch.no_grad():
        clean, gain_fp32, gain_bf16 = (loss_fn(t) for t in (x, x_fp32, x_bf16))
    ratio = float((gain_bf16 - clean) / (gain_fp32 - clean))
    assert ratio >= PGD_MIN_STRENGTH, ratio


def test_loss_terms_after_pgd_within_tolerance():
    model, batch = _model(), _batch()
    fp32, _ = _terms(model, batch, 3, False)
    bf16, _ = _terms(model, batch, 3, True)
    for key in fp32:
        assert _rel(bf16[key], fp32[key]) <= PGD_LOSS_RTOL, (key, bf16[key], fp32[key])


def test_resolve_precision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) is False
    assert resolve_precision("auto", cuda) is True
    assert resolve_precision("auto", "cuda:0") is True
    assert resolve_precision("fp32", cuda) is False
    assert resolve_precision("bf16", cpu) is True
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", cpu)


@pytest.mark.parametrize("precision", ["bf16", "fp32", "auto"])
def test_fit_autocasts_the_step_only_and_keeps_fp32_weights(precision):
    """fit runs the step (and only the step) under autocast; weights, their gradients and the
    optimiser state stay fp32; on CPU 'auto' means fp32."""
    model = _model()
    g = torch.Generator().manual_seed(0)
    x_train = torch.randint(0, 256, (2 * BATCH, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    y_train = torch.arange(2 * BATCH) % 4
    objective, attack = ASCLObjective(), AttackConfig(EPS, ALPHA, 1)
    calls: list[tuple[bool, torch.dtype]] = []

    def step(x, y, gen):
        calls.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return ascl_terms(model, x, x.flip(3), x.flip(2), y, objective, attack, gen)

    means = fit(
        model=model,
        parameters=list(model.parameters()),
        step=step,
        x_train=x_train,
        y_train=y_train,
        epochs=1,
        batch_size=BATCH,
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        lr_milestones=[],
        lr_gamma=1.0,
        generator=torch.Generator().manual_seed(0),
        ckpt_dir=None,
        run=Run("precision-test", enabled=False),
        precision=precision,
    )
    assert calls == [(precision == "bf16", torch.float32)] * 2
    assert not torch.is_autocast_enabled("cpu")
    assert all(torch.isfinite(torch.tensor(v)) for v in means.values())
    for t in model.state_dict().values():
        assert not t.is_floating_point() or t.dtype == torch.float32
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def test_precision_reaches_the_job_settings(smoke_params):
    assert smoke_params["pretrain"]["precision"] == "auto"
    assert config.pretrain_settings(smoke_params, "ascl")["train"]["precision"] == "auto"
    for strategy in smoke_params["finetune"]["strategies"]:
        assert config.finetune_settings(smoke_params, strategy)["precision"] == "auto"
    override = {"pretrain": {"precision": "bf16"}}
    changed = config.deep_merge(
        smoke_params, {"pretrain": {"precision": "fp32"}, "methods": {"ascl": override}}
    )
    config.validate_params(changed)
    assert config.pretrain_settings(changed, "ascl")["train"]["precision"] == "bf16"
    assert config.pretrain_settings(changed, "simclr")["train"]["precision"] == "fp32"
    bad = config.deep_merge(smoke_params, {"finetune": {"precision": "fp16"}})
    with pytest.raises(config.ParamsError, match="finetune.precision"):
        config.validate_params(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_loss_terms_within_tolerance():
    """The same no-attack comparison with CUDA autocast (what `auto` does on a GPU)."""
    device = torch.device("cuda")
    model = _model().to(device)
    batch = tuple(t.to(device) for t in _batch())
    out = {}
    for bf16 in (False, True):
        m = copy.deepcopy(model)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            terms = ascl_terms(m, *batch, ASCLObjective(), AttackConfig(EPS, ALPHA, 0, False))
        out[bf16] = {k: float(v.detach()) for k, v in terms.items()}
    for key in out[False]:
        assert _rel(out[True][key], out[False][key]) <= LOSS_RTOL, key
