"""The errors a user fixes (reported by the command line as one line naming what is wrong),
as opposed to bugs (reported with a traceback). Imports nothing but the standard library.

    UserError
    ├── ParamsError        a params file or a setting is malformed (names the key)
    │   └── MemoryFormatError   a memory format known to corrupt memory for this model
    ├── CheckpointError    a checkpoint is unreadable, truncated, unsafe or of the wrong kind
    ├── DataError
    │   ├── FormatError    a file or archive member without the expected layout
    │   └── DownloadError  a data set could not be fetched (ArchiveError: unusable archive)
    ├── NonFiniteLossError a loss term or the weights became NaN or infinite
    └── ClaimError         a claim names a cell, model or file that does not exist

Each class also derives from the built-in exception it used to be (ValueError, RuntimeError),
so code catching those still catches it.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user fixes; its message is one line."""


class ParamsError(UserError, ValueError):
    """A params file is malformed; the message is one line naming the key."""


class MemoryFormatError(ParamsError):
    """A memory format was asked for that is known to corrupt memory for this model."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file is unreadable, truncated or unsafe."""


class DataError(UserError):
    """A data set file or download that cannot be used."""


class FormatError(DataError, ValueError):
    """A file or an archive member that does not have the expected layout."""


class DownloadError(DataError, RuntimeError):
    """A data set could not be fetched or its archive is unusable (one-line message)."""


class ArchiveError(DownloadError):
    """An archive that is unsafe to read or lacks an expected member."""


class NonFiniteLossError(UserError, RuntimeError):
    """A loss term or the weights became NaN or infinite; training stops without writing
    outputs (or a checkpoint of that state)."""


class ClaimError(UserError, ValueError):
    """A claim names a cell, model or file that does not exist."""


def is_user_error(err: BaseException) -> bool:
    """True for the errors reported as one line: every UserError and a missing file."""
    return isinstance(err, UserError | FileNotFoundError)
