"""Data sets of the pipeline, each stored in one uniform .npz form (see `ascl.data.formats`).

Downloaded (official binary archives, md5-verified, safely read): ``cifar10``, ``cifar100``
(fine labels), ``stl10`` (resized to 32x32), and ``cifar10c`` via `prepare_cifar10c`.
Built offline from scikit-learn's digits: ``digits10``, ``digits10-shift``, ``digits20``
(see `ascl.data.offline`).
"""

from ascl.data.download import ArchiveError, DownloadError, fetch, md5_file
from ascl.data.formats import (
    Dataset,
    FormatError,
    image_size_setting,
    load_corrupted,
    load_dataset,
    save_dataset,
    stamp_made_with,
    write_npz_atomic,
)
from ascl.data.offline import OFFLINE_DATASETS, build_offline
from ascl.data.prepare import (
    CIFAR10C_CORRUPTIONS,
    DATASETS,
    SOURCES,
    prepare_cifar10c,
    prepare_dataset,
)

__all__ = [
    "CIFAR10C_CORRUPTIONS",
    "DATASETS",
    "OFFLINE_DATASETS",
    "SOURCES",
    "ArchiveError",
    "Dataset",
    "DownloadError",
    "FormatError",
    "build_offline",
    "fetch",
    "image_size_setting",
    "load_corrupted",
    "load_dataset",
    "md5_file",
    "prepare_cifar10c",
    "prepare_dataset",
    "save_dataset",
    "stamp_made_with",
    "write_npz_atomic",
]
