"""keras_vit's own preset folders: `save_to_preset` writes one, and what it
holds is read back here (the loader is `keras_vit.presets.loaders`).

A preset folder holds ``config.json`` (the model's class and config),
``model.weights.h5`` and ``preprocessing.json`` (how images are prepared:
size, channels, interpolation, normalisation, class names). It is written
beside its target and renamed into place, so it is complete or absent.
"""

import json
from pathlib import Path

import keras

from keras_vit.layers import resample_position_table
from keras_vit.utils.io import atomic_path, remove_stale_temporaries, write_json
from keras_vit.utils.ownership import PRESET_DIR, claim_directory
from keras_vit.utils.validation import strict_keywords

PRESET_FORMAT = "keras_vit.preset/1"
CONFIG_FILE, WEIGHTS_FILE, PREPROCESSING_FILE = "config.json", "model.weights.h5", "preprocessing.json"


def preprocessing_of(model):
    """The image preparation a model expects, as a JSON-able dict."""
    backbone = getattr(model, "backbone", model)
    info = dict(image_size=backbone.image_size and list(backbone.image_size),
                reference_image_size=list(backbone.reference_image_size), channels=backbone.channels,
                include_rescaling=backbone.include_rescaling, pixel_mean=backbone.pixel_mean,
                pixel_std=backbone.pixel_std, interpolation="bilinear", antialias=True)
    info.update(getattr(model, "preprocessing", None) or {})
    if getattr(model, "class_names", None):
        info["class_names"] = model.class_names
    return info


@strict_keywords()
def save_to_preset(model, directory):
    """Writes `model` (a `ViTClassifier` or `ViTBackbone`) as a preset
    directory that `from_preset(directory)` loads in any process.

    Example:
    >>> import tempfile
    >>> from keras_vit.models import build_vit
    >>> path = save_to_preset(build_vit("Mu/4", depth=1), tempfile.mkdtemp() + "/p")
    >>> sorted(p.name for p in path.iterdir())
    ['config.json', 'model.weights.h5', 'preprocessing.json']
    """
    directory = claim_directory(directory, PRESET_DIR, flag="directory")  # new, empty, or a preset of ours
    remove_stale_temporaries(directory.parent, name=directory.name)  # of a save that was killed
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        write_json(tmp / CONFIG_FILE, dict(format=PRESET_FORMAT, class_name=type(model).__name__,
                                           model=keras.saving.serialize_keras_object(model)))
        model.save_weights(tmp / WEIGHTS_FILE)
        write_json(tmp / PREPROCESSING_FILE, preprocessing_of(model))
    return directory


def is_keras_vit_preset(config):
    """Whether a parsed ``config.json`` is one `save_to_preset` wrote."""
    return isinstance(config, dict) and config.get("format") == PRESET_FORMAT


def read_preprocessing(directory):
    """The ``preprocessing.json`` of a preset folder, as a dict."""
    return json.loads((Path(directory) / PREPROCESSING_FILE).read_text())


def transfer_weights(source, target):
    """Copies every variable of `source` into the variable of `target` with
    the same path; learned positions are resampled to the target's grid, and
    variables whose shapes differ otherwise (a new head) keep their values."""
    sources = {v.path: v for v in source.weights}
    for variable in target.weights:
        value = sources.get(variable.path)
        if value is None:
            continue
        value = keras.ops.convert_to_numpy(value)
        if value.shape != tuple(variable.shape) and variable.path.endswith("position_embedding"):
            value = _resample_positions(value, source, target)
        if value.shape == tuple(variable.shape):
            variable.assign(value)


def _resample_positions(table, source, target):
    old = getattr(source, "backbone", source).patch_encoder
    new = getattr(target, "backbone", target).patch_encoder
    return resample_position_table(table, new.grid_size, old.grid_size, int(old.use_cls_token), new.pos_interpolation)
