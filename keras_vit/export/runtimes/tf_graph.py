"""TensorFlow runtimes: a SavedModel (TensorFlow) and a ``.tflite`` file (LiteRT)."""

from pathlib import Path

import numpy as np

from keras_vit.export.runtimes.base import Predictor
from keras_vit.export.saved_model import read_saved_model_metadata
from keras_vit.export.tflite import tflite_metadata
from keras_vit.utils.validation import check_class_names


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
