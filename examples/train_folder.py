"""Train a ViT from scratch on any image folder with the small-data recipe.

The folder holds one sub-folder per class (`root/<class>/*.jpg`), or
`root/train/<class>/...` with optional `root/val/...` and `root/test/...`.
Unreadable files are skipped with a warning that lists them.

    python examples/train_folder.py path/to/images
    python examples/train_folder.py path/to/images --image-size 64 --epochs 50
    python examples/train_folder.py path/to/images --epochs 1 --tiny   # smoke test
"""

import argparse

from keras_vit.training import resolve_recipe, train_from_config

TINY = dict(jit_compile=False, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32, batch_size=8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="image folder")
    parser.add_argument("--image-size", type=int, default=32, help="image size (default: 32)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's 100)")
    parser.add_argument("--run-dir", help="run directory (default: runs/<folder>-small)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for smoke tests")
    args = parser.parse_args(argv)
    config = resolve_recipe(
        "small", dataset=args.folder, image_size=args.image_size, epochs=args.epochs,
        run_dir=args.run_dir, **(TINY if args.tiny else {}))
    result = train_from_config(config)
    print(f"test accuracy: {result.test_metrics['accuracy']:.4f}  (run dir: {result.run_dir})")
    return result


if __name__ == "__main__":
    main()
