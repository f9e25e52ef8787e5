"""Keras runtime: a ``.keras`` file or a preset, run as `inference_model` of the loaded model."""

import numpy as np

from keras_vit.export.geometry import image_settings, model_geometry, outputs_probabilities
from keras_vit.export.inference import inference_model
from keras_vit.export.runtimes.base import Predictor
from keras_vit.models.preset_io import load_model
from keras_vit.utils.validation import check_class_names


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
