"""Train a small ViT on scikit-learn's digits, export it for deployment and
serve it: a SavedModel (raw images and encoded PNG bytes) and TFLite files in
four precisions run with LiteRT, with their sizes, parity with Keras and
latency.

    python examples/export_and_serve.py --output /tmp/digits_vit

Afterwards the command line works on the same files, for example:

    keras-vit predict /tmp/digits_vit/digits_int8.tflite /tmp/digits_vit/images
    keras-vit benchmark /tmp/digits_vit/digits.keras /tmp/digits_vit/digits_savedmodel \\
        /tmp/digits_vit/digits_float32.tflite /tmp/digits_vit/digits_int8.tflite
"""

import argparse
import io
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

from keras_vit import build_vit
from keras_vit.cli.common import format_table
from keras_vit.export import (
    QUANTIZATIONS,
    benchmark,
    export_saved_model,
    export_tflite,
    load_predictor,
)

CLASS_NAMES = [str(i) for i in range(10)]


def digits_16px():
    """Digits as uint8 pixels (N, 16, 16, 1): 8x8 images upsampled twice."""
    data = load_digits()
    images = np.round(np.kron(data.images, np.ones((2, 2))) * (255 / 16)).astype("uint8")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    return images[order], data.target[order]


def train(x, y, epochs):
    keras.utils.set_random_seed(0)
    model = build_vit(
        image_size=16, channels=1, num_classes=10, patch_size=8, hidden_dim=256, depth=1,
        num_heads=4, mlp_dim=512,
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x.astype("float32"), y, epochs=epochs, batch_size=64, verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="digits_vit", help="folder for the artifacts")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per batch size")
    args = parser.parse_args(argv)
    out = Path(args.output)
    (out / "images").mkdir(parents=True, exist_ok=True)

    images, labels = digits_16px()
    x_train, y_train, x_test, y_test = images[:1400], labels[:1400], images[1400:], labels[1400:]
    model = train(x_train, y_train, args.epochs)
    reference = keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(x_test.astype("float32"), verbose=0)))
    print(f"Keras test accuracy: {np.mean(reference.argmax(-1) == y_test):.4f}")
    model.save(out / "digits.keras")
    for i in range(8):
        Image.fromarray(x_test[i, ..., 0]).save(out / "images" / f"test_{i}_label_{y_test[i]}.png")

    # Export: a SavedModel and four TFLite files. int8 calibrates on the
    # training pipeline (a tf.data.Dataset of (images, labels) batches).
    paths = {"savedmodel": export_saved_model(model, out / "digits_savedmodel", class_names=CLASS_NAMES)}
    train_ds = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(1400, seed=0).batch(32)
    for quantization in QUANTIZATIONS:
        paths[quantization] = export_tflite(
            model, out / f"digits_{quantization}.tflite", quantization,
            representative_data=train_ds, num_calibration_samples=200, class_names=CLASS_NAMES,
        )

    # Serve the SavedModel from encoded PNG bytes, as a web service would.
    served = tf.saved_model.load(str(paths["savedmodel"]))
    pngs = []
    for image in x_test[:4]:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    answer = served.signatures["serving_bytes"](image_bytes=tf.constant(pngs))
    print("PNG bytes ->", [n.decode() for n in answer["top_k_class_names"].numpy()[:, 0]], "true:", y_test[:4].tolist())

    # Parity with Keras, file sizes and latency of every artifact.
    float32_size = os.path.getsize(paths["float32"])
    rows = []
    for kind, path in [("keras", out / "digits.keras"), *paths.items()]:
        predictor = load_predictor(path, class_names=CLASS_NAMES, num_threads=1 if str(path).endswith(".tflite") else None)
        probs = predictor.predict(x_test)
        size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else os.path.getsize(path)
        timing = benchmark(predictor, (1, 32), iterations=args.iterations, warmup=5)
        rows.append([
            kind, f"{size / 1024:.1f}", f"{size / float32_size:.2f}" if str(path).endswith(".tflite") else "",
            f"{np.abs(probs - reference).max():.2e}", f"{np.mean(probs.argmax(-1) == reference.argmax(-1)):.4f}",
            f"{np.mean(probs.argmax(-1) == y_test):.4f}",
            *(f"{t[key]:.3f}" for t in timing for key in ("p50_ms", "p95_ms")),
            f"{timing[1]['images_per_s']:.0f}",
        ])
    print(format_table(
        ["artifact", "KiB", "x float32", "max |dp|", "top-1 agree", "accuracy",
         "b1 p50 ms", "b1 p95 ms", "b32 p50 ms", "b32 p95 ms", "b32 img/s"],
        rows,
    ))


if __name__ == "__main__":
    main()
