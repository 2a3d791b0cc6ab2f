"""What a run ran on: the Python and package versions, the CUDA / cuDNN build and the device.

`environment_tags()` is attached to every MLflow run (training, evaluation and the `paper` run)
and stated in the claims report. It never imports torch itself (the report jobs do not load
it): the CUDA, cuDNN and device entries come from torch only where the process already loaded
it, else they read "not loaded". `packages_hash` is a hash of every installed distribution and
its version, so two runs with the same hash ran on the same packages; `env.lock` is the hash
of the repository's `requirements.lock` (what `make` installs) and `env.lock_drift` the number
of locked packages installed at another version (0: the environment is the lock).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata as md
import platform
import re
import sys
from pathlib import Path

# The lock of the repository this package runs from (src/ascl/ -> the repository).
LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@functools.lru_cache(maxsize=1)
def packages() -> list[str]:
    """Sorted "name==version" of every installed distribution (read once per process)."""
    seen = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            seen[name.lower()] = f"{name.lower()}=={dist.version}"
    return sorted(seen.values())


def packages_hash() -> str:
    """16 hex digits of `packages()`."""
    return hashlib.sha256("\n".join(packages()).encode()).hexdigest()[:16]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_drift(lock_text: str, installed: list[str]) -> list[str]:
    """Locked "name==version" pins that `installed` ("name==version") does not match; a local
    build of the locked version (2.14.1+cu126 for 2.14.1) matches."""
    have = {_normal(n): v for n, _, v in (p.partition("==") for p in installed)}
    out = []
    for line in lock_text.splitlines():
        pin = _PIN.match(line)
        if pin:
            name, version = _normal(pin[1]), pin[2]
            if have.get(name, "").split("+")[0] != version.split("+")[0]:
                out.append(f"{name}=={version}")
    return out


def _lock_tags() -> dict[str, str]:
    if not LOCK.is_file():
        return {"env.lock": "none (no requirements.lock)", "env.lock_drift": "unknown"}
    text = LOCK.read_text()
    return {
        "env.lock": hashlib.sha256(text.encode()).hexdigest()[:16],
        "env.lock_drift": str(len(lock_drift(text, packages()))),
    }


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def environment_tags() -> dict[str, str]:
    """{"env.python", "env.torch", "env.cuda", "env.cudnn", "env.device", "env.packages_hash",
    "env.lock", "env.lock_drift", "env.platform"} as strings."""
    tags = {
        "env.python": platform.python_version(),
        "env.platform": platform.platform(terse=True),
        "env.torch": _version("torch"),
        "env.packages_hash": packages_hash(),
        **_lock_tags(),
        "env.cuda": "not loaded",
        "env.cudnn": "not loaded",
        "env.device": "not loaded",
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        tags["env.cuda"] = str(torch.version.cuda or "none (CPU build)")
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        tags["env.cudnn"] = str(cudnn or "none")
        tags["env.device"] = (
            torch.cuda.get_device_name(torch.cuda.current_device())
            if torch.cuda.is_available()
            else f"cpu ({platform.processor() or platform.machine()})"
        )
    return tags
