"""One predictor for every artifact (a ``.keras`` file, a SavedModel, a
``.tflite`` file run with LiteRT, an ``.onnx`` file run with ONNX Runtime), predictions on image files through the
one preprocessing path, and latency benchmarks."""

import dataclasses
import glob
import time
from pathlib import Path

import numpy as np

from keras_vit import preprocessing
from keras_vit.export.geometry import (
    artifact_kind, check_class_names, image_settings, model_geometry, outputs_probabilities)
from keras_vit.export.inference import inference_model
from keras_vit.export.saved_model import read_saved_model_metadata
from keras_vit.export.tflite import tflite_metadata
from keras_vit.layers import grid_size
from keras_vit.models.preset_io import load_model
from keras_vit.preprocessing import IMAGE_EXTENSIONS, ImageSettings
from keras_vit.utils.validation import pair, strict_keywords


class Predictor:
    """Runs an exported classifier on raw images.

    Attributes:
        path: the artifact.
        kind: "keras", "savedmodel", "tflite" or "onnx".
        class_names: list of class names.
        image_size: the fixed (h, w) the artifact takes, or None if any size
            tiled by its patches works.
        size: a size that works: `image_size`, else the size the model's
            positions were built for.
        channels: int.
        settings: the `ImageSettings` image files are prepared with (the
            ones the model was trained and exported with).

    Example:
    >>> predictor = load_predictor("vit_int8.tflite")
    >>> predictor.predict(np.zeros((2, 16, 16, 1), "uint8")).shape
    (2, 10)
    """

    kind = None

    def __init__(self, path, class_names, image_size, size, channels, patch_size=None, stride=None,
                 settings=None):
        self.path = Path(path)
        self.class_names = list(class_names)
        as_pair = lambda v: tuple(int(i) for i in v) if v is not None and len(v) and all(v) else None
        self.image_size = as_pair(image_size)
        self.size = as_pair(size) or self.image_size
        self.channels = int(channels)
        self.patch_size = as_pair(patch_size)
        self.stride = as_pair(stride)
        self.settings = ImageSettings.from_dict({**(settings or {}), "image_size": None, "channels": self.channels})

    def check_images(self, images, source="images"):
        """Raises a `ValueError` unless `images` (B, H, W, C) fit this artifact.

        Args:
            images: array-like (B, H, W, C).
            source: how to name the images in the error message.
        """
        shape = tuple(np.shape(images))
        if len(shape) != 4 or shape[-1] != self.channels:
            raise ValueError(
                f"Expected {source} of shape (batch, height, width, {self.channels}). Received shape {shape}."
            )
        if self.image_size and shape[1:3] != self.image_size:
            raise ValueError(
                f"{source} has size {shape[1:3]} (height, width), which does not fit {self.path.name}: "
                f"it takes images of size {self.image_size}. Resize the images (keras-vit predict "
                f"--resize) or export the model at this size."
            )
        if self.patch_size:
            grid_size(shape[1:3], self.patch_size, self.stride, source)

    def predict(self, images):
        """Class probabilities of a batch of raw images.

        Args:
            images: uint8 or float array (B, H, W, C) of pixels in [0, 255].

        Returns:
            float32 array (B, num_classes).
        """
        images = np.asarray(images)
        self.check_images(images)
        return np.asarray(self._run(images), dtype="float32")

    def _run(self, images):
        raise NotImplementedError


class KerasPredictor(Predictor):
    """A ``.keras`` model file behind the `Predictor` interface. It runs
    `keras_vit.export.inference_model` of the model (the same outputs,
    faster); `model` is the model as loaded.

    Args:
        path: the ``.keras`` file (its layers must be registered, as
            keras_vit's are).
        class_names: optional list of names; by default the model's own
            (`ViTClassifier.class_names`), else "0", "1", ...
        model: an already loaded model (then `path` only names it).

    Example:
    >>> KerasPredictor("digits.keras").predict(images).shape
    (8, 10)
    """

    kind = "keras"

    def __init__(self, path, class_names=None, model=None):
        self.model = load_model(path) if model is None else model
        geo = model_geometry(self.model)
        names = class_names or getattr(self.model, "class_names", None)
        super().__init__(
            path, check_class_names(names, geo["num_classes"]), geo["image_size"], geo["size"],
            geo["channels"], geo["patch_size"], geo["stride"], image_settings(self.model, geo).to_dict(),
        )
        try:
            self.fast = inference_model(self.model)
        except ValueError:  # not a functional model: it runs as it is
            self.fast = self.model

    def _run(self, images):
        outputs = np.asarray(self.fast.predict_on_batch(images.astype("float32")), "float32")
        if outputs_probabilities(self.model):
            return outputs
        outputs = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
        return outputs / outputs.sum(axis=-1, keepdims=True)


class PresetPredictor(KerasPredictor):
    """A pretrained or saved preset (`ViTClassifier.from_preset`: a known
    name, ``hf://owner/repo[@rev]``, a preset directory or a checkpoint
    file) behind the `Predictor` interface. Its class names and image
    preparation (interpolation, timm's crop) come from the preset.

    Args:
        handle: the preset handle.
        class_names: optional names overriding the preset's.

    Example:
    >>> PresetPredictor("hf://timm/vit_base_patch16_224.augreg2_in21k_ft_in1k").size
    (224, 224)
    """

    kind = "preset"

    def __init__(self, handle, class_names=None):
        super().__init__(handle, class_names, model=load_model(handle))
        self.path = handle  # a handle, not necessarily a local path


class SavedModelPredictor(Predictor):
    """A SavedModel directory from `export_saved_model` behind the
    `Predictor` interface; runs its ``serving_default`` signature.

    Args:
        path: the SavedModel directory.
        class_names: optional names overriding the exported ones.

    Example:
    >>> SavedModelPredictor("digits_savedmodel").class_names[:3]
    ['0', '1', '2']
    """

    kind = "savedmodel"

    def __init__(self, path, class_names=None):
        import tensorflow as tf

        meta = read_saved_model_metadata(path)  # a file: no graph code runs to learn it
        self.loaded = tf.saved_model.load(str(path))
        self.serve = self.loaded.signatures["serving_default"]
        super().__init__(
            path, class_names or meta["class_names"], meta["image_size"], meta["size"], meta["channels"],
            meta["patch_size"], meta["stride"], meta.get("preprocessing"),
        )

    def _run(self, images):
        import tensorflow as tf

        pixels = np.clip(np.round(images), 0, 255).astype("uint8") if images.dtype != np.uint8 else images
        return self.serve(images=tf.constant(pixels))["probabilities"].numpy()


class TFLitePredictor(Predictor):
    """A ``.tflite`` file run with LiteRT's
    ``ai_edge_litert.interpreter.Interpreter``, behind the `Predictor`
    interface. The input tensor is resized to each batch size.

    Args:
        path: the file.
        class_names: optional names overriding the file's metadata.
        num_threads: optional int, LiteRT's CPU threads.

    Example:
    >>> TFLitePredictor("digits_int8.tflite", num_threads=1).image_size
    (16, 16)
    """

    kind = "tflite"

    def __init__(self, path, class_names=None, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        data = Path(path).read_bytes()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier); it may be "
                             "truncated, or another kind of file named .tflite.")
        meta = tflite_metadata(data) or {}
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=num_threads)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"LiteRT cannot load {path}: {err}") from err
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        fixed = tuple(int(s) for s in self.input["shape"][1:3])
        num_classes = int(self.output["shape"][-1])
        self._batch = None
        super().__init__(
            path, class_names or meta.get("class_names") or check_class_names(None, num_classes),
            fixed, fixed, self.input["shape"][-1], meta.get("patch_size"), meta.get("stride"),
            meta.get("preprocessing"),
        )

    def _run(self, images):
        if self._batch != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], [len(images), *self.input["shape"][1:]])
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images.astype(self.input["dtype"]))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])


class ONNXPredictor(Predictor):
    """An ``.onnx`` file run with ONNX Runtime (CPU) behind the `Predictor`
    interface. Files from `export_onnx` carry their class names, geometry
    and output kind; for other ONNX files the input must be float32 pixels
    (B, H, W, C) in [0, 255] and the output (B, num_classes)
    probabilities.

    Args:
        path: the file.
        class_names: optional names overriding the file's metadata.
        num_threads: optional int, ONNX Runtime's intra-op threads (default:
            its own choice, one per physical core).

    Example:
    >>> ONNXPredictor("digits.onnx", num_threads=1).predict(images).shape
    (8, 10)
    """

    kind = "onnx"

    def __init__(self, path, class_names=None, num_threads=None):
        import json

        import onnxruntime as ort

        from keras_vit.export.geometry import METADATA_NAME

        if num_threads is not None and (not isinstance(num_threads, int) or isinstance(num_threads, bool)
                                        or num_threads <= 0):
            raise ValueError(f"`num_threads` must be a positive int. Received: num_threads={num_threads!r}")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf
            raise ValueError(f"ONNX Runtime cannot load {path}: {err}") from err
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_NAME)
        meta = json.loads(raw) if raw else {}
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or not isinstance(shape[-1], int):
            raise ValueError(f"{path}: expected one input of shape (batch, height, width, channels); "
                             f"got {[(i.name, i.shape) for i in inputs]}.")
        self.input_name, self.output_name = inputs[0].name, meta.get("outputs", outputs[0].name)
        fixed = tuple(shape[1:3]) if all(isinstance(d, int) for d in shape[1:3]) else None
        num_classes = outputs[0].shape[-1]
        names = class_names or meta.get("class_names")
        if names is None:
            if not isinstance(num_classes, int):
                raise ValueError(f"{path}: the number of classes is not fixed in the graph; pass `class_names`.")
            names = check_class_names(None, num_classes)
        super().__init__(
            path, names, fixed, meta.get("size") or fixed, shape[-1], meta.get("patch_size"), meta.get("stride"),
            meta.get("preprocessing"),
        )

    def _run(self, images):
        return self.session.run([self.output_name], {self.input_name: images.astype("float32", copy=False)})[0]


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
