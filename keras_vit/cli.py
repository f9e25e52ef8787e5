"""The `keras-vit` command line: one sub-command per stage of the workflow.

Each module below registers its own sub-commands through an
``add_cli(subparsers)`` function, so this file only assembles them.
"""

import argparse
import importlib
import sys

# Modules that contribute sub-commands, in the order of the workflow.
CLI_MODULES = (
    "keras_vit.training",
    "keras_vit.tuning",
    "keras_vit.export",
    "keras_vit.weights",
    "keras_vit.visualize",
)


def build_parser():
    from keras_vit import __version__

    parser = argparse.ArgumentParser(
        prog="keras-vit",
        description="Train, tune, export and inspect Vision Transformers built with keras_vit.",
    )
    parser.add_argument("--version", action="version", version=f"keras-vit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in CLI_MODULES:
        importlib.import_module(name).add_cli(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
