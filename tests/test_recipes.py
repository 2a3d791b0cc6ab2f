"""Training recipes: lr schedules (step, cosine, warm-up) against hand-computed sequences, LARS
against a hand-computed update, and the paper / peer protocols."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ascl import config
from ascl.attacks import AttackConfig, pgd
from ascl.engine import LARS, fit, lr_factor
from ascl.finetune import make_step as make_finetune_step
from ascl.models import Classifier, PretrainNet, ResNet18Encoder
from ascl.objectives import supcon_terms
from ascl.tracking import Run
from tests.conftest import ROOT

PARAMS = config.load_params(ROOT / "params.yaml")


def test_step_schedule_by_hand():
    # 10 epochs, decay x0.1 at 60 % and 80 %: epochs 0-5 at 1, 6-7 at 0.1, 8-9 at 0.01
    got = [lr_factor(e, 10, schedule="step", milestones=[0.6, 0.8], gamma=0.1) for e in range(10)]
    assert got == pytest.approx([1] * 6 + [0.1] * 2 + [0.01] * 2)


def test_cosine_with_warmup_by_hand():
    # 2 warm-up epochs (1/2, 2/2), then cosine over the remaining 4: t = 0, 1/4, 2/4, 3/4
    got = [lr_factor(e, 6, schedule="cosine", warmup_epochs=2) for e in range(6)]
    expected = [0.5, 1.0, 1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2]
    assert got == pytest.approx(expected)
    with pytest.raises(ValueError, match="schedule must be one of step, cosine"):
        lr_factor(0, 6, schedule="linear")


@pytest.mark.parametrize(
    ("schedule", "warmup"), [("step", 0), ("step", 2), ("cosine", 0), ("cosine", 3)]
)
def test_fit_follows_the_schedule(schedule, warmup, tiny_params, toy_data):
    """The lr `fit` trains each epoch with (logged as train/lr) is base lr x lr_factor."""
    from ascl.data import load_dataset

    ds = load_dataset(toy_data)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    logged = []

    class Recorder(Run):
        def log_metrics(self, metrics, step=None):
            logged.append(metrics["train/lr"])

    def step(x, y, g):
        loss = nn.functional.cross_entropy(model(x), y)
        return {"loss": loss}

    epochs, lr = 6, 0.05
    with Recorder("t", enabled=False) as run:
        fit(
            model=model,
            parameters=list(model.parameters()),
            step=step,
            x_train=ds.x_train,
            y_train=ds.y_train,
            epochs=epochs,
            batch_size=16,
            lr=lr,
            momentum=0.9,
            weight_decay=0.0,
            lr_milestones=[0.5, 0.8],
            lr_gamma=0.1,
            generator=torch.Generator().manual_seed(0),
            ckpt_dir=None,
            run=run,
            schedule=schedule,
            warmup_epochs=warmup,
        )
    expected = [
        lr
        * lr_factor(
            e, epochs, schedule=schedule, milestones=[0.5, 0.8], gamma=0.1, warmup_epochs=warmup
        )
        for e in range(epochs)
    ]
    assert logged == pytest.approx(expected)


def test_lars_update_by_hand():
    """Two LARS steps on a weight matrix and a bias, computed by hand: the matrix's step is
    scaled by eta * ||w|| / ||g + wd * w|| and decayed, the bias's is plain momentum SGD."""
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.01)
    w.grad, b.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([2.0])
    opt.step()
    d = torch.tensor([[0.3, 1.4]])  # g + 0.1 * w
    trust = 0.01 * 5 / math.hypot(0.3, 1.4)
    v_w = 0.5 * trust * d
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - v_w)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))
    w_before = w.detach().clone()
    w.grad, b.grad = torch.tensor([[1.0, 0.0]]), torch.tensor([0.0])
    opt.step()
    d2 = torch.tensor([[1.0, 0.0]]) + 0.1 * w_before
    trust2 = 0.01 * torch.linalg.norm(w_before) / torch.linalg.norm(d2)
    v_w2 = 0.9 * v_w + 0.5 * trust2 * d2
    assert torch.allclose(w.detach(), w_before - v_w2)
    assert torch.allclose(b.detach(), torch.tensor([0.0 - 0.9 * 1.0]))


def test_paper_protocol_is_one_recipe_with_the_baselines_own_epochs():
    p = PARAMS
    assert p["protocol"] == "paper"
    train = {m: config.pretrain_settings(p, m)["train"] for m in p["methods"]}
    for t in train.values():
        assert (t["optimizer"], t["schedule"], t["lr"], t["batch_size"]) == (
            "sgd",
            "step",
            0.1,
            512,
        )
        assert t["warmup_epochs"] == 0 and t["weight_decay"] == 2.0e-4
    assert {m: train[m]["epochs"] for m in ("at", "trades", "rotation", "standard")} == {
        "at": 200,
        "trades": 76,
        "rotation": 100,
        "standard": 200,
    }
    assert train["ascl"]["epochs"] == train["acl"]["epochs"] == 1000


def test_peer_protocol_takes_each_baselines_recipe():
    p = config.deep_merge(PARAMS, {"protocol": "peer"})
    config.validate_params(p)
    acl = config.pretrain_settings(p, "acl")["train"]
    assert (acl["optimizer"], acl["lr"], acl["schedule"], acl["warmup_epochs"]) == (
        "lars",
        5.0,
        "cosine",
        10,
    )
    assert acl["attack"]["train_mode"] is False  # the method's own keys stay
    trades = config.pretrain_settings(p, "trades")["train"]
    assert (trades["epochs"], trades["batch_size"]) == (76, 128)
    # ASCL has no peer recipe: the paper's
    assert (
        config.pretrain_settings(p, "ascl")["train"]
        == config.pretrain_settings(PARAMS, "ascl")["train"]
    )


def test_recipe_of_an_unknown_method_is_one_line():
    p = config.deep_merge(PARAMS, {"recipes": {"peer": {"acll": {"pretrain": {"lr": 1.0}}}}})
    with pytest.raises(config.ParamsError, match=r"recipes\.peer\.acll: unknown method"):
        config.validate_params(p)


# ---------------------------------------------------------------------------------------------
# Per-source finetuning and attack details (TRADES start, rLE, ACL's full finetuning, SCL scale)


def test_trades_start_is_a_small_gaussian():
    """start_std > 0: δ starts at start_std·N(0, 1) from the generator (TRADES' start), not
    uniform in the ball; without steps that start is returned."""
    x = torch.full((4, 3, 8, 8), 0.5)
    out = pgd(
        lambda xa: xa.sum(),
        x,
        eps=8 / 255,
        alpha=2 / 255,
        steps=0,
        start_std=0.001,
        generator=torch.Generator().manual_seed(3),
    )
    expected = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, expected, atol=1e-7)
    uniform = pgd(
        lambda xa: xa.sum(),
        x,
        eps=8 / 255,
        alpha=2 / 255,
        steps=0,
        generator=torch.Generator().manual_seed(3),
    )
    assert (uniform - x).abs().max() > 0.01  # the uniform start spans the ball


def test_trades_attacks_start_as_trades_does():
    p = config.load_params(ROOT / "params.yaml")
    assert (
        AttackConfig.from_settings(config.finetune_settings(p, "LAF")["attack"]).start_std == 0.001
    )
    trades = config.pretrain_settings(p, "trades")["train"]["attack"]
    assert AttackConfig.from_settings(trades).start_std == 0.001
    ascl = config.pretrain_settings(p, "ascl")["train"]["attack"]
    assert AttackConfig.from_settings(ascl).start_std == 0.0
    assert AttackConfig.from_settings(config.finetune_settings(p, "rLE")["attack"]).start_std == 0.0


def test_full_finetuning_and_rle_carry_their_sources_recipes():
    p = config.load_params(ROOT / "params.yaml")
    faf = config.finetune_settings(p, "FAF")
    assert (faf["epochs"], faf["lr"], faf["batch_size"]) == (25, 0.1, 128)
    assert [round(m * 25) for m in faf["lr_milestones"]] == [15, 20]
    rle = config.finetune_settings(p, "rLE")
    assert (rle["params"], rle["loss"], rle["epochs"], rle["batch_size"]) == (
        "linear",
        "pgd",
        150,
        1024,
    )
    assert [round(m * 150) for m in rle["lr_milestones"]] == [30, 50, 100]
    lsf = config.finetune_settings(p, "LSF")
    assert (lsf["batch_size"], lsf["lr_milestones"]) == (p["finetune"]["batch_size"], [])


def test_rle_step_is_ce_of_a_hand_computed_pgd_example(tiny_params):
    """The rLE step's loss is CE of the example from two signed CE-gradient steps, each
    projected to the ε-ball and the box, computed here by hand."""
    p = config.deep_merge(
        tiny_params,
        {
            "augment": {"weak_padding": 0, "flip_p": 0.0},
            "finetune": {"strategies": {"rLE": {"attack": {"random_start": False, "steps": 2}}}},
        },
    )
    settings = config.finetune_settings(p, "rLE")
    torch.manual_seed(0)
    model = Classifier(ResNet18Encoder(2, "separated"), 10, "adv").eval()
    x, y = torch.rand(6, 3, 16, 16), torch.arange(6) % 10
    terms = make_finetune_step(settings, model)(x, y, torch.Generator().manual_seed(0))
    eps, alpha = 8 / 255, 2 / 255
    xa = x.clone()
    for _ in range(2):
        xa.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = xa.detach() + alpha * grad.sign()
        xa = torch.minimum(torch.maximum(xa, x - eps), x + eps).clamp(0, 1)
    expected = F.cross_entropy(model(xa), y)
    assert terms["at"].item() == pytest.approx(expected.item(), abs=1e-5)


def test_scl_carries_supcontrasts_temperature_factor():
    """scl's loss is SupCon × τ/τ_base (0.1 / 0.07), against an explicit loop."""
    p = config.load_params(ROOT / "params.yaml")
    assert p["methods"]["scl"]["base_temperature"] == 0.07
    torch.manual_seed(0)
    net = PretrainNet(3, width=2, proj_hidden=8, proj_dim=4, bn="same")
    v1, v2, y = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    terms = supcon_terms(net, v1, v2, y, 0.1, 0.07)
    with torch.no_grad():
        z = net.project(torch.cat([v1, v2]), "clean")
    labels = torch.cat([y, y])
    per_anchor = []
    for i in range(8):
        denom = sum(math.exp(float(z[i] @ z[a]) / 0.1) for a in range(8) if a != i)
        pos = [p_ for p_ in range(8) if p_ != i and labels[p_] == labels[i]]
        per_anchor.append(-sum(float(z[i] @ z[q]) / 0.1 - math.log(denom) for q in pos) / len(pos))
    reference = (0.1 / 0.07) * sum(per_anchor) / 8
    assert terms["loss"].item() == pytest.approx(reference, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Model selection (pretrain.model_selection)


@pytest.mark.parametrize("resume", [False, True])
def test_fit_restores_the_best_scoring_epoch(toy_data, tmp_path, resume):
    """With `select`, the returned model holds the weights of the epoch with the highest score
    (here epoch 2 of 4), also when training resumes from a checkpoint after epoch 3."""
    from ascl.data import load_dataset

    ds = load_dataset(toy_data)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    scores = iter([1.0, 5.0, 3.0, 2.0])
    snapshots = []  # the weights at the end of each epoch, as `select` sees them

    def select() -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    def step(x, y, g):
        return {"loss": nn.functional.cross_entropy(model(x), y)}

    def train(stop_after_epoch=None):
        with Run("t", enabled=False) as run:
            return _fit_four_epochs(
                model,
                step,
                ds,
                tmp_path / "ckpt",
                run,
                select=select,
                stop_after_epoch=stop_after_epoch,
            )

    if resume:
        train(stop_after_epoch=3)  # a "kill" after epoch 3: the best (epoch 2) is in the ckpt
    means = train()
    assert means["selected_epoch"] == 2.0 and len(snapshots) == 4
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snapshots[1].items())
    assert not all(torch.equal(model.state_dict()[k], v) for k, v in snapshots[3].items())


def test_selection_holds_out_a_fixed_subset():
    from ascl.pretrain import split_for_selection

    x, y = torch.arange(20).view(20, 1, 1, 1).expand(20, 3, 2, 2), torch.arange(20)
    train = {"model_selection": "best_pgd", "selection_holdout": 5}
    xk, yk, (xh, yh) = split_for_selection(x, y, train)
    assert len(yk) == 15 and len(yh) == 5
    assert sorted(yk.tolist() + yh.tolist()) == list(range(20))  # a partition of the images
    assert torch.equal(split_for_selection(x, y, train)[2][1], yh)  # the same every time
    assert split_for_selection(x, y, {"model_selection": "last"})[2] is None
    with pytest.raises(config.ParamsError, match="selection_holdout"):
        split_for_selection(x, y, {**train, "selection_holdout": 20})


def test_best_pgd_selection_runs_in_pretraining(tiny_params, toy_data, tmp_path):
    """A supervised AT pre-training with best_pgd selection ends with a selected epoch."""
    from ascl.pretrain import run_pretrain

    p = config.deep_merge(
        tiny_params,
        {"pretrain": {"epochs": 2, "model_selection": "best_pgd", "selection_holdout": 8}},
    )
    settings = config.pretrain_settings(p, "at")  # AT's own epochs (its recipe)
    metrics = run_pretrain(settings, data=toy_data, out=tmp_path / "e.pt", seed=0, track=False)
    assert metrics["selected_epoch"] in range(1, settings["train"]["epochs"] + 1)


def test_fit_calls_epoch_start_with_each_epoch_also_after_a_resume(toy_data, tmp_path):
    """`epoch_start` (the ε warm-up's hook) sees every epoch once, in order, before it runs;
    a run resumed after epoch 2 starts with epoch 2."""
    from ascl.data import load_dataset

    ds = load_dataset(toy_data)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    seen: list[int] = []
    ran: list[int] = []  # the epoch in effect at each step

    def step(x, y, g):
        ran.append(seen[-1])
        return {"loss": nn.functional.cross_entropy(model(x), y)}

    def train(stop_after_epoch=None):
        with Run("t", enabled=False) as run:
            _fit_four_epochs(
                model,
                step,
                ds,
                tmp_path / "ckpt",
                run,
                stop_after_epoch=stop_after_epoch,
                epoch_start=seen.append,
            )

    train(stop_after_epoch=2)
    assert seen == [0, 1]
    train()
    assert seen == [0, 1, 2, 3]
    steps_per_epoch = len(ran) // 4
    assert ran == [e for e in range(4) for _ in range(steps_per_epoch)]


def test_to_float_scales_uint8_into_a_new_tensor_and_refuses_floats():
    from ascl.tensors import to_float

    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    out = to_float(x)
    assert out.dtype == torch.float32
    assert out[0].tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert x.tolist() == [[0, 51, 255]]  # the input is untouched
    scaled = out.clone()
    with pytest.raises(TypeError, match="uint8"):
        to_float(scaled)
    assert torch.equal(scaled, out)  # nothing was divided in place before the error


def _fit_four_epochs(model, step, ds, ckpt_dir, run, **extra):
    """`fit` of the resume tests: 4 epochs at batch 16, constant lr 0.1, checkpoints in ckpt_dir."""
    return fit(
        model=model,
        parameters=list(model.parameters()),
        step=step,
        x_train=ds.x_train,
        y_train=ds.y_train,
        epochs=4,
        batch_size=16,
        lr=0.1,
        momentum=0.9,
        weight_decay=0.0,
        lr_milestones=[],
        lr_gamma=1.0,
        generator=torch.Generator().manual_seed(0),
        ckpt_dir=ckpt_dir,
        run=run,
        **extra,
    )
