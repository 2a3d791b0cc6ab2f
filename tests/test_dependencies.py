"""Every third-party package the `ascl` package imports is declared in pyproject.toml (not
merely installed as some other package's dependency), the workflow's major tools have an
upper bound, and requirements.lock is in sync with pyproject.toml (all offline).

`make lock` runs this file as a script to record pyproject.toml's dependency hash in the lock:
`python tests/test_dependencies.py --stamp requirements.lock`."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import json
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
# The lock's first line: the hash of the pyproject.toml dependencies it was resolved from.
STAMP = "# pyproject-sha256: "
# The platform `make lock` resolves for (its --python-version and --python-platform).
LOCK_ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
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
    for tool in ("snakemake", "snakemake-executor-plugin-slurm", "dvc", "mlflow", "pyautoattack"):
        assert "<" in deps[tool] or "==" in deps[tool], f"{tool}: {deps[tool]} has no upper bound"


# The lock --------------------------------------------------------------------------------------


def locked_requirements(pyproject: Path) -> dict[str, list[str]]:
    """The requirement lists of pyproject.toml the lock is resolved from."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return {
        "requires-python": [project.get("requires-python", "")],
        "dependencies": project.get("dependencies", []),
        "dev": project.get("optional-dependencies", {}).get("dev", []),
    }


def pyproject_digest(pyproject: Path) -> str:
    """sha256 of those lists, blind to order, spacing and comments."""
    lists = {
        k: sorted("".join(r.split()) for r in v) for k, v in locked_requirements(pyproject).items()
    }
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def read_lock(lock: Path) -> tuple[str | None, dict[str, tuple[str, list[str]]]]:
    """(the recorded pyproject digest, {normalised name: (requirement, [hashes])})."""
    text = lock.read_text()
    first = text.split("\n", 1)[0]
    digest = first[len(STAMP) :].split()[0] if first.startswith(STAMP) else None
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *hashes = (part.strip() for part in line.split("--hash="))
        name = normalise(Requirement(requirement).name)
        assert name not in entries, f"{lock.name}: {name} is locked twice"
        entries[name] = (requirement, hashes)
    return digest, entries


def pin(requirement: str) -> str | None:
    """The version of a `name==version` requirement, None for any other."""
    specifier = list(Requirement(requirement).specifier)
    if len(specifier) == 1 and specifier[0].operator == "==" and "*" not in specifier[0].version:
        return specifier[0].version
    return None


def lock_problems(pyproject: Path, lock: Path) -> list[str]:
    """What keeps `lock` from being the installation of `pyproject`'s dependencies."""
    digest, entries = read_lock(lock)
    if digest != pyproject_digest(pyproject):
        return [
            f"{lock.name} was not made from pyproject.toml's current dependencies: run `make lock`"
        ]
    problems = []
    for requirement, hashes in entries.values():
        if pin(requirement) is None:
            problems.append(f"{requirement}: not pinned with ==")
        if not hashes or not all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes):
            problems.append(f"{requirement}: no sha256 hash")
    wanted = locked_requirements(pyproject)
    for extra, key in (("", "dependencies"), ("dev", "dev")):
        for text in wanted[key]:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({**LOCK_ENV, "extra": extra}):
                continue
            pinned = entries.get(normalise(req.name))
            if pinned is None:
                problems.append(f"{text}: not in {lock.name}")
                continue
            version = pin(pinned[0])
            if version and not req.specifier.contains(version, prereleases=True):
                problems.append(f"{text}: {lock.name} has {pinned[0]}")
    return [f"{p} (run `make lock`)" for p in problems]


def stamp(lock: Path, pyproject: Path = ROOT / "pyproject.toml") -> None:
    """Record `pyproject`'s dependency hash as the lock's first line (`make lock` runs this)."""
    lines = lock.read_text().splitlines(keepends=True)
    body = "".join(line for line in lines if not line.startswith(STAMP))
    header = f"{STAMP}{pyproject_digest(pyproject)} (written by `make lock`)\n"
    lock.write_text(header + body)


def test_the_lock_is_in_sync_with_pyproject():
    assert LOCK.exists(), f"{LOCK.name} is missing: run `make lock`"
    problems = lock_problems(ROOT / "pyproject.toml", LOCK)
    assert not problems, "\n".join(problems)


def test_the_lock_check_can_fail(tmp_path):
    """An edited dependency list, a missing hash, a pin outside pyproject's range are reported."""
    pyproject, lock = tmp_path / "pyproject.toml", tmp_path / "requirements.lock"
    hashes = " ".join(f"--hash=sha256:{c * 64}" for c in "ab")
    pyproject.write_text(
        '[project]\nrequires-python = ">=3.11"\n'
        'dependencies = ["numpy>=2,<3", "pywin32; sys_platform == \'win32\'"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=8"]\n'
    )
    lock.write_text(f"numpy==2.1.0 \\\n    {hashes}\n    # via ascl\npytest==8.0 {hashes}\n")
    stamp(lock, pyproject)
    assert lock_problems(pyproject, lock) == []
    assert read_lock(lock)[1]["numpy"] == ("numpy==2.1.0", [f"sha256:{c * 64}" for c in "ab"])

    pyproject.write_text(pyproject.read_text().replace("pytest>=8", "pytest>=9"))
    assert lock_problems(pyproject, lock) == [
        "requirements.lock was not made from pyproject.toml's current dependencies: run `make lock`"
    ]
    stamp(lock, pyproject)  # as if the lock had been edited by hand
    assert lock_problems(pyproject, lock) == [
        "pytest>=9: requirements.lock has pytest==8.0 (run `make lock`)"
    ]
    lock.write_text(lock.read_text().replace(f"pytest==8.0 {hashes}", "pytest>=9"))
    assert lock_problems(pyproject, lock) == [
        "pytest>=9: not pinned with == (run `make lock`)",
        "pytest>=9: no sha256 hash (run `make lock`)",
    ]


def test_the_environment_is_the_lock():
    """The running environment has the locked version of every locked package. A local build
    of the same version (torch 2.14.1+cu126 for 2.14.1) counts as the same."""
    differ = []
    for name, (requirement, _) in read_lock(LOCK)[1].items():
        locked = Version(pin(requirement) or "0")
        try:
            installed = Version(md.version(name))
        except md.PackageNotFoundError:
            differ.append(f"{name} (locked {locked}, not installed)")
            continue
        if installed.public != locked.public:
            differ.append(f"{name} (locked {locked}, installed {installed})")
    assert not differ, (
        f"this environment ({sys.prefix}) is not {LOCK.name}: {', '.join(differ)}; "
        f"`make venv` installs the lock into .venv"
    )


def test_runs_are_tagged_with_the_lock_and_the_packages_off_it():
    """`env.lock_drift` (on every MLflow run) counts the locked pins not installed: a local
    build of the locked version matches, names compare as pip does."""
    from ascl.environment import environment_tags, lock_drift

    lock = (
        "torch==2.14.1 \\\n    --hash=sha256:00\nFoo_Bar==1.0 ; sys_platform == 'linux'\nbaz==2\n"
    )
    installed = ["torch==2.14.1+cu126", "foo-bar==1.0", "baz==3"]
    assert lock_drift(lock, installed) == ["baz==2"]
    assert lock_drift(lock, installed[:2]) == ["baz==2"]
    tags = environment_tags()
    assert len(tags["env.lock"]) == 16 and tags["env.lock_drift"].isdigit()


if __name__ == "__main__":
    if sys.argv[1:2] != ["--stamp"] or len(sys.argv) != 3:
        sys.exit(f"usage: python {sys.argv[0]} --stamp requirements.lock")
    stamp(Path(sys.argv[2]))
