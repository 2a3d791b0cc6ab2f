"""DVC on top of the Snakemake DAG: after a parameter change `dvc repro` reruns exactly the jobs
that the change touches, and `dvc metrics show` lists the tables' numbers."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ascl import config, dag

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        ["timeout", "-s", "KILL", str(timeout), *cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def output_times(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for sub in ("results/pretrain", "results/finetune", "results/evaluate")
        for p in (root / sub).rglob("*")
        if p.is_file()
    }


def test_dvc_repro_reruns_only_affected_jobs_and_results_travel_through_a_remote(tmp_path):
    """From a `git clone` of this repository (its own .dvc/, no `dvc init`): `dvc repro` on
    CI-sized params; a parameter change reruns exactly the jobs it touches; `dvc push` to a
    directory remote; a second clone `dvc pull`s, `snakemake --touch`es, and then has nothing
    to do and a clean `dvc status`."""
    repo = tmp_path / "repo"
    store = tmp_path / "dvc-store"
    run(["git", "clone", "-q", str(REPO), str(repo)], tmp_path)
    # The working tree's tracked and untracked files (on CI the same as the commit).
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, repo / name)
    params = config.load_params(REPO / "params.yaml", REPO / "config" / "smoke.yaml")
    params["paper"] = {"table5": params["paper"]["table5"]}
    params["paper"]["table5"]["metrics"] = ["sa", "ra_pgd_eps8"]  # PGD only: no AutoAttack jobs
    params["figures"] = {}
    # a method with its own recipe under `protocol: peer` (the ASCL rows have none)
    params["paper"]["table5"]["rows"]["AT (E2E)"] = {"method": "at", "strategy": "E2E"}
    params["pretrain"]["epochs"] = 1
    for s in params["finetune"]["strategies"].values():
        s["epochs"] = 1
    params["data"]["max_train"] = 64
    params["data"]["max_test"] = 32
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    run([*git, "add", "-A"], repo)
    run([*git, "commit", "-qm", "CI-sized params"], repo)
    assert (repo / ".dvc" / "config").is_file()  # committed: no `dvc init` needed
    run([str(BIN / "dvc"), "remote", "modify", "--local", "storage", "url", str(store)], repo)
    run([str(BIN / "dvc"), "repro"], repo)
    before = output_times(repo)
    assert any(k.endswith("ascl-at/seed0/encoder.pt") for k in before)

    params["methods"]["ascl"]["lambda_cl"] = 0.25  # used only by ASCL's own pre-training
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([str(BIN / "dvc"), "repro"], repo)
    after = output_times(repo)
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == [
        "results/evaluate/ascl/LAF/source/seed0/pgd.json",
        "results/finetune/ascl/LAF/source/seed0/model.pt",
        "results/finetune/ascl/LAF/source/seed0/run_id.txt",
        "results/pretrain/ascl/seed0/encoder.pt",
        "results/pretrain/ascl/seed0/run_id.txt",
    ]
    # Keys in no stage change nothing; `protocol: peer` marks the pre-training stage only
    # (DVC) and reruns the pre-training whose settings it changes, and what follows (Snakemake).
    _check_change(repo, params, ("tracking", "experiment"), "elsewhere", set(), set())
    _check_change(repo, params, ("protocol",), "peer", {"pretrain"}, {("pretrain", "at")})

    metrics = run([str(BIN / "dvc"), "metrics", "show"], repo).stdout
    assert "table5" in metrics and "sa" in metrics
    # Plots of the files this slice produced (Table 5; the figures are not in this slice).
    run([str(BIN / "dvc"), "plots", "show", "-o", "plots"], repo)
    page = (repo / "plots" / "index.html").read_text()
    assert "table5_csv" in page and "Full model" in page

    status = run([str(BIN / "dvc"), "status"], repo).stdout
    assert "up to date" in status.lower()

    # Share: push the outputs, commit dvc.lock; take over in a fresh clone.
    run([str(BIN / "dvc"), "push"], repo)
    run([*git, "add", "dvc.lock", "params.yaml"], repo)
    run([*git, "commit", "-qm", "results"], repo)
    other = tmp_path / "other"
    run(["git", "clone", "-q", str(repo), str(other)], tmp_path)
    run([str(BIN / "dvc"), "remote", "modify", "--local", "storage", "url", str(store)], other)
    run([str(BIN / "dvc"), "pull"], other)
    assert (other / "results/pretrain/ascl/seed0/encoder.pt").read_bytes() == (
        repo / "results/pretrain/ascl/seed0/encoder.pt"
    ).read_bytes()
    run([str(BIN / "snakemake"), "--touch", "--cores", "1"], other)
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "1"], other)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    status = run([str(BIN / "dvc"), "status"], other).stdout
    assert "up to date" in status.lower(), status


def _stale_stages(repo: Path) -> set[str]:
    """The stages `dvc status` lists (a stage's name starts a line and ends with ':')."""
    out = run([str(BIN / "dvc"), "status"], repo).stdout
    return {line[:-1] for line in out.splitlines() if line.endswith(":") and line[0] != "\t"}


def _planned(repo: Path) -> set[tuple[str, str]]:
    """(rule, method) of every job `snakemake -n` plans (method "" where it has none)."""
    out = run([str(BIN / "snakemake"), "-n", "--cores", "1"], repo)
    jobs, rule = set(), None
    for line in (out.stdout + out.stderr).splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
            jobs.add((rule, ""))
        elif line.startswith("wildcards:") and rule:
            fields = dict(f.split("=", 1) for f in line[10:].strip().split(", "))
            jobs.discard((rule, ""))
            jobs.add((rule, fields.get("method", "")))
            rule = None
    return jobs


def _check_change(repo, params, path, value, stages, pretrain_jobs) -> None:
    """Set params key `path` to `value`: `dvc status` marks exactly `stages`, as ascl.dag
    predicts, and `snakemake -n` plans exactly the pre-trainings `pretrain_jobs` of those whose
    settings change (and, for them, what follows); then the params are put back."""
    changed = copy.deepcopy(params)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    predicted = {s for s in dag.STAGES if dag.stage_jobs(changed, s) != dag.stage_jobs(params, s)}
    assert predicted == stages
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        assert _stale_stages(repo) == stages
        planned = _planned(repo)
        assert {job for job in planned if job[0] == "pretrain"} == pretrain_jobs
        if not pretrain_jobs:
            assert planned == set()
        else:  # the finetuning of that encoder follows; no other model's does
            assert {m for rule, m in planned if rule == "finetune"} == {m for _, m in pretrain_jobs}
    finally:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_yaml_is_what_the_job_registry_generates():
    """dvc.yaml is written by `ascl dvc-yaml` (ascl.dag) and committed as written."""
    assert (REPO / "dvc.yaml").read_text() == dag.dvc_yaml(REPO), "run `make dvc-yaml`"


def test_the_recorder_sees_leaf_whole_and_absent_reads():
    log: set = set()
    params = dag._Recorder({"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2]}, (), log)
    assert params["a"]["b"] == 1 and params["e"] == [1, 2]
    assert params["a"].get("zz") is None
    assert json.dumps(params["a"]["c"]) == '{"d": 2}'
    assert log == {("a", "b"), ("e",), ("a", "zz"), ("a", "c")}


def _leaves(node, path=()):
    """(path, value) of every leaf of a params mapping (lists are leaves)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, node


def _set(params: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(params)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _mutations(value, same_name: list) -> list:
    """Other values to try for a leaf, in order: the first that keeps the params valid wins."""
    if value is None:
        return [64, "x"]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1]
    if isinstance(value, float):
        return [value * 1.5 + 0.01, value / 2]
    if isinstance(value, str):
        return [v for v in same_name if v != value] + [value + "-x"]
    if isinstance(value, list) and value:
        return [[*value[:-1], m] for m in _mutations(value[-1], [])] + [value[:-1]]
    return []


def _enum(path: tuple, schema: dict) -> list:
    """The values the schema allows at a fixed key (its `enum`), or []."""
    node = schema
    for key in path:
        props = dag._properties(node, schema.get("$defs", {}))
        if key not in props:
            return []
        node = props[key]
    return list(node.get("enum", []))


def _covered(path: tuple, entries: list[str]) -> bool:
    return any(path[: len(e.split("."))] == tuple(e.split(".")) for e in entries)


def _jobs(params: dict) -> dict | None:
    """The jobs of every stage, or None where `params` are not a usable params file."""
    try:
        return {stage: dag.stage_jobs(params, stage) for stage in dag.STAGES}
    except (config.ParamsError, KeyError, TypeError, ValueError):
        return None


def _sampled(leaves: list, schema: dict) -> list:
    """The leaves to change: every fixed key, and the fields of the first two entries of each
    free-form mapping (methods, tables, figures, strategies, claims: the others repeat them)."""
    seen: dict[tuple, list] = {}
    out = []
    for path, value in leaves:
        fixed = dag._static_prefix(path, schema)
        if fixed != path:
            entries = seen.setdefault(fixed, [])
            if path[len(fixed)] not in entries:
                entries.append(path[len(fixed)])
            if entries.index(path[len(fixed)]) >= 2:
                continue
        out.append((path, value))
    return out


def test_every_params_key_marks_exactly_the_stages_whose_jobs_it_changes():
    """For every leaf key of params.yaml (under both protocols, and each key a config/*.yaml
    overrides): changing it changes the jobs of a stage (`ascl.dag.stage_jobs`: which jobs
    exist, their settings and data) only if that stage's dvc.yaml params cover the key, and a
    stage covering the key sees its jobs change, except where DVC cannot be narrower (a field
    of an entry of a free-form mapping: a method, table, figure, strategy or claim, of which
    only some fields count for a stage). The keys that change no job are listed."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    schema = yaml.safe_load(config.SCHEMA_PATH.read_text())
    listed = {stage: stages[stage]["params"] for stage in dag.STAGES}
    base = config.load_params(REPO / "params.yaml")
    base_leaves = dict(_leaves(base))
    missed, unneeded, tried, used, untried = [], set(), set(), set(), []
    for params in dag.params_variants(REPO):
        before = _jobs(params)
        # params.yaml itself: every key; an override file: the keys it changes
        own = params == config.deep_merge(base, {"protocol": params["protocol"]})
        leaves = [
            (path, value)
            for path, value in _leaves(params)
            if own or base_leaves.get(path, object()) != value
        ]
        names: dict[str, list] = {}
        for path, value in _leaves(params):
            if isinstance(value, str):
                names.setdefault(path[-1], []).append(value)
        for path, value in _sampled(leaves, schema):
            key = ".".join(map(str, path))
            options = _enum(path, schema) + names.get(path[-1], [])
            for candidate in _mutations(value, options):
                after = _jobs(_set(params, path, candidate))
                if after is not None:
                    break
            else:
                untried.append(key)
                continue
            hit = {s for s in dag.STAGES if after[s] != before[s]}
            marked = {s for s in dag.STAGES if _covered(path, listed[s])}
            missed += [(key, s) for s in sorted(hit - marked)]
            # (a section an override file's tables never use is needed by params.yaml's)
            if own and dag._static_prefix(path, schema) == path:
                unneeded |= {(key, s) for s in marked - hit}
            tried.add(key)
            if hit:
                used.add(key)
    assert missed == []  # a change DVC would not see
    assert unneeded == set()  # a stage DVC would mark for nothing
    # a row shown with the published numbers only names no model: it cannot be switched alone
    assert all(k.endswith(".published_only") for k in untried), untried
    # keys that change no job in any params file: where runs are logged and how jobs are
    # scheduled (ascl.dag's header says why they are in no stage)
    unused = tried - used
    assert {k.split(".")[0] for k in unused} == {"tracking", "resources"}, sorted(unused)
