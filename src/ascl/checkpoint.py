"""Atomic, safely loadable checkpoints and artifacts.

Every file is written to a temporary name in the target directory, flushed, fsynced and renamed,
so a kill at any moment leaves either the old file or the new one, never a truncated one.
Loading always uses `torch.load(weights_only=True)`: a file that would execute code is refused.
A training run keeps its newest checkpoints; if the newest is unreadable the previous one is used.

When the training loop writes one: `checkpoint_due` (every N epochs, every M minutes, after the
last epoch, on an early stop) and `PreemptionFlag` (SIGTERM / SIGUSR1, as SLURM sends them on
preemption, at the time limit or ahead of it with `sbatch --signal`): the handler only records
the signal; the loop writes a checkpoint at the end of the current epoch and raises `Preempted`,
which ends the process with `PREEMPTED_EXIT_STATUS`.
"""

from __future__ import annotations

import io
import os
import re
import signal
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ascl.errors import CheckpointError  # noqa: F401 - raised here, re-exported
from ascl.timing import timed

if TYPE_CHECKING:  # torch is imported where it is used: the workflow imports this module
    import torch  # only for its atomic writes, and torch takes seconds to import

CKPT_PATTERN = re.compile(r"^epoch-(\d+)\.pt$")
# SIGTERM: SLURM's preemption, time limit and `scancel`; SIGUSR1: `sbatch --signal=USR1@<s>`.
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# Exit status of a run stopped by a preemption signal after its checkpoint: EX_TEMPFAIL of
# sysexits.h ("temporary failure, retry later"); SLURM requeues it with `RequeueExit=75`.
PREEMPTED_EXIT_STATUS = 75


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


def checkpoint_due(
    epoch: int,
    epochs: int,
    *,
    every_epochs: int = 1,
    every_minutes: float = 0.0,
    minutes_since_last: float = 0.0,
    stop: bool = False,
) -> bool:
    """Whether the training loop writes a checkpoint after (1-based) epoch `epoch` of `epochs`.

    Always after the last epoch and when `stop` (a preemption signal or an early stop); after
    every epoch that is a multiple of `every_epochs` (0: never by count); once `every_minutes`
    have passed since the last checkpoint or the start of this run (`minutes_since_last`; 0:
    never by time).
    """
    if every_epochs < 0 or every_minutes < 0:
        raise ValueError(
            f"checkpoint intervals must be >= 0, got every_epochs={every_epochs}, "
            f"every_minutes={every_minutes}"
        )
    return (
        stop
        or epoch >= epochs
        or (every_epochs > 0 and epoch % every_epochs == 0)
        or (every_minutes > 0 and minutes_since_last >= every_minutes)
    )


class Preempted(SystemExit):
    """The run stopped on a preemption signal after writing its checkpoint. A SystemExit, so
    the process ends with `PREEMPTED_EXIT_STATUS` (not the command line's status 2 for
    errors); str() is the one-line message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = PREEMPTED_EXIT_STATUS


class PreemptionFlag:
    """While entered (a context manager), SIGTERM and SIGUSR1 only record their arrival:
    `name` is then the signal's name ("SIGTERM"), else None. The previous handlers come back on
    exit. Outside the main thread, where Python cannot install handlers, nothing changes and
    `name` stays None."""

    def __init__(self, signals: tuple[signal.Signals, ...] = PREEMPT_SIGNALS) -> None:
        self._signals = signals
        self._previous: dict[signal.Signals, Any] = {}
        self.signum: int | None = None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def _record(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> PreemptionFlag:
        try:
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._record)
        except ValueError:  # not the main thread
            self.__exit__()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
