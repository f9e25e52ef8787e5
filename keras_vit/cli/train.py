"""`keras-vit train`: a recipe, a config file and flags to a trained run.

The flags are made from the fields of `keras_vit.training.Recipe`, so every
setting is listed once.
"""

import argparse
import dataclasses
import sys

from keras_vit.training.recipe import DEFAULT_RECIPE, Recipe

JIT_CHOICES = {"auto": "auto", "true": True, "false": False}


def augment_arg(value):
    """An augmentation name or a strength in [0, 1]."""
    try:
        return float(value)
    except ValueError:
        return value


def channels_arg(value):
    """Comma-separated channel counts ("32,64,128"), or "none" for []."""
    if value.strip().lower() == "none":
        return []
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated channel counts such as 32,64,128, or none; got {value!r}") from None


def _add_field(group, field):
    meta, flag = field.metadata, "--" + field.name.replace("_", "-")
    default = "" if field.default is None or "(default" in meta["help"] else f" (default: {field.default})"
    if field.name == "resume":
        resume = group.add_mutually_exclusive_group()
        resume.add_argument("--resume", dest="resume", action="store_const", const=True,
                            help="require a backup in --run-dir and resume from it (default: resume when one exists)")
        resume.add_argument("--restart", dest="resume", action="store_const", const=False,
                            help="delete the earlier run's state in --run-dir and start over")
    elif meta["kind"] is bool:
        group.add_argument(flag, action="store_const", const=True, help=meta["help"])
    elif field.name == "jit_compile":
        group.add_argument(flag, type=str.lower, choices=JIT_CHOICES, help=meta["help"] + default)
    elif field.name == "verbose":
        group.add_argument(flag, type=int, choices=(0, 1, 2), help=meta["help"] + (
            ": 0 silent, 1 a progress bar, 2 one line per epoch (default: a progress bar on a terminal, "
            "one line per epoch when the output goes to a file or a pipe)"))
    else:
        kind = {"augment": augment_arg, "duration": str, "channels": channels_arg}.get(meta["kind"], meta["kind"])
        choices = meta["choices"]
        extra = dict(metavar=field.name.upper()) if choices and len(choices) > 6 else {}
        help_text = meta["help"] + (f": {', '.join(map(str, choices))}" if extra else "") + default
        group.add_argument(flag, type=kind, choices=choices, help=help_text, **extra)


def add_parser(subparsers):
    """Registers the `keras-vit train` sub-command."""
    parser = subparsers.add_parser(
        "train", help="Train a ViT (default: from scratch on the bundled digits).",
        description=(
            "Train a Vision Transformer in a run directory that resumes after a crash. "
            "Settings come from a recipe, then --config FILE, then the flags; flags left "
            "out keep the recipe's values. Re-running the same command resumes."),
    )
    groups = {}
    for field in dataclasses.fields(Recipe):
        name = field.metadata["group"]
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
            if name == "recipe and run":
                groups[name].add_argument(
                    "--config", metavar="FILE", help="YAML or JSON file of settings (keys as the flags, with _)")
        _add_field(groups[name], field)
    parser.set_defaults(run=run)
    return parser


def _print_table(title, metrics):
    print(f"\n{title}")
    width = max(len(k) for k in metrics)
    print(f"  {'metric'.ljust(width)}  value")
    for key, value in metrics.items():
        print(f"  {key.ljust(width)}  {value:.4f}")


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def run(args):
    from keras_vit.training.auto import ARCHITECTURE_FIELDS
    from keras_vit.training.run import train_from_config

    settings = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Recipe) if f.name != "recipe"}
    if settings.get("jit_compile") is not None:
        settings["jit_compile"] = JIT_CHOICES[settings["jit_compile"]]
    recipe = Recipe.from_sources(args.recipe or None, args.config, **settings)
    if recipe.verbose == "auto":  # a progress bar's carriage returns would fill a log file
        recipe = dataclasses.replace(recipe, verbose=1 if _is_terminal(sys.stdout) else 2)
    if recipe.recipe == "auto":
        if recipe.preset:
            changed = ", ".join(f"{name}={getattr(recipe, name)}" for name in ARCHITECTURE_FIELDS
                                if getattr(recipe, name) not in (None, []))
            network = f"preset {recipe.preset}" + (f" ({changed})" if changed else "")
        else:
            if recipe.conv_stem:
                made = f" from a stem of {len(recipe.conv_stem)} convolutions ({','.join(map(str, recipe.conv_stem))})"
            else:
                made = f" at stride {recipe.stride}" if recipe.stride else ""
            network = (f"{recipe.patch_size} px patches{made}, width {recipe.hidden_dim}, depth {recipe.depth}, "
                       f"{recipe.num_heads} heads")
        print(f"Recipe chosen from the data: {recipe.image_size} px, {network}, batch {recipe.batch_size}, "
              f"learning rate {recipe.learning_rate:g}, augment {recipe.augment}, validation/test splits "
              f"{recipe.validation_split:g}/{recipe.test_split:g} (any flag overrides a choice).", flush=True)
    from keras_vit.training.budget import process_start_time

    result = train_from_config(recipe, budget_start=process_start_time())  # a budget counts from the start
    if result.test_metrics:
        _print_table(f"Test metrics ({len(result.history)} epochs, run dir {result.run_dir})",
                     result.test_metrics)
    return 0


__all__ = ["DEFAULT_RECIPE", "add_parser", "run"]
