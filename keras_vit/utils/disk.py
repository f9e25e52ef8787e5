"""The disk itself: `is_disk_full` recognises a full disk however deep it
was reported, and `make_directory` makes a directory or says clearly why
it cannot. Standard library only: `keras_vit.utils.io` and
`keras_vit.utils.locks` both build on it."""

import errno
from pathlib import Path


def is_disk_full(err):
    """Whether `err` (or an exception it was raised from) reports a full
    disk: ENOSPC or EDQUOT, also as the text that h5py and TensorFlow put in
    their own errors.

    Example:
    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
                text in str(err) for text in ("No space left on device", "Disk quota exceeded", "errno = 28")):
            return True
        err = err.__cause__ or err.__context__
    return False


def make_directory(path, what="directory"):
    """`Path(path).mkdir(parents=True, exist_ok=True)`; a directory that
    cannot be made (a read-only or virtual file system, no permission) is a
    `ValueError` naming it. A full disk stays an `OSError`."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise
        raise ValueError(f"The {what} {str(path)!r} cannot be created: {err.strerror or err}.") from None
    return Path(path)
