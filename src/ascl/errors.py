"""Which exceptions are the user's to fix (reported as one line) rather than bugs (traceback)."""

from __future__ import annotations


def is_user_error(err: BaseException) -> bool:
    from ascl.checkpoint import CheckpointError
    from ascl.claims import ClaimError
    from ascl.config import ParamsError
    from ascl.engine import MemoryFormatError, NonFiniteLossError

    user = (
        ParamsError,
        FileNotFoundError,
        CheckpointError,
        NonFiniteLossError,
        MemoryFormatError,
        ClaimError,
    )
    try:
        from ascl.data import DownloadError, FormatError

        user = (*user, DownloadError, FormatError)
    except ImportError:
        pass
    return isinstance(err, user)
