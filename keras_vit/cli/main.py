"""`keras-vit`: the entry point, its sub-commands and its one error rule.

Every command lives in its own module under `keras_vit.cli` with two
functions: ``add_parser(subparsers)`` and ``run(args)``. Errors follow one
rule: a `ValueError` (or a missing file) raised by keras_vit's own checks is
a usage or input error, printed as ``keras-vit COMMAND: error: ...`` with
exit code 2 and no traceback, like argparse's own usage errors. A full
disk is said as such, exit code 1 and no traceback. Anything else is a
bug: the traceback is printed with a line asking to report it, exit code 1.

The command starts quiet (`keras_vit.cli.startup`): no native TensorFlow or
XLA log lines, and Python warnings as ``keras-vit: warning: ...`` lines;
``keras-vit --debug`` (or ``KERAS_VIT_DEBUG=1``) shows everything.
"""

import argparse
import importlib
import os
import sys
import traceback

from keras_vit.cli import startup

# Command modules, in the order of the workflow.
COMMAND_MODULES = (
    "keras_vit.cli.train",
    "keras_vit.cli.tune",
    "keras_vit.cli.export",
    "keras_vit.cli.predict",
    "keras_vit.cli.benchmark",
    "keras_vit.cli.finetune",
    "keras_vit.cli.explain",
)
KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CliError(ValueError):
    """A usage or input error of a command; printed without a traceback."""


def _ours(err):
    """Whether `err` was raised by keras_vit's own code (not deeper down)."""
    if isinstance(err, CliError):
        return True
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(PACKAGE_DIR)


def build_parser():
    from keras_vit._install import __version__

    parser = argparse.ArgumentParser(
        prog="keras-vit",
        description="Train, tune, export and inspect Vision Transformers built with keras_vit.",
        allow_abbrev=False,  # --debug is read before parsing (startup.wants_debug): no --deb
    )
    parser.add_argument("--version", action="version", version=f"keras-vit {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show TensorFlow's and XLA's native log lines and Python warnings with "
                             f"their source lines (also {startup.DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def run_command(args):
    """Runs the parsed command under the error rule; returns the exit code."""
    from keras_vit.utils.validation import SearchFailedError
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError) as err:
        if not _ours(err):
            return _bug(args)
        print(f"keras-vit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except SearchFailedError as err:  # the data or the space failed every model: not a bug, not a usage error
        print(f"keras-vit {args.command}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - TensorFlow, h5py, zipfile and KerasTuner report a full disk in their types
        from keras_vit.utils.io import DiskFullError, is_disk_full

        if not is_disk_full(err):
            raise
        message = err.strerror if isinstance(err, DiskFullError) else (
            f"The disk is full: no space left while writing ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}). Free some space and run the same command again.")
        print(f"keras-vit {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"keras-vit {args.command}: interrupted", file=sys.stderr)
        return 130


def _bug(args):
    traceback.print_exc()
    print(f"keras-vit {args.command}: internal error (a bug in keras_vit or below it); "
          "please report it with the traceback above.", file=sys.stderr)
    return 1


def main(argv=None):
    startup.refuse_the_other_keras_vit()  # also when another keras_vit/__init__.py was loaded
    backend = os.environ.get("KERAS_BACKEND")
    if backend is not None and backend not in KERAS_BACKENDS:  # Keras' own import would end in a traceback
        print(f"keras-vit: error: the environment variable KERAS_BACKEND={backend!r} names no Keras backend; "
              f"accepted: {', '.join(KERAS_BACKENDS)} (or unset it: TensorFlow).", file=sys.stderr)
        return 2
    if startup.wants_version(argv):  # without the seconds of loading TensorFlow
        from keras_vit._install import __version__

        print(f"keras-vit {__version__}")
        return 0
    debug = startup.wants_debug(argv)
    startup.quiet_startup(debug)  # before anything imports Keras or TensorFlow
    with startup.warning_format(debug):
        import keras_vit.layers  # noqa: F401 - registers the layers and models with Keras
        import keras_vit.models  # noqa: F401

        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        try:
            return run_command(args)
        except Exception:  # noqa: BLE001 - everything else is a bug, reported as such
            return _bug(args)


if __name__ == "__main__":
    sys.exit(main())
