"""Atomic, safely loadable checkpoints and artifacts.

Every file is written to a temporary name in the target directory, flushed, fsynced and renamed,
so a kill at any moment leaves either the old file or the new one, never a truncated one.
Loading always uses `torch.load(weights_only=True)`: a file that would execute code is refused.
A training run keeps its newest checkpoints; if the newest is unreadable the previous one is used.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ascl.errors import CheckpointError  # noqa: F401 - raised here, re-exported
from ascl.timing import timed

if TYPE_CHECKING:  # torch is imported where it is used: the workflow imports this module
    import torch  # only for its atomic writes, and torch takes seconds to import

CKPT_PATTERN = re.compile(r"^epoch-(\d+)\.pt$")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` atomically. Keep objects to tensors, numbers, strings, lists and dicts."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


@timed("inputs")
def load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True; errors name the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load {path}: {first}") from err


def epoch_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every `epoch-N.pt` in ckpt_dir, newest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = CKPT_PATTERN.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _remove_leftovers(ckpt_dir: str | Path) -> None:
    """Delete the temp files of epoch checkpoints whose write was killed (never loaded; a
    checkpoint directory belongs to one job at a time)."""
    for tmp in Path(ckpt_dir).glob(".epoch-*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)


def save_epoch(state: dict, ckpt_dir: str | Path, epoch: int, keep: int = 2) -> Path:
    """Write `epoch-<epoch>.pt` atomically and delete all but the newest `keep` checkpoints
    (and temp files left by killed writes)."""
    path = Path(ckpt_dir) / f"epoch-{epoch}.pt"
    save(state, path)
    for _, old in epoch_checkpoints(ckpt_dir)[keep:]:
        old.unlink(missing_ok=True)
    _remove_leftovers(ckpt_dir)
    return path


def clear_epochs(ckpt_dir: str | Path) -> None:
    """Delete every epoch checkpoint (and leftover temp file) in ckpt_dir."""
    for _, path in epoch_checkpoints(ckpt_dir):
        path.unlink(missing_ok=True)
    if Path(ckpt_dir).is_dir():
        _remove_leftovers(ckpt_dir)


def load_latest(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest readable epoch checkpoint, falling back (with a warning) past corrupt ones."""
    for epoch, path in epoch_checkpoints(ckpt_dir):
        try:
            state = load(path, map_location)
        except CheckpointError as err:
            warnings.warn(f"{err}; falling back to an older checkpoint", stacklevel=2)
            continue
        if state.get("epoch") != epoch:
            warnings.warn(f"{path}: epoch field does not match its name; skipped", stacklevel=2)
            continue
        return state
    return None
