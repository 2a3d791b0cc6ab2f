"""Every third-party package the `ascl` package imports is declared in pyproject.toml (not
merely installed as some other package's dependency), and the workflow's major tools have an
upper bound."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Imports that are an alternative of a declared distribution, tried only when it is missing.
FALLBACKS = {"autoattack": "pyautoattack"}  # fra31's git install of the same code


def imported_top_level(package: Path) -> set[str]:
    """Top-level names of the absolute imports of every module under `package`."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "ascl"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, str]:
    """{normalised distribution name: requirement string} of [project].dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {normalise(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]): d for d in deps}


def test_every_imported_distribution_is_declared():
    providers = md.packages_distributions()
    wanted = declared()
    missing = []
    for name in sorted(imported_top_level(ROOT / "src" / "ascl")):
        if name in FALLBACKS:
            assert normalise(FALLBACKS[name]) in wanted, name
            continue
        dists = {normalise(d) for d in providers.get(name, [])}
        assert dists, f"import {name!r}: no installed distribution provides it"
        if not dists & set(wanted):
            missing.append(f"{name} (from {', '.join(sorted(dists))})")
    assert not missing, f"imported but not declared in pyproject.toml: {', '.join(missing)}"


def test_the_reader_sees_an_undeclared_import(tmp_path):
    """The check above can fail: a module importing an undeclared package is reported."""
    (tmp_path / "m.py").write_text("import os\nfrom requests import get\nfrom . import x\n")
    assert imported_top_level(tmp_path) == {"requests"}
    assert "requests" not in declared()


def test_major_tools_have_an_upper_bound():
    deps = declared()
    for tool in ("snakemake", "dvc", "mlflow", "pyautoattack"):
        assert "<" in deps[tool] or "==" in deps[tool], f"{tool}: {deps[tool]} has no upper bound"
