"""Checkpoints: atomic writes, safe loading, fallback past a corrupt newest checkpoint."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ascl import checkpoint


def test_save_load_roundtrip(tmp_path):
    state = {"epoch": 1, "w": torch.arange(5.0), "g": torch.Generator().get_state()}
    checkpoint.save(state, tmp_path / "a.pt")
    back = checkpoint.load(tmp_path / "a.pt")
    assert back["epoch"] == 1 and torch.equal(back["w"], state["w"])
    assert list(tmp_path.iterdir()) == [tmp_path / "a.pt"]  # no temp file left


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_executes_code_is_refused(tmp_path, monkeypatch):
    """A crafted file whose unpickling would run a command is refused; the command never runs."""
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"epoch": 1, "x": _Evil()}, f)
    with pytest.raises(checkpoint.CheckpointError, match="evil.pt"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_failed_write_leaves_old_file(tmp_path):
    """An exception during serialisation leaves the previous file intact and no temp file."""
    path = tmp_path / "m.pt"
    checkpoint.save({"v": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        checkpoint.save({"v": Unpicklable()}, path)
    assert torch.equal(checkpoint.load(path)["v"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_keeps_newest_two_and_falls_back(tmp_path):
    for epoch in (1, 2, 3):
        checkpoint.save_epoch(
            {"epoch": epoch, "w": torch.full((3,), float(epoch))}, tmp_path, epoch
        )
    assert [e for e, _ in checkpoint.epoch_checkpoints(tmp_path)] == [3, 2]
    (tmp_path / "epoch-3.pt").write_bytes(b"\x80\x02truncated")
    with pytest.warns(UserWarning, match="falling back"):
        state = checkpoint.load_latest(tmp_path)
    assert state["epoch"] == 2


def test_load_latest_of_empty_dir(tmp_path):
    assert checkpoint.load_latest(tmp_path / "missing") is None


def test_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "nope.pt")


def test_atomic_write_honours_umask(tmp_path):
    import os
    import stat

    from ascl.checkpoint import atomic_write_text

    path = tmp_path / "out.json"
    atomic_write_text(path, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


# ---------------------------------------------------------------------------------------------
# When the training loop checkpoints: intervals, the end, preemption signals


def _reference_schedule(durations, epochs, every_epochs, every_minutes):
    """Epochs after which a checkpoint is written, by a plain loop over epoch durations (min)."""
    saved, clock, last = [], 0.0, 0.0
    for epoch in range(1, epochs + 1):
        clock += durations[epoch - 1]
        by_count = every_epochs and epoch % every_epochs == 0
        by_time = every_minutes and clock - last >= every_minutes
        if by_count or by_time or epoch == epochs:
            saved.append(epoch)
            last = clock
    return saved


@pytest.mark.parametrize(
    ("every_epochs", "every_minutes"), [(1, 0), (2, 0), (3, 0), (0, 0), (0, 5), (4, 5), (2, 0.5)]
)
def test_checkpoint_due_matches_a_plain_loop(every_epochs, every_minutes):
    durations = [1.0, 2.5, 0.5, 3.0, 1.0, 1.0, 4.0, 0.2, 0.3, 2.0]
    saved, clock, last = [], 0.0, 0.0
    for epoch in range(1, len(durations) + 1):
        clock += durations[epoch - 1]
        if checkpoint.checkpoint_due(
            epoch,
            len(durations),
            every_epochs=every_epochs,
            every_minutes=every_minutes,
            minutes_since_last=clock - last,
        ):
            saved.append(epoch)
            last = clock
    assert saved == _reference_schedule(durations, len(durations), every_epochs, every_minutes)
    assert saved[-1] == len(durations)


def test_checkpoint_due_on_stop_and_bad_intervals():
    assert checkpoint.checkpoint_due(3, 10, every_epochs=0, stop=True)
    assert not checkpoint.checkpoint_due(3, 10, every_epochs=2)
    with pytest.raises(ValueError, match="checkpoint intervals must be >= 0"):
        checkpoint.checkpoint_due(1, 2, every_epochs=-1)


def _toy_fit(ckpt_dir, *, signal_at=None, signum=signal.SIGTERM, epochs=4, device="cpu", **extra):
    """`fit` of a linear model on 48 random 3x8x8 images (3 steps of 16 per epoch) on `device`
    whose step draws noise from the loop's generator (on that device); sends `signum` to this
    process at step `signal_at` (1-based, counted over this call). Returns the model."""
    from torch import nn

    from ascl.engine import fit, make_generator
    from ascl.tracking import Run

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (48, 3, 8, 8), dtype=torch.uint8, generator=g).to(device)
    y = (torch.arange(48) % 3).to(device)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).to(device)
    steps = [0]

    def step(xb, yb, gen):
        steps[0] += 1
        if steps[0] == signal_at:
            os.kill(os.getpid(), signum)
        noisy = xb + 0.05 * torch.randn(xb.shape, generator=gen, device=gen.device)
        return {"loss": nn.functional.cross_entropy(model(noisy), yb)}

    with Run("t", enabled=False) as run:
        fit(
            model=model,
            parameters=list(model.parameters()),
            step=step,
            x_train=x,
            y_train=y,
            epochs=epochs,
            batch_size=16,
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            lr_milestones=[0.5],
            lr_gamma=0.1,
            generator=make_generator(2, device),
            ckpt_dir=ckpt_dir,
            run=run,
            **extra,
        )
    return model


def _saved_epochs(monkeypatch):
    saved = []
    real = checkpoint.save_epoch

    def record(state, ckpt_dir, epoch, **kw):
        saved.append(epoch)
        return real(state, ckpt_dir, epoch, **kw)

    monkeypatch.setattr(checkpoint, "save_epoch", record)
    return saved


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        ({}, [1, 2, 3, 4]),  # the default: every epoch
        ({"checkpoint_every_epochs": 2}, [2, 4]),
        ({"checkpoint_every_epochs": 3}, [3, 4]),
        ({"checkpoint_every_epochs": 0}, [4]),
        ({"checkpoint_every_epochs": 0, "checkpoint_every_minutes": 1e-9}, [1, 2, 3, 4]),
        ({"checkpoint_every_epochs": 0, "checkpoint_every_minutes": 60}, [4]),
    ],
)
def test_fit_checkpoints_at_its_intervals(interval, expected, tmp_path, monkeypatch):
    saved = _saved_epochs(monkeypatch)
    _toy_fit(tmp_path / "ck", **interval)
    assert saved == expected


def test_fewer_checkpoints_resume_bit_identical(tmp_path, monkeypatch):
    """every_epochs=2 writes half the checkpoints; a run stopped after epoch 3 (a checkpoint
    there, as every early stop writes one) resumes and ends as the uninterrupted run."""
    saved = _saved_epochs(monkeypatch)
    whole = _toy_fit(tmp_path / "a", checkpoint_every_epochs=2)
    assert saved == [2, 4]
    _toy_fit(tmp_path / "b", checkpoint_every_epochs=2, stop_after_epoch=3)
    resumed = _toy_fit(tmp_path / "b", checkpoint_every_epochs=2)
    assert saved == [2, 4, 2, 3, 4]
    _assert_same_final_state(whole, resumed, tmp_path / "a", tmp_path / "b")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_generator_resume_is_bit_identical_on_cuda(tmp_path):
    """On CUDA the loop's generator lives on the device (its state, a seed and an offset, is in
    the checkpoint): a run stopped after epoch 2 resumes and ends bit-identical to an
    uninterrupted one on the same device."""
    whole = _toy_fit(tmp_path / "a", device="cuda")
    _toy_fit(tmp_path / "b", device="cuda", stop_after_epoch=2)
    resumed = _toy_fit(tmp_path / "b", device="cuda")
    assert checkpoint.load_latest(tmp_path / "b")["generator_device"] == "cuda"
    _assert_same_final_state(whole, resumed, tmp_path / "a", tmp_path / "b")


def test_checkpoint_of_a_generator_on_another_device_is_refused(tmp_path):
    """A checkpoint whose random streams were drawn on another kind of device (here: marked as
    CUDA) cannot be continued: one line, and the checkpoint is kept."""
    _toy_fit(tmp_path / "ck", stop_after_epoch=2)
    path = tmp_path / "ck" / "epoch-2.pt"
    state = checkpoint.load(path)
    assert state["generator_device"] == "cpu"
    checkpoint.save({**state, "generator_device": "cuda"}, path)
    with pytest.raises(
        checkpoint.CheckpointError, match="of a cuda generator, this run's is on cpu"
    ):
        _toy_fit(tmp_path / "ck")
    assert path.exists()


def _assert_same_final_state(model_a, model_b, ckpt_a, ckpt_b):
    """Every parameter and every tensor of the optimiser, scheduler and generator state of the
    last checkpoints (epoch 4) are equal."""
    for (name, a), (_, b) in zip(
        model_a.state_dict().items(), model_b.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    last_a, last_b = checkpoint.load_latest(ckpt_a), checkpoint.load_latest(ckpt_b)
    assert last_a["epoch"] == last_b["epoch"] == 4
    flat_a, flat_b = _tensors(last_a), _tensors(last_b)
    assert flat_a.keys() == flat_b.keys() and any("optimizer" in k for k in flat_a)
    for key in flat_a:
        assert torch.equal(flat_a[key], flat_b[key]), key


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return {}
    out = {}
    for k, v in items:
        out.update(_tensors(v, f"{prefix}/{k}"))
    return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_preemption_signal_checkpoints_exits_75_and_resumes_bit_identical(
    signum, tmp_path, monkeypatch, capfd
):
    """SIGTERM / SIGUSR1 in the middle of epoch 2 (step 5 of 3 per epoch): the epoch ends, its
    checkpoint is written although every_epochs=3 would not write one, and the run stops with
    exit status 75 and one line; the rerun resumes from epoch 2 and ends bit-identical (weights,
    optimiser, scheduler, generator) to an uninterrupted run. The signal handlers are restored."""
    before = {s: signal.getsignal(s) for s in checkpoint.PREEMPT_SIGNALS}
    whole = _toy_fit(tmp_path / "a", checkpoint_every_epochs=3)
    saved = _saved_epochs(monkeypatch)
    with pytest.raises(SystemExit) as stopped:
        _toy_fit(tmp_path / "b", checkpoint_every_epochs=3, signal_at=5, signum=signum)
    assert stopped.value.code == checkpoint.PREEMPTED_EXIT_STATUS == 75
    assert saved == [2]
    err = capfd.readouterr().err.strip().splitlines()
    name = signal.Signals(signum).name
    assert err[-1].startswith(f"[train] {name} received: stopped after epoch 2/4"), err
    assert "exit status 75" in err[-1]
    assert {s: signal.getsignal(s) for s in checkpoint.PREEMPT_SIGNALS} == before
    resumed = _toy_fit(tmp_path / "b", checkpoint_every_epochs=3)
    assert "resumed from epoch 2" in capfd.readouterr().err
    assert saved == [2, 3, 4]
    _assert_same_final_state(whole, resumed, tmp_path / "a", tmp_path / "b")


def test_signal_in_the_last_epoch_finishes_normally(tmp_path, monkeypatch):
    saved = _saved_epochs(monkeypatch)
    _toy_fit(tmp_path / "ck", checkpoint_every_epochs=0, signal_at=11)  # epoch 4 of 4
    assert saved == [4]


def test_preempted_job_process_exits_75(tmp_path):
    """A real process: `fit` of a long run gets SIGTERM from outside; it writes the checkpoint
    of the current epoch and exits with status 75 and one line on stderr."""
    script = tmp_path / "job.py"
    marker = tmp_path / "started"
    script.write_text(
        textwrap.dedent(
            f"""
            import pathlib, sys
            sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
            import torch
            from tests import test_checkpoint as t

            real = torch.nn.functional.cross_entropy
            def loss(*a, **k):
                pathlib.Path({str(marker)!r}).touch()
                return real(*a, **k)
            torch.nn.functional.cross_entropy = loss
            t._toy_fit({str(tmp_path / "ck")!r}, epochs=100000, checkpoint_every_epochs=0)
            """
        )
    )
    env = {**os.environ, "ASCL_PROGRESS": "0"}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "SIGTERM received: stopped after epoch" in err.strip().splitlines()[-1], err
    assert len(checkpoint.epoch_checkpoints(tmp_path / "ck")) == 1
