"""A training step reads nothing back from the device: one `engine.train_step` (index, view,
attacks, loss terms, backward pass, update) of every pre-training method of params.yaml and every
finetuning strategy, at config/smoke.yaml's sizes, runs no op that makes the host wait for a GPU
(`ascl.syncs.forces_sync`: a value read back, boolean-mask indexing, a tensor made from host data,
a copy between host and device). On the CPU the recording dispatch mode sees the same ops a GPU
would run (copies between host and device cannot occur there: the CUDA variant, under
`torch.cuda.set_sync_debug_mode("error")`, covers those). The loss terms are read back every
`engine.FINITE_CHECK_STEPS` steps and at each epoch's end, where a non-finite one still stops the
job before anything is written."""

from __future__ import annotations

import pytest
import torch

from ascl import config, engine, finetune, pretrain
from ascl.artifacts import build_pretrain_net, cluster_counts
from ascl.errors import NonFiniteLossError
from ascl.syncs import SyncCounter
from ascl.tracking import Run
from tests.conftest import ROOT

PARAMS = config.load_params(ROOT / "params.yaml", ROOT / "config" / "smoke.yaml")
BATCH = 8
SIZE = 16  # config/smoke.yaml's data.image_size


# The recipe of the toy `fit` runs below: one epoch of plain SGD.
TOY_RECIPE = dict(
    epochs=1, batch_size=4, lr=0.1, momentum=0.0, weight_decay=0.0, lr_milestones=[], lr_gamma=1.0
)


def _params(device: str) -> dict:
    return config.deep_merge(PARAMS, {"device": device})


def _data(n: int, label_columns: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """n uint8 images (n, 3, SIZE, SIZE) and labels (n,) in 0..9, or (n, K) pseudo labels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 10
    if label_columns:
        y = torch.stack([y % 2] * label_columns, 1)
    return x.to(device), y.to(device)


def _pretrain_job(method: str, device: torch.device):
    """(model, parameters, step, label columns, optimizer name) as `run_pretrain` makes them."""
    settings = config.pretrain_settings(_params(device.type), method)
    torch.manual_seed(0)
    model = engine.place_model(build_pretrain_net(settings, 10), device, settings["memory_format"])
    model.train()
    pseudo = settings["objective"].get("pseudo_labels")
    columns = len(cluster_counts(pseudo["clusters"])) if pseudo else 0
    step = pretrain.make_step(settings, model)
    return model, list(model.parameters()), step, columns, settings["train"]


def _finetune_job(strategy: str, device: torch.device):
    """(model, trained parameters, step, 0, recipe) as `run_finetune` makes them."""
    params = _params(device.type)
    settings = config.finetune_settings(params, strategy)
    torch.manual_seed(0)
    encoder = build_pretrain_net(config.pretrain_settings(params, "ascl"), 10).encoder
    linear = settings["params"] == "linear"
    model = finetune.build_classifier(encoder, 10, settings["eval_branch"], linear)
    model = engine.place_model(model, device, settings["memory_format"])
    model.train()
    if linear:
        model.encoder.eval()
    parameters = [p for p in model.parameters() if p.requires_grad]
    return model, parameters, finetune.make_step(settings, model), 0, settings


def _steps(job, device: torch.device, n_steps: int, recorder, warm_up: int = 0) -> dict:
    """`warm_up` unrecorded training steps, then the epoch's permutation and `n_steps` training
    steps inside `recorder` (a context manager). Returns the last step's terms."""
    _, parameters, step, columns, recipe = job
    x, y = _data(BATCH * (warm_up + n_steps), columns, device)
    optimizer = engine.make_optimizer(
        recipe.get("optimizer", "sgd"),
        parameters,
        recipe["lr"],
        recipe["momentum"],
        recipe["weight_decay"],
    )
    generator = engine.make_generator(0, device)
    bf16 = engine.resolve_precision(recipe.get("precision", "auto"), device)
    for idx in engine.epoch_batches(len(x), BATCH, generator)[:warm_up]:
        engine.train_step(step, x, y, idx, generator, optimizer, bf16=bf16)
    terms = {}
    with recorder:
        batches = engine.epoch_batches(len(x), BATCH, generator)
        for idx in batches[:n_steps]:
            terms = engine.train_step(step, x, y, idx, generator, optimizer, bf16=bf16)
    return terms


def _assert_no_syncs(job) -> None:
    counter = SyncCounter()
    terms = _steps(job, torch.device("cpu"), 2, counter)
    assert counter.count == 0, dict(counter.where)
    assert terms and all(t.device.type == "cpu" and t.ndim == 0 for t in terms.values())
    assert all(bool(torch.isfinite(t)) for t in terms.values()), terms


@pytest.mark.parametrize("method", list(PARAMS["methods"]))
def test_pretraining_step_forces_no_sync(method):
    _assert_no_syncs(_pretrain_job(method, torch.device("cpu")))


@pytest.mark.parametrize("strategy", list(PARAMS["finetune"]["strategies"]))
def test_finetuning_step_forces_no_sync(strategy):
    _assert_no_syncs(_finetune_job(strategy, torch.device("cpu")))


def test_recorder_catches_what_a_step_must_not_do():
    """The recorder of the tests above flags a read-back, a boolean mask and host data inside a
    step (so their passing is not vacuous)."""
    x = torch.rand(4, 3)
    with SyncCounter() as counter:
        float(x.sum())
        x[x > 0.5].sum()
        x + torch.tensor([1.0, 2.0, 3.0])
    assert dict(counter.ops) == {"_local_scalar_dense": 1, "index": 1, "lift_fresh": 1}
    assert all("test_sync_free.py" in w for w in counter.where), counter.where


class _SyncDebugError:
    """`torch.cuda.set_sync_debug_mode("error")` while entered: a synchronising CUDA call raises."""

    def __enter__(self):
        torch.cuda.set_sync_debug_mode("error")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode(0)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@CUDA
@pytest.mark.parametrize("method", list(PARAMS["methods"]))
def test_pretraining_step_on_cuda_under_sync_debug_error(method):
    """On CUDA (bf16 autocast, the device generator) the second step raises on any
    synchronising call (the first warms up: cuDNN and cuBLAS handles, optimiser state)."""
    _steps(
        _pretrain_job(method, torch.device("cuda")), torch.device("cuda"), 1, _SyncDebugError(), 1
    )


@CUDA
@pytest.mark.parametrize("strategy", list(PARAMS["finetune"]["strategies"]))
def test_finetuning_step_on_cuda_under_sync_debug_error(strategy):
    job = _finetune_job(strategy, torch.device("cuda"))
    _steps(job, torch.device("cuda"), 1, _SyncDebugError(), 1)


# ---------------------------------------------------------------------------------------------
# The reads of the loss terms in `fit`


def _fit(step, n_steps: int, **extra) -> dict[str, float]:
    """`fit` of a linear model on n_steps batches of 4 images (one epoch)."""
    from torch import nn

    torch.manual_seed(0)
    x = torch.randint(0, 256, (4 * n_steps, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(4 * n_steps) % 2
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    with Run("t", enabled=False) as run:
        return engine.fit(
            model=model,
            parameters=list(model.parameters()),
            step=lambda xb, yb, g: step(model, xb, yb),
            x_train=x,
            y_train=y,
            **TOY_RECIPE,
            generator=engine.make_generator(0, "cpu"),
            run=run,
            **extra,
        )


def _ce(model, xb, yb):
    loss = torch.nn.functional.cross_entropy(model(xb), yb)
    return {"ce": loss, "loss": loss}


@pytest.mark.parametrize(("check_every", "reads"), [(1, [1] * 5), (2, [2, 2, 1]), (20, [5])])
def test_loss_terms_are_read_every_n_steps_and_at_the_epoch_end(check_every, reads, monkeypatch):
    """Five steps: one read of all pending steps every `check_every` steps and after the last;
    the epoch's means are those of reading every step."""
    real, sizes = engine._read_terms, []

    def record(pending, sums, desc):
        sizes.append(len(pending))
        return real(pending, sums, desc)

    monkeypatch.setattr(engine, "_read_terms", record)
    means = _fit(_ce, 5, ckpt_dir=None, finite_check_steps=check_every)
    assert sizes == reads
    assert means.keys() >= {"ce", "loss", "images_per_s"}
    monkeypatch.setattr(engine, "_read_terms", real)
    every = _fit(_ce, 5, ckpt_dir=None, finite_check_steps=1)
    assert {k: v for k, v in means.items() if k != "images_per_s"} == {
        k: v for k, v in every.items() if k != "images_per_s"
    }


@pytest.mark.parametrize("check_every", [2, engine.FINITE_CHECK_STEPS])
def test_non_finite_term_is_reported_with_its_batch_before_any_checkpoint(check_every, tmp_path):
    """A term that turns NaN at the third of five steps stops the job with the one-line error
    naming batch 2, whether it is read right after (every 2 steps: at step 4) or only at the
    epoch's end; no checkpoint is written."""
    calls = [0]

    def step(model, xb, yb):
        calls[0] += 1
        terms = _ce(model, xb, yb)
        if calls[0] == 3:
            terms["ce"] = terms["ce"] * float("nan")
        return terms

    with pytest.raises(NonFiniteLossError) as err:
        _fit(step, 5, ckpt_dir=tmp_path / "ck", finite_check_steps=check_every)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("non-finite loss term(s) ce at train 1/1, batch 2 ("), message
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


def test_fit_refuses_a_generator_on_another_device():
    """A CPU generator with data elsewhere would draw every random number on the host and copy
    it ('meta' stands for a GPU here: the check comes before any work)."""
    x = torch.empty(8, 3, 4, 4, dtype=torch.uint8, device="meta")
    with pytest.raises(ValueError, match="generator is on cpu, the data on meta"):
        engine.fit(
            model=torch.nn.Linear(1, 1),
            parameters=[],
            step=None,
            x_train=x,
            y_train=torch.zeros(8, dtype=torch.long, device="meta"),
            **TOY_RECIPE,
            generator=torch.Generator().manual_seed(0),
            ckpt_dir=None,
            run=None,
        )


def test_make_generator_on_cpu_is_the_plain_generator():
    """On the CPU the device generator's streams are those of torch.Generator().manual_seed."""
    a, b = engine.make_generator(5, "cpu"), torch.Generator().manual_seed(5)
    assert a.device.type == "cpu"
    assert torch.equal(torch.rand(7, generator=a), torch.rand(7, generator=b))
    assert torch.equal(
        torch.randperm(9, generator=a, device=a.device), torch.randperm(9, generator=b)
    )
    assert torch.equal(a.get_state(), b.get_state())
