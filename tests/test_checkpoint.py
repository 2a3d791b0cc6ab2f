"""Checkpoints: atomic writes, safe loading, fallback past a corrupt newest checkpoint."""

from __future__ import annotations

import os
import pickle

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
