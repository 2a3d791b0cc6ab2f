"""Data sets: downloads from a loopback server of tiny archives in the real official formats,
decoding, safe archive reading, atomic writes, the uniform form, and the offline digits sets."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import tarfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from ascl import data
from ascl.cli import main
from ascl.data import (
    CIFAR10C_CORRUPTIONS,
    DATASETS,
    OFFLINE_DATASETS,
    ArchiveError,
    Dataset,
    DownloadError,
    load_corrupted,
    load_dataset,
    prepare_cifar10c,
    prepare_dataset,
)
from ascl.data import download as download_mod

# ---------------------------------------------------------------------------------------------
# Loopback HTTP server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        owner: LoopbackServer = self.server.owner
        with owner.lock:
            owner.hits[self.path] += 1
            steps = owner.routes.get(self.path)
            step = (steps.pop(0) if len(steps) > 1 else steps[0]) if steps else ("status", 404)
        kind, arg = step
        if kind == "status":
            self.send_error(arg)
            return
        if kind == "hang":
            owner.release.wait(20)
            return
        body = arg
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        extra = 1000 if kind == "truncate" else 0
        self.send_header("Content-Length", str(len(body) + extra))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class LoopbackServer:
    """Serves `routes[path]`: a list of steps, each ("ok", bytes), ("truncate", bytes: announced
    1000 bytes longer, then closed), ("hang", None) or ("status", code); the last step repeats."""

    def __init__(self) -> None:
        self.routes: dict[str, list] = {}
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def serve(self, path: str, *steps: tuple) -> str:
        self.routes[path] = list(steps)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(download_mod, "BACKOFF_S", 0.01)


# ---------------------------------------------------------------------------------------------
# Tiny archives in the official formats (encoders written from the format descriptions)


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def make_tar(members: dict[str, bytes], mode: str = "w:gz", extra=()) -> bytes:
    """A tar archive of regular files `members`, plus raw TarInfo entries `extra`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def images(rng, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def cifar10_archive(seed: int = 0) -> tuple[bytes, dict]:
    rng = np.random.default_rng(seed)
    x_train, x_test = images(rng, 20, 32), images(rng, 10, 32)
    y_train, y_test = rng.integers(0, 10, 20), rng.integers(0, 10, 10)
    classes = [f"class{k}" for k in range(10)]

    def records(x, y):  # 1 label byte, then the R, G, B planes of 32x32, row-major
        return b"".join(
            bytes([int(label)]) + img.tobytes() for img, label in zip(x, y, strict=True)
        )

    root = "cifar-10-batches-bin"
    members = {f"{root}/batches.meta.txt": ("\n".join(classes) + "\n\n").encode()}
    for b in range(5):
        sl = slice(4 * b, 4 * b + 4)
        members[f"{root}/data_batch_{b + 1}.bin"] = records(x_train[sl], y_train[sl])
    members[f"{root}/test_batch.bin"] = records(x_test, y_test)
    members[f"{root}/readme.html"] = b"<html></html>"
    expected = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=classes)
    return make_tar(members), expected


def serve_cifar10(server, **kw) -> tuple[str, str, dict]:
    blob, expected = cifar10_archive(**kw)
    return server.serve("/cifar-10-binary.tar.gz", ("ok", blob)), md5(blob), expected


def assert_dataset(ds: Dataset, expected: dict) -> None:
    for key in ("x_train", "y_train", "x_test", "y_test"):
        got = getattr(ds, key)
        assert got.dtype == (torch.uint8 if key.startswith("x") else torch.int64), key
        np.testing.assert_array_equal(got.numpy(), expected[key], err_msg=key)
    assert ds.classes == tuple(expected["classes"])
    assert ds.num_classes == len(expected["classes"])


# ---------------------------------------------------------------------------------------------
# Downloads: decoded pixels and labels equal what was encoded


def test_cifar10_download_decodes_records(server, tmp_path):
    url, digest, expected = serve_cifar10(server)
    out = prepare_dataset(
        "cifar10", tmp_path / "out" / "c10.npz", url=url, md5=digest, cache_dir=tmp_path / "cache"
    )
    assert out == tmp_path / "out" / "c10.npz"
    assert_dataset(load_dataset(out), expected)
    assert sorted(p.name for p in out.parent.iterdir()) == ["c10.npz"]  # no temp file left
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cifar-10-binary.tar.gz"]


def test_cifar100_uses_fine_labels(server, tmp_path):
    rng = np.random.default_rng(1)
    x_train, x_test = images(rng, 20, 32), images(rng, 10, 32)
    fine_train, fine_test = rng.integers(0, 100, 20), rng.integers(0, 100, 10)
    fine_names = [f"fine{k:02d}" for k in range(100)]

    def records(x, fine):  # coarse byte, fine byte, 3072 pixel bytes
        return b"".join(
            bytes([int(f) // 5, int(f)]) + img.tobytes() for img, f in zip(x, fine, strict=True)
        )

    blob = make_tar(
        {
            "cifar-100-binary/coarse_label_names.txt": "\n".join(
                f"c{k}" for k in range(20)
            ).encode(),
            "cifar-100-binary/fine_label_names.txt": ("\n".join(fine_names) + "\n").encode(),
            "cifar-100-binary/train.bin": records(x_train, fine_train),
            "cifar-100-binary/test.bin": records(x_test, fine_test),
        }
    )
    url = server.serve("/c100.tgz", ("ok", blob))
    out = prepare_dataset(
        "cifar100", tmp_path / "c100.npz", url=url, md5=md5(blob), cache_dir=tmp_path / "cache"
    )
    expected = dict(
        x_train=x_train, y_train=fine_train, x_test=x_test, y_test=fine_test, classes=fine_names
    )
    assert_dataset(load_dataset(out), expected)


def test_stl10_column_major_label_shift_and_resize(server, tmp_path):
    rng = np.random.default_rng(2)
    x_train, x_test = images(rng, 6, 96), images(rng, 4, 96)
    x_test[0] = 77  # a uniform image stays uniform after resizing
    y_train, y_test = rng.integers(0, 10, 6), rng.integers(0, 10, 4)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]

    def encode_x(x):  # per image and channel, the 96x96 plane in column-major order
        return b"".join(plane.tobytes(order="F") for img in x for plane in img)

    blob = make_tar(
        {
            "stl10_binary/class_names.txt": ("\n".join(names) + "\n").encode(),
            "stl10_binary/train_X.bin": encode_x(x_train),
            "stl10_binary/train_y.bin": (y_train + 1).astype(np.uint8).tobytes(),
            "stl10_binary/test_X.bin": encode_x(x_test),
            "stl10_binary/test_y.bin": (y_test + 1).astype(np.uint8).tobytes(),
            "stl10_binary/unlabeled_X.bin": encode_x(images(rng, 2, 96)),
            "stl10_binary/fold_indices.txt": b"0 1 2\n",
        }
    )
    url = server.serve("/stl.tgz", ("ok", blob))
    out = prepare_dataset(
        "stl10", tmp_path / "stl.npz", url=url, md5=md5(blob), cache_dir=tmp_path / "cache"
    )

    def resized(x):
        t = torch.nn.functional.interpolate(
            torch.from_numpy(x).float(),
            size=(32, 32),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return t.round().clamp(0, 255).to(torch.uint8).numpy()

    expected = dict(
        x_train=resized(x_train),
        y_train=y_train,
        x_test=resized(x_test),
        y_test=y_test,
        classes=names,
    )
    ds = load_dataset(out)
    assert_dataset(ds, expected)
    assert (ds.x_test[0] == 77).all()
    # the layout matters: decoding row-major instead would give the transposed images
    assert not np.array_equal(resized(x_train.transpose(0, 1, 3, 2)), ds.x_train.numpy())


def test_cifar10c_one_file_per_corruption(server, tmp_path):
    rng = np.random.default_rng(3)
    n = 10  # 2 images per severity
    labels = rng.integers(0, 10, n).astype(np.int64)
    expected_x, members = {}, {}

    def npy(arr) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        return buf.getvalue()

    for name in CIFAR10C_CORRUPTIONS:
        hwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        expected_x[name] = np.moveaxis(hwc, 3, 1)
        members[f"CIFAR-10-C/{name}.npy"] = npy(hwc)
    members["CIFAR-10-C/labels.npy"] = npy(labels.astype(np.uint8))
    blob = make_tar(members, mode="w")
    url = server.serve("/CIFAR-10-C.tar", ("ok", blob))
    out = prepare_cifar10c(tmp_path / "c10c", url=url, md5=md5(blob), cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{c}.npz" for c in CIFAR10C_CORRUPTIONS)
    for name in CIFAR10C_CORRUPTIONS:
        x, y, severity = load_corrupted(out / f"{name}.npz")
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and severity.dtype == torch.int64
        np.testing.assert_array_equal(x.numpy(), expected_x[name])
        np.testing.assert_array_equal(y.numpy(), labels)
        np.testing.assert_array_equal(severity.numpy(), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])


def test_cifar10c_failure_leaves_no_files(server, tmp_path):
    members = {"CIFAR-10-C/labels.npy": b"\x93NUMPY garbage"}
    blob = make_tar(members, mode="w")
    url = server.serve("/bad-c.tar", ("ok", blob))
    out = tmp_path / "c10c"
    with pytest.raises(ArchiveError, match=r"cifar10c: member 'CIFAR-10-C/labels.npy'"):
        prepare_cifar10c(out, url=url, md5=md5(blob), cache_dir=tmp_path / "cache")
    assert not out.exists()


def test_corruption_names():
    assert len(CIFAR10C_CORRUPTIONS) == len(set(CIFAR10C_CORRUPTIONS)) == 19
    assert {"gaussian_noise", "jpeg_compression", "saturate", "spatter"} <= set(
        CIFAR10C_CORRUPTIONS
    )


def test_official_registry():
    assert set(DATASETS) == {"cifar10", "cifar100", "stl10"}
    assert data.SOURCES["cifar10"].url.endswith("cifar-10-binary.tar.gz")
    assert data.SOURCES["stl10"].md5 == "91f7769df0f17e558f3565bffb0c7dfb"
    for source in data.SOURCES.values():
        assert len(source.md5) == 32 and int(source.md5, 16) >= 0


# ---------------------------------------------------------------------------------------------
# Download failures


def test_wrong_md5_leaves_nothing(server, tmp_path):
    url, digest, _ = serve_cifar10(server)
    out = tmp_path / "c10.npz"
    with pytest.raises(DownloadError) as err:
        prepare_dataset("cifar10", out, url=url, md5="0" * 32, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "cifar10" in msg and "0" * 32 in msg and digest in msg and "\n" not in msg
    assert not out.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # neither the .part nor the archive


def test_http_404_is_a_clear_error_not_retried(server, tmp_path):
    url = server.serve("/missing.tgz", ("status", 404))
    with pytest.raises(DownloadError, match=r"cifar10: HTTP 404 .*missing\.tgz"):
        prepare_dataset(
            "cifar10",
            tmp_path / "c.npz",
            url=url,
            md5="0" * 32,
            cache_dir=tmp_path / "cache",
            retries=3,
        )
    assert server.hits["/missing.tgz"] == 1
    assert not (tmp_path / "c.npz").exists()


def test_truncated_response_is_retried_then_fails(server, tmp_path):
    blob, _ = cifar10_archive()
    url = server.serve("/t.tgz", ("truncate", blob))
    with pytest.raises(DownloadError, match=r"after 3 attempt\(s\): truncated"):
        prepare_dataset(
            "cifar10",
            tmp_path / "c.npz",
            url=url,
            md5=md5(blob),
            cache_dir=tmp_path / "cache",
            retries=2,
        )
    assert server.hits["/t.tgz"] == 3
    assert list((tmp_path / "cache").iterdir()) == []
    assert not (tmp_path / "c.npz").exists()


def test_transient_failures_are_retried(server, tmp_path):
    blob, expected = cifar10_archive()
    url = server.serve("/r.tgz", ("status", 503), ("truncate", blob), ("ok", blob))
    out = prepare_dataset(
        "cifar10",
        tmp_path / "c.npz",
        url=url,
        md5=md5(blob),
        cache_dir=tmp_path / "cache",
        retries=2,
    )
    assert server.hits["/r.tgz"] == 3
    assert_dataset(load_dataset(out), expected)


def test_hanging_server_is_bounded_by_timeout(server, tmp_path):
    url = server.serve("/hang.tgz", ("hang", None))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        prepare_dataset(
            "cifar10",
            tmp_path / "c.npz",
            url=url,
            md5="0" * 32,
            cache_dir=tmp_path / "cache",
            timeout=1,
            retries=1,
        )
    assert time.monotonic() - start < 8
    assert server.hits["/hang.tgz"] == 2
    assert not (tmp_path / "c.npz").exists()


def test_cached_archive_is_reused(server, tmp_path):
    url, digest, expected = serve_cifar10(server)
    cache = tmp_path / "cache"
    prepare_dataset("cifar10", tmp_path / "a.npz", url=url, md5=digest, cache_dir=cache)
    server.routes.clear()  # any further request would now get a 404
    out = prepare_dataset("cifar10", tmp_path / "b.npz", url=url, md5=digest, cache_dir=cache)
    assert server.hits["/cifar-10-binary.tar.gz"] == 1
    assert_dataset(load_dataset(out), expected)


def test_cached_archive_with_wrong_md5_is_fetched_again(server, tmp_path):
    url, digest, expected = serve_cifar10(server)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-binary.tar.gz").write_bytes(b"stale")
    out = prepare_dataset("cifar10", tmp_path / "a.npz", url=url, md5=digest, cache_dir=cache)
    assert server.hits["/cifar-10-binary.tar.gz"] == 1
    assert_dataset(load_dataset(out), expected)


def test_failed_reprepare_keeps_existing_valid_file(server, tmp_path):
    url, digest, expected = serve_cifar10(server)
    out = tmp_path / "c10.npz"
    prepare_dataset("cifar10", out, url=url, md5=digest, cache_dir=tmp_path / "cache")
    before = out.read_bytes()
    with pytest.raises(DownloadError):
        prepare_dataset("cifar10", out, url=url, md5="f" * 32, cache_dir=tmp_path / "cache2")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c10.npz", "cache", "cache2"]


def test_progress_bar_on_stderr(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASCL_PROGRESS", "1")
    url, digest, _ = serve_cifar10(server)
    prepare_dataset("cifar10", tmp_path / "c.npz", url=url, md5=digest, cache_dir=tmp_path / "c")
    captured = capsys.readouterr()
    assert "cifar10" in captured.err and "B" in captured.err
    assert captured.out == ""


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'imagenet'") as err:
        prepare_dataset("imagenet", tmp_path / "x.npz")
    for name in (*DATASETS, *OFFLINE_DATASETS):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="prepare_cifar10c"):
        prepare_dataset("cifar10c", tmp_path / "x.npz")


# ---------------------------------------------------------------------------------------------
# Unsafe archives


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


OUTSIDE = f"/tmp/ascl-test-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("member", "extra"),
    [
        ("../evil", ()),
        ("cifar-10-batches-bin/../../evil", ()),
        (OUTSIDE, ()),
        ("cifar-10-batches-bin/escape", (_link("cifar-10-batches-bin/escape", "../../outside"),)),
        ("abs-link", (_link("abs-link", "/etc/passwd"),)),
        ("hard", (_link("hard", "../outside", tarfile.LNKTYPE),)),
        ("dev", (_device("dev"),)),
    ],
)
def test_unsafe_member_is_refused(server, tmp_path, member, extra):
    if not extra:
        info = tarfile.TarInfo(member)
        info.size = 4
        extra = (info,)
    blob, _ = cifar10_archive()
    # append the unsafe entry to an otherwise valid archive
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as src,
        tarfile.open(fileobj=buf, mode="w:gz") as dst,
    ):
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info))
        for info in extra:
            dst.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    blob = buf.getvalue()
    url = server.serve("/unsafe.tgz", ("ok", blob))
    out = tmp_path / "work" / "c.npz"
    with pytest.raises(ArchiveError) as err:
        prepare_dataset("cifar10", out, url=url, md5=md5(blob), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert repr(member) in msg and "refusing" in msg and "\n" not in msg
    assert not out.exists() and not Path(OUTSIDE).exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_missing_member_is_a_clear_error(server, tmp_path):
    blob = make_tar({"cifar-10-batches-bin/batches.meta.txt": b"a\nb\n"})
    url = server.serve("/m.tgz", ("ok", blob))
    with pytest.raises(ArchiveError, match="no member 'cifar-10-batches-bin/data_batch_1.bin'"):
        prepare_dataset(
            "cifar10", tmp_path / "c.npz", url=url, md5=md5(blob), cache_dir=tmp_path / "cache"
        )
    assert not (tmp_path / "c.npz").exists()


def test_bad_record_size_is_a_clear_error(server, tmp_path):
    root = "cifar-10-batches-bin"
    members = {f"{root}/batches.meta.txt": b"a\nb\n"}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        members[f"{root}/{name}"] = bytes(3073 * 2 - 1)
    blob = make_tar(members)
    url = server.serve("/b.tgz", ("ok", blob))
    with pytest.raises(ArchiveError, match=r"data_batch_1\.bin: size 6145 bytes"):
        prepare_dataset(
            "cifar10", tmp_path / "c.npz", url=url, md5=md5(blob), cache_dir=tmp_path / "cache"
        )


# ---------------------------------------------------------------------------------------------
# The uniform form


def _arrays(**override) -> dict:
    arrays = dict(
        x_train=np.zeros((4, 3, 8, 8), np.uint8),
        y_train=np.array([0, 1, 2, 0]),
        x_test=np.zeros((2, 3, 8, 8), np.uint8),
        y_test=np.array([1, 2]),
        classes=np.array(["a", "b", "c"]),
    )
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


def test_load_dataset_roundtrip(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, **_arrays())
    ds = load_dataset(path)
    assert ds.x_train.shape == (4, 3, 8, 8) and ds.y_test.tolist() == [1, 2]
    assert ds.classes == ("a", "b", "c") and ds.num_classes == 3
    data.save_dataset(ds, tmp_path / "e.npz")
    assert load_dataset(tmp_path / "e.npz").y_train.tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        (dict(y_test=None), "missing key"),
        (dict(x_train=np.zeros((4, 3, 8, 8), np.float32)), "'x_train' must be uint8"),
        (dict(x_test=np.zeros((2, 8, 8), np.uint8)), r"'x_test' must have shape \(N, 3, H, W\)"),
        (dict(x_test=np.zeros((2, 3, 4, 4), np.uint8)), "differ in image size"),
        (dict(y_train=np.array([0, 1, 2], np.int64)), r"'y_train' must have shape \(4,\)"),
        (dict(y_train=np.array([0, 1, 2, 0], np.int32)), "'y_train' must be int64"),
        (dict(y_test=np.array([1, 3])), r"labels must lie in 0\.\.2"),
        (dict(classes=np.array([1, 2, 3])), "'classes' must be"),
    ],
)
def test_load_dataset_rejects_bad_files(tmp_path, override, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **_arrays(**override))
    with pytest.raises(ValueError, match=pattern) as err:
        load_dataset(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_load_dataset_refuses_pickles_and_garbage(tmp_path):
    pickled = tmp_path / "p.npz"
    np.savez(pickled, **_arrays(classes=np.array(["a", None, "c"], dtype=object)))
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_dataset(pickled)
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"g\.npz: not a readable \.npz"):
        load_dataset(garbage)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_dataset(tmp_path / "nope.npz")


# ---------------------------------------------------------------------------------------------
# Offline digits sets


@pytest.fixture(scope="module")
def offline_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("digits")
    return {name: prepare_dataset(name, root / f"{name}.npz") for name in OFFLINE_DATASETS}


@pytest.fixture(scope="module")
def offline(offline_files) -> dict[str, Dataset]:
    return {name: load_dataset(path) for name, path in offline_files.items()}


@pytest.mark.parametrize(
    ("name", "n_classes", "n_train", "n_test"),
    [("digits10", 10, 1438, 359), ("digits10-shift", 10, 1438, 359), ("digits20", 20, 2876, 718)],
)
def test_offline_shapes_and_labels(offline, name, n_classes, n_train, n_test):
    ds = offline[name]
    assert ds.x_train.shape == (n_train, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (n_test, 3, 32, 32) and ds.x_test.dtype == torch.uint8
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert ds.num_classes == n_classes
    for y in (ds.y_train, ds.y_test):
        counts = torch.bincount(y, minlength=n_classes)
        assert len(counts) == n_classes and counts.min() > 0  # every class in every split


def test_offline_build_is_byte_identical(offline_files, tmp_path):
    again = prepare_dataset("digits10", tmp_path / "again.npz")
    assert again.read_bytes() == offline_files["digits10"].read_bytes()


def test_offline_rejects_url(tmp_path):
    with pytest.raises(ValueError, match="built offline"):
        prepare_dataset("digits10", tmp_path / "d.npz", url="http://127.0.0.1:1/x")


@pytest.mark.parametrize(
    ("name", "minimum"), [("digits10", 0.45), ("digits10-shift", 0.2), ("digits20", 0.2)]
)
def test_offline_sets_are_learnable(offline, name, minimum):
    """A linear classifier on the flattened greyscale pixels is far above chance."""
    from sklearn.linear_model import RidgeClassifier

    ds = offline[name]

    def features(x):
        return x.float().mean(1).flatten(1).numpy() / 255.0

    clf = RidgeClassifier(alpha=10.0).fit(features(ds.x_train), ds.y_train.numpy())
    accuracy = clf.score(features(ds.x_test), ds.y_test.numpy())
    assert accuracy >= minimum, f"{name}: {accuracy:.3f} (chance {1 / ds.num_classes:.3f})"


def test_digits20_texture_survives_crop_flip_jitter_greyscale(offline):
    """Plain vs. striped is told apart from a small random crop after a horizontal flip,
    greyscale and brightness/contrast jitter, by a fixed row-difference statistic."""
    ds = offline["digits20"]
    g = torch.Generator().manual_seed(0)
    x = ds.x_test.float()
    n, c = len(x), 12
    top, left = torch.randint(0, 33 - c, (2, n), generator=g)
    correct = 0
    for i in range(n):
        crop = x[i, :, top[i] : top[i] + c, left[i] : left[i] + c].flip(-1)
        grey = 0.299 * crop[0] + 0.587 * crop[1] + 0.114 * crop[2]
        scale, shift = 0.6 + 0.8 * torch.rand(2, generator=g)
        grey = grey * scale + (shift - 1.0) * 100
        lag2 = (grey[2:] - grey[:-2]).abs().median()
        lag4 = (grey[4:] - grey[:-4]).abs().median()
        striped = (lag2 - lag4) / (lag2 + lag4 + 1e-6) > 0.2
        correct += int(bool(striped) == bool(ds.y_test[i] >= 10))
    assert correct / n >= 0.9
    # colour alone does not tell the texture: mean colours of the two halves are close
    means = [x[(ds.y_test >= 10) == s].mean((0, 2, 3)) for s in (False, True)]
    assert (means[0] - means[1]).abs().max() < 8


def test_downscale_is_the_rounded_block_mean():
    x = np.random.default_rng(0).integers(0, 256, size=(3, 3, 8, 8), dtype=np.uint8)
    small = data.formats.downscale_images(x, 4)
    assert small.shape == (3, 3, 4, 4) and small.dtype == np.uint8
    for n, c, i, j in itertools.product(range(3), range(3), range(4), range(4)):
        block = [int(x[n, c, 2 * i + a, 2 * j + b]) for a in range(2) for b in range(2)]
        assert small[n, c, i, j] == int(sum(block) / 4 + 0.5)
    with pytest.raises(data.FormatError, match="image size 3 does not divide the stored 8x8"):
        data.formats.downscale_images(x, 3)


def test_download_at_a_reduced_image_size(tmp_path):
    """`ascl download --image-size 16`: the stored set is the full one downscaled; no
    full-size file is left beside it."""
    full = prepare_dataset("digits10", tmp_path / "full" / "digits10.npz")
    out = tmp_path / "data" / "digits10.npz"
    assert main(["download", "digits10", "--out", str(out), "--image-size", "16"]) == 0
    small, ref = load_dataset(out), load_dataset(full)
    assert small.x_train.shape[1:] == (3, 16, 16)
    expected = data.formats.downscale_images(ref.x_test.numpy(), 16)
    np.testing.assert_array_equal(small.x_test.numpy(), expected)
    np.testing.assert_array_equal(small.y_train.numpy(), ref.y_train.numpy())
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits10.npz"]


def test_corruptions_download_at_a_reduced_image_size(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ASCL_CACHE_DIR", str(tmp_path / "cache"))
    n = 5
    rng = np.random.default_rng(4)
    members, expected = {}, {}
    for name in CIFAR10C_CORRUPTIONS:
        hwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        buf = io.BytesIO()
        np.save(buf, hwc, allow_pickle=False)
        members[f"CIFAR-10-C/{name}.npy"] = buf.getvalue()
        expected[name] = data.formats.downscale_images(np.moveaxis(hwc, 3, 1), 8)
    buf = io.BytesIO()
    np.save(buf, rng.integers(0, 10, n).astype(np.uint8), allow_pickle=False)
    members["CIFAR-10-C/labels.npy"] = buf.getvalue()
    blob = make_tar(members, mode="w")
    url = server.serve("/CIFAR-10-C-small.tar", ("ok", blob))
    out = tmp_path / "data" / "cifar10c"
    args = ["download", "cifar10c", "--out", str(out), "--url", url, "--md5", md5(blob)]
    assert main([*args, "--image-size", "8"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["cifar10c"]
    for name in CIFAR10C_CORRUPTIONS:
        x, _, _ = load_corrupted(out / f"{name}.npz")
        np.testing.assert_array_equal(x.numpy(), expected[name])


def test_a_prepared_file_says_what_made_it_and_a_job_refuses_another_image_size(tmp_path, capsys):
    """`ascl download` records the settings that made a file; a job whose data.image_size
    differs gets a one-line error, also for a file without that record (its image shape)."""
    from ascl.data.formats import load_corrupted

    small = tmp_path / "digits10.npz"
    assert main(["download", "digits10", "--out", str(small), "--image-size", "16"]) == 0
    assert data.load_dataset(small, 16).x_train.shape[2:] == (16, 16)
    for other in (8, None):
        with pytest.raises(data.FormatError, match=f"made with image_size 16.* is {other}:"):
            data.load_dataset(small, other)
    assert data.load_dataset(small).x_train.shape[2:] == (16, 16)  # a caller without settings
    # a file made by other means (no record): its image shape decides
    native = tmp_path / "native.npz"
    data.prepare_dataset("digits10", native)
    size = data.load_dataset(native).x_train.shape[-1]
    assert data.load_dataset(native, None).x_train.shape[-1] == size
    with pytest.raises(data.FormatError, match=f"images are {size}x{size}.* is 16:"):
        data.load_dataset(native, 16)
    # the corrupted sets carry it too
    corrupted = tmp_path / "digits10-c"
    assert main(["download", "digits10-c", "--out", str(corrupted), "--image-size", "16"]) == 0
    first = sorted(corrupted.glob("*.npz"))[0]
    assert load_corrupted(first, 16)[0].shape[2:] == (16, 16)
    with pytest.raises(data.FormatError, match="made with image_size 16"):
        load_corrupted(first, None)
    # a job: one line on stderr, exit status 2, nothing written
    from ascl import config

    root = Path(__file__).resolve().parents[1]
    params = config.load_params(root / "params.yaml", root / "config" / "smoke.yaml")
    params["data"]["image_size"] = 8
    settings = config.pretrain_settings(params, "ascl-at")
    out = tmp_path / "encoder.pt"
    argv = ["pretrain", "--settings", json.dumps(settings), "--data", str(small)]
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--no-track"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made with image_size 16" in err[0]
    assert not out.exists()
