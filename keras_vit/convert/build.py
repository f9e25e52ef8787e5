"""Loading checkpoint files: into a model you built (`load_npz`,
`load_timm`), or into one built to fit the file (`infer_config`,
`from_checkpoint`, and `from_timm_preset`, which `ViTClassifier.from_preset`
and `ViTBackbone.from_preset` call for pretrained handles)."""

import math
import os
import re

from keras_vit.convert.assign import assign_weights, square_grid
from keras_vit.convert.big_vision import convert_npz
from keras_vit.convert.readers import CheckpointError, read_checkpoint
from keras_vit.convert.rules import Converted
from keras_vit.convert.timm import convert_timm, timm_config_args
from keras_vit.layers import grid_size
from keras_vit.models import ViTBackbone, build_vit
from keras_vit.models.presets import heads_for_width
from keras_vit.utils.validation import check_choice, pair

# `infer_config` keys that configure the classifier, not the backbone.
CLASSIFIER_KEYS = ("num_classes", "pooling", "fc_norm", "representation_size")


def default_num_heads(hidden_dim):
    """Heads of the standard ViT of this width (64 per head otherwise).

    Example:
    >>> default_num_heads(768)
    12
    """
    heads = heads_for_width(hidden_dim)
    if heads is not None:
        return heads
    if hidden_dim % 64:
        raise ValueError(
            f"Cannot guess the number of heads for width {hidden_dim}: timm state dicts do not "
            f"record it. Pass `num_heads`.")
    return hidden_dim // 64


def _patch_grid(rows, patch, image_size):
    if image_size is not None:
        grid = grid_size(pair(image_size, "image_size"), patch)
        if math.prod(grid) == rows:
            return grid  # e.g. a non-square grid
    return square_grid(rows, "position_embedding")


def infer_config(converted, num_heads=None, image_size=None):
    """The `build_vit` arguments that fit a converted checkpoint.

    Args:
        converted: a `Converted`.
        num_heads: heads, needed for timm state dicts of non-standard width
            (`.npz` files record them).
        image_size: optional image size whose patch grid has as many cells
            as the checkpoint's positions: needed for non-square grids.

    Returns:
        dict of `build_vit` keyword arguments, including the checkpoint's
        `image_size` and `num_classes`.

    Example:
    >>> infer_config(convert_file("ViT-B_16.npz"))["hidden_dim"]  # doctest: +SKIP
    768
    """
    t = converted.tensors

    def shape(path):
        if path not in t:
            raise CheckpointError(f"The checkpoint lacks {path!r}; it is not a ViT checkpoint.")
        return t[path].shape

    ph, pw, channels, dim = shape("patch_encoder/projection/kernel")
    has_cls = "patch_encoder/cls_token" in t
    grid = _patch_grid(shape("patch_encoder/position_embedding")[1] - int(has_cls), (ph, pw), image_size)
    return dict(
        image_size=(grid[0] * ph, grid[1] * pw),
        patch_size=(ph, pw),
        channels=channels,
        hidden_dim=dim,
        depth=sum(1 for p in t if re.fullmatch(r"encoder_block_\d+/norm1/gamma", p)),
        num_heads=num_heads or converted.num_heads or default_num_heads(dim),
        mlp_dim=shape("encoder_block_0/mlp_dense1/kernel")[1],
        use_qkv_bias="encoder_block_0/attention/qkv/bias" in t,
        qk_norm="encoder_block_0/attention/q_norm/gamma" in t,
        layer_scale=1.0 if "encoder_block_0/layer_scale1/gamma" in t else None,
        num_registers=t["patch_encoder/registers"].shape[1] if "patch_encoder/registers" in t else 0,
        class_token=has_cls,
        pre_norm="norm_pre/gamma" in t,
        final_norm="encoder_norm/gamma" in t,
        fc_norm="fc_norm/gamma" in t,
        pooling="map" if "map_pooling/probe" in t else ("cls" if has_cls else "gap"),
        representation_size=t["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in t else None,
        num_classes=t["head/kernel"].shape[1] if "head/kernel" in t else 0,
    )


def convert_file(path):
    """Reads and converts a checkpoint file (any of `FORMATS`).

    Example:
    >>> convert_file("ViT-B_16.npz").num_heads  # doctest: +SKIP
    12
    """
    fmt, arrays = read_checkpoint(path)
    return convert_npz(arrays) if fmt == "npz" else convert_timm(arrays)


def from_checkpoint(path, num_classes=None, image_size=None, *, num_heads=None, pooling=None,
                    keep_pre_logits=True, **build_kwargs):
    """Builds a `ViTClassifier` that fits a checkpoint file and loads it.

    The width, depth, MLP size, patch size, class token, norms, pooling,
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
        pooling: override "cls"/"gap"/"map"; timm state dicts do not say
            whether a model with a class token pooled it or averaged
            (timm's global_pool="avg" with fc_norm=False).
        keep_pre_logits: bool, keep the checkpoint's tanh pre-logits layer
            (also when the head is replaced); False drops it.
        **build_kwargs: other `build_vit` arguments (dropout,
            drop_path_rate, include_rescaling, pixel_mean, name, ...).

    Returns:
        A `ViTClassifier` with the checkpoint's weights.

    Example:
    >>> model = from_checkpoint("ViT-B_16.npz", num_classes=10, image_size=384)  # doctest: +SKIP
    """
    converted = path if isinstance(path, Converted) else convert_file(path)
    config = infer_config(converted, num_heads, image_size)
    if pooling is not None:
        config["pooling"] = check_choice(pooling, "pooling", ("cls", "gap", "map"))
    ckpt_classes = config.pop("num_classes")
    if not keep_pre_logits:
        config["representation_size"] = None
    num_classes = ckpt_classes if num_classes is None else num_classes
    if image_size is not None:
        config["image_size"] = image_size
    config.update(build_kwargs)
    model = build_vit(num_classes=num_classes, **config)
    replace = num_classes != ckpt_classes or (not keep_pre_logits and "pre_logits/kernel" in converted.tensors)
    assign_weights(model, converted, replace_head=replace)
    return model


def from_timm_preset(files, cls, **overrides):
    """Builds and loads `cls` from a resolved pretrained preset: a timm
    checkpoint directory (``config.json`` and weights, as on the Hugging
    Face hub) or a lone checkpoint file.

    The config supplies what the weights do not record (see
    `timm_config_args`): pooling, heads, LayerNorm epsilon, activation,
    pixel mean/std (the model rescales raw pixels with them), image size,
    interpolation and class names.

    Args:
        files: a `keras_vit.hub.PresetFiles`.
        cls: `ViTClassifier` or `ViTBackbone`.
        **overrides: `build_vit` (or `ViTBackbone`) arguments; a new
            `num_classes` gets a fresh head, a new `image_size` resamples
            the positions.

    Returns:
        An instance of `cls` with the checkpoint's weights.

    Example:
    >>> model = ViTClassifier.from_preset("vit_small_patch16_224.augreg_in21k_ft_in1k")  # doctest: +SKIP
    """
    converted = convert_file(files.weights)
    args = timm_config_args(files.config)
    num_heads = overrides.pop("num_heads", None) or args.pop("num_heads", None)
    native_size = args.pop("image_size", None)
    if cls is ViTBackbone:
        config = infer_config(converted, num_heads, native_size)
        for key in (*CLASSIFIER_KEYS, "pooling", "class_names", "preprocessing"):
            config.pop(key, None)
            args.pop(key, None)
        backbone = ViTBackbone(**{**config, **args, **overrides})
        assign_weights(backbone, converted)
        return backbone
    ckpt_classes = converted.tensors["head/kernel"].shape[1] if "head/kernel" in converted.tensors else 0
    num_classes = overrides.pop("num_classes", None)
    if num_classes not in (None, ckpt_classes) or len(args.get("class_names", ())) != ckpt_classes:
        args.pop("class_names", None)
    image_size = overrides.pop("image_size", None) or native_size
    pooling = overrides.pop("pooling", None) or args.pop("pooling", None)
    return from_checkpoint(converted, num_classes, image_size, num_heads=num_heads, pooling=pooling,
                           **{**args, **overrides})


def load_npz(model, path, replace_head=False):
    """Loads an original ViT / big_vision `.npz` checkpoint into `model`.

    Args:
        model: a `ViTClassifier` (or `ViTBackbone`) with the checkpoint's
            architecture (its image size may differ: positions are resampled).
        path: the `.npz` file (read with `allow_pickle=False`).
        replace_head: bool, keep the model's classifier instead of loading
            (or warning about) the checkpoint's.

    Returns:
        The model.

    Example:
    >>> model = build_vit("B/16", image_size=384, num_classes=10)  # doctest: +SKIP
    >>> load_npz(model, "ViT-B_16.npz", replace_head=True)  # doctest: +SKIP
    """
    fmt, arrays = read_checkpoint(path)
    if fmt != "npz":
        raise CheckpointError(f"`load_npz` expects a .npz file; {os.fspath(path)!r} is a {fmt} file. Use `load_timm`.")
    assign_weights(model, convert_npz(arrays), replace_head)
    return model


def load_timm(model, path_or_state_dict, replace_head=False):
    """Loads a timm `VisionTransformer` state dict into `model`.

    Args:
        model: a `ViTClassifier` (or `ViTBackbone`) with the checkpoint's
            architecture.
        path_or_state_dict: a `.safetensors` or PyTorch (`.pth`, `.pt`,
            `.bin`, read with `weights_only=True`) file, or a dict of
            tensors/arrays.
        replace_head: bool, keep the model's classifier instead of loading
            (or warning about) the checkpoint's.

    Returns:
        The model.

    Example:
    >>> model = build_vit("S/16", num_classes=1000)  # doctest: +SKIP
    >>> load_timm(model, "vit_small_patch16_224.safetensors")  # doctest: +SKIP
    """
    state = path_or_state_dict
    if not isinstance(state, dict):
        fmt, state = read_checkpoint(state)
        if fmt == "npz":
            raise CheckpointError(f"{os.fspath(path_or_state_dict)!r} is a .npz file; use `load_npz`.")
    assign_weights(model, convert_timm(state), replace_head)
    return model
