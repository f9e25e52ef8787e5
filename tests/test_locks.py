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


HOLD_DESTINATION = """
import sys, time
from keras_vit.utils.io import destination_lock
with destination_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_an_export_destination_in_use_is_refused_with_the_holder_named(tmp_path, tiny_vit):
    from keras_vit.export import export_tflite

    target = tmp_path / "model.tflite"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_DESTINATION, str(target)], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"export destination {target} is in use by process {holder.pid}"):
            export_tflite(tiny_vit(), target)
    finally:
        holder.kill()
        holder.wait()
    assert not target.exists()
    export_tflite(tiny_vit(), target)  # the kernel released the killed holder's lock
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]  # no lock file left beside it


def test_a_killed_exports_temporaries_are_cleaned_at_the_next_start(tmp_path, tiny_vit):
    from keras_vit.export import export_saved_model, load_predictor
    from keras_vit.utils.io import remove_stale_temporaries

    target = tmp_path / "m_savedmodel"
    export_saved_model(tiny_vit(), target)
    (tmp_path / ".m_savedmodel.tmp-99-abcdef01" / "variables").mkdir(parents=True)  # a partial SavedModel
    (tmp_path / ".m_savedmodel.old-99-abcdef02").mkdir()  # a replaced copy not yet deleted
    (tmp_path / ".other.tmp-99-abcdef03").write_text("another destination's: not ours to clean")
    export_saved_model(tiny_vit(num_classes=3), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-99-abcdef03", "m_savedmodel"]
    assert len(load_predictor(target).class_names) == 3
    # killed between the two renames of a directory swap: the old copy is the only one, so it comes back
    os.replace(target, tmp_path / ".m_savedmodel.old-98-abcdef04")
    assert remove_stale_temporaries(tmp_path, name="m_savedmodel") == [".m_savedmodel.old-98-abcdef04"]
    assert len(load_predictor(target).class_names) == 3


def test_a_tuning_project_in_use_is_refused_with_the_holder_named(tmp_path):
    from keras_vit.tuning import tune

    project = tmp_path / "search" / "vit"
    holder = start_holder(project)
    try:
        with pytest.raises(LockedError, match=f"tuning project {project} is in use by process {holder.pid}"):
            tune("digits", max_trials=1, epochs=1, directory=tmp_path / "search", overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in project.iterdir()] == [".keras_vit.lock"]  # overwrite deleted nothing


def test_a_run_never_cleans_the_temporaries_of_an_export_in_progress_beside_it(tmp_path):
    from keras_vit.utils.io import remove_stale_temporaries

    target = tmp_path / "model_savedmodel"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_DESTINATION, str(target)], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        live = tmp_path / ".model_savedmodel.tmp-1-abcdef01"
        live.mkdir()
        stale = tmp_path / ".history.csv.tmp-1-abcdef02"
        stale.write_text("")
        assert remove_stale_temporaries(tmp_path) == [stale.name]
        assert live.is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert remove_stale_temporaries(tmp_path) == [live.name]
