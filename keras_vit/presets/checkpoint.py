"""The architecture a converted checkpoint implies: `infer_config` reads
`build_vit`'s arguments from the tensors' names and shapes."""

import re

from keras_vit.convert.assign import checkpoint_grid
from keras_vit.convert.readers import CheckpointError
from keras_vit.layers import grid_size
from keras_vit.presets.architectures import heads_for_width
from keras_vit.utils.validation import pair


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
    >>> infer_config(keras_vit.convert.convert_file("ViT-B_16.npz"))["hidden_dim"]  # doctest: +SKIP
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
