"""The `keras-vit` entry point assembles every stage's sub-command."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO, run_python

from keras_vit import __version__
from keras_vit.cli.main import build_parser, main

COMMANDS = ("train", "tune", "export", "predict", "benchmark", "finetune", "explain")


def test_console_script_is_installed_and_reports_its_version(capsys):
    script = shutil.which("keras-vit")
    assert script, "`pip install -e .` installs the keras-vit console script"
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert proc.returncode == 0 and proc.stdout.strip() == f"keras-vit {__version__}" and proc.stderr == ""
    # answered before Keras and TensorFlow load (seconds)
    code = "import sys; from keras_vit.cli.main import main; main(['--version']); print('tensorflow' in sys.modules)"
    assert run_python(code).stdout.split()[-1] == "False"
    with pytest.raises(SystemExit) as exit_info:  # in this process: a fresh one only adds TensorFlow's import
        main(["fly"])
    assert exit_info.value.code == 2 and "invalid choice: 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: keras-vit {command}")


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


def test_the_package_never_reaches_for_the_benchmarks_folder():
    # the suite runs from a source checkout (tests/test_benchmarks.py runs it
    # from the repository's root); the package never imports it
    package = REPO / "keras_vit"
    assert not any("benchmarks" in p.read_text() and "sys.path" in p.read_text() for p in package.rglob("*.py"))


def test_benchmark_without_models_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: models" in capsys.readouterr().err


def test_commands_start_quietly_and_debug_brings_tensorflow_lines_back(tmp_path):
    """TensorFlow's native start-up lines (CUDA probing, oneDNN notices,
    'failed call to cuInit') are a newcomer's first sight: the command hides
    them unless asked with --debug, and real errors still show. (More in
    test_cli_output.py.)"""
    script = shutil.which("keras-vit")
    quiet = subprocess.run([script, "train", "--epochs", "0", "--run-dir", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        "keras-vit train: error: `epochs` must be an int >= 1. Received: epochs=0"]
    debug = subprocess.run([script, "--debug", "train", "--epochs", "0", "--run-dir", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert debug.returncode == 2 and debug.stderr.strip().splitlines()[-1] == quiet.stderr.strip()
    assert len(debug.stderr.strip().splitlines()) > 1  # TensorFlow's own start-up lines
