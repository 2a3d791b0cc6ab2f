"""Verified downloads and safe reading of tar archives.

`fetch` streams a URL (urllib only) into ``<archive>.part`` next to the cached archive, with a
socket timeout and bounded retries (exponential backoff) on connection errors, timeouts, HTTP 5xx
and truncated bodies (fewer bytes than Content-Length). The md5 of the complete file is checked
before it is renamed to the archive name; a mismatch deletes it and raises `DownloadError`.
A cached archive whose md5 matches is reused without any network access.

`open_archive` opens a tar (optionally compressed) and refuses it as a whole, before anything is
read, if any member has an absolute path, a ``..`` component, is a device or FIFO, or is a link
whose target leaves the archive. Members are read into memory (`SafeArchive.read`); nothing is
ever extracted onto the filesystem.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ascl.errors import ArchiveError, DownloadError  # noqa: F401 - re-exported

CHUNK = 1 << 20
BACKOFF_S = 1.0  # first retry delay; doubled on each further retry
BACKOFF_MAX_S = 30.0


class _RetryableError(Exception):
    """A transient failure of one download attempt."""


def md5_file(path: str | Path) -> str:
    """Hex md5 of the file `path`, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _progress_enabled() -> bool:
    return os.environ.get("ASCL_PROGRESS", "1") != "0"


def _attempt(url: str, part: Path, timeout: float, desc: str) -> None:
    """One download attempt of `url` into `part`; _RetryableError on transient failures."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "ascl"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code >= 500 or err.code == 429:
            raise _RetryableError(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(f"{desc}: HTTP {err.code} {err.reason} from {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _RetryableError(_reason(err)) from None
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        bar = tqdm(
            total=expected,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            leave=False,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
            disable=not _progress_enabled(),
        )
        with bar, open(part, "wb") as f:
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise _RetryableError(_reason(err)) from None
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if expected is not None and received != expected:
        raise _RetryableError(f"truncated response ({received} of {expected} bytes)")


def _reason(err: BaseException) -> str:
    """A short one-line description of a network error."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(err, http.client.IncompleteRead):
        return f"truncated response ({len(err.partial)} bytes, {err.expected} more expected)"
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def fetch(
    url: str,
    dest: str | Path,
    *,
    md5: str,
    name: str,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Download `url` to `dest` (verified against `md5`) unless a verified copy is there.

    `retries` further attempts follow a transient failure, after BACKOFF_S, 2*BACKOFF_S, ...
    seconds. Raises DownloadError (naming data set `name`) on failure; no partial file remains.
    """
    dest = Path(dest)
    md5 = md5.lower()
    if dest.is_file():
        if md5_file(dest) == md5:
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        for attempt in range(retries + 1):
            try:
                _attempt(url, part, timeout, name)
                break
            except _RetryableError as err:
                if attempt == retries:
                    raise DownloadError(
                        f"{name}: download of {url} failed after {retries + 1} attempt(s): {err}"
                    ) from None
                time.sleep(min(BACKOFF_S * 2**attempt, BACKOFF_MAX_S))
        got = md5_file(part)
        if got != md5:
            raise DownloadError(f"{name}: md5 mismatch for {url}: expected {md5}, got {got}")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


# ---------------------------------------------------------------------------------------------
# Safe archive reading


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why `member` must not be accepted (None when it is safe)."""
    path = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or (len(member.name) > 1 and member.name[1] == ":"):
        return "absolute path"
    if ".." in path.parts or "\\" in member.name:
        return "path escapes the archive ('..' or backslash)"
    if member.isdev() or member.isfifo():
        return "device or FIFO"
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        if member.linkname.startswith(("/", "\\")):
            return f"link to absolute path {member.linkname}"
        base = path.parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                return f"link target {member.linkname} escapes the archive"
    elif not (member.isfile() or member.isdir()):
        return "unsupported member type"
    return None


class SafeArchive:
    """An opened tar archive whose members were all checked (see `unsafe_reason`).

    Made by `open_archive`; `read(member)` returns the bytes of one regular-file member.
    """

    def __init__(self, tar: tarfile.TarFile, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._tar = tar
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ArchiveError(f"{name}: {path.name} is a damaged tar archive ({err})") from None
        for member in members:
            reason = unsafe_reason(member)
            if reason is not None:
                raise ArchiveError(
                    f"{name}: refusing archive {path.name}: member {member.name!r}: {reason}"
                )
        self._members = {m.name.removeprefix("./"): m for m in members}

    def names(self) -> list[str]:
        """Member names (a leading ``./`` removed)."""
        return list(self._members)

    def read(self, member: str) -> bytes:
        """The bytes of the regular-file `member`; ArchiveError if absent or not a file."""
        info = self._members.get(member)
        if info is None:
            raise ArchiveError(f"{self.name}: archive {self.path.name} has no member {member!r}")
        if not info.isfile():
            raise ArchiveError(
                f"{self.name}: archive member {member!r} of {self.path.name} is not a regular file"
            )
        f = self._tar.extractfile(info)
        if f is None:
            raise ArchiveError(f"{self.name}: archive member {member!r} cannot be read")
        with f:
            return f.read()


@contextmanager
def open_archive(path: str | Path, name: str) -> Iterator[SafeArchive]:
    """Open the tar archive `path` (any compression) of data set `name`, all members checked;
    ArchiveError (one line, naming the member) if it is unreadable or unsafe."""
    path = Path(path)
    try:
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, OSError) as err:
        raise ArchiveError(f"{name}: {path.name} is not a readable tar archive ({err})") from None
    with tar:
        yield SafeArchive(tar, path, name)
