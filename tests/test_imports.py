"""Every job imports only what it uses: a job process that does not need MLflow, matplotlib,
scikit-learn or AutoAttack does not load them (each costs seconds per process, paid by every job
of the DAG; benchmarks/README.md). Checked by running the command line's own import of each
command's module (`ascl.cli._command_module`) in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ascl.cli import _command_module
from ascl.registry import KINDS

HEAVY = ("mlflow", "matplotlib", "sklearn", "autoattack", "pyautoattack", "pandas", "sqlalchemy")
# What each command may load, because its work needs it.
NEEDS = {
    "figure": {"matplotlib"},
    "tsne": {"sklearn"},
    "pseudo-labels": {"sklearn"},
    "autoattack": {"autoattack", "pyautoattack"},
}
COMMANDS = sorted({c for kind in KINDS.values() for c in kind.commands})


def loaded_after_import(module: str) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout)) & set(HEAVY)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_job_loads_only_what_it_needs(command):
    module = _command_module(command)
    assert module is not None
    assert loaded_after_import(module) <= NEEDS.get(command, set()), module


def test_the_command_line_itself_is_light():
    assert loaded_after_import("ascl.cli") == set()
    assert "torch" not in json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import ascl.cli, sys, json; print(json.dumps(list(sys.modules)))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
