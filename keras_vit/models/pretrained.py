"""Models that fit a checkpoint: `infer_config` reads the architecture from
the converted tensors, `from_checkpoint` builds a `ViTClassifier` that fits
a file and loads it, and `from_timm_preset` serves
`ViTClassifier.from_preset` / `ViTBackbone.from_preset` for pretrained
handles (a timm hub repository or a lone checkpoint file).

The models build on `keras_vit.convert` (reading and converting the
tensors), never the other way round.
"""

import re

from keras_vit.convert.assign import assign_weights, checkpoint_grid
from keras_vit.convert.checkpoint import convert_file, timm_preset_settings
from keras_vit.convert.readers import CheckpointError
from keras_vit.convert.rules import Converted
from keras_vit.layers import POOLINGS, grid_size
from keras_vit.models.backbone import ViTBackbone
from keras_vit.models.classifier import build_vit
from keras_vit.models.presets import heads_for_width
from keras_vit.utils.validation import check_choice, pair, strict_keywords


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


def infer_config(converted, num_heads=None, image_size=None):
    """The `build_vit` arguments that fit a converted checkpoint.

    Args:
        converted: a `Converted`.
        num_heads: heads, needed for timm state dicts of non-standard width
            (`.npz` files record them).
        image_size: optional image size whose patch grid fits the
            checkpoint's positions (e.g. a non-square grid); the checkpoint's
            metadata (`converted.grid`) wins when set; otherwise a square
            grid is assumed.

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
    rows = shape("patch_encoder/position_embedding")[1]
    if image_size is not None and converted.grid is None:
        hint = grid_size(pair(image_size, "image_size"), (ph, pw))
        if rows in (int(has_cls) + hint[0] * hint[1], hint[0] * hint[1]):
            converted.grid = hint  # e.g. a non-square grid
    grid, _ = checkpoint_grid(converted)
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
        pooling="map" if "map_pooling/probe" in t else ("cls" if has_cls and "fc_norm/gamma" not in t else "gap"),
        pre_norm="norm_pre/gamma" in t,
        patch_bias="patch_encoder/projection/bias" in t,
        final_norm="encoder_norm/gamma" in t,
        fc_norm="fc_norm/gamma" in t,
        representation_size=t["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in t else None,
        num_classes=t["head/kernel"].shape[1] if "head/kernel" in t else 0,
    )


@strict_keywords("keras_vit.models.classifier:build_vit", exclude=("variant",))
def from_checkpoint(path, num_classes=None, image_size=None, *, num_heads=None, pooling=None,
                    keep_pre_logits=True, checkpoint_image_size=None, **build_kwargs):
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
        checkpoint_image_size: the image size the checkpoint was trained at
            (from its metadata); it fixes the checkpoint's patch grid.
        **build_kwargs: other `build_vit` arguments (dropout,
            drop_path_rate, include_rescaling, pixel_mean, name, ...).

    Returns:
        A `ViTClassifier` with the checkpoint's weights.

    Example:
    >>> model = from_checkpoint("ViT-B_16.npz", num_classes=10, image_size=384)  # doctest: +SKIP
    """
    converted = path if isinstance(path, Converted) else convert_file(path)
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
    model = build_vit(num_classes=num_classes, **config)
    replace = num_classes != ckpt_classes or (not keep_pre_logits and "pre_logits/kernel" in converted.tensors)
    assign_weights(model, converted, replace_head=replace)
    return model


def from_timm_preset(files, cls, **overrides):
    """Builds `cls` (`ViTClassifier` or `ViTBackbone`) from a resolved
    pretrained preset: a timm hub repository (``config.json`` + weights)
    or a lone checkpoint file.

    The config's image size fixes the checkpoint's patch grid; its pooling,
    LayerNorm epsilon, activation, normalisation (the model rescales raw
    pixels with it), interpolation and class names go into the model.

    Args:
        files: a `keras_vit.hub.PresetFiles`.
        cls: `ViTClassifier` or `ViTBackbone`.
        **overrides: `from_checkpoint` / `build_vit` arguments; a new
            `num_classes` gets a fresh head (and no class names), a new
            `image_size` resamples the positions.

    Returns:
        An instance of `cls` with the checkpoint's weights.

    Example:
    >>> model = ViTClassifier.from_preset("vit_small_patch16_224.augreg_in21k_ft_in1k")  # doctest: +SKIP
    """
    converted = convert_file(files.weights)
    settings = timm_preset_settings(files.config) if files.config else {}
    native = settings.pop("image_size", None)
    if overrides.get("num_classes") not in (None, files.config.get("num_classes")):
        settings.pop("class_names", None)
    kwargs = dict(settings, **overrides)
    if native is not None:
        kwargs.setdefault("image_size", native)
    model = from_checkpoint(converted, checkpoint_image_size=native, **kwargs)
    return model.backbone if cls is ViTBackbone else model
