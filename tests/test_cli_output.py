"""What the `keras-vit` command prints: no native TensorFlow/XLA log lines and
no Python warning with a source path unless `--debug` asks, one line per
epoch when stdout is a pipe; and `import keras_vit` refuses the other PyPI
project named keras-vit, which also installs a `keras_vit` module."""

import os
import re
import shutil
import subprocess
import sys
import warnings

import pytest

import keras_vit
from keras_vit.cli import startup
from keras_vit.cli.main import main
from tests.conftest import REPO, tiny_train_flags

TINY = tiny_train_flags()
NATIVE_LOG = re.compile(
    r"^[IWEF]\d{4} |service\.cc|cpu_feature_guard|cudart_stub|absl::InitializeLog", re.MULTILINE)
SOURCE_WARNING = re.compile(r"\.py:\d+: \w*Warning:")
EPOCH_LINE = re.compile(r"^\d+/\d+ - .*loss", re.MULTILINE)


def keras_vit_command(*args, **env):
    """Runs the installed console script on this checkout, stdout and stderr
    pipes, with TensorFlow's own log level wide open: the command, not the
    environment, has to keep it quiet."""
    script = shutil.which("keras-vit")
    assert script, "`pip install -e .` installs the keras-vit console script"
    full = {k: v for k, v in os.environ.items() if k != startup.DEBUG_ENV}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([full["PYTHONPATH"]] if full.get("PYTHONPATH") else []))
    full.update(TF_CPP_MIN_LOG_LEVEL="0", **env)
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=600, env=full)


def assert_quiet(proc):
    both = proc.stdout + proc.stderr
    assert not NATIVE_LOG.search(both), both[-3000:]
    assert not SOURCE_WARNING.search(both), both[-3000:]


def test_a_piped_run_is_quiet_with_one_line_per_epoch_and_one_line_warnings(tmp_path):
    # warmup_epochs (3 by default) is not shorter than 2 epochs: keras_vit warns
    proc = keras_vit_command("train", "--epochs", "2", "--run-dir", str(tmp_path / "run"), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_quiet(proc)
    assert "\r" not in proc.stdout  # no progress bar in a pipe
    assert len(EPOCH_LINE.findall(proc.stdout)) == 2, proc.stdout
    assert proc.stdout.count("Epoch 1/2") == 1 and proc.stdout.count("Epoch 2/2") == 1
    assert "Test metrics (2 epochs" in proc.stdout
    assert proc.stderr.splitlines() == [
        "keras-vit: warning: warmup_epochs=3 is not shorter than epochs=2; using warmup_epochs=0.2 "
        "(10% of the run)."]


def test_verbose_0_prints_no_epoch_lines_and_no_native_logs(tmp_path):
    proc = keras_vit_command("train", "--epochs", "1", "--warmup-epochs", "0", "--verbose", "0",
                             "--run-dir", str(tmp_path / "run"), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_quiet(proc)
    assert proc.stderr == ""
    assert not EPOCH_LINE.search(proc.stdout) and "Epoch" not in proc.stdout
    assert "Test metrics (1 epochs" in proc.stdout


def test_debug_switch_is_accepted():
    """KERAS_VIT_DEBUG=1 (like --debug, in test_cli.py) lets native lines
    through; whether TensorFlow prints any is its own business. Errors
    reaching stderr: test_cli.py too."""
    proc = keras_vit_command("--version", **{startup.DEBUG_ENV: "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == f"keras-vit {keras_vit.__version__}"


@pytest.mark.parametrize("argv, debug", [
    (["--debug", "train"], True),
    (["train", "--verbose", "0"], False),
    (["train", "--run-dir", "x"], False),
    (["train", "--debug"], False),  # after the command it is the command's (unknown) flag
    (["--version"], False),
])
def test_debug_is_a_global_flag_only(monkeypatch, argv, debug):
    monkeypatch.delenv(startup.DEBUG_ENV, raising=False)
    assert startup.wants_debug(argv) is debug
    monkeypatch.setenv(startup.DEBUG_ENV, "1")
    assert startup.wants_debug(argv) is True
    monkeypatch.setenv(startup.DEBUG_ENV, "0")
    assert startup.wants_debug(argv) is debug


def test_the_command_loads_before_keras_so_its_start_up_can_be_quiet():
    """`keras-vit` imports keras_vit and its own modules first; nothing of
    them imports Keras, so `quiet_startup` runs before TensorFlow loads."""
    code = "import sys, keras_vit.cli.main; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_warnings_are_one_line_inside_the_command_only(capsys):
    before = warnings.showwarning
    with startup.warning_format():
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("first line\n  second line", UserWarning)
    assert warnings.showwarning is before
    assert capsys.readouterr().err == "keras-vit: warning: first line second line\n"


@pytest.mark.parametrize("flags, tty, expected", [
    ([], False, 2), ([], True, 1), (["--verbose", "1"], False, 1), (["--verbose", "0"], True, 0)])
def test_progress_is_a_line_per_epoch_unless_on_a_terminal(monkeypatch, tmp_path, flags, tty, expected):
    import keras_vit.training.run as run_module

    seen = {}

    def fake_train(recipe, **kwargs):
        seen["verbose"] = recipe.verbose
        return run_module.TrainResult(model=None, history=[], test_metrics=None, run_dir=str(tmp_path),
                                      initial_epoch=0)

    monkeypatch.setattr(run_module, "train_from_config", fake_train)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty, raising=False)
    assert main(["train", "--run-dir", str(tmp_path), *flags]) == 0
    assert seen["verbose"] == expected


# The other project: keras-vit 1.0.1 on PyPI (github.com/djsaber/Keras-ViT).
OTHER_FILES = ["keras_vit/__init__.py", "keras_vit/config.py", "keras_vit/layers.py", "keras_vit/utils.py",
               "keras_vit/vit.py"]


def fake_distribution(root, version, summary, files):
    info = root / f"keras_vit-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: keras-vit\nVersion: {version}\nSummary: {summary}\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]))
    return root


def test_the_other_keras_vit_is_refused_with_the_fix(tmp_path):
    root = fake_distribution(tmp_path, "1.0.1", "Implementation of ViT model based on Keras", OTHER_FILES)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", "import keras_vit"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=str(tmp_path))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: The distribution 'keras-vit' 1.0.1 (Implementation of ViT model")
    assert keras_vit.DISTRIBUTION in last and "pip uninstall keras-vit" in last
    assert f"pip install --force-reinstall {keras_vit.DISTRIBUTION}" in last


def test_an_older_install_of_this_project_under_the_old_name_is_fine(tmp_path, monkeypatch):
    """CI machines may keep an editable install of this repository made when
    it was still called keras-vit (0.2.0, with our summary)."""
    root = fake_distribution(tmp_path, "0.2.0", startup.SUMMARY + ": train, tune, export.",
                             ["__editable__.keras_vit-0.2.0.pth"])
    monkeypatch.syspath_prepend(str(root))
    startup.refuse_the_other_keras_vit()  # no error
    other = fake_distribution(tmp_path / "other", "1.0.1", "Implementation of ViT model based on Keras", OTHER_FILES)
    monkeypatch.syspath_prepend(str(other))
    with pytest.raises(ImportError, match="another project"):
        startup.refuse_the_other_keras_vit()
    # the command checks again: the other project's keras_vit/__init__.py may have replaced ours
    with pytest.raises(ImportError, match="pip uninstall keras-vit"):
        main(["--version"])
