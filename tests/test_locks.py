"""The destination lock: a second process is refused with the holder named,
and a lock whose process was killed never blocks the next one."""

import os
import signal
import subprocess
import sys
import time

import pytest

from keras_vit.utils.locks import LockedError, exclusive_lock
from tests.conftest import REPO

HOLD = """
import sys, time
from keras_vit.utils.locks import exclusive_lock
with exclusive_lock(sys.argv[1], "run directory"):
    print("locked", flush=True)
    time.sleep(60)
"""


def start_holder(directory):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_and_told_who_holds_the_lock(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(LockedError, match=f"in use by process {holder.pid} on "):
            with exclusive_lock(tmp_path, "run directory"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    start = time.time()
    with exclusive_lock(tmp_path, "run directory") as record:
        assert record["pid"] == os.getpid()
    assert time.time() - start < 5


def test_the_lock_is_reentrant_after_release_in_one_process(tmp_path):
    with exclusive_lock(tmp_path):
        pass
    with exclusive_lock(tmp_path):
        pass
