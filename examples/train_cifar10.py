"""Train a ViT from scratch on CIFAR-10 with the full recipe ("cifar10"):
ViT-Ti with 4x4 patches, RandAugment + MixUp + CutMix, label smoothing,
AdamW with warmup and cosine decay, EMA of the weights and mixed precision.

CIFAR-10 must already be prepared in the TFDS data directory (run
`tfds build cifar10` once with network access, or pass --download):

    python examples/train_cifar10.py --data-dir ~/tensorflow_datasets
    python examples/train_cifar10.py --epochs 1 --tiny      # a smoke test

Any flag of `keras-vit train` can be added (e.g. --strategy mirrored).
"""

import argparse

from keras_vit.training import resolve_recipe, train_from_config

TINY = dict(jit_compile=False, image_size=16, patch_size=4, hidden_dim=16, depth=1, num_heads=2,
            mlp_dim=32, batch_size=16, precision="float32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--download", action="store_true", help="let TFDS download CIFAR-10")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's 200)")
    parser.add_argument("--run-dir", default="runs/cifar10", help="run directory")
    parser.add_argument("--tiny", action="store_true", help="a tiny model in float32, for smoke tests")
    args = parser.parse_args(argv)
    config = resolve_recipe(
        "cifar10", data_dir=args.data_dir, download=args.download or None, epochs=args.epochs,
        run_dir=args.run_dir, **(TINY if args.tiny else {}))
    result = train_from_config(config)
    print(f"test accuracy: {result.test_metrics['accuracy']:.4f}  (run dir: {result.run_dir})")
    return result


if __name__ == "__main__":
    main()
