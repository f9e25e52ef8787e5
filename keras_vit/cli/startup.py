"""Quiet start-up for the `keras-vit` command.

TensorFlow prints native log lines (CUDA probing, oneDNN notices, "failed
call to cuInit") on stderr while it is imported and while its runtime
starts, before any Python code can filter them. The command captures that
stream during those two moments only; `--verbose` or ``KERAS_VIT_VERBOSE=1``
shows everything. If the import fails, the captured lines are printed
before the error, so real problems are never hidden.
"""

import os
import sys
import tempfile


def is_cli_process():
    """True when this process runs the `keras-vit` console script."""
    return os.path.basename(sys.argv[0] if sys.argv else "") == "keras-vit"


def wants_verbose(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return "--verbose" in argv or os.environ.get("KERAS_VIT_VERBOSE", "") not in ("", "0")


def import_backend_quietly():
    """Imports the Keras backend with stderr captured at the file-descriptor
    level; replays what was captured if the import raises."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        failed = True
        try:
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                tf.config.list_physical_devices()
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode("utf-8", "replace"))


def quiet_startup():
    """Called first thing by `keras_vit/__init__.py`: imports the backend
    quietly when this process is the `keras-vit` command."""
    if is_cli_process() and not wants_verbose():
        import_backend_quietly()
