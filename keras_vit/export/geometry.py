"""What an exported artifact needs to know about a model: its geometry
(image size, channels, patches), class names and how images are prepared,
and the checks shared by every exporter.
"""

import os
import warnings
from pathlib import Path

import keras

from keras_vit.layers import grid_size
from keras_vit.preprocessing import ImageSettings
from keras_vit.presets.registry import is_pretrained_name
from keras_vit.utils.validation import pair

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# Name of the metadata entry (a SavedModel asset file, a .tflite metadata
# buffer, an .onnx metadata_props key) holding class names, geometry and image settings.
METADATA_NAME = "keras_vit"
BYTES_SIGNATURE = "serving_bytes"
CHECKPOINT_SUFFIXES = (".npz", ".safetensors", ".pth", ".pt", ".bin")


def check_target(path, kind, read_metadata=None):
    """Refuses to overwrite something that is not an artifact of `kind`;
    for a file, `read_metadata(path)` (the exporter's own reader) tells
    whether keras_vit wrote it."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"The directory of `path` does not exist. Received: path={str(path)!r}")
    if kind == "savedmodel" and path.exists():
        if not path.is_dir() or (any(path.iterdir()) and not (path / "saved_model.pb").exists()):
            raise ValueError(
                f"`path` exists and is not a SavedModel directory; refusing to replace it. "
                f"Received: path={str(path)!r}"
            )
    if kind in ("tflite", "onnx") and path.is_dir():
        raise ValueError(f"`path` is a directory; a .{kind} file was expected. Received: path={str(path)!r}")
    if kind in ("tflite", "onnx") and os.path.lexists(path) and not _holds_metadata(path, read_metadata):
        raise ValueError(f"`path` exists and is not a .{kind} file that keras_vit wrote; refusing to replace it. "
                         f"Remove it, or choose another path. Received: path={str(path)!r}")
    return path



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
        image_size = pair(image_size, "image_size")
        if fixed is not None and image_size != fixed:
            raise ValueError(
                f"The model takes images of size {fixed}; it cannot be exported at "
                f"image_size={image_size}. Leave `image_size` unset or pass {fixed}."
            )
        if patch is not None:
            grid_size(image_size, patch, stride, "image_size")
    size = image_size or fixed or reference
    return dict(
        image_size=fixed, size=size, channels=shape[-1], patch_size=patch, stride=stride,
        num_classes=out[-1],
    )


def outputs_probabilities(model):
    if hasattr(model, "outputs_logits"):
        return not model.outputs_logits
    return isinstance(model.layers[-1], keras.layers.Activation)


def class_probabilities(model, images):
    """Class probabilities of raw pixels, computed in float32."""
    outputs = keras.ops.cast(model(keras.ops.cast(images, "float32"), training=False), "float32")
    return outputs if outputs_probabilities(model) else keras.ops.softmax(outputs, axis=-1)


def check_backend():
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"Exporting needs the TensorFlow backend (KERAS_BACKEND=tensorflow). "
            f"Current backend: {keras.backend.backend()!r}."
        )


def warn_if_not_pixels(model):
    if not getattr(model, "include_rescaling", True):
        warnings.warn(
            "The model has no 'rescaling' layer (include_rescaling=False), but exported "
            "artifacts feed it raw pixels in [0, 255]. Build it with include_rescaling=True.",
            stacklevel=3,
        )


def image_settings(model, geo=None):
    """The `ImageSettings` images are prepared with for `model`: its
    recorded preprocessing (interpolation, antialias, resize mode) at an
    artifact's size and channels (`geo`, from `model_geometry`), or by
    default at the model's own (`model.image_size`, None for any size)."""
    recorded = dict(getattr(model, "preprocessing", None) or {})
    if geo is None:
        recorded.update(image_size=model.image_size, channels=model.channels)
    else:
        recorded.update(image_size=geo["size"], channels=geo["channels"])
    return ImageSettings.from_dict(recorded)


def artifact_kind(path, presets=False):
    """Tells which kind of model artifact `path` is.

    Args:
        path: a ``.keras`` file, a SavedModel directory, a ``.tflite`` or
            an ``.onnx`` file.
        presets: bool, also accept what `ViTClassifier.from_preset` loads
            (a known pretrained name, ``hf://owner/repo``, a directory with
            a ``config.json``, a checkpoint file: `CHECKPOINT_SUFFIXES`) as
            "preset".

    Returns:
        "keras", "savedmodel", "tflite", "onnx" (or "preset"); raises a `ValueError`
        otherwise.

    Example:
    >>> artifact_kind("digits_savedmodel")
    'savedmodel'
    """
    text = str(path)
    if presets and is_pretrained_name(text):
        return "preset"
    path = Path(path)
    if not path.exists():
        raise ValueError(f"No such model artifact{' or preset' if presets else ''}: {text!r}")
    if path.is_dir() and (path / "saved_model.pb").exists():
        return "savedmodel"
    if path.is_file() and path.suffix in (".keras", ".tflite", ".onnx"):
        return path.suffix[1:]
    if presets and ((path.is_dir() and (path / "config.json").is_file())
                    or (path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES)):
        return "preset"
    raise ValueError(
        f"Unknown model artifact {text!r}. Accepted: a .keras file, a SavedModel directory "
        "(with saved_model.pb), a .tflite or an .onnx file"
        + (", a known pretrained name, hf://owner/repo[@rev], a preset directory (with config.json) "
           f"or a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)})." if presets else "."))


def _holds_metadata(path, read_metadata):
    """Whether the file at `path` is an export of ours (it holds our metadata)."""
    try:
        return path.is_file() and read_metadata is not None and read_metadata(path) is not None
    except (ValueError, OSError):
        return False
