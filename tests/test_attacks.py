"""l∞ PGD (`ascl.attacks.pgd`): constraints, optimality on a linear loss, seeding, model modes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ascl.attacks import model_mode, pgd

EPS = 8 / 255


def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))


def bn_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def batch(b=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 4, 4, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (b,), generator=g)
    return x, y


def ce_fn(model, y):
    return lambda xa: F.cross_entropy(model(xa), y)


@pytest.mark.parametrize("eps,steps", [(EPS, 5), (0.3, 7), (0.6, 3)])
@pytest.mark.parametrize("random_start", [True, False])
def test_stays_in_ball_and_box(eps, steps, random_start):
    """x_adv lies within eps of x in l∞ and inside [0, 1], also for pixels at 0 and 1."""
    model = linear_model()
    x, y = batch()
    x[0] = 0.0
    x[1] = 1.0
    x_adv = pgd(
        ce_fn(model, y),
        x,
        eps=eps,
        alpha=eps / 3,
        steps=steps,
        random_start=random_start,
        generator=torch.Generator().manual_seed(1),
    )
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert not x_adv.requires_grad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attack_increases_loss(seed):
    """The attacked CE is larger than the CE at the clean input."""
    model = linear_model(seed)
    x, y = batch(seed=seed)
    loss = ce_fn(model, y)
    x_adv = pgd(
        loss, x, eps=EPS, alpha=2 / 255, steps=5, generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        assert loss(x_adv).item() > loss(x).item()


@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("eps", [EPS, 0.25])
def test_linear_loss_reaches_known_optimum(eps, random_start):
    """For loss = Σ w·x the PGD optimum is clip(x + eps·sign(w), 0, 1), reached exactly."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 5, 5, generator=g, dtype=torch.float64)
    x[0, 0] = 0.0
    x[1, 1] = 1.0
    w = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    assert (w != 0).all()
    alpha = eps / 4
    steps = math.ceil(2 * eps / alpha) + 2

    def loss(xa):
        return (w * xa).sum()

    x_adv = pgd(
        loss,
        x,
        eps=eps,
        alpha=alpha,
        steps=steps,
        random_start=random_start,
        generator=torch.Generator().manual_seed(0),
    )
    expected = (x + eps * torch.sign(w)).clamp(0, 1)
    assert torch.equal(x_adv, expected)
    start = pgd(
        loss,
        x,
        eps=eps,
        alpha=alpha,
        steps=0,
        random_start=random_start,
        generator=torch.Generator().manual_seed(0),
    )
    assert loss(x_adv).item() >= loss(start).item()
    assert loss(x_adv).item() > loss(x).item()


def test_single_step_moves_by_alpha_along_gradient_sign():
    """Without random start one step is x + alpha·sign(∇) (interior pixels, alpha < eps)."""
    g = torch.Generator().manual_seed(4)
    x = 0.25 + 0.5 * torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    w = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    x_adv = pgd(lambda xa: (w * xa).sum(), x, eps=0.1, alpha=0.03, steps=1, random_start=False)
    torch.testing.assert_close(x_adv, x + 0.03 * torch.sign(w), rtol=0, atol=1e-12)


def test_steps_zero_without_random_start_returns_x():
    """steps = 0 and no random start returns x unchanged."""
    model = linear_model()
    x, y = batch()
    x_adv = pgd(ce_fn(model, y), x, eps=EPS, alpha=2 / 255, steps=0, random_start=False)
    assert torch.equal(x_adv, x)


def test_steps_zero_with_random_start_returns_start_in_ball():
    """steps = 0 with random start returns a random point of the ball (not x itself)."""
    x, y = batch()
    x_adv = pgd(
        ce_fn(linear_model(), y),
        x,
        eps=EPS,
        alpha=2 / 255,
        steps=0,
        generator=torch.Generator().manual_seed(0),
    )
    assert not torch.equal(x_adv, x)
    assert (x_adv - x).abs().max().item() <= EPS + 1e-6
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1


@pytest.mark.parametrize("steps", [0, 4])
def test_eps_zero_returns_x(steps):
    """eps = 0 returns x exactly, with no random start, whatever the number of steps."""
    model = linear_model()
    x, y = batch()
    x_adv = pgd(
        ce_fn(model, y),
        x,
        eps=0.0,
        alpha=2 / 255,
        steps=steps,
        random_start=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(x_adv, x)


def test_seeded_generator_is_deterministic():
    """Same generator seed gives the same adversarial batch; another seed a different one."""
    model = linear_model()
    x, y = batch()

    def run(seed):
        return pgd(
            ce_fn(model, y),
            x,
            eps=EPS,
            alpha=1 / 255,
            steps=2,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_no_parameter_gradients_after_attack():
    """The attack differentiates w.r.t. δ only: no parameter (and no input) .grad is set."""
    model = bn_model()
    x, y = batch()
    x.requires_grad_(True)
    pgd(ce_fn(model, y), x, eps=EPS, alpha=2 / 255, steps=3, model=model, train_mode=True)
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None


def _bn_state(model):
    bn = model[1]
    return [t.clone() for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]


@pytest.mark.parametrize("initially_training", [True, False])
def test_eval_mode_attack_keeps_running_stats(initially_training):
    """train_mode=False: BN running stats untouched; the model's own mode is restored."""
    model = bn_model()
    model.train(initially_training)
    x, y = batch()
    before = _bn_state(model)
    seen = []

    def loss(xa):
        seen.append(model.training and model[1].training)
        return F.cross_entropy(model(xa), y)

    pgd(loss, x, eps=EPS, alpha=2 / 255, steps=3, model=model, train_mode=False)
    assert seen == [False] * 3
    for a, b in zip(before, _bn_state(model), strict=True):
        assert torch.equal(a, b)
    assert all(m.training == initially_training for m in model.modules())


@pytest.mark.parametrize("initially_training", [True, False])
def test_train_mode_attack_updates_running_stats(initially_training):
    """train_mode=True: BN running stats change during the attack; the mode is restored."""
    model = bn_model()
    model.train(initially_training)
    x, y = batch()
    before = _bn_state(model)
    seen = []

    def loss(xa):
        seen.append(model.training and model[1].training)
        return F.cross_entropy(model(xa), y)

    pgd(loss, x, eps=EPS, alpha=2 / 255, steps=3, model=model, train_mode=True)
    assert seen == [True] * 3
    after = _bn_state(model)
    assert not torch.equal(before[0], after[0])
    assert not torch.equal(before[1], after[1])
    assert after[2].item() == before[2].item() + 3
    assert all(m.training == initially_training for m in model.modules())


def test_mixed_submodule_modes_are_restored():
    """Per-submodule training flags (e.g. a frozen BN) survive the attack unchanged."""
    model = bn_model()
    model.train()
    model[1].eval()
    flags = [m.training for m in model.modules()]
    x, y = batch()
    pgd(ce_fn(model, y), x, eps=EPS, alpha=2 / 255, steps=2, model=model, train_mode=True)
    assert [m.training for m in model.modules()] == flags
    pgd(ce_fn(model, y), x, eps=EPS, alpha=2 / 255, steps=2, model=model, train_mode=False)
    assert [m.training for m in model.modules()] == flags


def test_mode_restored_when_loss_raises():
    """model_mode restores the flags even if the attacked loss raises."""
    model = bn_model()
    model.eval()

    def bad(xa):
        raise RuntimeError("boom")

    x, _ = batch()
    with pytest.raises(RuntimeError, match="boom"):
        pgd(bad, x, eps=EPS, alpha=2 / 255, steps=1, model=model, train_mode=True)
    assert not any(m.training for m in model.modules())
    with model_mode(model, True):
        assert all(m.training for m in model.modules())
    assert not any(m.training for m in model.modules())


def test_without_model_the_mode_is_left_alone():
    """With model=None pgd does not switch any module's mode."""
    model = bn_model()
    model.train()
    x, y = batch()
    seen = []

    def loss(xa):
        seen.append(model.training)
        return F.cross_entropy(model(xa), y)

    pgd(loss, x, eps=EPS, alpha=2 / 255, steps=2, train_mode=False)
    assert seen == [True, True]


@pytest.mark.parametrize("train_mode", [True, False])
def test_batch_of_one(train_mode):
    """A single-image batch is attacked, stays in the ball and the box, and raises the loss."""
    model = bn_model()
    model.eval()
    x, y = batch(b=1, seed=7)
    loss = ce_fn(model, y)
    x_adv = pgd(
        loss,
        x,
        eps=EPS,
        alpha=2 / 255,
        steps=4,
        model=model,
        train_mode=train_mode,
        generator=torch.Generator().manual_seed(0),
    )
    assert x_adv.shape == (1, 3, 4, 4)
    assert (x_adv - x).abs().max().item() <= EPS + 1e-6
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1
    if not train_mode:
        with torch.no_grad():
            assert loss(x_adv).item() > loss(x).item()


# ---------------------------------------------------------------------------------------------
# ε warm-up of the training attacks (pretrain.eps_warmup)


@pytest.mark.parametrize("epochs,fraction", [(10, 0.3), (10, 0.35), (4, 1.0), (7, 0.0), (20, 0.4)])
def test_eps_warmup_factor_matches_a_plain_schedule(epochs, fraction):
    from ascl.attacks import eps_warmup_factor

    n = 0
    while n < fraction * epochs - 1e-9:  # n = ceil(fraction * epochs), counted
        n += 1
    expected = [e / n if e < n else 1.0 for e in range(epochs)]
    assert [eps_warmup_factor(e, epochs, fraction) for e in range(epochs)] == expected
    if 0 < fraction < 1:
        assert expected[0] == 0.0 and expected[-1] == 1.0


def test_eps_warmup_factor_rejects_a_fraction_outside_0_1():
    from ascl.attacks import eps_warmup_factor

    with pytest.raises(ValueError, match="fraction"):
        eps_warmup_factor(0, 10, 1.5)


def test_scaled_attack_scales_eps_and_step_only():
    from ascl.attacks import AttackConfig, scaled_attack

    a = AttackConfig(8 / 255, 2 / 255, 5, True, False, 0.001)
    assert scaled_attack(a, 1.0) is a
    half = scaled_attack(a, 0.5)
    assert (half.eps, half.alpha) == (4 / 255, 1 / 255)
    assert (half.steps, half.random_start, half.train_mode, half.start_std) == (
        5,
        True,
        False,
        0.001,
    )


def test_one_conversion_of_attack_budgets():
    """Budgets and steps in the params' 1/255 units become pixel fractions in one place
    (`attacks.pixel_units`); no module divides an attack setting by 255 itself."""
    import re
    from pathlib import Path

    from ascl.attacks import pixel_units

    assert pixel_units(8) == 8 / 255 and pixel_units(0) == 0.0
    src = Path(__file__).resolve().parents[1] / "src" / "ascl"
    by_hand = [
        f"{p.relative_to(src)}:{i}"
        for p in src.rglob("*.py")
        if p.name != "attacks.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"(eps|alpha|\bc|\be)[\"'\]\)\w]*\s*/\s*255\b", line)
    ]
    assert by_hand == []


# ---------------------------------------------------------------------------------------------
# Gradients with respect to the input only: parameters frozen during the attack


def test_parameters_frozen_during_the_attack_and_restored():
    """Inside the attack no parameter requires a gradient; afterwards each has its own flag
    back (a frozen one stays frozen), also when the loss raises."""
    model = bn_model()
    model[0].weight.requires_grad_(False)  # as a linear evaluation's frozen encoder
    before = [p.requires_grad for p in model.parameters()]
    seen = []

    def loss_fn(xa):
        seen.append([p.requires_grad for p in model.parameters()])
        return model(xa).sum()

    x, _ = batch()
    pgd(loss_fn, x, eps=EPS, alpha=EPS / 4, steps=2, random_start=False, model=model)
    assert seen == [[False] * len(before)] * 2
    assert [p.requires_grad for p in model.parameters()] == before

    def failing(xa):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        pgd(failing, x, eps=EPS, alpha=EPS / 4, steps=1, model=model)
    assert [p.requires_grad for p in model.parameters()] == before


def _pretrain_net():
    from ascl.models import PretrainNet

    torch.manual_seed(0)
    return PretrainNet(10, width=8, proj_hidden=16, proj_dim=8, bn="separated")


def _one_step_attack(net, x, y):
    """One PGD step (random start) on CE of the adv branch; the net held in train mode."""
    pgd(
        lambda xa: F.cross_entropy(net(xa, "adv"), y),
        x,
        eps=EPS,
        alpha=EPS / 4,
        steps=1,
        generator=torch.Generator().manual_seed(0),
        model=net,
        train_mode=True,
    )


def _encoder_forward_flops(net, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.encoder(x, "adv")
    return counter.get_total_flops()


def test_attack_step_costs_two_forwards_eagerly():
    """FLOPs (convolutions and matmuls, counted by FlopCounterMode) of one attack step of the
    whole net = 2 forwards of it: the forward and the backward to the input (a convolution's
    input gradient costs its forward), no weight gradient."""
    from torch.utils.flop_counter import FlopCounterMode

    net = _pretrain_net()
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8)
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        net(x, "adv")
    with FlopCounterMode(display=False) as attack:
        _one_step_attack(net, x, y)
    assert attack.get_total_flops() == 2 * forward.get_total_flops()


def _counting_backend(flops: dict[str, int]):
    """A torch.compile backend: AOTAutograd's forward and backward graphs, made with Inductor's
    decompositions and partitioner (what Inductor would compile into kernels), run as they are,
    their FLOPs added to flops["fw"] and flops["bw"]."""
    from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.decomposition import select_decomp_table
    from torch.utils.flop_counter import FlopCounterMode

    def compiler(kind):
        def compile_graph(gm, example_inputs):
            def run(*args):
                with FlopCounterMode(display=False) as counter:
                    out = gm(*args)
                flops[kind] += counter.get_total_flops()
                return out

            return make_boxed_func(run)

        return compile_graph

    return aot_autograd(
        fw_compiler=compiler("fw"),
        bw_compiler=compiler("bw"),
        partition_fn=min_cut_rematerialization_partition,
        decompositions=select_decomp_table(),
    )


@pytest.mark.parametrize("frozen", [True, False], ids=["pgd", "unfrozen"])
def test_compiled_attack_step_costs_two_forwards(frozen, monkeypatch):
    """Under torch.compile (the encoder compiled, as `compile: true` does) AOTAutograd's backward
    graph computes the gradient of every graph input that requires one: with the parameters
    frozen by `pgd` the attack step's encoder FLOPs are the eager ones (forward + input
    gradient = 2 forwards); without freezing they would be 3 (the control)."""
    import ascl.attacks

    if not frozen:
        monkeypatch.setattr(ascl.attacks, "frozen_parameters", lambda model: _nothing())
    torch._dynamo.reset()
    net = _pretrain_net()
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8)
    forward = _encoder_forward_flops(net, x)
    flops = {"fw": 0, "bw": 0}
    net.encoder.compile(backend=_counting_backend(flops))
    _one_step_attack(net, x, y)  # compiles
    flops.update(fw=0, bw=0)
    _one_step_attack(net, x, y)
    torch._dynamo.reset()
    assert flops["fw"] == forward
    assert flops["bw"] == (1 if frozen else 2) * forward


def _nothing():
    from contextlib import nullcontext

    return nullcontext()
