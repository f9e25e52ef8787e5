"""What a timm hub ``config.json`` says beyond the tensors (image size,
pooling, heads, normalisation, interpolation, class names), as `build_vit`
arguments and image settings."""

from keras_vit.convert.readers import CheckpointError
from keras_vit.layers import ACTIVATIONS
from keras_vit.preprocessing import INTERPOLATIONS

TIMM_POOLING = {"token": "cls", "avg": "gap", "map": "map"}  # timm's global_pool -> pooling


def _timm_architecture_settings(architecture, model_args):
    """What timm's model name implies: LayerNorm epsilon 1e-5 for its CLIP
    towers, quick GELU for the `_quickgelu` ones."""
    out = {}
    if "_clip_" in architecture or architecture.endswith("_clip"):
        out["norm_epsilon"] = 1e-5
    activation = "quick_gelu" if "quickgelu" in architecture else model_args.get("act_layer")
    if activation in ACTIVATIONS:
        out["activation"] = activation
    return out


def timm_preset_settings(config):
    """What a timm hub ``config.json`` says beyond the tensors: the image
    size, pooling, heads, LayerNorm epsilon, activation, normalisation,
    interpolation and class names.

    Args:
        config: the parsed ``config.json``.

    Returns:
        dict of `build_vit` keyword arguments.

    Example:
    >>> settings = timm_preset_settings({"architecture": "vit_base_patch16_clip_224", "global_pool": "avg",
    ...     "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3}})
    >>> settings["pooling"], settings["norm_epsilon"], settings["image_size"]
    ('gap', 1e-05, (224, 224))
    """
    pretrained = dict(config.get("pretrained_cfg") or {})
    args = dict(config.get("model_args") or {})
    out = _timm_architecture_settings(str(config.get("architecture", "")), args)
    size = args.get("img_size") or (pretrained.get("input_size") or [None, None, None])[1:]
    if size and (all(size) if isinstance(size, (list, tuple)) else True):
        out["image_size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    pool = args.get("global_pool", config.get("global_pool"))
    if pool:
        if pool not in TIMM_POOLING:
            raise CheckpointError(f"timm's global_pool={pool!r} is not supported; keras_vit pools as "
                                  f"timm's {', '.join(map(repr, TIMM_POOLING))}.")
        out["pooling"] = TIMM_POOLING[pool]
    if args.get("num_heads"):
        out["num_heads"] = args["num_heads"]
    for key, name in (("mean", "pixel_mean"), ("std", "pixel_std")):
        if pretrained.get(key):
            out[name] = [float(v) for v in pretrained[key]]
    names = config.get("label_names") or pretrained.get("label_names")
    if isinstance(names, (list, tuple)) and names and len(names) == config.get("num_classes"):
        out["class_names"] = [str(n) for n in names]
    interpolation = pretrained.get("interpolation")
    out["preprocessing"] = {k: v for k, v in dict(
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bicubic",
        crop_pct=pretrained.get("crop_pct"), crop_mode=pretrained.get("crop_mode"),
        source=config.get("architecture")).items() if v is not None}
    return out
