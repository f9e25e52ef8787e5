"""What the auto recipe chooses for data of other kinds: real data reachable
offline (scikit-learn's digits and crops of its sample photos, MNIST at
14, 28 and 56 px, inverted and colour-jittered MNIST) and synthetic sets
of other shapes, each with a 2-minute and a 10-minute budget: the choices
and the probe's findings, in seconds.

    python -m benchmarks.recipe_choices [--mnist ../shared/data/mnist_train.npz]
    python -m benchmarks.recipe_choices --train 2m    # also train on each real set

Writes results/recipe-choices.md. With `--train B`, each real data set is
also written to an .npz file and trained on with the whole command
`keras-vit train --dataset X.npz --time-budget B` (the auto recipe, in a
fresh process, as `benchmarks.time_to_accuracy` runs it), and its test
accuracy, on a split carved before anything else, goes to
results/recipe-generality.{md,json}: how the recipe does on data it was
never tuned on. The synthetic sets have random pixels and labels (chance
is all there is to learn), so they are described but not trained on; nor
is MNIST at 28 px, the set the recipe was tuned on, which
`benchmarks.time_to_accuracy` measures.
"""

import argparse
import os
from pathlib import Path

import numpy as np

from benchmarks.time_to_accuracy import MNIST
from keras_vit.training.auto import choose_recipe, describe_source

RESULTS = Path(__file__).parent / "results"


def _resize(x, side):
    import tensorflow as tf

    x = x[..., None] if x.ndim == 3 else x
    return tf.image.resize(x.astype("float32"), (side, side), antialias=True).numpy().clip(0, 255).astype("uint8")


def _photo_crops(size=64, per_photo=1000, seed=0):
    from sklearn.datasets import load_sample_images

    rng, xs, ys = np.random.default_rng(seed), [], []
    for label, image in enumerate(load_sample_images().images):
        for _ in range(per_photo):
            i, j = rng.integers(0, image.shape[0] - size), rng.integers(0, image.shape[1] - size)
            xs.append(image[i:i + size, j:j + size])
            ys.append(label)
    return np.stack(xs), np.array(ys)


def data_sets(mnist):
    """(name, (x, y)) of every data set the table describes (the real ones
    first; the names of the synthetic ones start with "synthetic")."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    yield "sklearn digits 8 px", (digits.images * 16, digits.target)
    yield "sample-photo crops 64 px colour, 2 classes", _photo_crops()
    rng = np.random.default_rng(0)
    if mnist and os.path.exists(mnist):
        with np.load(mnist) as data:
            x, y = data["x_train"], data["y_train"]
        yield "MNIST 28 px", (x, y)
        yield "MNIST inverted", (255 - x, y)
        sample, labels = x[:20000], y[:20000]
        yield "MNIST 28 px (20k)", (sample, labels)  # the same 20,000 images as the variants below
        yield "MNIST 14 px (20k)", (_resize(sample, 14)[..., 0], labels)
        yield "MNIST 56 px (20k)", (_resize(sample, 56)[..., 0], labels)
        tint = rng.uniform(0.3, 1.0, (len(sample), 1, 1, 3))
        yield "MNIST colour-jittered (20k)", ((sample[..., None] * tint).astype("uint8"), labels)
    yield "synthetic 48x40 colour, 100 classes, 60k", (rng.integers(0, 256, (60000, 48, 40, 3), dtype="uint8"),
                                                        np.arange(60000) % 100)
    yield "synthetic 128 px gray, 5 classes, 800", (rng.integers(0, 256, (800, 128, 128), dtype="uint8"),
                                                    np.arange(800) % 5)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe_choices", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", default=MNIST, help="MNIST .npz (default: KERAS_VIT_MNIST or "
                        "../shared/data/mnist_train.npz beside the checkout)")
    parser.add_argument("--out", default=str(RESULTS / "recipe-choices.md"))
    parser.add_argument("--train", metavar="BUDGET", help="also train on each real data set with this time budget "
                        "(e.g. 2m) and write results/recipe-generality.{md,json}")
    parser.add_argument("--only", help="with --train: train only the data sets whose names contain one of these "
                        "comma-separated words (the other rows of recipe-generality.json are kept)")
    args = parser.parse_args(argv)
    if args.only and not args.train:
        parser.error("--only chooses the data sets to train on; give --train BUDGET too")
    wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None
    trained = []
    lines = ["| data | images | flips keep label (nearest mean: plain → mirrored) | pixel mean | budget | size, patch, "
             "stem | width × depth | augment | progressive | patch dropout |", "|" + "---|" * 10]
    for name, arrays in data_sets(args.mnist):
        shape = describe_source(arrays)
        probe = shape.probe
        seen = (f"{probe['flip_keeps_label']} ({probe.get('nearest_mean_accuracy', 0):.2f} → "
                f"{probe.get('mirrored_accuracy', 0):.2f})")
        for budget in (120, 600):
            f = choose_recipe(shape, budget, cores=2)
            stem = ",".join(map(str, f["conv_stem"])) if f["conv_stem"] else "-"
            lines.append(f"| {name} | {shape.num_examples} | {seen} | {probe['pixel_mean']:.0f} | {budget} s | "
                         f"{f['image_size']} px, {f['patch_size']}, {stem} | {f['hidden_dim']} × {f['depth']} | "
                         f"{f['augment']} | {f['progressive_resize']} | {f['patch_dropout']} |")
        if (args.train and not name.startswith("synthetic") and name != "MNIST 28 px"
                and (wanted is None or any(w in name.lower() for w in wanted))):
            trained.append(dict(train(name, arrays, args.train), data=name))
            print(trained[-1], flush=True)
            write_generality(trained, RESULTS / "recipe-generality")  # after each run: a later failure keeps it
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def train(name, arrays, budget):
    """Writes the arrays to an .npz file and runs the whole `keras-vit
    train --time-budget budget` on it; returns the result row."""
    import tempfile

    from benchmarks.time_to_accuracy import run_budget

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (name.split(" (")[0].replace(" ", "_") + ".npz")
        np.savez(path, x_train=arrays[0], y_train=arrays[1])
        return run_budget(str(path), budget, Path(tmp) / "run")


def write_generality(rows, out):
    """results/recipe-generality.{json,md}: the trained rows, replacing the
    rows of the same data, backend and budget already there."""
    import json

    from benchmarks.time_to_accuracy import row_backend, tools_text

    def key(row):
        return row["data"], row_backend(row), row["budget"]

    kept = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else []
    rows = [r for r in kept if key(r) not in {key(n) for n in rows}] + rows
    lines = ["| data | backend | budget | wall s | test accuracy | epochs | steps | model | tools | load |",
             "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['data']} | {row_backend(r)} | {r['budget']} | {r['wall_seconds']} | "
                     f"{r['test_accuracy']:.4f} | {r['epochs']} | {r['steps']} | {r['model']} | {tools_text(r)} | "
                     f"{r['load']} |")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
