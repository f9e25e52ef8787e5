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

LOCK_NAME = ".keras_vit.lock"


class LockedError(ValueError):
    """The destination is being written by another process."""


def _describe(holder):
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"process {holder.get('pid')} on {holder.get('host')} (started {started}: "
            f"{holder.get('command', '?')})")


@contextlib.contextmanager
def exclusive_lock(directory, what="directory"):
    """Holds an exclusive lock on `directory` (created if missing) for the
    block; raises `LockedError` naming the holder when another process has it.

    Args:
        directory: the folder to lock.
        what: how to name it in the error ("run directory", ...).

    Example:
    >>> import tempfile
    >>> with exclusive_lock(tempfile.mkdtemp(), "run directory"):
    ...     pass
    """
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                holder = None
            raise LockedError(
                f"The {what} {directory} is in use by {_describe(holder)}. Wait for it to finish, "
                f"stop it, or use another {what}.") from None
        record = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                      command=" ".join(sys.argv)[:300])
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        held = True
        yield record
    except BaseException:
        if held and created and [p.name for p in directory.iterdir()] == [LOCK_NAME]:
            path.unlink()  # a refused first run leaves no directory behind
            directory.rmdir()
        raise
    finally:
        os.close(fd)  # closing the descriptor releases the lock
