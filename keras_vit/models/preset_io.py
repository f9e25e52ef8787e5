"""keras_vit's own preset directories: `save_to_preset` and loading them back.

A preset directory holds ``config.json`` (the model's class and config),
``model.weights.h5`` and ``preprocessing.json`` (how images are prepared:
size, channels, interpolation, normalisation, class names). It is written
beside its target and renamed into place, so it is complete or absent.
Loading builds the saved model, loads its weights, and applies overrides
(a new class count gets a fresh head; a new image size resamples the
learned positions).
"""

import os
from pathlib import Path

import keras

from keras_vit.hub import resolve_preset
from keras_vit.layers import resample_position_table
from keras_vit.models.pretrained import from_timm_preset
from keras_vit.utils.io import atomic_path, load_keras_file, remove_stale_temporaries, write_json
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
    return isinstance(config, dict) and config.get("format") == PRESET_FORMAT


def load_saved_preset(directory, config, cls, overrides):
    """Builds and loads a preset written by `save_to_preset`, as `cls`
    (a backbone is taken out of a saved classifier), then applies
    `overrides`."""
    from keras_vit.models.backbone import ViTBackbone
    from keras_vit.models.classifier import ViTClassifier

    saved = keras.saving.deserialize_keras_object(config["model"])
    saved.load_weights(Path(directory) / WEIGHTS_FILE)
    if cls is ViTBackbone and isinstance(saved, ViTClassifier):
        saved = saved.backbone
    if not isinstance(saved, cls):
        raise ValueError(f"The preset {directory} holds a {type(saved).__name__}; use "
                         f"{type(saved).__name__}.from_preset to load it.")
    if not overrides:
        return saved
    if cls is ViTBackbone:
        new = ViTBackbone.from_config({**saved.get_config(), **overrides})
    else:
        backbone_keys = set(saved.backbone.get_config())
        head = {k: v for k, v in overrides.items() if k not in backbone_keys}
        body = {k: v for k, v in overrides.items() if k in backbone_keys}
        config = {**saved.get_config(), **head}
        config.pop("outputs_logits", None)
        if "num_classes" in head and head["num_classes"] != saved.num_classes:
            config["class_names"] = head.get("class_names")
        config["backbone"] = ViTBackbone.from_config({**saved.backbone.get_config(), **body})
        new = ViTClassifier(**config)
    transfer_weights(saved, new)
    return new


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
    return resample_position_table(table, new.grid_size, old.grid_size, int(old.use_cls_token), new.interpolation)


def load_preset(cls, handle, **overrides):
    """`cls.from_preset(handle)` for anything but an architecture name: a
    keras_vit preset directory, or a pretrained checkpoint (a known name,
    ``hf://owner/repo``, a timm-style directory or a checkpoint file),
    converted by `keras_vit.convert` (`keras_vit.models.pretrained`)."""
    files = resolve_preset(handle)
    if files.directory is not None and is_keras_vit_preset(files.config):
        return load_saved_preset(files.directory, files.config, cls, overrides)
    return from_timm_preset(files, cls, **overrides)


def load_model(handle):
    """A model from any handle: a ``.keras`` file (loaded in safe mode), or
    what `ViTClassifier.from_preset` loads (a preset directory, a known
    pretrained name, ``hf://owner/repo`` or a checkpoint file).

    Example:
    >>> model = load_model("vit.keras")  # doctest: +SKIP
    """
    if os.fspath(handle).endswith(".keras"):
        return load_keras_file(handle, safe_mode=True)
    from keras_vit.models.classifier import ViTClassifier

    return ViTClassifier.from_preset(handle)
