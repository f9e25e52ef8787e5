"""From a checkpoint file or a pretrained preset to a loaded `ViTClassifier`:
`convert_file`, `from_checkpoint` and `from_timm_preset` (used by
`ViTClassifier.from_preset` / `ViTBackbone.from_preset` for pretrained
handles)."""

from keras_vit.convert.assign import assign_weights, infer_config
from keras_vit.convert.big_vision import convert_npz
from keras_vit.convert.readers import read_checkpoint
from keras_vit.convert.rules import Converted
from keras_vit.convert.timm import convert_timm
from keras_vit.utils.validation import check_choice


def convert_file(path):
    """Reads and converts a checkpoint file (any of `FORMATS`).

    Example:
    >>> convert_file("ViT-B_16.npz").num_heads
    12
    """
    fmt, arrays = read_checkpoint(path)
    return convert_npz(arrays) if fmt == "npz" else convert_timm(arrays)


def from_checkpoint(path, num_classes=None, image_size=None, *, num_heads=None, pooling=None,
                    keep_pre_logits=True, checkpoint_image_size=None, **build_kwargs):
    """Builds a `build_vit` model that fits a checkpoint file and loads it.

    The width, depth, MLP size, patch size, class token, pooling,
    pre-logits and head are read from the file (heads too for `.npz`).

    Args:
        path: `.npz`, `.safetensors` or PyTorch checkpoint file, or a
            `Converted` from `convert_file`.
        num_classes: None keeps the checkpoint's head; another number gets a
            new, freshly initialised head (0: no head, pooled features).
        image_size: None keeps the checkpoint's resolution; another size
            resamples the position embeddings (bicubic, class row kept).
        num_heads: attention heads; needed for timm files whose width is
            not a standard one.
        pooling: override "cls"/"gap"; timm state dicts do not say whether
            a model with a class token pooled it or averaged (timm's
            global_pool="avg" with fc_norm=False).
        keep_pre_logits: bool, keep the checkpoint's tanh pre-logits layer
            (also when the head is replaced); False drops it.
        checkpoint_image_size: the image size the checkpoint was trained at
            (from its metadata); it fixes the checkpoint's patch grid.
        **build_kwargs: other `build_vit` arguments (dropout,
            drop_path_rate, include_rescaling, name, ...).

    Returns:
        A `keras.Model` with the checkpoint's weights.

    Example:
    >>> model = from_checkpoint("ViT-B_16.npz", num_classes=10, image_size=384)
    """
    from keras_vit.models import build_vit

    converted = path if isinstance(path, Converted) else convert_file(path)
    config = infer_config(converted, num_heads, checkpoint_image_size or image_size)
    if pooling is not None:
        check_choice(pooling, "pooling", ("cls", "gap", "map"))
        config["pooling"] = pooling
    ckpt_classes = config.pop("num_classes")
    if not keep_pre_logits:
        config["representation_size"] = None
    if num_classes is None:
        num_classes = ckpt_classes
    if image_size is not None:
        config["image_size"] = image_size
    config.update(build_kwargs)
    model = build_vit(num_classes=num_classes, **config)
    replace = num_classes != ckpt_classes or (
        not keep_pre_logits and "pre_logits/kernel" in converted.tensors
    )
    assign_weights(model, converted, replace_head=replace)
    return model


TIMM_POOLING = {"token": "cls", "avg": "gap", "map": "map"}


def timm_preset_settings(config):
    """What a timm hub ``config.json`` says beyond the tensors: the image
    size, pooling, heads, normalisation, interpolation and class names.

    Example:
    >>> timm_preset_settings({"global_pool": "avg", "pretrained_cfg": {
    ...     "input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3}})["pooling"]
    'gap'
    """
    pretrained = dict(config.get("pretrained_cfg") or {})
    args = dict(config.get("model_args") or {})
    out = {}
    size = args.get("img_size") or (pretrained.get("input_size") or [None, None, None])[1:]
    if size and all(size) if isinstance(size, (list, tuple)) else size:
        out["image_size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    pool = args.get("global_pool", config.get("global_pool"))
    if pool in TIMM_POOLING:
        out["pooling"] = TIMM_POOLING[pool]
    if args.get("num_heads"):
        out["num_heads"] = args["num_heads"]
    for key, name in (("mean", "pixel_mean"), ("std", "pixel_std")):
        if pretrained.get(key):
            out[name] = [float(v) for v in pretrained[key]]
    names = config.get("label_names") or pretrained.get("label_names")
    if names and len(names) == config.get("num_classes"):
        out["class_names"] = [str(n) for n in names]
    out["preprocessing"] = {
        k: v for k, v in dict(
            interpolation=pretrained.get("interpolation", "bicubic"),
            crop_pct=pretrained.get("crop_pct"), crop_mode=pretrained.get("crop_mode"),
            source=config.get("architecture")).items() if v is not None}
    if out["preprocessing"].get("interpolation") not in ("bilinear", "bicubic", "nearest", "area"):
        out["preprocessing"]["interpolation"] = "bicubic"
    return out


def from_timm_preset(files, cls, **overrides):
    """Builds `cls` (`ViTClassifier` or `ViTBackbone`) from a resolved
    pretrained preset (`keras_vit.hub.PresetFiles`): a timm hub repository
    (``config.json`` + weights) or a lone checkpoint file. The config's
    image size fixes the checkpoint's patch grid; its normalisation,
    interpolation and class names go into the model. `overrides` are
    `from_checkpoint` / `build_vit` arguments (``num_classes`` gets a fresh
    head, ``image_size`` resamples the positions).
    """
    from keras_vit.models import ViTBackbone

    converted = convert_file(files.weights)
    settings = timm_preset_settings(files.config) if files.config else {}
    native = settings.pop("image_size", None)
    kwargs = dict(settings, **overrides)
    if native is not None:
        kwargs.setdefault("image_size", native)
    model = from_checkpoint(converted, checkpoint_image_size=native, **kwargs)
    return model.backbone if cls is ViTBackbone else model
