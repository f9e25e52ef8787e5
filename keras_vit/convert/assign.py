"""Assigning converted tensors into a model, all or nothing; building a
model that fits a checkpoint (`infer_config`, `from_checkpoint`)."""

import dataclasses
import math
import re
import warnings

import numpy as np

from keras_vit.convert.readers import CheckpointError
from keras_vit.layers import grid_size, resample_posemb
from keras_vit.utils.validation import pair

HEAD_PARTS = ("fc_norm", "pre_logits", "head")  # variables that belong to the classifier head


def _grid_of(rows, name):
    side = math.isqrt(rows)
    if side * side != rows:
        raise CheckpointError(
            f"Cannot infer the patch grid of {name!r}: {rows} position rows "
            f"are not a square grid. Pass the checkpoint's `image_size`."
        )
    return side, side


def checkpoint_grid(converted, model_grid=None):
    """The patch grid of the checkpoint's position table and whether it has
    a class-token row. Known from the checkpoint's metadata
    (`converted.grid`), else from the target model's grid when the rows
    fit it, and only then guessed as a square grid; never from a square
    root when 1 + h * w happens to be a square.

    Returns:
        ((h, w), has_class_row).
    """
    pos = converted.tensors["patch_encoder/position_embedding"]
    rows, cls = pos.shape[1], "patch_encoder/cls_token" in converted.tensors
    registers = converted.tensors.get("patch_encoder/registers")
    for grid in (converted.grid, model_grid):
        if grid is None:
            continue
        cells = grid[0] * grid[1]
        if rows == int(cls) + cells:
            return tuple(grid), cls
        if cls and rows == cells:  # timm's no_embed_class: no position for the class token
            return tuple(grid), False
        if registers is not None and rows == int(cls) + registers.shape[1] + cells:
            raise CheckpointError(
                "Register tokens with their own position embeddings (timm's no_embed_class=False) "
                "are not supported: build_vit gives registers no position.")
        if grid is converted.grid:
            raise CheckpointError(
                f"The checkpoint's position table has {rows} rows, which fits neither {int(cls)} + "
                f"{cells} nor {cells} for its {grid[0]}x{grid[1]} patch grid.")
    if cls and math.isqrt(rows - 1) ** 2 == rows - 1:
        return _grid_of(rows - 1, "position_embedding"), True
    return _grid_of(rows, "position_embedding"), False


def fit_position_embedding(table, new_grid, has_cls_token, old_grid=None):
    """Resamples learned positions (1, [cls] + h*w, D) to a new patch grid.

    The patch rows are resampled bicubically on their 2-D grid by
    `keras_vit.layers.resample_posemb`; the class-token row is kept as is.

    Args:
        table: numpy array (1, rows, D) from a checkpoint.
        new_grid: (h, w) patch grid of the target model.
        has_cls_token: whether the first row belongs to the class token.
        old_grid: the checkpoint's (h, w) grid; a square one when None.

    Returns:
        numpy array (1, [1] + h * w, D).

    Example:
    >>> table = np.zeros((1, 1 + 14 * 14, 8), "float32")
    >>> fit_position_embedding(table, (24, 24), True).shape
    (1, 577, 8)
    """
    prefix = int(has_cls_token)
    patches = table[:, prefix:]
    if patches.shape[1] == new_grid[0] * new_grid[1]:
        return table
    old_grid = old_grid or _grid_of(patches.shape[1], "position_embedding")
    resampled = np.asarray(resample_posemb(patches.astype("float32"), tuple(new_grid), old_grid))
    return np.concatenate([table[:, :prefix].astype("float32"), resampled], axis=1)


def _split_heads(variables, converted):
    """Reshapes flat attention-pooling projections, e.g. (D, D) from timm, to
    the model's per-head layout, e.g. (D, heads, head_dim)."""
    for path, value in converted.tensors.items():
        if path.startswith("map_pooling/attention/") and path in variables:
            shape = tuple(variables[path].shape)
            if value.shape != shape and value.size == math.prod(shape):
                converted.tensors[path] = value.reshape(shape)


def _head_part(path):
    return path.split("/", 1)[0] in HEAD_PARTS


def _check_shapes(variables, converted, paths):
    for path in paths:
        want, got = tuple(variables[path].shape), tuple(converted.tensors[path].shape)
        if want != got:
            raise CheckpointError(
                f"Shape mismatch for tensor {converted.sources[path]!r} (model "
                f"variable {path!r}): the checkpoint has shape {got}, the "
                f"model expects {want}."
            )


def _fits(variables, converted, paths):
    return all(
        p in variables and p in converted.tensors
        and tuple(variables[p].shape) == tuple(converted.tensors[p].shape)
        for p in paths
    )


def _head_plan(variables, converted, replace_head):
    """Decides which classifier tensors load. Returns (paths, reason or None).

    With `replace_head`, the new head stays as initialised and only the
    pre-logits layer loads (when model and checkpoint both have it).
    Otherwise the whole classifier loads when it fits, or none of it."""
    model_head = sorted(p for p in variables if _head_part(p))
    ckpt_head = sorted(p for p in converted.tensors if _head_part(p))
    if replace_head:
        pre_logits = [p for p in model_head if p.startswith("pre_logits/")]
        return (pre_logits if pre_logits and _fits(variables, converted, pre_logits) else []), None
    if model_head == ckpt_head and _fits(variables, converted, model_head):
        return model_head, None
    if not ckpt_head and not model_head:
        return [], None

    def describe(names, table):
        return ", ".join(f"{p} {tuple(table[p].shape)}" for p in names) or "none"

    return [], (
        f"the classifier does not fit (checkpoint: {describe(ckpt_head, converted.tensors)}; "
        f"model: {describe(model_head, variables)})"
    )


def assign_weights(model, converted, replace_head=False):
    """Loads converted tensors into a `build_vit` model, all or nothing.

    Every backbone variable must be in the checkpoint with the right shape
    (learned positions are resampled to the model's patch grid first); any
    mismatch raises before a single variable changes. The classifier
    (`pre_logits` and `head`) loads when it fits; otherwise it is kept as
    initialised and a warning says so. `replace_head=True` keeps the new
    head silently and still loads a pre-logits layer the model has.

    Args:
        model: a model from `build_vit`.
        converted: a `Converted` from `convert_npz` or `convert_timm`.
        replace_head: bool, keep the model's own head silently.

    Returns:
        The list of variable paths that were loaded.

    Example:
    >>> loaded = assign_weights(model, convert_timm(state_dict))
    """
    converted = dataclasses.replace(converted, tensors=dict(converted.tensors))  # left unchanged
    variables = {v.path: v for v in model.weights}
    backbone = sorted(p for p in variables if not _head_part(p))
    missing = [p for p in backbone if p not in converted.tensors]
    extra = sorted(p for p in converted.tensors if not _head_part(p) and p not in variables)
    if missing or extra:
        raise CheckpointError(
            "The checkpoint does not match the model's architecture. "
            + (f"Missing from the checkpoint ({len(missing)}): {', '.join(missing[:8])}. " if missing else "")
            + (
                f"In the checkpoint but not in the model ({len(extra)}): "
                + ", ".join(f"{converted.sources[p]!r} ({p})" for p in extra[:8])
                + ". "
                if extra
                else ""
            )
            + "Use `from_checkpoint` to build a model that fits the file."
        )
    pos_path = "patch_encoder/position_embedding"
    if pos_path in variables:
        encoder = model.backbone.patch_encoder
        grid, class_row = checkpoint_grid(converted, encoder.grid_size)
        table = converted.tensors[pos_path]
        if encoder.use_cls_token and not class_row:
            table = np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
        converted.tensors[pos_path] = fit_position_embedding(table, encoder.grid_size, encoder.use_cls_token, grid)
    _split_heads(variables, converted)
    _check_shapes(variables, converted, backbone)
    head, reason = _head_plan(variables, converted, replace_head)
    if reason:
        warnings.warn(
            f"The classifier was not loaded: {reason}. It keeps its fresh "
            f"initialisation; pass replace_head=True to silence this.",
            stacklevel=3,
        )
    for path in backbone + head:
        variable = variables[path]
        variable.assign(converted.tensors[path].astype(variable.dtype))
    return backbone + head


def default_num_heads(hidden_dim):
    """Heads of the standard ViT of this width (64 per head otherwise).

    Example:
    >>> default_num_heads(768)
    12
    """
    from keras_vit.models import SIZES as _SIZES

    for dim, _, heads, _ in _SIZES.values():
        if dim == hidden_dim:
            return heads
    if hidden_dim % 64:
        raise ValueError(
            f"Cannot guess the number of heads for width {hidden_dim}: timm "
            f"state dicts do not record it. Pass `num_heads`."
        )
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
    >>> infer_config(convert_npz(np.load("ViT-B_16.npz")))["hidden_dim"]
    768
    """
    t = converted.tensors

    def shape(path):
        if path not in t:
            raise CheckpointError(f"The checkpoint lacks {path!r}; it is not a ViT checkpoint.")
        return t[path].shape

    ph, pw, channels, dim = shape("patch_encoder/projection/kernel")
    depth = sum(1 for p in t if re.fullmatch(r"encoder_block_\d+/norm1/gamma", p))
    has_cls = "patch_encoder/cls_token" in t
    rows = shape("patch_encoder/position_embedding")[1]
    if image_size is not None and converted.grid is None:
        hint = grid_size(pair(image_size, "image_size"), (ph, pw))
        if rows in (int(has_cls) + hint[0] * hint[1], hint[0] * hint[1]):
            converted.grid = hint  # e.g. a non-square grid
    grid, _ = checkpoint_grid(converted)
    if num_heads is None:
        num_heads = converted.num_heads or default_num_heads(dim)
    config = dict(
        image_size=(grid[0] * ph, grid[1] * pw),
        patch_size=(ph, pw),
        channels=channels,
        hidden_dim=dim,
        depth=depth,
        num_heads=num_heads,
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
    return config
