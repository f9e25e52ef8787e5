"""Quiet start-up for the `keras-vit` command.

TensorFlow and XLA print native log lines on stderr (``I0000 ...
cudart_stub.cc`` "Could not find cuda drivers", ``cpu_feature_guard``,
``failed call to cuInit``, ``service.cc`` "XLA service ... initialized")
that Python cannot filter. `keras_vit.cli.main.main` calls `quiet_startup`
before anything imports Keras or TensorFlow (importing `keras_vit` imports
neither: its names load on first use). Quiet means:

- ``TF_CPP_MIN_LOG_LEVEL=3`` for TensorFlow's and XLA's own logs, which it
  reads once, when it loads;
- stderr captured at the file-descriptor level while TensorFlow is imported,
  for the lines absl prints before its logging is initialised (which ignore
  that level); if the import fails, the captured lines are printed before
  the error, so real problems are never hidden;
- Python warnings printed as one line, ``keras-vit: warning: MESSAGE``,
  without the source path and line (`warning_format`).

``keras-vit --debug ...`` or ``KERAS_VIT_DEBUG=1`` shows everything as
TensorFlow and Python print it. Python errors always reach stderr.

`refuse_the_other_keras_vit` (`keras_vit._install`, run by
`keras_vit/__init__.py` and again by the command, in case another project's
``keras_vit/__init__.py`` replaced ours) stops with an ImportError when the
other PyPI project named keras-vit is installed.
"""

import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings

from keras_vit._install import DISTRIBUTION, OTHER_DISTRIBUTION, SUMMARY, refuse_the_other_keras_vit  # noqa: F401

DEBUG_ENV = "KERAS_VIT_DEBUG"
PROGRAM = "keras-vit"


def global_options(argv=None):
    """The arguments before the command's name (what follows is the
    command's own), read before argparse, which needs modules that import
    TensorFlow."""
    args = sys.argv[1:] if argv is None else argv
    command = next((i for i, arg in enumerate(args) if not arg.startswith("-")), len(args))
    return list(args[:command])


def wants_debug(argv=None):
    """Whether native logs should show: ``KERAS_VIT_DEBUG`` set (not 0), or
    ``--debug`` among the `global_options`."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off"):
        return True
    return "--debug" in global_options(argv)


def wants_version(argv=None):
    """Whether ``--version`` is among the `global_options`: the command
    answers it without importing Keras or TensorFlow, which take seconds to
    load."""
    return "--version" in global_options(argv)


def configured_backend():
    """The backend Keras will load, read as Keras reads it before it is
    imported: ``KERAS_BACKEND``, else ``keras.json`` in ``KERAS_HOME`` (or
    ``~/.keras``), else TensorFlow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


@contextlib.contextmanager
def without_optional_imports():
    """Keras' and TensorFlow's optional imports that no command uses, made to
    fail inside the block: scikit-learn (for `keras.wrappers`),
    `matplotlib.pyplot` (for `keras.visualization`), IPython (for notebook
    display in `keras.saving`) and, on TensorFlow, JAX (for `tf.lite`'s JAX
    converter). Each module catches the ImportError and goes on without it;
    together they are about 3 s of the command's start-up (`import keras`:
    6.6 s with the block, 9.4 s without, on the 2-vCPU machine the suite runs
    on). After the block the names import as usual (the data and plot code
    import scikit-learn and matplotlib themselves)."""
    names = ["sklearn", "matplotlib.pyplot", "IPython"] + (["jax"] if configured_backend() == "tensorflow" else [])
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # `import name` raises ImportError
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def import_backend_quietly():
    """Imports Keras and TensorFlow (`without_optional_imports`) with stderr
    captured at the file-descriptor level; replays what was captured if the
    import raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        failed = True
        try:
            with without_optional_imports():
                import keras  # noqa: F401

                try:
                    import tensorflow  # noqa: F401 - its native start-up lines, whichever the backend
                except ImportError:
                    pass
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode("utf-8", "replace"))


def quiet_startup(debug=False):
    """Prepares a quiet run of the command, before Keras and TensorFlow are
    imported; with `debug`, leaves every log as it is. Changes nothing when
    TensorFlow is already imported (the command called from Python)."""
    if debug or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # JAX says it fell back to the CPU through Python logging.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    import_backend_quietly()


def show_warning(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` for the command: one line, no source path."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    try:
        (file or sys.stderr).write(f"{PROGRAM}: warning: {text}\n")
    except (OSError, ValueError):  # stderr closed: warnings are lost, as Python's own would be
        pass


@contextlib.contextmanager
def warning_format(debug=False):
    """Python warnings shown by `show_warning` inside the block (Python's
    own format with `debug`); the previous `warnings.showwarning` after."""
    previous = warnings.showwarning
    if not debug:
        warnings.showwarning = show_warning
    try:
        yield
    finally:
        warnings.showwarning = previous
