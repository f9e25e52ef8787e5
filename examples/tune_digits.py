"""Searches ViT sizes and training recipes on scikit-learn's digits (offline).

    python examples/tune_digits.py --max-trials 4 --epochs 8

Re-run the same command to resume an interrupted search. Results land in
`tuning/digits/` (best_model.keras, results.csv, results.json, trials.png,
TensorBoard logs with the HParams dashboard).
"""

import argparse

from keras_vit.tuning import tune


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--tuner", default="random", choices=["random", "hyperband", "bayesian"])
    parser.add_argument("--directory", default="tuning")
    parser.add_argument("--image-size", type=int, default=16)
    args = parser.parse_args(argv)
    model, hp = tune(
        "digits", tuner=args.tuner, max_trials=args.max_trials, epochs=args.epochs,
        image_size=args.image_size, directory=args.directory, project_name="digits",
        # A space sized for 16 px digits: narrow widths, patch 4, a few blocks.
        space={"hidden_dim": [32, 64], "depth": (2, 4), "patch_size": [4]},
        verbose=2,
    )
    print("best hyperparameters:", hp.values)


if __name__ == "__main__":
    main()
