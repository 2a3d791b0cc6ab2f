"""The code a job runs, found from its imports, and its content hash (the workflow's rerun
trigger for code changes).

A job kind names its entry modules (`ENTRY`); `package_files` follows every import of an `ascl`
module in them — at module level or inside functions, `import ascl.x`, `from ascl.x import y`,
`from ascl import x` and relative imports — through the package, adding each package's
`__init__.py` on the way and the package data files a module names (the params schema, the
published numbers). `code_hash` hashes exactly those files, so editing a module's code reruns
the jobs that import it (anywhere in its code, run or not) and no others; comments, layout,
docstrings and command-line help texts do not count (`file_digest`). Each evaluation kind has
its own hash (`evaluations.<key>`). `ascl.cli` counts
with its own text and top-level imports; each command's own imports are its kind's entries.
Nothing here imports torch.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

from ascl.registry import KINDS

PACKAGE = "ascl"
ROOT = Path(__file__).resolve().parent
# Package data read by a module that names it: {file name in the source: path under ROOT}.
DATA_FILES = {
    "params.schema.yaml": "params.schema.yaml",
    "published.yaml": "reference/published.yaml",
}
# Entry modules of each job kind (`ascl.registry.KINDS`), besides `ascl.cli`, the command line
# every job starts from, whose own text counts but whose per-command imports are each kind's
# entries.
ENTRY = {name: kind.entries for name, kind in KINDS.items()}


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """File of module `name` ("ascl.x.y") under `root` (the package directory), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imported(path: Path, name: str, root: Path) -> set[str]:
    """Names of the `ascl` modules that the source `path` (module `name`) imports. Each file is
    parsed once per version (its modification time and size) per process: a workflow parse asks
    for the same modules once per job kind."""
    stat = path.stat()
    return set(_imported_cached(path, name, root, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=1024)
def _imported_cached(path: Path, name: str, root: Path, mtime_ns: int, size: int) -> frozenset[str]:
    return frozenset(_parse_imports(path, name, root))


def _parse_imports(path: Path, name: str, root: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # `from ascl import x` / `from .evaluations import y`: x may be a module
            found |= {f"{mod}.{a.name}" for a in node.names}
    out = set()
    for mod in found:
        if not mod.startswith(PACKAGE):
            continue
        # every enclosing package runs its __init__ first
        parts = mod.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in out if module_path(m, root) is not None}


def package_files(entries: list[str], root: Path = ROOT) -> list[Path]:
    """Sorted files of the entry modules and of every `ascl` module they import, transitively,
    plus the package data files those modules name."""
    seen: set[str] = set()
    todo = ["ascl.cli", *entries] if entries else []
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_path(name, root)
        if path is None:
            raise ValueError(f"codehash: no module {name!r} under {root}")
        files.add(path)
        if name == "ascl.cli":  # its own text and top-level imports only
            tree = ast.parse(path.read_text())
            top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
            mods = {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
            todo += sorted(m for m in mods if m.startswith(PACKAGE) and module_path(m, root))
            todo.append("ascl")
            continue
        todo += sorted(_imported(path, name, root) - seen)
        text = path.read_text()
        files |= {root / rel for key, rel in DATA_FILES.items() if key in text}
    return sorted(files)


def _strip_docs(tree: ast.AST) -> ast.AST:
    """`tree` without docstrings and without the string values of `help=` keywords (and of
    the `help` argument of `Evaluation(...)` entries): text that never changes what a job
    computes."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass()
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in ("help", "description", "epilog") and isinstance(
                    kw.value, ast.Constant | ast.JoinedStr
                ):
                    kw.value = ast.Constant("")
            if getattr(node.func, "id", None) == "Evaluation" and len(node.args) >= 3:
                node.args[2] = ast.Constant("")
    return tree


def file_digest(path: Path) -> bytes:
    """What of a file counts for its jobs: a Python module's code without comments, layout,
    docstrings and help texts (its normalised syntax tree); any other file's bytes."""
    if path.suffix != ".py":
        return path.read_bytes()
    stat = path.stat()
    return _digest_cached(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _digest_cached(path: Path, mtime_ns: int, size: int) -> bytes:
    tree = _strip_docs(ast.parse(path.read_text(), str(path)))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).digest()


def _tree_state(root: Path) -> tuple:
    """(path, modification time, size) of every file under `root`: a cache key that changes
    whenever any file of the package does."""
    out = []
    stack = [root]
    while stack:
        for entry in os.scandir(stack.pop()):
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    stack.append(Path(entry.path))
            elif entry.is_file():
                stat = entry.stat()
                out.append((entry.path, stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(out))


def cache_file() -> Path:
    """Where computed hashes are kept between processes: $ASCL_CACHE_DIR, else
    $XDG_CACHE_HOME/ascl, else ~/.cache/ascl (codehash.json)."""
    base = os.environ.get("ASCL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ascl"
    )
    return Path(base) / "codehash.json"


def _read_cache() -> dict[str, str]:
    try:
        cache = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(cache: dict[str, str]) -> None:
    """Best effort (a cache): atomically, the newest 512 entries; an unwritable place is
    skipped."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dict(list(cache.items())[-512:])))
        os.replace(tmp, path)
    except OSError:
        pass


def code_hash(kind: str, root: Path = ROOT) -> str:
    """16 hex digits of what counts (`file_digest`) of every file `package_files(ENTRY[kind])`
    lists. Kept per state of the package's files (every file's path, modification time and
    size), in the process and in `cache_file()`: a workflow parse asks for every kind's hash,
    and parsing the package's modules is most of its time."""
    if kind not in ENTRY:
        raise ValueError(f"codehash: unknown job kind {kind!r} (known: {', '.join(ENTRY)})")
    root = Path(root)
    entries = tuple(ENTRY[kind])
    state = _tree_state(root)
    key = hashlib.sha256(repr((sys.version_info[:2], str(root), entries, state)).encode())
    key = key.hexdigest()
    cache = _read_cache()
    if key not in cache:
        cache[key] = _code_hash(entries, root, state)
        _write_cache(cache)
    return cache[key]


@functools.lru_cache(maxsize=256)
def _code_hash(entries: tuple[str, ...], root: Path, state: tuple) -> str:
    digest = hashlib.sha256()
    for path in package_files(list(entries), root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(file_digest(path))
    return digest.hexdigest()[:16]
