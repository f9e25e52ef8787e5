"""ONNX export for ONNX Runtime: raw pixels in, class probabilities out,
with a dynamic batch axis (and dynamic height and width for a model built
with ``image_size=None``), and the class names and geometry in the file's
``metadata_props``.

The graph is traced on the TensorFlow backend and converted with tf2onnx
(the converter Keras' own ``model.export(format="onnx")`` uses there), then
its LayerNorms and GELUs are rewritten into the standard forms ONNX Runtime
fuses (`keras_vit.export.onnx_fusion`); the file records how many in its
metadata (``onnx_runtime_fusions``).
"""

import json
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_vit.export.onnx_fusion import fuse_for_onnx_runtime
from keras_vit.export.geometry import (
    METADATA_NAME, check_target, class_probabilities, image_settings, model_geometry,
    warn_if_not_pixels)
from keras_vit.utils.io import atomic_path, destination_lock
from keras_vit.utils.validation import check_class_names, strict_keywords

# Opset 17 has LayerNormalization; tf2onnx 1.17 writes opsets up to 18 and
# ONNX Runtime 1.32 runs both.
DEFAULT_OPSET = 17
OPSETS = (13, 18)  # the accepted range, inclusive
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
# Tolerance of the check `export_onnx` runs after converting: ONNX Runtime
# against the Keras model on two random images.
CHECK_ATOL = 1e-4


def _erfc_handler(ctx, node, name, args):
    """tf2onnx handler for TensorFlow's Erfc (no ONNX op): 1 - Erf(x).
    `tf.nn.gelu(approximate=False)` is written with Erfc."""
    from tf2onnx import utils

    x = node.input[0]
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(x))
    erf = ctx.make_node("Erf", [x], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _name_dims(proto, names):
    """Names the dynamic axes of the graph's input and output ("batch",
    "height", "width") instead of tf2onnx's "unk__N"."""
    for value, axes in ((proto.graph.input[0], names), (proto.graph.output[0], names[:1])):
        for dim, axis in zip(value.type.tensor_type.shape.dim, axes):
            if axis and not dim.HasField("dim_value"):
                dim.dim_param = axis


def _check_opset(opset):
    low, high = OPSETS
    if not isinstance(opset, int) or isinstance(opset, bool) or not low <= opset <= high:
        raise ValueError(f"`opset` must be an int in [{low}, {high}] (tf2onnx's range; ONNX Runtime runs all). "
                         f"Received: opset={opset!r}")


@strict_keywords()
def export_onnx(model, path, *, opset=DEFAULT_OPSET, class_names=None, image_size=None, check=True):
    """Exports a classifier to an ``.onnx`` file for ONNX Runtime.

    The file takes float32 raw pixels ``images`` (B, H, W, C) in [0, 255],
    channels last as the Keras model, and returns float32
    ``probabilities`` (B, num_classes), like the SavedModel and TFLite
    exports. The batch axis is dynamic; for a model built with
    ``image_size=None`` height and width are too (any size its patches
    tile). The class names, geometry, image settings, opset and output kind
    are stored as JSON under the ``metadata_props`` key "keras_vit" (read
    back by `load_predictor` / `onnx_metadata`).

    Needs the TensorFlow backend (the graph is converted with tf2onnx).

    Args:
        model: a `keras.Model` classifier taking raw pixels (B, H, W, C).
        path: the ``.onnx`` file to write (written beside, then renamed).
        opset: int, the ONNX opset (default `DEFAULT_OPSET`, 17; accepted
            `OPSETS`, 13 to 18).
        class_names: optional list of `num_classes` strings (default: the
            model's own, else "0", "1", ...).
        image_size: optional int or (h, w): for a dynamic-size model, the
            size recorded as the one to resize images to (default: the size
            its positions were built for); the file itself stays dynamic.
        check: bool, run the file in ONNX Runtime on two random images and
            raise unless it matches the Keras model (within `CHECK_ATOL`)
            before it replaces `path`.

    Returns:
        The `Path` of the file.

    Example:
    >>> export_onnx(model, "vit.onnx", class_names=["cat", "dog"])
    >>> session = onnxruntime.InferenceSession("vit.onnx")
    >>> session.run(None, {"images": np.zeros((4, 32, 32, 3), "float32")})[0].shape
    (4, 2)
    """
    _check_opset(opset)
    if not isinstance(check, bool):
        raise ValueError(f"`check` must be a bool. Received: check={check!r}")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"export_onnx needs the TensorFlow backend (KERAS_BACKEND=tensorflow); the current backend is "
            f"{backend!r}. (Keras' own model.export(format='onnx') needs jax2onnx on JAX, and keras_vit models "
            "do not build on the torch backend.)"
        )
    geo = model_geometry(model, image_size)
    names = check_class_names(class_names or getattr(model, "class_names", None), geo["num_classes"])
    warn_if_not_pixels(model)
    path = check_target(path, "onnx", onnx_metadata)

    import onnx
    import tensorflow as tf
    import tf2onnx

    try:  # tf2onnx 1.17 predates numpy 2; Keras patches it the same way for its own ONNX export
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        with warnings.catch_warnings():  # its `hasattr(np, "object")` probe warns
            warnings.simplefilter("ignore", FutureWarning)
            patch_tf2onnx()
    except ImportError:
        pass

    height, width = geo["image_size"] or (None, None)
    spec = [tf.TensorSpec((None, height, width, geo["channels"]), tf.float32, name=INPUT_NAME)]

    with destination_lock(path):  # one writer; leftovers of a killed export removed
        @tf.function(input_signature=spec, autograph=False)
        def serve(images):  # the plain model, as export_tflite converts it
            return {OUTPUT_NAME: class_probabilities(model, images)}

        try:
            proto, _ = tf2onnx.convert.from_function(
                serve, spec, opset=opset, custom_op_handlers={"Erfc": (_erfc_handler, [])})
        except Exception as err:
            raise ValueError(f"tf2onnx could not convert the model at opset {opset}: {err}") from err
        unsupported = sorted({n.op_type for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain or "")})
        if unsupported:
            raise ValueError(f"The converted graph holds ops ONNX does not define: {unsupported}.")
        _name_dims(proto, ["batch", None if height else "height", None if width else "width"])
        fused = fuse_for_onnx_runtime(proto, layer_norm=opset >= 17)
        metadata = dict(
            class_names=names, image_size=geo["image_size"] and list(geo["image_size"]), size=list(geo["size"]),
            channels=geo["channels"], patch_size=geo["patch_size"], stride=geo["stride"],
            preprocessing=image_settings(model, geo).to_dict(), input=INPUT_NAME, input_range=[0, 255],
            outputs=OUTPUT_NAME, opset=opset, onnx_runtime_fusions=fused,
        )
        del proto.metadata_props[:]
        proto.metadata_props.add(key=METADATA_NAME, value=json.dumps(metadata))
        proto.producer_name = "keras_vit"
        proto.doc_string = "keras_vit classifier: float32 images (B, H, W, C) in [0, 255] -> probabilities"
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
        if check:
            _check_parity(model, data, geo)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return path


def _check_parity(model, data, geo):
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).uniform(0, 255, (2, *geo["size"], geo["channels"])).astype("float32")
    expected = keras.ops.convert_to_numpy(class_probabilities(model, images))
    got = session.run(None, {INPUT_NAME: images})[0]
    error = float(np.max(np.abs(got - expected)))
    if not error <= CHECK_ATOL:
        raise ValueError(f"The ONNX graph does not reproduce the model: max |ORT - Keras| = {error:.3g} "
                         f"(> {CHECK_ATOL}); nothing was written.")


def onnx_metadata(path_or_proto):
    """The keras_vit metadata (class names, image size, ...) of an ``.onnx``
    file written by `export_onnx`, or None for other ONNX files.

    Args:
        path_or_proto: a file path or an `onnx.ModelProto`.

    Example:
    >>> onnx_metadata("vit.onnx")["class_names"][:2]
    ['cat', 'dog']
    """
    import onnx

    proto = path_or_proto
    if not isinstance(proto, onnx.ModelProto):
        try:
            proto = onnx.load(str(Path(path_or_proto)), load_external_data=False)
        except Exception as err:  # onnx raises DecodeError and others
            raise ValueError(f"{path_or_proto} is not an ONNX model: {err}") from err
    for entry in proto.metadata_props:
        if entry.key == METADATA_NAME:
            return json.loads(entry.value)
    return None
