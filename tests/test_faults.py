"""Faults in real processes: `kill -9` of `keras-vit train`, `tune` and
`export` at seeded random points, two trainings racing for one run
directory, and a disk that fills up mid-run.

After every fault, the same command run again must finish (exit 0), lose at
most the one epoch that was running, and leave only artifacts that the real
loaders open and no temporary file. CI runs one kill point per command;
``KERAS_VIT_FAULT_POINTS=20`` runs twenty (``KERAS_VIT_FAULT_SEED`` picks
another draw).
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import keras
import keras_vit  # noqa: F401 (registers the layers the loaders need)
import pytest

from tests.conftest import REPO, tiny_train_flags

POINTS = int(os.environ.get("KERAS_VIT_FAULT_POINTS", "1"))
SEED = int(os.environ.get("KERAS_VIT_FAULT_SEED", "0"))
LEFTOVER = re.compile(r"\.tmp-|\.old-|^\.last-|^\.epoch-")
EPOCH_START = re.compile(r"^Epoch \d+/\d+$", re.M)
# no augmentation: digits' augmentation triples a tiny model's step time
TINY = tiny_train_flags("--verbose", "2", "--augment", "none", hidden_dim=8)


def env():
    full = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    full["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([full["PYTHONPATH"]] if full.get("PYTHONPATH") else []))
    return full


def cli(*args):
    return [sys.executable, "-m", "keras_vit.cli", *map(str, args)]


def run(args, timeout=600):
    return subprocess.run(args, env=env(), capture_output=True, text=True, timeout=timeout)


def kill_at(args, log_path, trigger, extra):
    """Starts `args`, waits until `trigger()` holds, then `extra` seconds, and
    sends SIGKILL. Returns (log text, whether it was killed: False when the
    command finished first)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, env=env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 400
        while proc.poll() is None and not trigger():
            assert time.time() < deadline, "the kill point was never reached"
            time.sleep(0.01)
        end = time.time() + extra
        while proc.poll() is None and time.time() < end:
            time.sleep(0.01)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not killed:
        assert proc.returncode == 0, log_path.read_text()[-3000:]
    return log_path.read_text(), killed


def kill_points(command, triggers, first, first_extra=0.0):
    """`POINTS` seeded (trigger name, extra seconds) pairs; the first is
    `first` after `first_extra` seconds (the most telling point, so CI's
    single point is always that one: for `train`, inside the second epoch;
    for `tune`, the moment a trial has committed its first epoch)."""
    rng = random.Random(f"{SEED}:{command}")
    points = [(first, first_extra)]
    while len(points) < POINTS:
        name = rng.choice(triggers)
        points.append((name, rng.uniform(0.0, 8.0 if name == "start" else 1.5)))
    return points


OURS = (".keras_vit.lock", ".keras_vit.dir")  # the lock and the marker of a directory of ours


def leftovers(root):
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if LEFTOVER.search(p.name) or (p.name.startswith(".") and p.name not in OURS)]


def read_json(path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def committed_epoch(run_dir):
    return (read_json(run_dir / "backup" / "training_metadata.json") or {}).get("epoch", 0)


# --------------------------------------------------------------------------
# kill -9, then the same command again
# --------------------------------------------------------------------------


def test_train_killed_at_random_points_resumes_and_loses_at_most_one_epoch(tmp_path):
    epochs = 2
    for index, (name, extra) in enumerate(kill_points(
            "train", ["start", "epoch 1", "epoch 2", "metrics.json"], first="epoch 1", first_extra=1.0)):
        run_dir = tmp_path / f"run{index}"
        triggers = {
            "start": lambda: True,
            "epoch 1": lambda: committed_epoch(run_dir) >= 1,
            "epoch 2": lambda: committed_epoch(run_dir) >= 2,
            "metrics.json": lambda: (run_dir / "metrics.json").exists(),
        }
        args = cli("train", "--run-dir", run_dir, "--epochs", epochs, *TINY)
        log, killed = kill_at(args, tmp_path / f"train{index}.log", triggers[name], extra)
        committed = committed_epoch(run_dir)
        started = len(EPOCH_START.findall(log))
        lost = started - committed  # epochs begun but not committed: only the running one may be lost
        print(f"train kill point {index}: {name} + {extra:.2f}s, killed={killed}, "
              f"epochs started {started}, committed {committed}, lost {lost}")
        assert lost <= 1, log[-3000:]

        again = run(args)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        metrics = read_json(run_dir / "metrics.json")
        assert metrics["epochs"] == epochs
        if killed:
            assert metrics["resumed_from_epoch"] == committed
            if committed < epochs:  # the rerun starts after the committed epoch
                assert re.search(r"Epoch (\d+)/", again.stdout).group(1) == str(committed + 1)
        rows = (run_dir / "history.csv").read_text().splitlines()[1:]
        assert [int(row.split(",")[0]) for row in rows] == list(range(1, epochs + 1))
        for artifact in ("model.keras", "checkpoints/best.keras"):
            keras.saving.load_model(run_dir / artifact)
        assert not leftovers(run_dir), leftovers(run_dir)


TUNE_FIXED = {"patch_size": 4, "hidden_dim": 8, "num_heads": 2, "depth": 1, "mlp_ratio": 2, "pooling": "gap",
              "pos_embedding": "learned", "drop_path_rate": 0.0, "weight_decay": 0.01, "warmup_epochs": 0.0,
              "label_smoothing": 0.0, "augment": 0.0, "batch_size": 64}


def trial_states(project):
    return {p.parent.name: (read_json(p) or {}).get("status") for p in project.glob("trial_*/trial.json")}


def test_tune_killed_at_random_points_resumes_and_keeps_finished_trials(tmp_path):
    epochs, trials = 2, 2

    for index, (name, extra) in enumerate(kill_points(
            "tune", ["start", "first epoch", "first trial", "results"], first="first epoch")):
        project = tmp_path / f"search{index}" / "vit"

        def backed_up():
            return any(committed_epoch(trial) >= 1 for trial in project.glob("trial_*"))

        triggers = {
            "start": lambda: True,
            "first epoch": backed_up,
            "first trial": lambda: "COMPLETED" in trial_states(project).values(),
            "results": lambda: (project / "results.json").exists(),
        }
        args = cli("tune", "--directory", project.parent, "--project-name", "vit", "--max-trials", trials,
                   "--epochs", epochs, "--patience", 10, "--image-size", 8,
                   *[f"--fix={k}={v}" for k, v in TUNE_FIXED.items()])
        log, killed = kill_at(args, tmp_path / f"tune{index}.log", triggers[name], extra)
        states = trial_states(project)
        done_before = {t: (project / t / "trial.json").read_text() for t, s in states.items() if s == "COMPLETED"}
        # the trial that was running: epochs it finished in the log against those backed up
        sections = re.split(r"^\[\S+\] trial (\S+):", log, flags=re.M)
        lost, resumes = 0, None
        if len(sections) > 1:
            trial_id, output = sections[-2], sections[-1]
            trial_dir = project / f"trial_{trial_id}"
            if states.get(trial_dir.name) != "COMPLETED":
                resumes = trial_id, committed_epoch(trial_dir)
                lost = len(EPOCH_START.findall(output)) - resumes[1]
        print(f"tune kill point {index}: {name} + {extra:.2f}s, killed={killed}, trials completed "
              f"{len(done_before)}, epochs lost {lost}")
        assert lost <= 1, log[-3000:]

        again = run(args)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert sorted(trial_states(project).values()) == ["COMPLETED"] * trials
        for trial, text in done_before.items():  # a finished trial is never run again
            assert (project / trial / "trial.json").read_text() == text
        if resumes:  # the interrupted trial goes on after its last backed-up epoch
            trial_id, committed = resumes
            rerun = re.split(r"^\[\S+\] trial (\S+):", again.stdout, flags=re.M)
            output = rerun[rerun.index(trial_id) + 1]
            first = re.search(r"^Epoch (\d+)/", output, flags=re.M)
            assert (int(first.group(1)) if first else epochs + 1) == committed + 1, output[-3000:]
        results = read_json(project / "results.json")
        assert len(results["trials"]) == trials and all(r["score"] is not None for r in results["trials"])
        keras.saving.load_model(project / "best_model.keras")
        assert not leftovers(project.parent), leftovers(project.parent)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from keras_vit import build_vit

    folder = tmp_path_factory.mktemp("models")
    for classes in (2, 3):
        keras.utils.set_random_seed(0)
        build_vit(image_size=8, patch_size=4, num_classes=classes, hidden_dim=8, depth=1, num_heads=2,
                  mlp_dim=16).save(folder / f"m{classes}.keras")
    return folder


def test_export_killed_at_random_points_leaves_a_loadable_artifact_and_no_temporaries(tmp_path, model_files):
    from keras_vit.export import load_predictor

    points = kill_points("export", ["start", "busy"], first="busy")
    for index, (name, extra) in enumerate(points):
        fmt = ("savedmodel", "tflite")[index % 2]
        folder = tmp_path / f"out{index}"
        folder.mkdir()
        target = folder / ("m_savedmodel" if fmt == "savedmodel" else "m.tflite")
        if index % 4 >= 2:  # an older artifact is there: a kill must never leave less than it
            assert run(cli("export", model_files / "m3.keras", "--format", fmt, "-o", target)).returncode == 0
        args = cli("export", model_files / "m2.keras", "--format", fmt, "-o", target)
        # busy: its lock or a temporary has appeared beside the target
        triggers = {"start": lambda: True, "busy": lambda: any(p.name.startswith(".") for p in folder.iterdir())}
        _, killed = kill_at(args, tmp_path / f"export{index}.log", triggers[name], extra)
        if target.exists():
            assert len(load_predictor(target).class_names) in (2, 3)  # the old one or the new one, whole
        print(f"export kill point {index}: {fmt}, {name} + {extra:.2f}s, killed={killed}")

        again = run(args)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert len(load_predictor(target).class_names) == 2
        assert [p.name for p in folder.iterdir()] == [target.name], list(folder.iterdir())


# --------------------------------------------------------------------------
# two trainings, one run directory
# --------------------------------------------------------------------------


def test_two_trainings_on_one_run_directory_one_runs_the_other_is_told_who(tmp_path):
    run_dir = tmp_path / "run"
    widths = (8, 16)
    # batch 16: epochs long enough that the later of two processes started together finds the lock held
    procs = [subprocess.Popen(cli("train", "--run-dir", run_dir, "--epochs", 2, *TINY, "--hidden-dim", width,
                                  "--batch-size", 16),
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for width in widths]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert sorted(codes) == [0, 2], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    err = outputs[loser][1]
    assert f"keras-vit train: error: The run directory {run_dir} is in use by process {procs[winner].pid}" in err
    assert "Traceback" not in err
    # the directory holds one run: its config, its model, its metrics
    config = read_json(run_dir / "config.json")
    assert config["hidden_dim"] == widths[winner]
    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.backbone.hidden_dim == widths[winner]
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["epochs"] == 2 and metrics["resumed_from_epoch"] == 0
    assert f"accuracy  {metrics['test']['accuracy']:.4f}" in outputs[winner][0]
    assert not leftovers(run_dir)


# --------------------------------------------------------------------------
# a full disk
# --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs; skipped only where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("cannot mount a tmpfs here: no `mount` command")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_clear_error_and_the_rerun_resumes_after_space_is_freed(small_disk):
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (840 * 1024))  # leaves room for the first epoch, not for the run
    # (here 800-880 KiB committed epoch 1 and then filled the disk; 760 committed both, 920 none)
    run_dir = small_disk / "run"
    args = cli("train", "--run-dir", run_dir, "--epochs", 2, *TINY, "--batch-size", 256)  # 6 steps an epoch
    full = run(args)
    assert full.returncode == 1, full.stdout[-2000:] + full.stderr[-3000:]
    assert "keras-vit train: error: The disk is full" in full.stderr
    assert "re-run the same command to resume" in full.stderr and "Traceback" not in full.stderr
    committed = committed_epoch(run_dir)
    assert committed == 1, full.stdout[-2000:]
    assert f"keeps its last committed epoch ({committed})" in full.stderr
    keras.saving.load_model(run_dir / "checkpoints" / "best.keras")  # what was committed is whole
    assert not leftovers(run_dir), leftovers(run_dir)

    ballast.unlink()
    again = run(args)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["resumed_from_epoch"] == committed and metrics["epochs"] == 2
    keras.saving.load_model(run_dir / "model.keras")
    assert not leftovers(run_dir)
