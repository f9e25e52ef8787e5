"""One predictor for every artifact (a ``.keras`` file, a SavedModel, a
``.tflite`` file run with LiteRT, an ``.onnx`` file run with ONNX Runtime), predictions on image files through the
one preprocessing path, and latency benchmarks."""

import dataclasses
import glob
import time
from pathlib import Path

import numpy as np

from keras_vit import preprocessing
from keras_vit.export.geometry import artifact_kind
from keras_vit.export.runtimes.base import Predictor
from keras_vit.export.runtimes.keras_model import KerasPredictor, PresetPredictor
from keras_vit.export.runtimes.onnx_graph import ONNXPredictor
from keras_vit.export.runtimes.tf_graph import SavedModelPredictor, TFLitePredictor
from keras_vit.preprocessing import IMAGE_EXTENSIONS
from keras_vit.utils.validation import pair, strict_keywords

__all__ = ["KerasPredictor", "ONNXPredictor", "Predictor", "PresetPredictor", "SavedModelPredictor",
           "TFLitePredictor", "benchmark", "find_images", "load_predictor", "predict_files", "read_image"]


@strict_keywords()
def load_predictor(path, *, class_names=None, num_threads=None):
    """Loads any artifact behind the `Predictor` interface.

    Args:
        path: a ``.keras`` file, a SavedModel directory written by
            `export_saved_model`, a ``.tflite`` file, an ``.onnx`` file, or a preset: a known
            pretrained name, ``hf://owner/repo[@rev]``, a preset directory
            (`save_to_preset` or timm's layout) or a checkpoint file.
        class_names: optional list of class names overriding the
            artifact's or preset's own.
        num_threads: optional int, CPU threads for LiteRT and ONNX Runtime.

    Returns:
        A `Predictor`.

    Example:
    >>> load_predictor("vit_savedmodel").predict(images).argmax(-1)
    """
    kind = artifact_kind(path, presets=True)
    if kind == "preset":
        return PresetPredictor(path, class_names)
    if kind == "keras":
        return KerasPredictor(path, class_names)
    if kind == "savedmodel":
        return SavedModelPredictor(path, class_names)
    if kind == "onnx":
        return ONNXPredictor(path, class_names, num_threads)
    return TFLitePredictor(path, class_names, num_threads)


def find_images(inputs):
    """Expands files, folders (their image files, sorted) and glob patterns.

    Args:
        inputs: list of str paths, folders or glob patterns.

    Returns:
        A list of `Path`s.

    Example:
    >>> find_images(["digits/", "extra/*.png"])
    """
    found = []
    for item in inputs:
        if any(ch in item for ch in "*?[") and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise ValueError(f"The pattern {item!r} matches no file.")
            found.extend(Path(m) for m in matches if Path(m).is_file())
        elif Path(item).is_dir():
            files = sorted(p for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise ValueError(f"The folder {item!r} holds no image file ({', '.join(IMAGE_EXTENSIONS)}).")
            found.extend(files)
        elif Path(item).is_file():
            found.append(Path(item))
        else:
            raise ValueError(f"No such image file, folder or pattern: {item!r}")
    return found


def read_image(path, predictor, resize=False):
    """An image file prepared for `predictor` through `keras_vit.preprocessing`
    (resized to `predictor.size` when `resize`, or always when the
    predictor's settings carry timm's evaluation crop, `crop_pct`: that
    resize and centre crop is the model's own evaluation transform), as
    float32 (H, W, C).

    Example:
    >>> read_image("digit.png", load_predictor("digits.tflite")).shape
    (16, 16, 1)
    """
    size = predictor.size if resize or predictor.settings.crop_pct is not None else None
    return preprocessing.load_image(path, dataclasses.replace(predictor.settings, image_size=size))


@strict_keywords()
def predict_files(predictor, inputs, *, top_k=5, resize=False, batch_size=32):
    """Top-k classes of image files, folders or glob patterns.

    Images are batched by size. Without `resize`, an image whose size the
    artifact cannot take raises a `ValueError` naming the file; with it,
    images are resized to `predictor.size` with the artifact's recorded
    interpolation (the path the model was trained with). An artifact or
    preset that records timm's `crop_pct` always resizes and centre-crops
    (see `read_image`).

    Args:
        predictor: a `Predictor`.
        inputs: list of files, folders or glob patterns.
        top_k: int, how many classes to return per image.
        resize: bool, resize images to the artifact's size.
        batch_size: int, images per call.

    Returns:
        A list of (path, [(class_name, probability), ...]) in input order.

    Example:
    >>> predict_files(load_predictor("vit.tflite"), ["digits/"], top_k=3)
    """
    files = find_images(inputs)
    images = [read_image(f, predictor, resize) for f in files]
    for f, image in zip(files, images):
        predictor.check_images(image[None], source=f"the image {str(f)!r}")
    results = [None] * len(files)
    by_shape = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            probs = predictor.predict(np.stack([images[i] for i in chunk]))
            for i, row in zip(chunk, probs):
                order = np.argsort(-row)[:top_k]
                results[i] = (files[i], [(predictor.class_names[c], float(row[c])) for c in order])
    return results


@strict_keywords()
def benchmark(predictor, batch_sizes=(1, 8), *, iterations=50, warmup=5, image_size=None):
    """Latency and throughput of a predictor on random images.

    Args:
        predictor: a `Predictor`.
        batch_sizes: iterable of positive ints.
        iterations: int, timed calls per batch size.
        warmup: int, untimed calls first (tracing, allocation).
        image_size: optional (h, w) for a dynamic-size artifact; defaults
            to `predictor.size`.

    Returns:
        A list of dicts with "batch_size", "p50_ms", "p95_ms" (latency of
        one call) and "images_per_s" (batch size / mean latency).

    Example:
    >>> benchmark(load_predictor("vit_int8.tflite"), (1, 32))[0]["p50_ms"]
    """
    for name, value in (("iterations", iterations), ("warmup", warmup)):
        if not isinstance(value, int) or value < (1 if name == "iterations" else 0):
            raise ValueError(f"`{name}` must be an int >= {1 if name == 'iterations' else 0}. Received: {value!r}")
    size = pair(image_size, "image_size") if image_size is not None else predictor.size
    rng = np.random.default_rng(0)
    rows = []
    for batch in batch_sizes:
        if not isinstance(batch, int) or batch <= 0:
            raise ValueError(f"`batch_sizes` must hold positive ints. Received: {batch!r}")
        images = rng.integers(0, 256, size=(batch, *size, predictor.channels), dtype="uint8")
        for _ in range(warmup):
            predictor.predict(images)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            predictor.predict(images)
            times.append(time.perf_counter() - start)
        times = np.asarray(times) * 1000.0
        rows.append(dict(
            batch_size=batch, p50_ms=float(np.percentile(times, 50)), p95_ms=float(np.percentile(times, 95)),
            images_per_s=float(batch * 1000.0 / times.mean()),
        ))
    return rows
