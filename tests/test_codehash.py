"""Each job's code hash covers exactly the package modules it imports (found from the imports,
not from a hand-kept list): checked against the standard library's own import scanner
(modulefinder), and by editing modules in a copy of the package."""

from __future__ import annotations

import json
import modulefinder
import re
import shutil
from pathlib import Path

import pytest

from ascl import codehash
from ascl.registry import EVALUATIONS

SRC = codehash.ROOT


def _finder_modules(entries: list[str]) -> set[str]:
    """`ascl` modules reachable from `entries` by any import statement, according to
    modulefinder (which scans the bytecode of every function too), search path = src only."""
    script = SRC.parent / "_codehash_probe.py"
    finder = modulefinder.ModuleFinder(path=[str(SRC.parent)])
    script.write_text("".join(f"import {e}\n" for e in entries))
    try:
        finder.run_script(str(script))
    finally:
        script.unlink()
    return {name for name in finder.modules if name.startswith("ascl")}


def _as_modules(files: list[Path]) -> set[str]:
    out = set()
    for f in files:
        if f.suffix != ".py":
            continue
        rel = f.relative_to(SRC).with_suffix("")
        parts = ["ascl", *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.add(".".join(parts))
    return out


@pytest.mark.parametrize("kind", sorted(codehash.ENTRY))
def test_files_are_what_the_imports_reach(kind):
    """The modules of a kind's hash are those modulefinder reaches from its entries, plus the
    command line (ascl.cli) every job starts from."""
    entries = codehash.ENTRY[kind]
    ours = _as_modules(codehash.package_files(entries))
    assert ours - {"ascl.cli"} == _finder_modules(entries)
    assert "ascl.cli" in ours


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "ascl"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize(
    "module",
    [
        "losses.py",
        "claims.py",
        "report.py",
        "data/offline.py",
        "evaluations/strength.py",
        "engine.py",
        "figures.py",
        "reference/published.yaml",
    ],
)
def test_editing_a_module_reruns_exactly_its_importers(module, tmp_path):
    root = _copy(tmp_path)
    before = {k: codehash.code_hash(k, root) for k in codehash.ENTRY}
    with (root / module).open("a") as f:
        f.write("\n_EDITED = 1\n" if module.endswith(".py") else "\n# edited\n")
    after = {k: codehash.code_hash(k, root) for k in codehash.ENTRY}
    changed = {k for k in before if before[k] != after[k]}
    importers = {
        k for k, e in codehash.ENTRY.items() if root / module in codehash.package_files(e, root)
    }
    assert changed == importers
    assert changed and changed != set(codehash.ENTRY) or module == "engine.py"


def test_hashes_are_cached_between_processes_and_follow_every_edit(tmp_path, monkeypatch):
    """A second process reads the hashes from the cache (no module parsed); an edit of any
    file changes the cache key; an unwritable cache place is skipped."""
    root = _copy(tmp_path)
    monkeypatch.setenv("ASCL_CACHE_DIR", str(tmp_path / "cache"))
    first = codehash.code_hash("pretrain", root)
    assert len(json.loads(codehash.cache_file().read_text())) == 1
    codehash._code_hash.cache_clear()
    calls = []
    monkeypatch.setattr(codehash, "package_files", lambda *a: calls.append(a) or [])
    assert codehash.code_hash("pretrain", root) == first and calls == []  # from the file
    monkeypatch.undo()
    monkeypatch.setenv("ASCL_CACHE_DIR", str(tmp_path / "cache"))
    with (root / "losses.py").open("a") as f:
        f.write("\n_EDITED = 1\n")
    assert codehash.code_hash("pretrain", root) != first
    (tmp_path / "blocked").write_text("a file, not a directory")
    monkeypatch.setenv("ASCL_CACHE_DIR", str(tmp_path / "blocked"))
    assert codehash.code_hash("pretrain", root) != first


def test_known_dependencies():
    """Spot checks of the graph: the claims job reads the published numbers and not the
    training code; every training and evaluation job runs the losses; the download job does
    not run the model."""
    files = {
        k: {str(p.relative_to(SRC)) for p in codehash.package_files(e)}
        for k, e in codehash.ENTRY.items()
    }
    assert {"claims.py", "reference/published.yaml"} <= files["claims"]
    assert "engine.py" not in files["claims"] and "losses.py" not in files["table"]
    for kind in ("pretrain", "finetune", "evaluate", "evaluations.strength"):
        assert "losses.py" in files[kind] and "engine.py" in files[kind]
    assert "models.py" not in files["download"]
    # imported by name (importlib): each evaluation kind holds its own module and no other's
    assert "evaluations/strength.py" in files["evaluations.strength"]
    assert "evaluations/tsne.py" not in files["evaluations.autoattack"]
    with pytest.raises(ValueError, match="unknown job kind 'trian'"):
        codehash.code_hash("trian")


def _import_graph() -> dict[str, set[str]]:
    """{module: the `ascl` modules it imports itself} for every module of the package
    (enclosing packages excluded: importing `ascl.x.y` runs `ascl.x` first)."""
    graph = {}
    for path in sorted(SRC.rglob("*.py")):
        (name,) = _as_modules([path])
        graph[name] = {
            m
            for m in codehash._imported(path, name, SRC)
            if m != name and not name.startswith(m + ".") and not f"{name}.".startswith(m + ".")
        }
    return graph


# The job modules: each is the entry of one kind of workflow job and reads the artifacts of
# the others through ascl.artifacts only.
JOB_MODULES = {
    "ascl.pretrain",
    "ascl.pseudo_labels",
    "ascl.finetune",
    "ascl.evaluations.pgd",
    *(f"ascl.evaluations.{k}" for k in EVALUATIONS),
}


def test_no_job_module_imports_another():
    graph = _import_graph()
    assert set(graph) >= JOB_MODULES
    offenders = {job: sorted(graph[job] & JOB_MODULES) for job in JOB_MODULES}
    assert {job: mods for job, mods in offenders.items() if mods} == {}


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    cycles = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for m in sorted(graph.get(name, ())):
            if state.get(m) == 1:
                cycles.append(" -> ".join([*path[path.index(m) :], m]))
            elif m not in state:
                visit(m, [*path, m])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_editing_unrelated_code_keeps_the_pretraining_hash_own_code_changes_it(tmp_path):
    """The checkpoint fingerprint of a training job is its own code hash: a help string of the
    figures or a t-SNE edit leaves it, a loss edit changes it."""
    root = _copy(tmp_path)
    before = codehash.code_hash("pretrain", root)
    for unrelated in ("figures.py", "evaluations/tsne.py", "claims.py"):
        with (root / unrelated).open("a") as f:
            f.write("\n_EDITED = 1\n")
    assert codehash.code_hash("pretrain", root) == before
    with (root / "losses.py").open("a") as f:
        f.write("\n_EDITED = 1\n")
    assert codehash.code_hash("pretrain", root) != before


def test_help_texts_docstrings_and_comments_rerun_nothing(tmp_path):
    """Editing a command's help string, a docstring, a comment or an evaluation's help in the
    registry changes no job's hash; editing a default of the command line does."""
    root = _copy(tmp_path)
    before = {k: codehash.code_hash(k, root) for k in codehash.ENTRY}
    cli = (root / "cli.py").read_text()
    helps = re.findall(r'help="([^"]+)"', cli)
    assert helps
    edited = cli.replace(f'help="{helps[0]}"', 'help="another help text"', 1)
    edited = edited.replace('"""', '"""Edited. ', 1) + "\n# a comment\n"
    (root / "cli.py").write_text(edited)
    registry = (root / "registry.py").read_text()
    (root / "registry.py").write_text(
        registry.replace('"t-SNE of the penultimate features (Fig. 3)"', '"t-SNE (edited)"')
    )
    assert "t-SNE (edited)" in (root / "registry.py").read_text()
    assert {k: codehash.code_hash(k, root) for k in codehash.ENTRY} == before
    (root / "cli.py").write_text(edited + "\n_DEFAULT_BATCH = 2\n")
    after = {k: codehash.code_hash(k, root) for k in codehash.ENTRY}
    assert {k for k in before if before[k] != after[k]} == set(codehash.ENTRY)


def test_editing_tsne_reruns_no_pretraining_or_autoattack_job(tmp_path):
    root = _copy(tmp_path)
    before = {k: codehash.code_hash(k, root) for k in codehash.ENTRY}
    with (root / "evaluations" / "tsne.py").open("a") as f:
        f.write("\n_EDITED = 1\n")
    after = {k: codehash.code_hash(k, root) for k in codehash.ENTRY}
    assert {k for k in before if before[k] != after[k]} == {"evaluations.tsne"}


@pytest.mark.parametrize("own_code_edited", [False, True])
def test_a_killed_pretraining_resumes_unless_its_own_code_changed(
    own_code_edited, tiny_params, toy_data, tmp_path, monkeypatch, capsys
):
    """Kill after epoch 1 (stop_after_epoch), then rerun: the same job code resumes from the
    checkpoint; a changed code hash of the job starts afresh with a one-line reason."""
    from ascl import config, pretrain

    settings = config.pretrain_settings(tiny_params, "ascl")
    settings["train"]["epochs"] = 2
    ckpt = tmp_path / "ckpt"
    args = {"data": toy_data, "out": tmp_path / "enc.pt", "seed": 0, "ckpt_dir": ckpt}
    pretrain.run_pretrain(settings, **args, track=False, stop_after_epoch=1)
    assert (ckpt / "epoch-1.pt").exists() and not (tmp_path / "enc.pt").exists()
    capsys.readouterr()
    if own_code_edited:
        real = pretrain.code_hash
        monkeypatch.setattr(pretrain, "code_hash", lambda kind: "edited" + real(kind))
    pretrain.run_pretrain(settings, **args, track=False)
    err = capsys.readouterr().err
    assert (tmp_path / "enc.pt").exists()
    if own_code_edited:
        assert "belong to other settings or code; starting afresh" in err
        assert "resumed" not in err
    else:
        assert "resumed from epoch 1" in err


# docs/architecture.md's layer table: a module imports only its own layer and the ones before.
LAYERS = {
    "errors": ["ascl.errors"],
    "params": ["ascl.config", "ascl.registry"],
    "pure core": [
        "ascl.tensors",
        "ascl.losses",
        "ascl.attacks",
        "ascl.augment",
        "ascl.models",
        "ascl.metrics",
        "ascl.objectives",
    ],
    "infrastructure": [
        "ascl.engine",
        "ascl.checkpoint",
        "ascl.tracking",
        "ascl.mlflow_stores",
        "ascl.local_server",
        "ascl.timing",
        "ascl.syncs",
        "ascl.environment",
        "ascl.data",
        "ascl.codehash",
    ],
    "artifacts": ["ascl.artifacts"],
    "jobs": ["ascl.pretrain", "ascl.pseudo_labels", "ascl.finetune", "ascl.evaluations"],
    "reports": ["ascl.report", "ascl.claims", "ascl.figures"],
    "entry points": [
        "ascl.cli",
        "ascl.evaluations.cli",
        "ascl.preflight",
        "ascl.dag",
        "ascl.__main__",
    ],
}


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the longest entry that is `module` or a package holding it."""
    best = None
    for i, modules in enumerate(LAYERS.values()):
        for m in modules:
            if (module == m or module.startswith(m + ".")) and (best is None or len(m) > best[1]):
                best = (i, len(m))
    return None if best is None else best[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    names = list(LAYERS)
    out = []
    for module, imports in sorted(graph.items()):
        if module == "ascl":
            continue
        own = layer_of(module)
        if own is None:
            out.append(f"{module}: in no layer of LAYERS")
            continue
        for m in sorted(imports - {"ascl"}):
            theirs = layer_of(m)
            if theirs is None or theirs > own:
                layer = "no layer" if theirs is None else names[theirs]
                out.append(f"{module} ({names[own]}) imports {m} ({layer})")
    return out


def test_every_module_imports_only_its_layer_and_the_ones_before():
    assert layer_violations(_import_graph()) == []


def test_the_layer_check_sees_an_upward_import():
    graph = {"ascl.metrics": {"ascl.engine"}, "ascl.losses": {"ascl.errors"}, "ascl.new": set()}
    assert layer_violations(graph) == [
        "ascl.metrics (pure core) imports ascl.engine (infrastructure)",
        "ascl.new: in no layer of LAYERS",
    ]
