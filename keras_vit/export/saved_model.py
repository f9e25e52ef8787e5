"""SavedModel export: signatures for raw uint8 images and for encoded bytes.

The class names, geometry and image settings are written as a JSON asset
(``assets/keras_vit.json``), so `load_predictor` learns them by reading a
file, never by running graph code from the artifact. A SavedModel is a
program: load only SavedModels from sources you trust.
"""

import json

import keras

from keras_vit import preprocessing
from keras_vit.export.inference import inference_model
from keras_vit.export.geometry import (
    BYTES_SIGNATURE, METADATA_NAME, check_backend, check_target, class_probabilities,
    image_settings, model_geometry, warn_if_not_pixels)
from keras_vit.utils.io import atomic_path, destination_lock
from keras_vit.utils.validation import check_class_names, strict_keywords


@strict_keywords()
def export_saved_model(model, path, *, class_names=None, image_size=None, top_k=5):
    """Exports a classifier as a SavedModel with serving signatures.

    Signatures (list them with ``saved_model_cli show --dir PATH --all``):

    - ``serving_default(images)``: a uint8 batch (B, H, W, C) of raw
      pixels, any batch size. For a model built with ``image_size=None``, H
      and W stay dynamic.
    - ``serving_bytes(image_bytes)``: a string batch (B,) of encoded
      JPEG/PNG/GIF/BMP/WebP images; each goes through
      `keras_vit.preprocessing` (the path `load_data` trains with: decode,
      channels, resize with the model's recorded interpolation and
      antialias) to the model's size, or for a dynamic-size model to
      `image_size` (default: the size its positions were built for).

    Class names, geometry and the image settings are written to
    ``assets/keras_vit.json`` (read by `load_predictor` as a file).

    The graph traced is `inference_model(model)`'s: the same outputs, with
    the LayerNorms folded into the next Dense and the attention heads-first
    (`keras_vit.export.inference`); the metadata records it
    (``"inference_model": true`` and the ``"inference_rewrites"`` applied).

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
            the model's own (`ViTClassifier.class_names`), else "0", "1", ...
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

    check_backend()
    geo = model_geometry(model, image_size)
    names = check_class_names(class_names or getattr(model, "class_names", None), geo["num_classes"])
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
        raise ValueError(f"`top_k` must be a positive int. Received: top_k={top_k!r}")
    if geo["size"] is None:
        raise ValueError("The model has a dynamic image size; pass `image_size` for the bytes signature.")
    warn_if_not_pixels(model)
    path = check_target(path, "savedmodel")
    with destination_lock(path):  # one writer; leftovers of a killed export removed
        k = min(top_k, geo["num_classes"])
        height, width = geo["image_size"] or (None, None)
        channels = geo["channels"]
        name_table = tf.constant(names)

        def answer(images):
            probs = class_probabilities(fast, images)
            top = tf.math.top_k(probs, k=k)
            return {
                "probabilities": probs,
                "top_k_indices": top.indices,
                "top_k_probabilities": top.values,
                "top_k_class_names": tf.gather(name_table, top.indices),
            }

        settings = image_settings(model, geo)
        fast = inference_model(model)

        def from_bytes(image_bytes):
            spec = tf.TensorSpec((*geo["size"], channels), tf.float32)
            prepare = lambda data: preprocessing.prepare_bytes(data, settings)  # noqa: E731
            return answer(tf.map_fn(prepare, image_bytes, fn_output_signature=spec))

        archive = keras.export.ExportArchive()
        archive.track(fast)
        archive.add_endpoint(
            "serving_default", answer,
            input_signature=[tf.TensorSpec((None, height, width, channels), tf.uint8, name="images")],
        )
        archive.add_endpoint(
            BYTES_SIGNATURE, from_bytes, input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")]
        )
        metadata = dict(class_names=names, image_size=geo["image_size"] and list(geo["image_size"]),
                        size=list(geo["size"]), channels=channels, patch_size=geo["patch_size"],
                        stride=geo["stride"], preprocessing=settings.to_dict(), inference_model=True,
                        inference_rewrites=list(fast.inference_rewrites))
        with atomic_path(path) as tmp:
            archive.write_out(str(tmp), verbose=False)
            (tmp / "assets").mkdir(exist_ok=True)
            (tmp / "assets" / f"{METADATA_NAME}.json").write_text(json.dumps(metadata, indent=2))
    return path


def read_saved_model_metadata(path):
    """The metadata `export_saved_model` wrote beside the graph (a file read;
    no graph code runs), or a `ValueError` for other SavedModels."""
    from pathlib import Path

    file = Path(path) / "assets" / f"{METADATA_NAME}.json"
    if not file.is_file():
        raise ValueError(
            f"{path} is not a SavedModel from keras_vit's export_saved_model (no assets/{file.name}); "
            f"re-export it with keras_vit.export.export_saved_model.")
    try:
        return json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"The metadata file {file} is not valid JSON ({err}); re-export the model.") from None
