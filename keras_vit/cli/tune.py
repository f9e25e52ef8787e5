"""`keras-vit tune`: a KerasTuner search over architectures and recipes."""

import json
import os

from keras_vit.cli.common import non_negative_int, positive_int


def _parse_space(entries, name):
    """Parses KEY=VALUE[,VALUE...] (or KEY=LOW:HIGH for a range)."""
    out = {}
    for entry in entries or ():
        if "=" not in entry:
            raise ValueError(f"`--{name}` takes KEY=VALUE. Received: {entry!r}")
        key, text = entry.split("=", 1)

        def number(v):
            for cast in (int, float):
                try:
                    return cast(v)
                except ValueError:
                    pass
            return v

        if ":" in text:
            low, high = (number(v) for v in text.split(":", 1))
            out[key] = (low, high)
        else:
            values = [number(v) for v in text.split(",")]
            out[key] = values if len(values) > 1 or name == "space" else values[0]
    return out


def add_parser(subparsers):
    """Registers `keras-vit tune`."""
    from keras_vit.tuning.space import DEFAULT_SPACE, OBJECTIVES, TUNER_NAMES

    parser = subparsers.add_parser(
        "tune",
        help="Search ViT architectures and training recipes with KerasTuner.",
        description="Hyperparameter search with KerasTuner. Re-run the same command to resume.",
    )
    parser.add_argument("--dataset", default="digits", help="load_data source (default: digits, offline)")
    parser.add_argument("--image-size", type=positive_int, default=16, help="image size in pixels (default: 16)")
    parser.add_argument("--tuner", default="random", choices=TUNER_NAMES, help="search algorithm")
    parser.add_argument("--max-trials", type=positive_int, default=4, help="number of trials (default: 4)")
    parser.add_argument("--executions-per-trial", type=positive_int, default=1, help="models trained per trial")
    parser.add_argument("--epochs", type=positive_int, default=10, help="epochs per trial (default: 10)")
    parser.add_argument("--patience", type=non_negative_int, default=3, help="early-stopping patience in epochs")
    parser.add_argument("--objective", default="val_accuracy", choices=OBJECTIVES, help="metric to optimise")
    parser.add_argument("--directory", default="tuning", help="folder of the search (default: tuning)")
    parser.add_argument("--project-name", default="vit", help="sub-folder of this search")
    parser.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    parser.add_argument("--seed", type=int, default=0, help="seed of the oracle and data split")
    parser.add_argument("--space", action="append", metavar="KEY=V1,V2|LOW:HIGH",
                        help=f"narrow a search-space entry; keys: {', '.join(DEFAULT_SPACE)}")
    parser.add_argument("--fix", action="append", metavar="KEY=VALUE", help="fix a search-space entry")
    parser.add_argument("--top", type=positive_int, default=5, help="rows in the final table (default: 5)")
    parser.set_defaults(run=run)
    return parser


def run(args):
    from keras_vit.tuning import tune
    from keras_vit.tuning.search import project_path

    try:
        project_path(args.directory, args.project_name)  # before the data load
    except ValueError as err:
        raise ValueError(str(err).replace("`project_name`", "`--project-name`")
                         .replace("`directory`", "`--directory`")) from None
    space = _parse_space(args.space, "space")
    fixed = _parse_space(args.fix, "fix")
    _, best_hp = tune(
        args.dataset, tuner=args.tuner, max_trials=args.max_trials,
        executions_per_trial=args.executions_per_trial, objective=args.objective,
        directory=args.directory, project_name=args.project_name, epochs=args.epochs,
        patience=args.patience, image_size=args.image_size, space=space, fixed=fixed,
        overwrite=args.overwrite, seed=args.seed, verbose=2,
    )
    if best_hp is None:
        print("Worker finished; the chief writes the results.")
        return 0
    out_dir = project_path(args.directory, args.project_name)
    with open(os.path.join(out_dir, "results.json")) as f:
        rows = json.load(f)["trials"]
    done = [r for r in rows if r["score"] is not None]
    done.sort(key=lambda r: r["score"], reverse="loss" not in args.objective)
    keys = ["trial_id", "score", "patch_size", "hidden_dim", "num_heads", "depth",
            "learning_rate", "batch_size"]
    print(f"\nBest trials ({args.objective}); {len(rows) - len(done)} failed; results in {out_dir}")
    print(" | ".join(f"{k:>13}" for k in keys))
    for row in done[: args.top]:
        print(" | ".join(f"{_fmt(row.get(k)):>13}" for k in keys))
    return 0


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
