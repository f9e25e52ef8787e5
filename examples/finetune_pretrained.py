"""Fine-tune a pretrained ViT checkpoint on an image folder.

With a real checkpoint (nothing is downloaded; pass files you have):

    python examples/finetune_pretrained.py --checkpoint ViT-B_16.npz \
        --data flowers/ --image-size 384 --run-dir runs/flowers

    python examples/finetune_pretrained.py --checkpoint vit_small_patch16_224.safetensors \
        --data tf_flowers --run-dir runs/tf_flowers   # a TFDS name prepared locally

`flowers/` holds one sub-folder of images per class (or train/val/test
folders of those). Re-running the same command resumes.

`--demo` runs the same steps offline in about a minute: it writes a small
random checkpoint in the original ViT .npz naming (a stand-in for a real
one) and an image folder of scikit-learn's digits, then fine-tunes at a new
resolution and prints the test accuracy.
"""

import argparse
import os
import tempfile

import numpy as np

from keras_vit.training import fine_tune


def write_demo_checkpoint(path, dim=32, depth=2, heads=4, mlp=64, patch=4, grid=4, classes=1000, seed=0):
    """A random checkpoint with the original ViT .npz names and shapes."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.05):
        return (scale * rng.standard_normal(shape)).astype("float32")

    arrays = {
        "embedding/kernel": r(patch, patch, 3, dim), "embedding/bias": r(dim), "cls": r(1, 1, dim),
        "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, dim),
        "Transformer/encoder_norm/scale": 1 + r(dim), "Transformer/encoder_norm/bias": r(dim),
        "head/kernel": r(dim, classes), "head/bias": r(classes),
    }
    for i in range(depth):
        block = f"Transformer/encoderblock_{i}/"
        mha = block + "MultiHeadDotProductAttention_1/"
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            arrays.update({f"{block}{norm}/scale": 1 + r(dim), f"{block}{norm}/bias": r(dim)})
        for part in ("query", "key", "value"):
            arrays.update({f"{mha}{part}/kernel": r(dim, heads, dim // heads), f"{mha}{part}/bias": r(heads, dim // heads)})
        arrays.update({f"{mha}out/kernel": r(heads, dim // heads, dim), f"{mha}out/bias": r(dim)})
        for j, (n_in, n_out) in enumerate(((dim, mlp), (mlp, dim))):
            arrays.update({f"{block}MlpBlock_3/Dense_{j}/kernel": r(n_in, n_out),
                           f"{block}MlpBlock_3/Dense_{j}/bias": r(n_out)})
    np.savez(path, **arrays)
    return path


def write_digits_folder(root, size=16, per_class=60):
    """scikit-learn's 8 x 8 digits as RGB PNGs, one sub-folder per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = {}
    for image, label in zip(digits.images, digits.target):
        n = counts[label] = counts.get(label, 0) + 1
        if n > per_class:
            continue
        folder = os.path.join(root, str(label))
        os.makedirs(folder, exist_ok=True)
        pixels = (image / 16.0 * 255).astype("uint8")
        Image.fromarray(pixels).convert("RGB").resize((size, size), Image.NEAREST).save(
            os.path.join(folder, f"{n}.png")
        )
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help=".npz, .safetensors or .pth file")
    parser.add_argument("--data", help="image folder, one sub-folder per class, or a local TFDS name")
    parser.add_argument("--run-dir", default="runs/finetune")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--num-heads", type=int)
    parser.add_argument("--epochs", type=int, help="full fine-tuning epochs (default 3; 8 with --demo)")
    parser.add_argument("--frozen-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--demo", action="store_true", help="run offline on a random checkpoint and digits")
    args = parser.parse_args(argv)

    if args.demo:
        workdir = tempfile.mkdtemp(prefix="keras_vit_demo_")
        args.checkpoint = write_demo_checkpoint(os.path.join(workdir, "demo_vit.npz"))
        args.data = write_digits_folder(os.path.join(workdir, "digits"))
        args.image_size = args.image_size or 24  # the checkpoint is 16 px: positions are resampled
        args.epochs = 8 if args.epochs is None else args.epochs
        args.learning_rate = 2e-3
        args.run_dir = os.path.join(workdir, "run")
    elif not (args.checkpoint and args.data):
        parser.error("pass --checkpoint and --data, or --demo")
    if args.epochs is None:
        args.epochs = 3

    result = fine_tune(
        args.checkpoint, args.data, run_dir=args.run_dir, image_size=args.image_size,
        epochs=args.epochs, frozen_epochs=args.frozen_epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, num_heads=args.num_heads, verbose=2,
    )
    model = result.model
    print(f"saved {os.path.join(result.run_dir, 'model.keras')}: input {model.input_shape[1:3]}, "
          f"{model.num_classes} classes {model.class_names}")
    first, last = result.history[0], result.history[-1]
    print(f"loss: {first['loss']:.3f} (first epoch, {first['stage']}) -> {last['loss']:.3f} (last)")
    if result.test_metrics:
        print(f"test accuracy: {result.test_metrics['accuracy']:.3f}")


if __name__ == "__main__":
    main()
