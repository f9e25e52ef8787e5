"""Fine-tune a pretrained ViT checkpoint on an image folder.

With a real checkpoint (nothing is downloaded; pass files you have):

    python examples/finetune_pretrained.py --checkpoint ViT-B_16.npz \
        --data flowers/train --validation-data flowers/val --image-size 384

    python examples/finetune_pretrained.py --checkpoint vit_small_patch16_224.safetensors \
        --data flowers/train --num-heads 6

`--demo` runs the same steps offline in seconds: it writes a small random
checkpoint in the original ViT .npz naming (a stand-in for a real one) and
an image folder of scikit-learn's digits, then fine-tunes at a new
resolution and prints the accuracy.
"""

import argparse
import os
import tempfile

import numpy as np

from keras_vit import weights


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


def write_digits_folders(root, size=16, train_per_class=40, val_per_class=20):
    """scikit-learn's 8 x 8 digits as RGB PNGs, one sub-folder per class, in
    separate train and val folders (different images)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = {}
    for image, label in zip(digits.images, digits.target):
        n = counts[label] = counts.get(label, 0) + 1
        if n > train_per_class + val_per_class:
            continue
        folder = os.path.join(root, "train" if n <= train_per_class else "val", str(label))
        os.makedirs(folder, exist_ok=True)
        pixels = (image / 16.0 * 255).astype("uint8")
        Image.fromarray(pixels).convert("RGB").resize((size, size), Image.NEAREST).save(
            os.path.join(folder, f"{n}.png")
        )
    return os.path.join(root, "train"), os.path.join(root, "val")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help=".npz, .safetensors or .pth file")
    parser.add_argument("--data", help="image folder, one sub-folder per class, or a local TFDS name")
    parser.add_argument("--validation-data")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--num-heads", type=int)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", default="finetuned.keras")
    parser.add_argument("--demo", action="store_true", help="run offline on a random checkpoint and digits")
    args = parser.parse_args(argv)

    if args.demo:
        workdir = tempfile.mkdtemp(prefix="keras_vit_demo_")
        args.checkpoint = write_demo_checkpoint(os.path.join(workdir, "demo_vit.npz"))
        args.data, args.validation_data = write_digits_folders(os.path.join(workdir, "digits"))
        args.image_size = args.image_size or 24  # the checkpoint is 16 px: positions are resampled
        args.epochs, args.batch_size = max(args.epochs, 6), 32
        args.output = os.path.join(workdir, "finetuned.keras")
    elif not (args.checkpoint and args.data):
        parser.error("pass --checkpoint and --data, or --demo")

    model, history = weights.fine_tune(
        args.checkpoint, args.data, image_size=args.image_size, epochs=args.epochs,
        warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
        learning_rate=1e-3 if args.demo else 1e-4, validation_data=args.validation_data,
        num_heads=args.num_heads, output=args.output, verbose=2,
    )
    print(f"saved {args.output}: input {model.input_shape[1:3]}, {model.output_shape[-1]} classes")
    for key in ("loss", "accuracy", "val_accuracy"):
        if key in history:
            print(f"{key}: {history[key][0]:.3f} (first epoch) -> {history[key][-1]:.3f} (last)")


if __name__ == "__main__":
    main()
