"""What a run ran on: the Python and package versions, the CUDA / cuDNN build and the device.

`environment_tags()` is attached to every MLflow run (training, evaluation and the `paper` run)
and stated in the claims report. It never imports torch itself (the report jobs do not load
it): the CUDA, cuDNN and device entries come from torch only where the process already loaded
it, else they read "not loaded". `packages_hash` is a hash of every installed distribution and
its version, so two runs with the same hash ran on the same packages.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import sys


def packages() -> list[str]:
    """Sorted "name==version" of every installed distribution."""
    seen = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            seen[name.lower()] = f"{name.lower()}=={dist.version}"
    return sorted(seen.values())


def packages_hash() -> str:
    """16 hex digits of `packages()`."""
    return hashlib.sha256("\n".join(packages()).encode()).hexdigest()[:16]


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def environment_tags() -> dict[str, str]:
    """{"env.python", "env.torch", "env.cuda", "env.cudnn", "env.device", "env.packages_hash",
    "env.platform"} as strings."""
    tags = {
        "env.python": platform.python_version(),
        "env.platform": platform.platform(terse=True),
        "env.torch": _version("torch"),
        "env.packages_hash": packages_hash(),
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
