"""The uniform on-disk form of a data set, and decoders of the official binary formats.

Uniform form: one uncompressed ``.npz`` (loaded with ``allow_pickle=False``) with

- ``x_train`` (N, 3, H, W) uint8, ``y_train`` (N,) int64
- ``x_test`` (M, 3, H, W) uint8, ``y_test`` (M,) int64
- ``classes`` (C,) unicode strings; every label lies in ``0..C-1``

Corrupted test sets (CIFAR-10-C) use one ``.npz`` per corruption with ``x`` (N, 3, 32, 32)
uint8, ``y`` (N,) int64 and ``severity`` (N,) int64 in 1..5.

A file the workflow prepares (`ascl download`) also holds ``made_with``, a JSON string of the
settings that made it (the data set and ``image_size``, null for the native size); a job given
its own ``data.image_size`` refuses a file made with another (`load_dataset`,
`load_corrupted`), so a file made by other means or other params is never taken silently. A
file without ``made_with`` is checked by its image shape.

Every writer goes through `write_npz_atomic`: a temporary file in the target directory, fsynced,
then renamed over the target, so a target is either the old complete file or the new one.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ascl.errors import FormatError  # noqa: F401 - raised here, re-exported
from ascl.timing import timed

UNIFORM_KEYS = ("x_train", "y_train", "x_test", "y_test", "classes")
CORRUPTED_KEYS = ("x", "y", "severity")
MADE_WITH = "made_with"
# `image_size` of a load that checks nothing (a library caller without settings)
UNCHECKED = object()


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image data set held in memory as uint8 tensors.

    x_train: (N, 3, H, W) uint8; y_train: (N,) int64; x_test: (M, 3, H, W) uint8;
    y_test: (M,) int64; classes: one name per label.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------------------------
# Writing and reading the uniform form


def write_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write `arrays` to the uncompressed .npz `path` atomically; return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def dataset_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: tuple[str, ...] | list[str],
) -> dict[str, np.ndarray]:
    """The uniform-form arrays (contiguous, canonical dtypes), checked by `check_arrays`."""
    arrays = {
        "x_train": np.ascontiguousarray(x_train, dtype=np.uint8),
        "y_train": np.ascontiguousarray(y_train, dtype=np.int64),
        "x_test": np.ascontiguousarray(x_test, dtype=np.uint8),
        "y_test": np.ascontiguousarray(y_test, dtype=np.int64),
        "classes": np.array([str(c) for c in classes], dtype=np.str_),
    }
    check_arrays(arrays, "arrays")
    return arrays


def save_dataset(dataset: Dataset, path: str | Path) -> Path:
    """Write `dataset` in the uniform form to `path` atomically; return `path`."""
    arrays = dataset_arrays(
        dataset.x_train.numpy(),
        dataset.y_train.numpy(),
        dataset.x_test.numpy(),
        dataset.y_test.numpy(),
        dataset.classes,
    )
    return write_npz_atomic(path, arrays)


def check_arrays(arrays: dict[str, np.ndarray], where: str) -> None:
    """Raise FormatError (one line, naming `where`) unless `arrays` is in the uniform form."""
    missing = [k for k in UNIFORM_KEYS if k not in arrays]
    if missing:
        raise FormatError(f"{where}: missing key(s) {', '.join(missing)}")
    classes = arrays["classes"]
    if classes.ndim != 1 or classes.dtype.kind not in "US" or len(classes) == 0:
        raise FormatError(
            f"{where}: 'classes' must be a non-empty 1-D string array, "
            f"got dtype {classes.dtype} shape {classes.shape}"
        )
    size = None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise FormatError(f"{where}: 'x_{split}' must be uint8, got {x.dtype}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise FormatError(f"{where}: 'x_{split}' must have shape (N, 3, H, W), got {x.shape}")
        if size is not None and x.shape[2:] != size:
            raise FormatError(
                f"{where}: 'x_train' and 'x_test' differ in image size: {size} vs {x.shape[2:]}"
            )
        size = x.shape[2:]
        if y.dtype != np.int64:
            raise FormatError(f"{where}: 'y_{split}' must be int64, got {y.dtype}")
        if y.shape != (len(x),):
            raise FormatError(
                f"{where}: 'y_{split}' must have shape ({len(x)},) to match 'x_{split}', "
                f"got {y.shape}"
            )
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise FormatError(
                f"{where}: 'y_{split}' labels must lie in 0..{len(classes) - 1}, "
                f"got {y.min()}..{y.max()}"
            )


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of the .npz `path` (no pickle); FormatError names missing keys."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise FormatError(f"{path}: missing key(s) {', '.join(missing)}")
            return {k: npz[k] for k in keys}
    except FormatError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FormatError(f"{path}: not a readable .npz file ({reason})") from None


def stamp_made_with(path: str | Path, made_with: dict) -> None:
    """Record `made_with` (JSON) in the .npz `path`, or in every .npz of the directory `path`
    (each rewritten atomically)."""
    path = Path(path)
    for file in sorted(path.glob("*.npz")) if path.is_dir() else [path]:
        with np.load(file, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        arrays[MADE_WITH] = np.array(json.dumps(made_with, sort_keys=True))
        write_npz_atomic(file, arrays)


def image_size_setting(settings: dict):
    """The `image_size` a job's data must have been made with: its settings' data.image_size
    (None: the native size), or UNCHECKED for settings that do not carry it."""
    return settings.get("data", {}).get("image_size", UNCHECKED)


def check_made_with(path: Path, made_with: str | None, x: np.ndarray, image_size) -> None:
    """Raise FormatError (one line) if the file `path` (its `made_with` JSON, or None, and its
    images x (N, 3, H, W)) was made with another image size than `image_size`."""
    if image_size is UNCHECKED:
        return
    if made_with is not None:
        made = json.loads(made_with).get("image_size")
        if made != image_size:
            raise FormatError(
                f"{path}: made with image_size {made}, but this job's data.image_size is "
                f"{image_size}: delete it and run the workflow to rebuild it"
            )
    elif image_size is not None and tuple(x.shape[2:]) != (image_size, image_size):
        raise FormatError(
            f"{path}: images are {x.shape[2]}x{x.shape[3]}, but this job's data.image_size is "
            f"{image_size}: delete it and run the workflow to rebuild it"
        )


def _made_with(path: Path) -> str | None:
    with np.load(path, allow_pickle=False) as npz:
        return str(npz[MADE_WITH]) if MADE_WITH in npz.files else None


@timed("inputs")
def load_dataset(path: str | Path, image_size=UNCHECKED) -> Dataset:
    """Load a data set in the uniform form (see the module docstring) from the .npz `path`;
    with `image_size` (int, or None for the native size), refuse a file made with another."""
    path = Path(path)
    arrays = _read_npz(path, UNIFORM_KEYS)
    check_arrays(arrays, str(path))
    if image_size is not UNCHECKED:
        check_made_with(path, _made_with(path), arrays["x_train"], image_size)
    return Dataset(
        x_train=torch.from_numpy(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"]),
        x_test=torch.from_numpy(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"]),
        classes=tuple(str(c) for c in arrays["classes"]),
    )


def check_corrupted(arrays: dict[str, np.ndarray], where: str) -> None:
    """Raise FormatError unless `arrays` holds x (N,3,H,W) uint8, y and severity (N,) int64."""
    x, y, severity = arrays["x"], arrays["y"], arrays["severity"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise FormatError(f"{where}: 'x' must be uint8 (N, 3, H, W), got {x.dtype} {x.shape}")
    for key, arr in (("y", y), ("severity", severity)):
        if arr.dtype != np.int64 or arr.shape != (len(x),):
            raise FormatError(
                f"{where}: '{key}' must be int64 of shape ({len(x)},), got {arr.dtype} {arr.shape}"
            )
    if len(severity) and (severity.min() < 1 or severity.max() > 5):
        raise FormatError(
            f"{where}: 'severity' must lie in 1..5, got {severity.min()}..{severity.max()}"
        )


@timed("inputs")
def load_corrupted(
    path: str | Path, image_size=UNCHECKED
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load one corruption file: x (N, 3, H, W) uint8, y (N,) int64, severity (N,) int64; with
    `image_size`, refuse a file made with another (`load_dataset`)."""
    path = Path(path)
    arrays = _read_npz(path, CORRUPTED_KEYS)
    check_corrupted(arrays, str(path))
    if image_size is not UNCHECKED:
        check_made_with(path, _made_with(path), arrays["x"], image_size)
    return tuple(torch.from_numpy(arrays[k]) for k in CORRUPTED_KEYS)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Decoders of the official binary formats (pure functions of bytes)


def parse_class_names(text: str) -> tuple[str, ...]:
    """Class names, one per non-empty line (CIFAR ``*.txt`` and STL-10 ``class_names.txt``)."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def decode_cifar_records(
    raw: bytes, label_bytes: int, label_index: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode CIFAR binary records into x (N, 3, 32, 32) uint8 and y (N,) int64.

    A record is `label_bytes` label bytes (CIFAR-10: 1; CIFAR-100: coarse, fine) followed by
    3072 pixel bytes: the R, G and B planes of a 32x32 image, each in row-major order.
    `label_index` selects which label byte is the label.
    """
    record = label_bytes + 3 * 32 * 32
    if len(raw) == 0 or len(raw) % record:
        raise FormatError(
            f"{where}: size {len(raw)} bytes is not a positive multiple of the {record}-byte record"
        )
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    y = rows[:, label_index].astype(np.int64)
    x = rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy()
    return x, y


def decode_stl10_images(raw: bytes, where: str) -> np.ndarray:
    """Decode STL-10 ``*_X.bin`` into (N, 3, 96, 96) uint8.

    Each image is 3 planes (R, G, B) of 96x96 bytes stored column-major (Fortran order), so a
    plane read row-major is the transposed image.
    """
    size = 3 * 96 * 96
    if len(raw) == 0 or len(raw) % size:
        raise FormatError(
            f"{where}: size {len(raw)} bytes is not a positive multiple of the {size}-byte image"
        )
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, 96, 96)
    return np.ascontiguousarray(planes.transpose(0, 1, 3, 2))


def decode_stl10_labels(raw: bytes, num_classes: int, where: str) -> np.ndarray:
    """Decode STL-10 ``*_y.bin`` (one byte per image, labels 1..C) into (N,) int64 in 0..C-1."""
    y = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 1
    if len(y) == 0 or y.min() < 0 or y.max() >= num_classes:
        lo, hi = (int(y.min()) + 1, int(y.max()) + 1) if len(y) else (0, 0)
        raise FormatError(f"{where}: labels must lie in 1..{num_classes}, got {lo}..{hi}")
    return y


def resize_images(x: np.ndarray, size: int, chunk: int = 1000) -> np.ndarray:
    """Resize (N, 3, H, W) uint8 to (N, 3, size, size) uint8.

    Antialiased bilinear interpolation (``torch.nn.functional.interpolate(mode="bilinear",
    antialias=True, align_corners=False)``) on float32, then rounded and clamped to 0..255;
    done `chunk` images at a time to bound memory.
    """
    out = np.empty((len(x), x.shape[1], size, size), dtype=np.uint8)
    for start in range(0, len(x), chunk):
        part = torch.from_numpy(np.ascontiguousarray(x[start : start + chunk])).float()
        small = torch.nn.functional.interpolate(
            part, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + chunk] = small.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def corrupted_arrays(images: np.ndarray, labels: np.ndarray, where: str) -> dict[str, np.ndarray]:
    """CIFAR-10-C arrays of one corruption from the official .npy contents.

    images: (N, 32, 32, 3) uint8 (N = 5 blocks, severities 1..5 in order); labels: (N,) integer.
    Returns x (N, 3, 32, 32) uint8, y (N,) int64, severity (N,) int64.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise FormatError(
            f"{where}: expected uint8 images of shape (N, H, W, 3), "
            f"got {images.dtype} {images.shape}"
        )
    if len(images) != len(labels) or len(images) % 5:
        raise FormatError(
            f"{where}: {len(images)} images for {len(labels)} labels "
            "(need equal counts, a multiple of 5 severities)"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise FormatError(f"{where}: labels must be a 1-D integer array, got {labels.dtype}")
    arrays = {
        "x": np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
        "y": labels.astype(np.int64),
        "severity": np.repeat(np.arange(1, 6, dtype=np.int64), len(images) // 5),
    }
    check_corrupted(arrays, where)
    return arrays


def downscale_images(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8: the mean of each (H/size) x (W/size)
    block, rounded to the nearest integer (area averaging). `size` must divide H and W."""
    n, c, h, w = x.shape
    if size <= 0 or h % size or w % size:
        raise FormatError(f"image size {size} does not divide the stored {h}x{w} images")
    if (h, w) == (size, size):
        return x
    blocks = x.reshape(n, c, size, h // size, size, w // size).astype(np.float64)
    return np.floor(blocks.mean(axis=(3, 5)) + 0.5).astype(np.uint8)


def downscale_npz(src: str | Path, out: str | Path, size: int) -> Path:
    """Write the data set (uniform form) or corruption file `src` to `out` (atomically) with
    every image array (x, x_train, x_test) downscaled to size x size; labels unchanged."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for key in ("x", "x_train", "x_test"):
        if key in arrays:
            arrays[key] = downscale_images(arrays[key], size)
    return write_npz_atomic(out, arrays)


def downscale_tree(full: str | Path, out: str | Path, size: int) -> Path:
    """Downscale a prepared data set file, or a directory of corruption files, from `full` to
    `out` (see `downscale_npz`), then delete `full`. A directory is assembled in a staging
    directory next to `out` and renamed into place when complete."""
    import shutil
    import tempfile

    full, out = Path(full), Path(out)
    if full.is_file():
        downscale_npz(full, out, size)
        full.unlink()
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        for path in sorted(full.glob("*.npz")):
            downscale_npz(path, staging / path.name, size)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(full, ignore_errors=True)
    return out
