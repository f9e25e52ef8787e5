"""Deployment: SavedModel and TFLite exports, one predictor for every artifact,
latency benchmarks, and the `export`, `predict` and `benchmark` commands.

Read top to bottom:

1. writing artifacts atomically (a temporary name beside the target, then a
   rename), so a crash never leaves half an artifact where a good one was;
2. `export_saved_model`: a SavedModel whose ``serving_default`` signature
   takes raw uint8 images and whose ``serving_bytes`` signature takes encoded
   JPEG/PNG bytes;
3. `export_tflite`: a ``.tflite`` file in float32, float16, dynamic-range or
   full-integer int8, built from TFLite builtin ops only;
4. `load_predictor`: a ``.keras`` file, a SavedModel directory or a
   ``.tflite`` file (run with LiteRT) behind one small `Predictor` interface;
5. `benchmark`: latency percentiles and throughput of a predictor;
6. the command line.

Every artifact maps raw pixels in [0, 255] to class probabilities (a softmax
over the model's logits; a model that ends in an activation layer is taken
to output probabilities already).

Models built with ``image_size=None`` accept any image size. Their SavedModel
keeps height and width dynamic in ``serving_default``; its ``serving_bytes``
signature resizes decoded images to the ``image_size`` named at export (by
default the size the model was built for). A ``.tflite`` file always has a
fixed image size, so exporting such a model to TFLite needs ``image_size``.

An export killed part-way may leave a hidden ``.NAME.tmp-*`` entry beside
its target (never the target itself); it is safe to delete.
"""

import argparse
import contextlib
import glob
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_vit import layers as L

FORMATS = ("savedmodel", "tflite")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Name of the .tflite metadata entry holding the class names and geometry
# (a SavedModel holds them in its "metadata" signature).
METADATA_NAME = "keras_vit"
BYTES_SIGNATURE = "serving_bytes"


# --------------------------------------------------------------------------
# Atomic writes.
# --------------------------------------------------------------------------


def _sibling(path, tag):
    """A hidden name beside `path`, unique to this call."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; moves it onto `path` on success.

    Whatever the body writes at the temporary path (a file or a directory)
    replaces `path` only when the body finishes without an exception. A
    file is swapped in with one `os.replace`; a directory by renaming the
    old one away, renaming the new one in, then deleting the old one (a
    crash between those two renames leaves the old one at ``.NAME.old-*``).
    On an exception the temporary path is removed and `path` is left
    untouched.

    Args:
        path: str or `Path`, the final location.

    Example:
    >>> with atomic_path("model.tflite") as tmp:
    ...     tmp.write_bytes(b"...")
    """
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        if tmp.is_dir():
            old = None
            if path.exists():
                old = _sibling(path, "old")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _check_target(path, kind):
    """Refuses to overwrite something that is not an artifact of `kind`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"The directory of `path` does not exist. Received: path={str(path)!r}")
    if kind == "savedmodel" and path.exists():
        if not path.is_dir() or (any(path.iterdir()) and not (path / "saved_model.pb").exists()):
            raise ValueError(
                f"`path` exists and is not a SavedModel directory; refusing to replace it. "
                f"Received: path={str(path)!r}"
            )
    if kind == "tflite" and path.is_dir():
        raise ValueError(f"`path` is a directory; a .tflite file was expected. Received: path={str(path)!r}")
    return path


# --------------------------------------------------------------------------
# What an artifact needs to know about the model.
# --------------------------------------------------------------------------


def model_geometry(model, image_size=None):
    """Input geometry of an image classifier.

    Args:
        model: a `keras.Model` taking images (B, H, W, C).
        image_size: optional int or (h, w): the size to export a model with
            a dynamic input size at. For a fixed-size model it must match.

    Returns:
        A dict with "image_size" (the model's fixed (h, w), or None when H
        and W are dynamic), "size" (`image_size`, else the fixed size, else
        the size the position embeddings were built for), "channels",
        "patch_size" and "stride" (None for models without a
        "patch_encoder" layer) and "num_classes".

    Example:
    >>> model = build_vit(image_size=None, reference_image_size=32, num_classes=10,
    ...                   patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64)
    >>> model_geometry(model)["size"], model_geometry(model)["image_size"]
    ((32, 32), None)
    """
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise ValueError(f"Expected a model taking images (batch, height, width, channels). Got input shape {shape}.")
    out = tuple(model.output_shape)
    if len(out) != 2 or not out[-1]:
        raise ValueError(
            f"Expected a classifier with outputs (batch, num_classes). Got output shape {out} "
            "(build the model with num_classes > 0)."
        )
    backbone = getattr(model, "backbone", None)
    if backbone is not None and model.head is None:
        raise ValueError(
            "The model has no classification head (built with num_classes=0); export a classifier "
            "(num_classes > 0)."
        )
    fixed = None if None in shape[1:3] else tuple(shape[1:3])
    patch = stride = reference = None
    encoder = backbone.patch_encoder if backbone is not None else None
    if encoder is not None:
        patch, stride = encoder.patch_size, encoder.stride
        if encoder.grid_size is not None:
            reference = tuple((g - 1) * s + p for g, s, p in zip(encoder.grid_size, stride, patch))
    if image_size is not None:
        image_size = L.pair(image_size, "image_size")
        if fixed is not None and image_size != fixed:
            raise ValueError(
                f"The model takes images of size {fixed}; it cannot be exported at "
                f"image_size={image_size}. Leave `image_size` unset or pass {fixed}."
            )
        if patch is not None:
            L.grid_size(image_size, patch, stride, "image_size")
    size = image_size or fixed or reference
    return dict(
        image_size=fixed, size=size, channels=shape[-1], patch_size=patch, stride=stride,
        num_classes=out[-1],
    )


def _check_class_names(class_names, num_classes):
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = list(class_names)
    if len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"`class_names` must be a list of {num_classes} strings (one per class). "
            f"Received {len(names)} entries: {names[:5]}{'...' if len(names) > 5 else ''}"
        )
    return names


def _ends_in_activation(model):
    if hasattr(model, "outputs_logits"):
        return not model.outputs_logits
    return isinstance(model.layers[-1], keras.layers.Activation)


def _probabilities(model, images):
    """Class probabilities of raw pixels, computed in float32."""
    outputs = keras.ops.cast(model(keras.ops.cast(images, "float32"), training=False), "float32")
    return outputs if _ends_in_activation(model) else keras.ops.softmax(outputs, axis=-1)


def _check_backend():
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"Exporting needs the TensorFlow backend (KERAS_BACKEND=tensorflow). "
            f"Current backend: {keras.backend.backend()!r}."
        )


def _check_pixels_model(model):
    if not getattr(model, "include_rescaling", True):
        warnings.warn(
            "The model has no 'rescaling' layer (include_rescaling=False), but exported "
            "artifacts feed it raw pixels in [0, 255]. Build it with include_rescaling=True.",
            stacklevel=3,
        )


# --------------------------------------------------------------------------
# SavedModel.
# --------------------------------------------------------------------------


def export_saved_model(model, path, *, class_names=None, image_size=None, top_k=5):
    """Exports a classifier as a SavedModel with serving signatures.

    Signatures (list them with ``saved_model_cli show --dir PATH --all``):

    - ``serving_default(images)``: a uint8 batch (B, H, W, C) of raw
      pixels, any batch size. For a model built with ``image_size=None``, H
      and W stay dynamic.
    - ``serving_bytes(image_bytes)``: a string batch (B,) of encoded
      JPEG/PNG/GIF/BMP images; each is decoded to the model's channels and
      resized (bilinear) to the model's size, or for a dynamic-size model
      to `image_size` (default: the size its positions were built for).
    - ``metadata()``: class names and geometry, used by `load_predictor`.

    Both serving signatures return ``probabilities`` (B, num_classes),
    ``top_k_indices`` and ``top_k_probabilities`` (B, k) and
    ``top_k_class_names`` (B, k) strings.

    The directory is built beside `path` and renamed into place, so an
    existing SavedModel at `path` is replaced only by a complete one.

    Args:
        model: a `keras.Model` from `build_vit` (or any classifier taking
            raw pixels in [0, 255]) with outputs (B, num_classes).
        path: the SavedModel directory to write.
        class_names: optional list of `num_classes` strings; defaults to
            "0", "1", ...
        image_size: optional int or (h, w), the decode size of
            ``serving_bytes`` for a dynamic-size model.
        top_k: int, how many classes the top-k outputs hold (capped at
            `num_classes`).

    Returns:
        The `Path` of the SavedModel.

    Example:
    >>> export_saved_model(model, "vit_savedmodel", class_names=["cat", "dog"])
    >>> serve = tf.saved_model.load("vit_savedmodel").signatures["serving_default"]
    >>> serve(images=tf.zeros((1, 32, 32, 3), tf.uint8))["probabilities"]
    """
    import tensorflow as tf

    _check_backend()
    geo = model_geometry(model, image_size)
    names = _check_class_names(class_names, geo["num_classes"])
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
        raise ValueError(f"`top_k` must be a positive int. Received: top_k={top_k!r}")
    if geo["size"] is None:
        raise ValueError("The model has a dynamic image size; pass `image_size` for the bytes signature.")
    _check_pixels_model(model)
    path = _check_target(path, "savedmodel")
    k = min(top_k, geo["num_classes"])
    height, width = geo["image_size"] or (None, None)
    channels = geo["channels"]
    name_table = tf.constant(names)

    def answer(images):
        probs = _probabilities(model, images)
        top = tf.math.top_k(probs, k=k)
        return {
            "probabilities": probs,
            "top_k_indices": top.indices,
            "top_k_probabilities": top.values,
            "top_k_class_names": tf.gather(name_table, top.indices),
        }

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32), geo["size"], method="bilinear")

    def from_bytes(image_bytes):
        spec = tf.TensorSpec((*geo["size"], channels), tf.float32)
        return answer(tf.map_fn(decode, image_bytes, fn_output_signature=spec))

    def metadata():
        return {
            "class_names": name_table,
            "image_size": tf.constant(geo["image_size"] or (0, 0), tf.int32),
            "size": tf.constant(geo["size"], tf.int32),
            "channels": tf.constant(channels, tf.int32),
            "patch_size": tf.constant(geo["patch_size"] or (0, 0), tf.int32),
            "stride": tf.constant(geo["stride"] or (0, 0), tf.int32),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", answer,
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.uint8, name="images")],
    )
    archive.add_endpoint(
        BYTES_SIGNATURE, from_bytes, input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")]
    )
    archive.add_endpoint("metadata", metadata, input_signature=[])
    with atomic_path(path) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return path


# --------------------------------------------------------------------------
# TFLite.
# --------------------------------------------------------------------------


def _sample_arrays(data):
    """Yields arrays (images or batches) from any accepted representative data."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        data = data.as_numpy_iterator()
    elif callable(data):
        data = data()
    elif isinstance(data, np.ndarray):
        data = [data]
    for element in data:
        if isinstance(element, dict):
            element = element.get("images", next(iter(element.values())))
        elif isinstance(element, (tuple, list)):
            element = element[0]
        yield np.asarray(element)


def calibration_samples(representative_data, image_shape, limit=100):
    """Draws up to `limit` images for full-integer calibration.

    Args:
        representative_data: raw pixels in [0, 255] as any of: a
            `tf.data.Dataset` of images or of (images, labels) pairs,
            batched or not (e.g. the training dataset); a numpy array
            (N, H, W, C); an iterable or generator of such arrays or pairs;
            or a function returning one (TFLite's own convention).
        image_shape: the (H, W, C) the exported model takes.
        limit: int, the most images to draw.

    Returns:
        A float32 array (n, H, W, C), 1 <= n <= limit.

    Example:
    >>> calibration_samples(train_ds, (16, 16, 1), limit=200).shape
    (200, 16, 16, 1)
    """
    if representative_data is None:
        raise ValueError(
            "quantization='int8' needs `representative_data`: a tf.data.Dataset, array or "
            "generator of raw training images (pixels in [0, 255])."
        )
    if isinstance(representative_data, (str, bytes)) or not (
        callable(representative_data) or hasattr(representative_data, "__iter__")
    ):
        raise ValueError(
            "`representative_data` must be a tf.data.Dataset, a numpy array, an iterable or "
            f"generator of images, or a function returning one. Received: {type(representative_data).__name__}"
        )
    samples, total = [], 0
    for array in _sample_arrays(representative_data):
        if array.ndim == len(image_shape):
            array = array[None]
        if array.ndim != len(image_shape) + 1 or tuple(array.shape[1:]) != tuple(image_shape):
            raise ValueError(
                f"`representative_data` must hold images of shape {tuple(image_shape)} "
                f"(or batches of them). Received an element of shape {array.shape}."
            )
        samples.append(array[: limit - total].astype("float32"))
        total += len(samples[-1])
        if total >= limit:
            break
    if not total:
        raise ValueError("`representative_data` yielded no images.")
    return np.concatenate(samples)


def export_tflite(
    model,
    path,
    quantization="float32",
    *,
    representative_data=None,
    num_calibration_samples=100,
    image_size=None,
    class_names=None,
):
    """Exports a classifier to a ``.tflite`` file made of builtin ops only.

    The file takes float32 raw pixels (B, H, W, C) in [0, 255] (any batch
    size: resize the input tensor) and returns float32 ``probabilities``
    (B, num_classes). The class names and geometry ride along in the
    file's metadata (read back by `load_predictor`). Run it with
    ``ai_edge_litert.interpreter.Interpreter``.

    Quantizations:

    - "float32": no quantization.
    - "float16": weights stored as float16, computed in float32.
    - "dynamic": weights stored as int8, activations quantized on the fly.
    - "int8": full-integer weights and activations (int8 kernels only, with
      float32 input and output), calibrated on `representative_data`.

    Conversion allows only TFLite builtin ops, so a model that would need
    Select TF (Flex) ops fails here instead of at run time.

    Args:
        model: a `keras.Model` classifier taking raw pixels.
        path: the ``.tflite`` file to write (written beside, then renamed).
        quantization: one of `QUANTIZATIONS`.
        representative_data: for "int8", raw training images; see
            `calibration_samples` for the accepted forms.
        num_calibration_samples: int, the most images drawn for "int8".
        image_size: int or (h, w); required for a model built with
            ``image_size=None`` (TFLite files have a fixed size).
        class_names: optional list of `num_classes` strings.

    Returns:
        The `Path` of the file.

    Example:
    >>> export_tflite(model, "vit_int8.tflite", "int8",
    ...               representative_data=train_ds.take(10))
    """
    import tensorflow as tf

    L.check_choice(quantization, "quantization", QUANTIZATIONS)
    _check_backend()
    geo = model_geometry(model, image_size)
    if geo["image_size"] is None and image_size is None:
        raise ValueError(
            "The model has a dynamic image size (image_size=None) but a .tflite file needs a "
            "fixed one: pass `image_size` (keras-vit export --image-size), e.g. image_size=224."
        )
    names = _check_class_names(class_names, geo["num_classes"])
    shape = (*geo["size"], geo["channels"])
    samples = None
    if quantization == "int8":
        if not isinstance(num_calibration_samples, int) or num_calibration_samples <= 0:
            raise ValueError(
                f"`num_calibration_samples` must be a positive int. Received: {num_calibration_samples!r}"
            )
        samples = calibration_samples(representative_data, shape, num_calibration_samples)
    _check_pixels_model(model)
    path = _check_target(path, "tflite")

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda images: {"probabilities": _probabilities(model, images)},
        input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="images")],
    )
    with tempfile.TemporaryDirectory() as workdir:
        archive.write_out(workdir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(workdir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ([s[None]] for s in samples)
        try:
            flatbuffer = converter.convert()
        except Exception as err:  # the converter raises its own ConverterError
            if type(err).__name__ != "ConverterError":
                raise
            lines = str(err).splitlines()
            flex = [line.strip() for line in lines if line.strip().startswith("TF Select ops:")]
            detail = flex[0] if flex else "\n".join(lines[:12])
            raise ValueError(
                f"TFLite conversion with quantization={quantization!r} failed: the exported file may use "
                f"TFLite builtin ops only (no Select TF / Flex ops). Converter: {detail}"
            ) from err
    metadata = dict(
        class_names=names, quantization=quantization, image_size=list(geo["size"]),
        channels=geo["channels"], patch_size=geo["patch_size"], stride=geo["stride"],
    )
    flatbuffer = _with_metadata(flatbuffer, metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
    return path


def _with_metadata(flatbuffer, metadata):
    """Adds a JSON metadata entry named `METADATA_NAME` to a TFLite model."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _read_flatbuffer(path_or_bytes):
    from ai_edge_litert import schema_py_generated as schema

    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"Not a TFLite flatbuffer (no 'TFL3' identifier): {str(path_or_bytes)[:200]!r}")
    return schema.Model.GetRootAs(data, 0)


def tflite_op_names(path_or_bytes):
    """The operators a ``.tflite`` model uses, read from its flatbuffer.

    Builtin ops come back by name ("CONV_2D", "GELU", ...); custom ops as
    "CUSTOM:<name>", which is how Select TF ops appear ("CUSTOM:FlexErf").

    Args:
        path_or_bytes: a file path or the model's bytes.

    Returns:
        A sorted list of distinct op names.

    Example:
    >>> "GELU" in tflite_op_names("vit.tflite")
    True
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = _read_flatbuffer(path_or_bytes)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        ops.add(f"CUSTOM:{custom.decode()}" if custom else names.get(builtin, str(builtin)))
    return sorted(ops)


def tflite_metadata(path_or_bytes):
    """The keras_vit metadata (class names, image size, ...) of a ``.tflite``
    file written by `export_tflite`, or None for other files.

    Args:
        path_or_bytes: a file path or the model's bytes.

    Example:
    >>> tflite_metadata("vit.tflite")["class_names"][:2]
    ['cat', 'dog']
    """
    model = _read_flatbuffer(path_or_bytes)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


# --------------------------------------------------------------------------
# One predictor interface for .keras, SavedModel and .tflite.
# --------------------------------------------------------------------------


class Predictor:
    """Runs an exported classifier on raw images.

    Attributes:
        path: the artifact.
        kind: "keras", "savedmodel" or "tflite".
        class_names: list of class names.
        image_size: the fixed (h, w) the artifact takes, or None if any size
            tiled by its patches works.
        size: a size that works: `image_size`, else the size the model's
            positions were built for.
        channels: int.

    Example:
    >>> predictor = load_predictor("vit_int8.tflite")
    >>> predictor.predict(np.zeros((2, 16, 16, 1), "uint8")).shape
    (2, 10)
    """

    kind = None

    def __init__(self, path, class_names, image_size, size, channels, patch_size=None, stride=None):
        self.path = Path(path)
        self.class_names = list(class_names)
        as_pair = lambda v: tuple(int(i) for i in v) if v is not None and len(v) and all(v) else None
        self.image_size = as_pair(image_size)
        self.size = as_pair(size) or self.image_size
        self.channels = int(channels)
        self.patch_size = as_pair(patch_size)
        self.stride = as_pair(stride)

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
            L.grid_size(shape[1:3], self.patch_size, self.stride, source)

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
    """A ``.keras`` model file behind the `Predictor` interface.

    Args:
        path: the ``.keras`` file (its layers must be registered, as
            keras_vit's are).
        class_names: optional list of names; a ``.keras`` file holds none,
            so they default to "0", "1", ...

    Example:
    >>> KerasPredictor("digits.keras").predict(images).shape
    (8, 10)
    """

    kind = "keras"

    def __init__(self, path, class_names=None):
        self.model = keras.saving.load_model(path)
        geo = model_geometry(self.model)
        super().__init__(
            path, _check_class_names(class_names, geo["num_classes"]), geo["image_size"], geo["size"],
            geo["channels"], geo["patch_size"], geo["stride"],
        )

    def _run(self, images):
        outputs = np.asarray(self.model.predict_on_batch(images.astype("float32")), "float32")
        if _ends_in_activation(self.model):
            return outputs
        outputs = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
        return outputs / outputs.sum(axis=-1, keepdims=True)


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

        self.loaded = tf.saved_model.load(str(path))
        signatures = self.loaded.signatures
        if "serving_default" not in signatures or "metadata" not in signatures:
            raise ValueError(
                f"{path} is not a SavedModel from keras_vit's export_saved_model (signatures: "
                f"{sorted(signatures)}; expected 'serving_default' and 'metadata')."
            )
        self.serve = signatures["serving_default"]
        meta = {k: v.numpy() for k, v in signatures["metadata"]().items()}
        names = [n.decode("utf-8") for n in meta["class_names"]]
        super().__init__(
            path, class_names or names, meta["image_size"], meta["size"], meta["channels"],
            meta["patch_size"], meta["stride"],
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
            path, class_names or meta.get("class_names") or _check_class_names(None, num_classes),
            fixed, fixed, self.input["shape"][-1], meta.get("patch_size"), meta.get("stride"),
        )

    def _run(self, images):
        if self._batch != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], [len(images), *self.input["shape"][1:]])
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images.astype(self.input["dtype"]))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])


def artifact_kind(path):
    """Tells which kind of model artifact `path` is.

    Args:
        path: a ``.keras`` file, a SavedModel directory or a ``.tflite`` file.

    Returns:
        "keras", "savedmodel" or "tflite"; raises a `ValueError` otherwise.

    Example:
    >>> artifact_kind("digits_savedmodel")
    'savedmodel'
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"No such model artifact: {str(path)!r}")
    if path.is_dir() and (path / "saved_model.pb").exists():
        return "savedmodel"
    if path.is_file() and path.suffix in (".keras", ".tflite"):
        return path.suffix[1:]
    raise ValueError(
        f"Unknown model artifact {str(path)!r}. Accepted: a .keras file, a SavedModel directory "
        "(with saved_model.pb) or a .tflite file."
    )


def load_predictor(path, *, class_names=None, num_threads=None):
    """Loads any artifact behind the `Predictor` interface.

    Args:
        path: a ``.keras`` file, a SavedModel directory written by
            `export_saved_model`, or a ``.tflite`` file.
        class_names: optional list of class names (a ``.keras`` file holds
            none; exported artifacts carry theirs).
        num_threads: optional int, CPU threads for LiteRT.

    Returns:
        A `Predictor`.

    Example:
    >>> load_predictor("vit_savedmodel").predict(images).argmax(-1)
    """
    kind = artifact_kind(path)
    if kind == "keras":
        return KerasPredictor(path, class_names)
    if kind == "savedmodel":
        return SavedModelPredictor(path, class_names)
    return TFLitePredictor(path, class_names, num_threads)


# --------------------------------------------------------------------------
# Images from files.
# --------------------------------------------------------------------------


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


def load_image(path, channels, size=None):
    """Reads an image file as a uint8 array (H, W, channels).

    Args:
        path: an image file PIL can read (PNG, JPEG, BMP, GIF, ...).
        channels: 1 (grayscale) or 3 (RGB).
        size: optional (h, w) to resize to (bilinear).

    Example:
    >>> load_image("digit.png", channels=1).shape
    (16, 16, 1)
    """
    from PIL import Image, UnidentifiedImageError

    L.check_choice(channels, "channels", (1, 3))
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image, dtype="uint8")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"Cannot read {str(path)!r} as an image (PNG, JPEG, BMP, GIF, ...): {err}") from err
    return array.reshape(*array.shape[:2], channels)


def predict_files(predictor, inputs, *, top_k=5, resize=False, batch_size=32):
    """Top-k classes of image files, folders or glob patterns.

    Images are batched by size. Without `resize`, an image whose size the
    artifact cannot take raises a `ValueError` naming the file; with it,
    images are resized (bilinear) to `predictor.size`.

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
    images = [load_image(f, predictor.channels, predictor.size if resize else None) for f in files]
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


# --------------------------------------------------------------------------
# Benchmarks.
# --------------------------------------------------------------------------


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
    size = L.pair(image_size, "image_size") if image_size is not None else predictor.size
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


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def format_table(header, rows):
    """Formats rows of cells as a plain-text table with aligned columns.

    Args:
        header: list of column titles.
        rows: list of rows, each a list of cells (any objects; `str` is used).

    Returns:
        The table as one string: header, a rule of dashes, then the rows.

    Example:
    >>> print(format_table(["a", "b"], [[1, 2]]))
    """
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _read_class_names(value):
    """Class names from a text file (one per line) or a comma-separated list."""
    if value is None:
        return None
    if Path(value).is_file():
        return [line.strip() for line in Path(value).read_text().splitlines() if line.strip()]
    return [name.strip() for name in value.split(",")]


def _representative_from_cli(items, geo):
    """Images for int8 calibration from a .npy file or image files/folders/globs."""
    if not items:
        return None
    if len(items) == 1 and items[0].endswith(".npy"):
        return np.load(items[0])
    channels = geo["channels"]
    return np.stack([load_image(f, channels, geo["size"]) for f in find_images(items)])


def _cli_errors(handler):
    """Prints a ValueError as a one-line CLI error (exit code 1)."""

    def run(args):
        try:
            return handler(args)
        except ValueError as err:
            print(f"keras-vit {args.command}: error: {err}", file=sys.stderr)
            return 1

    return run


def _export_command(args):
    if not args.model.endswith(".keras") or not Path(args.model).is_file():
        raise ValueError(f"`model` must be an existing .keras file. Received: {args.model!r}")
    L.check_choice(args.format, "--format", FORMATS)
    L.check_choice(args.quantization, "--quantization", QUANTIZATIONS)
    model = keras.saving.load_model(args.model)
    names = _read_class_names(args.class_names)
    image_size = tuple(args.image_size) if args.image_size else None
    if image_size and len(image_size) == 1:
        image_size = image_size * 2
    stem = Path(args.model).with_suffix("")
    if args.format == "savedmodel":
        if args.quantization != "float32":
            raise ValueError(f"--quantization={args.quantization!r} applies to --format tflite only.")
        output = args.output or f"{stem}_savedmodel"
        export_saved_model(model, output, class_names=names, image_size=image_size, top_k=args.top_k)
    else:
        output = args.output or f"{stem}_{args.quantization}.tflite"
        data = _representative_from_cli(args.representative_data, model_geometry(model, image_size))
        export_tflite(
            model, output, args.quantization, representative_data=data,
            num_calibration_samples=args.num_calibration_samples, image_size=image_size, class_names=names,
        )
    print(f"wrote {output} ({_size_of(output) / 1024:.1f} KiB)")
    return 0


def _size_of(path):
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _predict_command(args):
    predictor = load_predictor(args.model, class_names=_read_class_names(args.class_names))
    results = predict_files(predictor, args.inputs, top_k=args.top_k, resize=args.resize)
    k = min(args.top_k, len(predictor.class_names))
    rows = [[str(f)] + [f"{name} ({p:.3f})" for name, p in top] for f, top in results]
    print(format_table(["image"] + [f"top-{i + 1}" for i in range(k)], rows))
    return 0


def _run_suite(argv):
    """Runs the performance suite of a source checkout (`benchmarks/`)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "run.py").is_file():
        raise ValueError(
            "`--suite` runs benchmarks/run.py of a source checkout (pip install -e .); "
            f"none was found beside {Path(__file__).parent}."
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.run import main as suite_main

    return suite_main(argv)


def _benchmark_command(args):
    if args.suite is not None:
        return _run_suite(args.suite)
    if not args.models:
        raise ValueError("`benchmark` needs model files (or --suite).")
    rows = []
    for path in args.models:
        predictor = load_predictor(path, num_threads=args.threads)
        for row in benchmark(
            predictor, (1, args.batch_size), iterations=args.iterations, warmup=args.warmup,
            image_size=args.image_size,
        ):
            rows.append([
                path, predictor.kind, f"{_size_of(path) / 1024:.1f}", row["batch_size"],
                f"{row['p50_ms']:.3f}", f"{row['p95_ms']:.3f}", f"{row['images_per_s']:.1f}",
            ])
    print(format_table(["artifact", "kind", "KiB", "batch", "p50 ms", "p95 ms", "images/s"], rows))
    return 0


def add_cli(subparsers):
    """Registers the `export`, `predict` and `benchmark` sub-commands.

    Args:
        subparsers: the object returned by `ArgumentParser.add_subparsers`.

    Example:
    >>> add_cli(argparse.ArgumentParser().add_subparsers(dest="command"))
    """
    parser = subparsers.add_parser(
        "export", help="Export a .keras model as a SavedModel or a .tflite file.",
        description="Export a .keras model as a SavedModel (serving signatures for raw uint8 images "
        "and encoded JPEG/PNG bytes) or a .tflite file (float32, float16, dynamic or int8).",
    )
    parser.add_argument("model", help="the .keras file")
    parser.add_argument("--format", default="savedmodel", help=f"one of {', '.join(FORMATS)} (default savedmodel)")
    parser.add_argument(
        "--quantization", default="float32", help=f"tflite only: one of {', '.join(QUANTIZATIONS)} (default float32)"
    )
    parser.add_argument("--output", "-o", help="artifact path (default: beside the model)")
    parser.add_argument("--class-names", help="a text file with one name per line, or 'a,b,c'")
    parser.add_argument(
        "--image-size", type=int, nargs="+", metavar="PX",
        help="H [W]: size for a model built with image_size=None (required for tflite)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="SavedModel: classes in the top-k outputs")
    parser.add_argument(
        "--representative-data", nargs="+", metavar="PATH",
        help="int8: training images (files, folders, globs; resized to the model) or one .npy array",
    )
    parser.add_argument("--num-calibration-samples", type=int, default=100)
    parser.set_defaults(func=_cli_errors(_export_command))

    parser = subparsers.add_parser(
        "predict", help="Print the top-k classes of images with a .keras, SavedModel or .tflite model."
    )
    parser.add_argument("model", help="a .keras file, a SavedModel directory or a .tflite file")
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--resize", action="store_true", help="resize images to the model's size")
    parser.add_argument("--class-names", help="a text file with one name per line, or 'a,b,c'")
    parser.set_defaults(func=_cli_errors(_predict_command))

    parser = subparsers.add_parser(
        "benchmark", help="Latency (p50/p95) and throughput of artifacts at batch 1 and batch N."
    )
    parser.add_argument("models", nargs="*", help=".keras files, SavedModel directories or .tflite files")
    parser.add_argument(
        "--suite", nargs=argparse.REMAINDER, metavar="ARGS",
        help="instead, run the keras_vit vs keras-hub performance suite (python -m benchmarks.run) "
             "with the arguments that follow, e.g. --suite --configs ti --repeats 5",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="N, the second batch size (default 8)")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="LiteRT CPU threads")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="for dynamic-size models")
    parser.set_defaults(func=_cli_errors(_benchmark_command))
