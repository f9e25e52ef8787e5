"""`keras-vit train` in real subprocesses: a tiny run, bad flags, kill -9
and resume, and two workers on 127.0.0.1 under MultiWorkerMirroredStrategy."""

import json
import math
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vit.cli.main import main
from tests.conftest import REPO, tiny_train_flags

# the digits recipe's network, shrunk (no conv stem: patchify convolutions)
TINY = tiny_train_flags("--verbose", "2")


def cli(*args):
    return ["-m", "keras_vit.cli", "train", *args]


def env():
    full = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    full["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([full["PYTHONPATH"]] if full.get("PYTHONPATH") else []))
    return full


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dataset", "--preset", "--epochs", "--batch-size", "--precision", "--strategy",
                 "--run-dir", "--resume", "--config", "--hidden-dim", "--augment", "--recipe"):
        assert flag in out
    assert "'digits' (default)" in out


@pytest.mark.parametrize("args, message", [
    (["--epochs", "many"], "invalid int value: 'many'"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--config", "missing.yaml"], "config file does not exist"),
    (["--learning-rate", "0.1", "--restart", "--resume"], "not allowed with argument"),
])
def test_bad_flags_are_usage_errors(capsys, args, message):
    try:
        code = main(["train", *args])
    except SystemExit as exit_:  # argparse's own checks
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert ("usage: keras-vit" in err or "keras-vit train: error:" in err) and message in err
    assert "Traceback" not in err


def test_bad_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--dataset", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r"), *TINY])
    assert code == 2
    err = capsys.readouterr().err
    assert "keras-vit train: error: The image folder does not exist" in err


def test_tiny_run_with_a_config_file(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("epochs: 1\nhidden-dim: 16\nlearning_rate: 0.003\naugment: none\n")  # no augmentation: quick
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run), *TINY]) == 0
    stdout = capsys.readouterr().out
    saved = json.loads((run / "config.json").read_text())
    # the digits recipe's split: 1,437 images left by the 360 test ones, less its validation share, in batches of 64
    steps = math.ceil((1437 - round(1437 * saved["validation_split"])) / 64)
    assert f"{steps}/{steps}" in stdout  # one progress line for the whole epoch
    assert "Test metrics (1 epochs" in stdout and "accuracy" in stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"accuracy  {metrics['test']['accuracy']:.4f}" in stdout
    assert saved["learning_rate"] == 0.003 and saved["hidden_dim"] == 16 and saved["dataset"] == "digits"
    assert saved["augment"] == "none"


def test_two_runs_with_the_same_seed_augment_and_train_alike(tmp_path):
    # Two processes at once, each mapping its augmentation over batches on
    # parallel threads: every batch draws its random transformations from a
    # seed of its own, so the threads' order does not change the run.
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen([sys.executable, *cli("--run-dir", str(run), "--epochs", "1", "--seed", "5", *TINY,
                                                      "--augment", "strong")],
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for run in runs]
    for proc in procs:
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-3000:]
    first, second = ((run / "history.csv").read_text() for run in runs)
    assert len(first.splitlines()) == 2 and first == second  # a header and the epoch
    test_metrics = [json.loads((run / "metrics.json").read_text())["test"] for run in runs]
    assert test_metrics[0] == test_metrics[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.quiet
def test_two_workers_train_the_same_model(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run = tmp_path / "run"
    procs = []
    for index in range(2):
        worker_env = env()
        worker_env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, *cli("--strategy", "multi_worker", "--run-dir", str(run), "--epochs", "2", *TINY)],
            env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=500)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "Test metrics (2 epochs" in out
    chief = json.loads((run / "metrics.json").read_text())
    worker = json.loads((run / "workers" / "worker_1" / "metrics.json").read_text())
    assert chief["num_workers"] == 2 and chief["epochs"] == worker["epochs"] == 2
    a = keras.saving.load_model(run / "model.keras").get_weights()
    b = keras.saving.load_model(run / "workers" / "worker_1" / "model.keras").get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    assert chief["test"] == worker["test"]


@pytest.mark.parametrize("text, message", [
    ("epochs: [1\n", "is not valid YAML"),
    ('epochs: !!python/object/apply:os.system ["echo hi"]\n', "tags that are not allowed"),
])
def test_bad_config_files_are_usage_errors_without_a_traceback(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"keras-vit train: error: The config file {path}" in err and message in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_usage_errors_of_tune_and_predict_exit_2(tmp_path, capsys):
    assert main(["tune", "--fix", "hidden_dim=abc", "--directory", str(tmp_path)]) == 2
    assert "`hidden_dim` takes ints. Received: hidden_dim='abc'" in capsys.readouterr().err
    assert main(["tune", "--space", "foo=1,2", "--directory", str(tmp_path)]) == 2
    assert "Unknown search-space entries: ['foo']" in capsys.readouterr().err
    for argv, message in ((["tune", "--epochs", "0"], "--epochs: expected an int >= 1, got 0"),
                          (["predict", "m.keras", "x.png", "--top-k", "0"], "--top-k: expected an int >= 1"),
                          (["train", "--jit-compile", "maybe"], "invalid choice: 'maybe'")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
