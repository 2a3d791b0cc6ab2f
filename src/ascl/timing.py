"""Where a job's wall time goes: its fixed costs against its work.

Every command ends (on success) with one line on stderr, i.e. in the job's log:

    ascl: timing {"command": "pretrain", "total": 17.2, "imports": 3.1, "tracking": 3.9, ...}

`imports` is the import of the command's module (torch and the package, at interpreter start
the only other cost is Python's own, a few hundredths of a second), `tracking` every MLflow call
(including MLflow's own import), `inputs` the loading of data sets and checkpoints, and `work`
the rest: training, attacks, evaluation, writing outputs. `benchmarks/smoke_walltime.py` reads
these lines from a whole DAG's logs. Torch-free, cheap: a clock per phase.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

PHASES = ("imports", "tracking", "inputs")
PREFIX = "ascl: timing "

_start = time.perf_counter()
_spent: dict[str, float] = dict.fromkeys(PHASES, 0.0)
_active: list[str] = []

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the enclosed wall time as `name`; nested phases count once, to the outermost."""
    if name not in _spent:
        raise ValueError(f"unknown timing phase {name!r} (known: {', '.join(PHASES)})")
    if _active:  # inside another phase: that one is already counting
        yield
        return
    _active.append(name)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _spent[name] += time.perf_counter() - t0
        _active.pop()


def timed(name: str) -> Callable[[F], F]:
    """Decorator form of `phase`."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with phase(name):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def reset() -> None:
    """Start counting afresh (a process running several commands, as the tests do)."""
    global _start
    _start = time.perf_counter()
    for key in _spent:
        _spent[key] = 0.0


def summary(command: str) -> dict[str, Any]:
    """{command, total, imports, tracking, inputs, work} in seconds since start or `reset`."""
    total = time.perf_counter() - _start
    fixed = {k: round(v, 3) for k, v in _spent.items()}
    work = max(0.0, total - sum(_spent.values()))
    return {"command": command, "total": round(total, 3), **fixed, "work": round(work, 3)}


def line(command: str) -> str:
    return PREFIX + json.dumps(summary(command))


def parse(text: str) -> list[dict[str, Any]]:
    """The timing records in a log's text (normally one)."""
    return [json.loads(row[len(PREFIX) :]) for row in text.splitlines() if row.startswith(PREFIX)]
