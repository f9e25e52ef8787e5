"""An exclusive lock on a destination (a run directory, a tuning project, an
export target), so that two processes never write into one.

The lock is an OS file lock (`fcntl.flock`) on ``.keras_vit.lock`` inside
the directory: the kernel releases it when its process ends, even by
``kill -9``, so a stale lock never blocks the next run. The file also
records who holds it (PID, host, start time, command) for the error message
a second process gets.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from keras_vit.utils.disk import make_directory

LOCK_NAME = ".keras_vit.lock"


class LockedError(ValueError):
    """The destination is being written by another process."""


def _describe(holder):
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"process {holder.get('pid')} on {holder.get('host')} (started {started}: "
            f"{holder.get('command', '?')})")


def _lock_fd(path):
    """Opens `path` and takes an exclusive flock on it (non-blocking); returns
    the descriptor, or None when another process holds it. Retries when the
    file was removed or replaced between the open and the lock, so a lock
    file that its holder removes on release is still one lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(directory, what="directory", *, lock_name=LOCK_NAME, target=None, remove=False):
    """Holds an exclusive lock on `directory` (created if missing) for the
    block; raises `LockedError` naming the holder when another process has it.

    Args:
        directory: the folder that holds the lock file.
        what: how to name it in the error ("run directory", ...).
        lock_name: the lock file's name inside `directory`.
        target: what the error names as locked (default: `directory`).
        remove: delete the lock file on release (for locks beside a
            destination, which should leave nothing behind).

    Example:
    >>> import tempfile
    >>> with exclusive_lock(tempfile.mkdtemp(), "run directory"):
    ...     pass
    """
    directory = Path(directory)
    created = not directory.exists()
    make_directory(directory, what)
    path = directory / lock_name
    fresh = not path.exists()
    fd = _lock_fd(path)
    if fd is None:
        try:
            holder = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            holder = None
        raise LockedError(
            f"The {what} {target or directory} is in use by {_describe(holder)}. Wait for it to finish, "
            f"stop it, or use another {what}.")
    held = False
    try:
        record = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                      command=" ".join(sys.argv)[:300])
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        held = True
        yield record
    except BaseException:
        if held and fresh:
            path.unlink(missing_ok=True)  # a refused run leaves no lock file behind (in a user's folder)
            if created and not any(directory.iterdir()):
                directory.rmdir()  # nor a directory
        raise
    finally:
        if remove and path.exists():
            path.unlink(missing_ok=True)  # while still held: `_lock_fd` retries on a replaced file
        os.close(fd)  # closing the descriptor releases the lock


def destination_lock_file(path):
    """The hidden lock file beside the artifact `path` that
    `keras_vit.utils.io.destination_lock` holds: ``.NAME.lock`` in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def destination_locked(path):
    """Whether another process holds `keras_vit.utils.io.destination_lock(path)` now (its
    writes to `path` are in progress, so their temporaries are live).

    Example:
    >>> import tempfile
    >>> destination_locked(Path(tempfile.mkdtemp()) / "model.tflite")
    False
    """
    try:
        fd = os.open(destination_lock_file(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
