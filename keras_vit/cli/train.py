"""`keras-vit train`: a recipe, a config file and flags to a trained run."""

from keras_vit.models.classifier import POOLINGS
from keras_vit.models.presets import PRESETS
from keras_vit.training.distribute import PRECISIONS, STRATEGIES
from keras_vit.training.recipe import AUGMENT_NAMES, CONFIG_KEYS, DEFAULT_RECIPE, RECIPES

JIT_CHOICES = {"auto": "auto", "true": True, "false": False}


def augment_arg(value):
    """An augmentation name or a strength in [0, 1]."""
    try:
        return float(value)
    except ValueError:
        return value


def add_parser(subparsers):
    """Registers the `keras-vit train` sub-command."""
    parser = subparsers.add_parser(
        "train", help="Train a ViT (default: from scratch on the bundled digits).",
        description=(
            "Train a Vision Transformer in a run directory that resumes after a crash. "
            "Settings come from a recipe, then --config FILE, then the flags; flags left "
            "out keep the recipe's values. Re-running the same command resumes."),
    )
    g = parser.add_argument_group("recipe and run")
    g.add_argument("--recipe", choices=sorted(RECIPES), help=f"named settings (default: {DEFAULT_RECIPE})")
    g.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings (keys as the flags, with _)")
    g.add_argument("--run-dir", help="run directory (default: runs/<dataset>-<recipe>)")
    resume = g.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_const", const=True,
                        help="require a backup in --run-dir and resume from it "
                             "(default: resume when one exists)")
    resume.add_argument("--restart", dest="resume", action="store_const", const=False,
                        help="delete the earlier run's state in --run-dir and start over")
    g.add_argument("--seed", type=int, help="seed of the splits, shuffles and initial weights (default: 0)")
    g.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras progress output (default: bar)")
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", help="'digits' (default), a TFDS name, an image folder or an .npz file")
    g.add_argument("--data-dir", help="TFDS data directory")
    g.add_argument("--download", action="store_const", const=True,
                   help="let TFDS download a missing dataset (needs network)")
    g.add_argument("--image-size", type=int, help="images are resized to this size")
    g.add_argument("--batch-size", type=int, help="batch size")
    g.add_argument("--validation-split", type=float, help="fraction of train held out for validation")
    g.add_argument("--test-split", type=float, help="fraction held out for testing where there is no test split")
    g.add_argument("--augment", type=augment_arg,
                   help=f"augmentation: one of {', '.join(AUGMENT_NAMES)} or a strength in [0, 1]")
    g.add_argument("--channels", type=int, choices=(1, 3), help="convert images to 1 or 3 channels")
    g = parser.add_argument_group("model")
    g.add_argument("--preset", choices=list(PRESETS), metavar="PRESET",
                   help=f"ViT preset: {', '.join(PRESETS)}")
    for flag, kind, text in (
        ("--patch-size", int, "patch size"), ("--hidden-dim", int, "token width"),
        ("--depth", int, "number of transformer blocks"), ("--num-heads", int, "attention heads"),
        ("--mlp-dim", int, "MLP width"), ("--dropout", float, "dropout rate"),
        ("--drop-path-rate", float, "stochastic depth rate of the last block"),
        ("--num-registers", int, "register tokens"),
    ):
        g.add_argument(flag, type=kind, help=text)
    g.add_argument("--pooling", choices=POOLINGS, help="cls, gap or map pooling")
    g.add_argument("--pos-embedding", choices=("learned", "sincos", "none"), help="position embeddings")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="total epochs")
    g.add_argument("--learning-rate", type=float, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (not on biases, norms, tokens)")
    g.add_argument("--warmup-epochs", type=float, help="epochs of linear warmup before cosine decay")
    g.add_argument("--min-learning-rate", type=float, help="learning rate at the end of the cosine")
    g.add_argument("--label-smoothing", type=float, help="label smoothing")
    g.add_argument("--clipnorm", type=float, help="global gradient-norm clipping")
    g.add_argument("--ema-momentum", type=float, help="EMA of the weights with this momentum")
    g.add_argument("--gradient-accumulation-steps", "--grad-accum", type=int,
                   help="batches whose gradients are averaged per update")
    g = parser.add_argument_group("hardware")
    g.add_argument("--precision", choices=PRECISIONS, help="float32 (default) or mixed precision")
    g.add_argument("--jit-compile", type=str.lower, choices=JIT_CHOICES, help="XLA compilation")
    g.add_argument("--steps-per-execution", type=int, help="batches per compiled call")
    g.add_argument("--strategy", choices=STRATEGIES, help="distribution strategy (multi_worker reads TF_CONFIG)")
    parser.set_defaults(run=run, _parser=parser)
    return parser


def _print_table(title, metrics):
    print(f"\n{title}")
    width = max(len(k) for k in metrics)
    print(f"  {'metric'.ljust(width)}  value")
    for key, value in metrics.items():
        print(f"  {key.ljust(width)}  {value:.4f}")


def run(args):
    from keras_vit.training.recipe import resolve_recipe
    from keras_vit.training.run import train_from_config

    settings = {k: getattr(args, k, None) for k in CONFIG_KEYS if k != "recipe"}
    if settings.get("jit_compile") is not None:
        settings["jit_compile"] = JIT_CHOICES[settings["jit_compile"]]
    config = resolve_recipe(args.recipe, args.config, **settings)
    result = train_from_config(config)
    if result.test_metrics:
        _print_table(f"Test metrics ({len(result.history)} epochs, run dir {result.run_dir})",
                     result.test_metrics)
    return 0
