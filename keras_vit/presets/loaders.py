"""One loader per kind of preset, in the way of keras-hub's preset loaders.

`get_preset_loader(handle)` is the one place that decides what a handle
is: an architecture name from `PRESETS` ("B/16": the architecture only,
random weights), or a pretrained preset (a known name, ``hf://owner/repo``,
a keras_vit preset folder, a timm folder or a checkpoint file). Every
loader answers the same questions:

- `config()`: the `build_vit` arguments the preset implies (a keras_vit
  folder: the saved model's serialized config);
- `preprocessing()`: how images are prepared for it (size, channels,
  interpolation, normalisation, timm's crop, class names), as far as its
  files say;
- `geometry()`: its native (image_size, channels) without building it, or
  None where its files do not say;
- `load(cls, **overrides)`: the model built as `cls` (a backbone or a
  classifier class) with the preset's weights, if it has any.

The loaders know the model classes only as the `cls` they are given (a
classifier class names its backbone class in `backbone_cls`, as keras-hub's
tasks do), so the models ask the presets and never the other way round.
"""

import functools

import keras

from keras_vit.convert.assign import assign_weights
from keras_vit.convert.checkpoint import convert_file
from keras_vit.layers.pooling import POOLINGS
from keras_vit.presets.architectures import HEAD_ARGS, PRESETS, preset_config, vit_arguments
from keras_vit.presets.checkpoint import infer_config
from keras_vit.presets.folder import WEIGHTS_FILE, is_keras_vit_preset, read_preprocessing, transfer_weights
from keras_vit.presets.registry import resolve_preset
from keras_vit.presets.timm import timm_preset_settings
from keras_vit.utils.validation import check_choice, pair


def get_preset_loader(handle):
    """The loader of `handle`: an `ArchitectureLoader` for a name in
    `PRESETS`, else the loader of the pretrained preset's files.

    Example:
    >>> loader = get_preset_loader("Mu/4")
    >>> loader.pretrained, loader.geometry()
    (False, ((32, 32), 3))
    """
    if isinstance(handle, str) and handle in PRESETS:
        return ArchitectureLoader(handle)
    files = resolve_preset(handle)
    if files.directory is not None and is_keras_vit_preset(files.config):
        return SavedPresetLoader(files)
    return CheckpointLoader(files)


def _is_classifier_class(cls):
    return getattr(cls, "backbone_cls", None) is not None


def _build(cls, backbone_args, head_args):
    if _is_classifier_class(cls):
        return cls(cls.backbone_cls(**backbone_args), **head_args)
    return cls(**backbone_args)


class PresetLoader:
    """What every loader answers; see the module docstring."""

    kind = None
    pretrained = True

    def __init__(self, handle):
        self.handle = handle

    def config(self):
        raise NotImplementedError

    def preprocessing(self):
        raise NotImplementedError

    def geometry(self):
        info = self.preprocessing()
        if not info.get("channels"):
            return None
        return (tuple(info["image_size"]) if info.get("image_size") else None), info["channels"]

    def load(self, cls, **overrides):
        raise NotImplementedError


class ArchitectureLoader(PresetLoader):
    """An architecture preset ("B/16"): sizes only; models start from random weights."""

    kind = "architecture"
    pretrained = False

    def config(self):
        return preset_config(self.handle)

    def preprocessing(self):
        return dict(image_size=list(pair(PRESETS[self.handle]["image_size"], "image_size")), channels=3)

    def load(self, cls, **overrides):
        if _is_classifier_class(cls):
            return _build(cls, *vit_arguments(self.handle, **overrides))
        head = sorted(set(overrides) & set(HEAD_ARGS))
        if head:
            raise ValueError(f"{', '.join(head)}: classifier arguments, not a backbone's. Use "
                             "ViTClassifier.from_preset for a classifier.")
        name = overrides.pop("name", None)
        backbone, _ = vit_arguments(self.handle, **overrides)
        return cls(**backbone, **({"name": name} if name else {}))


class SavedPresetLoader(PresetLoader):
    """A folder written by `save_to_preset`: the saved model and its weights;
    overrides rebuild it and carry the weights over (a new class count gets
    a fresh head; a new image size resamples the learned positions)."""

    kind = "keras_vit"

    def __init__(self, files):
        super().__init__(files.handle)
        self.files = files

    def config(self):
        return self.files.config["model"]

    def preprocessing(self):
        return read_preprocessing(self.files.directory)

    def load(self, cls, **overrides):
        saved = keras.saving.deserialize_keras_object(self.config())
        saved.load_weights(self.files.directory / WEIGHTS_FILE)
        if not isinstance(saved, cls) and isinstance(getattr(saved, "backbone", None), cls):
            saved = saved.backbone  # a backbone taken out of a saved classifier
        if not isinstance(saved, cls):
            raise ValueError(f"The preset {self.files.directory} holds a {type(saved).__name__}; use "
                             f"{type(saved).__name__}.from_preset to load it.")
        if not overrides:
            return saved
        if not hasattr(saved, "backbone"):
            new = type(saved).from_config({**saved.get_config(), **overrides})
        else:
            backbone_keys = set(saved.backbone.get_config())
            head = {k: v for k, v in overrides.items() if k not in backbone_keys}
            body = {k: v for k, v in overrides.items() if k in backbone_keys}
            config = {**saved.get_config(), **head}
            config.pop("outputs_logits", None)
            if "num_classes" in head and head["num_classes"] != saved.num_classes:
                config["class_names"] = head.get("class_names")
            config["backbone"] = type(saved.backbone).from_config({**saved.backbone.get_config(), **body})
            new = type(saved)(**config)
        transfer_weights(saved, new)
        return new


class CheckpointLoader(PresetLoader):
    """A pretrained checkpoint: a timm folder (``config.json`` + weights) or
    a lone checkpoint file, converted by `keras_vit.convert`. The timm
    config's image size fixes the checkpoint's patch grid; its pooling,
    LayerNorm epsilon, activation, normalisation (the model rescales raw
    pixels with it), interpolation and class names go into the model."""

    def __init__(self, files):
        super().__init__(files.handle)
        self.files = files
        self.kind = "timm" if files.directory is not None else "checkpoint"

    @functools.cached_property
    def converted(self):
        return convert_file(self.files.weights)

    def settings(self):
        """The timm config's `build_vit` arguments (empty for a lone file)."""
        return timm_preset_settings(self.files.config) if self.files.config else {}

    def config(self):
        settings = self.settings()
        config = infer_config(self.converted, settings.get("num_heads"), settings.get("image_size"))
        return {**config, **settings}

    def preprocessing(self):
        settings, config = self.settings(), self.files.config
        input_size = (config.get("pretrained_cfg") or {}).get("input_size")
        channels = (config.get("model_args") or {}).get("in_chans") or (input_size[0] if input_size else None)
        info = dict(settings.get("preprocessing", {}), image_size=settings.get("image_size"), channels=channels)
        for key in ("pixel_mean", "pixel_std", "class_names"):
            if key in settings:
                info[key] = settings[key]
        return info

    def load(self, cls, **overrides):
        settings = self.settings()
        native = settings.pop("image_size", None)
        if overrides.get("num_classes") not in (None, self.files.config.get("num_classes")):
            settings.pop("class_names", None)
        kwargs = dict(settings, **overrides)
        if native is not None:
            kwargs.setdefault("image_size", native)
        return load_checkpoint(cls, self.converted, checkpoint_image_size=native, **kwargs)


def load_checkpoint(cls, converted, num_classes=None, image_size=None, *, num_heads=None, pooling=None,
                    keep_pre_logits=True, checkpoint_image_size=None, **build_kwargs):
    """A `cls` (a classifier or a backbone class) that fits a converted
    checkpoint, with its weights; the arguments are `from_checkpoint`'s."""
    config = infer_config(converted, num_heads, checkpoint_image_size or image_size)
    if pooling is not None:
        config["pooling"] = check_choice(pooling, "pooling", POOLINGS)
    ckpt_classes = config.pop("num_classes")
    if not keep_pre_logits:
        config["representation_size"] = None
    num_classes = ckpt_classes if num_classes is None else num_classes
    if image_size is not None:
        config["image_size"] = image_size
    config.update(build_kwargs)
    model = _build(cls, *vit_arguments(num_classes=num_classes, **config))
    replace = num_classes != ckpt_classes or (not keep_pre_logits and "pre_logits/kernel" in converted.tensors)
    assign_weights(model, converted, replace_head=replace and _is_classifier_class(cls))
    return model

