"""Registry of the downloadable data sets and their conversion to the uniform form.

- ``cifar10``: the official binary version (data_batch_1..5.bin train, test_batch.bin test,
  batches.meta.txt): 50000 train / 10000 test, (3, 32, 32), 10 classes.
- ``cifar100``: the official binary version (train.bin, test.bin, fine_label_names.txt) with the
  100 FINE labels: 50000 train / 10000 test, (3, 32, 32).
- ``stl10``: the official binary version (train_X/y.bin, test_X/y.bin, class_names.txt), labels
  1..10 shifted to 0..9: 5000 train / 8000 test. Stored RESIZED from 96x96 to 32x32 with
  antialiased bilinear interpolation (see `formats.resize_images`); the unlabeled split is not
  used.
- ``cifar10c`` (`prepare_cifar10c`): CIFAR-10-C, 19 corruptions x 5 severities of the CIFAR-10
  test set, one file per corruption (see `formats.corrupted_arrays`).

The binary versions need no pickle. Archives are cached (default: ``$ASCL_CACHE_DIR``, else
``$XDG_CACHE_HOME/ascl``, else ``~/.cache/ascl``) and reused while their md5 matches.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ascl.data.download import ArchiveError, SafeArchive, fetch, open_archive
from ascl.data.formats import (
    FormatError,
    corrupted_arrays,
    dataset_arrays,
    decode_cifar_records,
    decode_stl10_images,
    decode_stl10_labels,
    parse_class_names,
    resize_images,
    write_npz_atomic,
)
from ascl.data.offline import OFFLINE_DATASETS, build_offline

STL10_SIZE = 32


@dataclass(frozen=True)
class Source:
    """Where a data set comes from: official URL, archive md5 and file name."""

    url: str
    md5: str
    filename: str


SOURCES: dict[str, Source] = {
    "cifar10": Source(
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530",
        "cifar-10-binary.tar.gz",
    ),
    "cifar100": Source(
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "03b5dce01913d631647c71ecec9e9cb8",
        "cifar-100-binary.tar.gz",
    ),
    "stl10": Source(
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        "91f7769df0f17e558f3565bffb0c7dfb",
        "stl10_binary.tar.gz",
    ),
    "cifar10c": Source(
        "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar",
        "56bf5dcef84df0e2308c6dcbcbbd8499",
        "CIFAR-10-C.tar",
    ),
}

DATASETS = ("cifar10", "cifar100", "stl10")

CIFAR10C_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "spatter",
    "saturate",
)


# ---------------------------------------------------------------------------------------------
# Conversions: an opened archive -> uniform-form arrays


def _text(archive: SafeArchive, member: str) -> str:
    return archive.read(member).decode("utf-8", errors="replace")


def _check_labels(y: np.ndarray, classes: tuple[str, ...], where: str) -> None:
    if len(y) and y.max() >= len(classes):
        raise FormatError(f"{where}: label {y.max()} but only {len(classes)} class names")


def convert_cifar10(archive: SafeArchive) -> dict[str, np.ndarray]:
    """Uniform arrays from the CIFAR-10 binary archive (1 label byte per record)."""
    root = "cifar-10-batches-bin"
    classes = parse_class_names(_text(archive, f"{root}/batches.meta.txt"))
    parts = []
    for member in [f"{root}/data_batch_{i}.bin" for i in range(1, 6)] + [f"{root}/test_batch.bin"]:
        x, y = decode_cifar_records(archive.read(member), 1, 0, member)
        _check_labels(y, classes, member)
        parts.append((x, y))
    x_train = np.concatenate([x for x, _ in parts[:5]])
    y_train = np.concatenate([y for _, y in parts[:5]])
    x_test, y_test = parts[5]
    return dataset_arrays(x_train, y_train, x_test, y_test, classes)


def convert_cifar100(archive: SafeArchive) -> dict[str, np.ndarray]:
    """Uniform arrays from the CIFAR-100 binary archive, with the fine (100-class) labels."""
    root = "cifar-100-binary"
    classes = parse_class_names(_text(archive, f"{root}/fine_label_names.txt"))
    split = {}
    for name in ("train", "test"):
        member = f"{root}/{name}.bin"
        x, y = decode_cifar_records(archive.read(member), 2, 1, member)
        _check_labels(y, classes, member)
        split[name] = (x, y)
    return dataset_arrays(*split["train"], *split["test"], classes)


def convert_stl10(archive: SafeArchive) -> dict[str, np.ndarray]:
    """Uniform arrays from the STL-10 binary archive, images resized from 96x96 to 32x32."""
    root = "stl10_binary"
    classes = parse_class_names(_text(archive, f"{root}/class_names.txt"))
    split = {}
    for name in ("train", "test"):
        x_member, y_member = f"{root}/{name}_X.bin", f"{root}/{name}_y.bin"
        x = decode_stl10_images(archive.read(x_member), x_member)
        y = decode_stl10_labels(archive.read(y_member), len(classes), y_member)
        if len(x) != len(y):
            raise FormatError(f"{y_member}: {len(y)} labels for {len(x)} images in {x_member}")
        split[name] = (resize_images(x, STL10_SIZE), y)
    return dataset_arrays(*split["train"], *split["test"], classes)


CONVERTERS: dict[str, Callable[[SafeArchive], dict[str, np.ndarray]]] = {
    "cifar10": convert_cifar10,
    "cifar100": convert_cifar100,
    "stl10": convert_stl10,
}


# ---------------------------------------------------------------------------------------------
# Entry points


def default_cache_dir() -> Path:
    """``$ASCL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ascl``, else ``~/.cache/ascl``."""
    if os.environ.get("ASCL_CACHE_DIR"):
        return Path(os.environ["ASCL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ascl"


def _unknown(name: str) -> ValueError:
    valid = ", ".join((*DATASETS, *OFFLINE_DATASETS))
    hint = " (cifar10c: use prepare_cifar10c)" if name == "cifar10c" else ""
    return ValueError(f"unknown data set {name!r}{hint}; valid names: {valid}")


def _archive(
    name: str,
    url: str | None,
    md5: str | None,
    cache_dir: str | Path | None,
    timeout: float,
    retries: int,
) -> Path:
    source = SOURCES[name]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return fetch(
        url or source.url,
        cache / source.filename,
        md5=md5 or source.md5,
        name=name,
        timeout=timeout,
        retries=retries,
    )


def prepare_dataset(
    name: str,
    out: str | Path,
    *,
    url: str | None = None,
    md5: str | None = None,
    cache_dir: str | Path | None = None,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Write data set `name` in the uniform form to the .npz `out` (atomically); return `out`.

    `name` is one of DATASETS (downloaded, verified, converted) or OFFLINE_DATASETS (built
    without network; `url`/`md5` do not apply). `url`/`md5` override the official source
    (a mirror of the same archive needs only `url`). `timeout` is the socket timeout in seconds,
    `retries` the number of further attempts after a transient network failure.
    On any failure `out` is untouched (no new or partial file).
    """
    out = Path(out)
    if name in OFFLINE_DATASETS:
        if url is not None or md5 is not None:
            raise ValueError(f"{name} is built offline; url/md5 do not apply")
        return write_npz_atomic(out, build_offline(name))
    if name not in DATASETS:
        raise _unknown(name)
    path = _archive(name, url, md5, cache_dir, timeout, retries)
    with open_archive(path, name) as archive:
        arrays = _convert(name, archive)
    return write_npz_atomic(out, arrays)


def _convert(name: str, archive: SafeArchive) -> dict[str, np.ndarray]:
    try:
        return CONVERTERS[name](archive)
    except FormatError as err:
        raise ArchiveError(f"{name}: {err}") from None


def _load_npy(archive: SafeArchive, member: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(archive.read(member)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ArchiveError(
            f"cifar10c: member {member!r} is not a readable .npy ({reason})"
        ) from None


def prepare_cifar10c(
    out_dir: str | Path,
    *,
    url: str | None = None,
    md5: str | None = None,
    cache_dir: str | Path | None = None,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Write CIFAR-10-C as ``out_dir/<corruption>.npz`` for each of CIFAR10C_CORRUPTIONS.

    Each file: x (50000, 3, 32, 32) uint8, y (50000,) int64, severity (50000,) int64 in 1..5
    (10000 images per severity, in order). The archive holds ``CIFAR-10-C/<corruption>.npy``
    (N, 32, 32, 3) uint8 and ``CIFAR-10-C/labels.npy``. All files are converted into a staging
    directory inside `out_dir` first and moved into place only when every one succeeded.
    Returns `out_dir`. Needs about 3 GB for the archive and 3 GB for the output.
    """
    out_dir = Path(out_dir)
    path = _archive("cifar10c", url, md5, cache_dir, timeout, retries)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        with open_archive(path, "cifar10c") as archive:
            labels = _load_npy(archive, "CIFAR-10-C/labels.npy")
            if (
                labels.ndim != 1
                or labels.dtype.kind not in "iu"
                or not np.all((labels >= 0) & (labels < 10))
            ):
                raise ArchiveError(
                    "cifar10c: CIFAR-10-C/labels.npy must hold integer labels in 0..9"
                )
            for corruption in CIFAR10C_CORRUPTIONS:
                member = f"CIFAR-10-C/{corruption}.npy"
                images = _load_npy(archive, member)
                try:
                    arrays = corrupted_arrays(images, labels, member)
                except FormatError as err:
                    raise ArchiveError(f"cifar10c: {err}") from None
                del images
                write_npz_atomic(staging / f"{corruption}.npz", arrays)
        for corruption in CIFAR10C_CORRUPTIONS:
            os.replace(staging / f"{corruption}.npz", out_dir / f"{corruption}.npz")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return out_dir
