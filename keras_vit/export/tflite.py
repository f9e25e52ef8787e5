"""TFLite export (float32, float16, dynamic-range and full-integer int8),
builtin ops only, with class names and geometry in the file's metadata."""

import json
from pathlib import Path

import keras
import numpy as np

from keras_vit.export.geometry import (
    METADATA_NAME, QUANTIZATIONS, check_backend, check_target, class_probabilities,
    image_settings, model_geometry, warn_if_not_pixels)
from keras_vit.utils.io import atomic_path, destination_lock, scratch_dir
from keras_vit.utils.validation import check_choice, check_class_names, strict_keywords


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


@strict_keywords()
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

    The graph converted is the plain model's, not
    `keras_vit.export.inference_model`'s (the metadata records
    ``"inference_model": false``): LiteRT runs a full-integer broadcast
    BATCH_MATMUL (the heads-first attention) at half the speed of the
    row-wise FULLY_CONNECTED (Ti int8 at batch 1: 8.9 against 4.7 ms), and
    int8 calibration then sees the usual LayerNorm outputs.

    Args:
        model: a `keras.Model` classifier taking raw pixels.
        path: the ``.tflite`` file to write (written beside, then renamed).
        quantization: one of `QUANTIZATIONS`.
        representative_data: for "int8", raw training images; see
            `calibration_samples` for the accepted forms.
        num_calibration_samples: int, the most images drawn for "int8".
        image_size: int or (h, w); required for a model built with
            ``image_size=None`` (TFLite files have a fixed size).
        class_names: optional list of `num_classes` strings (default: the
            model's own, else "0", "1", ...).

    Returns:
        The `Path` of the file.

    Example:
    >>> export_tflite(model, "vit_int8.tflite", "int8",
    ...               representative_data=train_ds.take(10))
    """
    check_choice(quantization, "quantization", QUANTIZATIONS)
    check_backend()
    geo = model_geometry(model, image_size)
    if geo["image_size"] is None and image_size is None:
        raise ValueError(
            "The model has a dynamic image size (image_size=None) but a .tflite file needs a "
            "fixed one: pass `image_size` (keras-vit export --image-size), e.g. image_size=224."
        )
    names = check_class_names(class_names or getattr(model, "class_names", None), geo["num_classes"])
    shape = (*geo["size"], geo["channels"])
    samples = None
    if quantization == "int8":
        if not isinstance(num_calibration_samples, int) or num_calibration_samples <= 0:
            raise ValueError(
                f"`num_calibration_samples` must be a positive int. Received: {num_calibration_samples!r}"
            )
        samples = calibration_samples(representative_data, shape, num_calibration_samples)
    warn_if_not_pixels(model)
    path = check_target(path, "tflite", tflite_metadata)
    with destination_lock(path):  # one writer; leftovers of a killed export removed
        flatbuffer = _convert(model, path, shape, quantization, samples)
        metadata = dict(
            class_names=names, quantization=quantization, image_size=list(geo["size"]),
            channels=geo["channels"], patch_size=geo["patch_size"], stride=geo["stride"],
            preprocessing=image_settings(model, geo).to_dict(), inference_model=False,
        )
        flatbuffer = _with_metadata(flatbuffer, metadata)
        with atomic_path(path) as tmp:
            tmp.write_bytes(flatbuffer)
    return path


def _convert(model, path, shape, quantization, samples):
    """The TFLite flatbuffer of the plain model (builtin ops only), through a scratch SavedModel."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    with scratch_dir(path) as workdir:  # a killed export's scratch dir is cleaned up
        # the plain model, not `inference_model(model)`: see export_tflite's docstring
        archive.add_endpoint(
            "serving_default",
            lambda images: {"probabilities": class_probabilities(model, images)},
            input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="images")],
        )
        archive.write_out(str(workdir), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(workdir))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ([s[None]] for s in samples)
        try:
            return converter.convert()
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
