"""Draw a ViT's attention rollout over an image.

    python examples/explain.py photo.jpg --model finetuned.keras --output photo_attention.png
    python examples/explain.py photo.jpg --model ViT-B_16.npz --head-fusion max

The same as `keras-vit explain photo.jpg --model finetuned.keras`, plus the
per-layer maps: it prints how much the class token attends to the patches
in each block and writes one overlay per head fusion (mean, max, min).

`--demo` runs offline: a small ViT trained for a few seconds on a
scikit-learn sample photo's two halves, explained on that photo.
"""

import argparse
import os
import tempfile

import numpy as np

from keras_vit import explain as attention
from keras_vit.models.preset_io import load_model


def demo_model_and_image(workdir):
    """A small ViT that learned to tell the left half of a photo from the
    right half, and the photo (scikit-learn's sample image, 64 x 64)."""
    import keras
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from keras_vit import build_vit

    photo = Image.fromarray(load_sample_images().images[0]).resize((64, 64), Image.BICUBIC)
    image = np.asarray(photo, dtype="float32")
    rng = np.random.default_rng(0)
    crops, labels = [], []
    for _ in range(256):  # 32 px crops, labelled by the half they come from
        y, x = rng.integers(0, 33, 2)
        crops.append(image[y:y + 32, x:x + 32])
        labels.append(int(x + 16 >= 32))
    keras.utils.set_random_seed(0)
    model = build_vit(image_size=None, reference_image_size=32, num_classes=2, patch_size=8,
                      hidden_dim=32, depth=2, num_heads=2, mlp_dim=64)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(np.stack(crops), np.array(labels), epochs=3, batch_size=32, verbose=0)
    path = os.path.join(workdir, "demo.keras")
    model.save(path)
    image_path = os.path.join(workdir, "photo.png")
    photo.save(image_path)
    return path, image_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?")
    parser.add_argument("--model", help=".keras model or .npz/.safetensors/.pth checkpoint")
    parser.add_argument("--output", help="PNG to write (default: IMAGE_attention.png)")
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args(argv)
    if args.demo:
        workdir = tempfile.mkdtemp(prefix="keras_vit_explain_")
        args.model, args.image = demo_model_and_image(workdir)
        args.output = args.output or os.path.join(workdir, "photo_attention.png")
    elif not (args.image and args.model):
        parser.error("pass IMAGE and --model, or --demo")

    model = load_model(args.model)
    image = attention.model_image(args.image, model)
    maps = attention.attention_maps(model, image[None])  # (depth, 1, heads, N, N)
    prefix = model.backbone.num_prefix_tokens
    for i, layer in enumerate(maps[:, 0]):
        to_patches = layer[:, 0, prefix:].sum(-1)  # per head: token 0's attention on the patches
        print(f"block {i}: token 0 -> patches, per head: {', '.join(f'{v:.3f}' for v in to_patches)}")
    base = args.output or os.path.splitext(os.path.basename(args.image))[0] + "_attention.png"
    for fusion in attention.HEAD_FUSIONS:
        out = base if fusion == "mean" else base.replace(".png", f"_{fusion}.png")
        heatmap = attention.rollout_heatmap(model, image[None], fusion)[0]
        attention.save_attention_overlay(image, heatmap, out)
        print(f"{fusion:>4}: wrote {out} (rollout grid {heatmap.shape})")


if __name__ == "__main__":
    main()
