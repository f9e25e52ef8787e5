"""Assigning converted tensors to a model, all or nothing.

`variable_table` names every variable of a `ViTClassifier` or `ViTBackbone`
by its canonical path, walking the model's attributes (`backbone.blocks[i]`,
`pooler`, `head`, ...). `assign_weights` checks every name and shape against
that table first and only then assigns, so a model is never left partly
loaded.
"""

import dataclasses
import math
import warnings

import numpy as np

from keras_vit.convert.readers import CheckpointError
from keras_vit.layers import AttentionPooling, resample_position_table

# First path components of classifier parts: all of them are left out when
# loading a backbone; the head parts may be replaced by a fresh head.
CLASSIFIER_PARTS = ("map_pooling", "fc_norm", "pre_logits", "head")
HEAD_PARTS = ("pre_logits", "head")
POSITIONS = "patch_encoder/position_embedding"


def _add(table, prefix, layer, names=("kernel", "bias", "gamma", "beta")):
    """Adds `layer`'s variables (those of `names` it has) under `prefix`."""
    if layer is None:
        return
    for name in names:
        variable = getattr(layer, name, None)
        if variable is not None:
            table[f"{prefix}/{name}"] = variable


def _backbone_table(backbone):
    table = {}
    encoder = backbone.patch_encoder
    _add(table, "patch_encoder/projection", encoder.projection)
    _add(table, "patch_encoder", encoder, ("cls_token", "registers", "position_embedding"))
    _add(table, "norm_pre", backbone.norm_pre)
    for i, block in enumerate(backbone.blocks):
        prefix = f"encoder_block_{i}"
        attention = block.attention
        parts = dict(norm1=block.norm1, norm2=block.norm2, mlp_dense1=block.mlp_dense1,
                     mlp_dense2=block.mlp_dense2, **{"attention/qkv": attention.qkv,
                                                     "attention/proj": attention.proj})
        if attention.qk_norm:
            parts.update({"attention/q_norm": attention.q_norm, "attention/k_norm": attention.k_norm})
        if block.layer_scale is not None:
            parts.update(layer_scale1=block.layer_scale1, layer_scale2=block.layer_scale2)
        for name, layer in parts.items():
            _add(table, f"{prefix}/{name}", layer)
    _add(table, "encoder_norm", backbone.norm)
    return table


def _pooler_table(pooler):
    table = {}
    if isinstance(pooler, AttentionPooling):
        table["map_pooling/probe"] = pooler.probe
        mha = pooler.attention
        for name, dense in (("query", mha.query_dense), ("key", mha.key_dense),
                            ("value", mha.value_dense), ("attention_output", mha.output_dense)):
            _add(table, f"map_pooling/attention/{name}", dense)
        for name in ("norm", "mlp_dense1", "mlp_dense2"):
            _add(table, f"map_pooling/{name}", getattr(pooler, name))
    return table


def variable_table(model):
    """Every variable of a model, by canonical path.

    Args:
        model: a `ViTClassifier` or a `ViTBackbone`.

    Returns:
        dict, canonical path (``"encoder_block_0/attention/qkv/kernel"``,
        ``"head/bias"``, ...) -> the model's keras Variable.

    Example:
    >>> from keras_vit.models import build_vit
    >>> table = variable_table(build_vit("Mu/4", depth=1))
    >>> tuple(table["head/kernel"].shape)
    (64, 10)
    """
    backbone = getattr(model, "backbone", model)
    table = _backbone_table(backbone)
    if model is not backbone:
        table.update(_pooler_table(model.pooler))
        _add(table, "fc_norm", model.fc_norm)
        _add(table, "pre_logits", model.pre_logits)
        for i, dense in enumerate(model.head_hidden):
            _add(table, f"head_dense_{i}", dense)
        _add(table, "head", model.head)
    listed = {id(v) for v in table.values()}
    unlisted = [v.path for v in model.weights if id(v) not in listed]
    if unlisted or len(table) != len(model.weights):
        raise RuntimeError(f"variable_table does not cover the model's variables {unlisted}; "
                           f"a model part is missing from keras_vit.convert.assign.")
    return table


def _first(path):
    return path.split("/", 1)[0]


def _is_head(path):
    return _first(path) in HEAD_PARTS or _first(path).startswith("head_dense_")


def _is_classifier(path):
    return _first(path) in CLASSIFIER_PARTS or _is_head(path)


def square_grid(rows, name):
    """The (side, side) grid of `rows` position rows; raises if not square.

    Example:
    >>> square_grid(196, "position_embedding")
    (14, 14)
    """
    side = math.isqrt(rows)
    if side * side != rows:
        raise CheckpointError(
            f"Cannot infer the patch grid of {name!r}: {rows} position rows are not a square "
            f"grid. Pass the checkpoint's `image_size`.")
    return side, side


def checkpoint_grid(converted, model_grid=None):
    """The patch grid of the checkpoint's position table and whether it has
    a class-token row. Known from the checkpoint's metadata
    (`converted.grid`), else from the target model's grid when the rows
    fit it, and only then guessed as a square grid; never from a square
    root when 1 + h * w happens to be a square.

    Args:
        converted: a `Converted` with a position table.
        model_grid: the (h, w) grid of the model it goes into, or None.

    Returns:
        ((h, w), has_class_row).

    Example:
    >>> from keras_vit.convert.rules import Converted
    >>> conv = Converted({POSITIONS: np.zeros((1, 25, 8)), "patch_encoder/cls_token": np.zeros((1, 1, 8))}, {})
    >>> checkpoint_grid(conv, (4, 6)), checkpoint_grid(conv)
    (((4, 6), True), ((5, 5), False))
    """
    rows = converted.tensors[POSITIONS].shape[1]
    cls = "patch_encoder/cls_token" in converted.tensors
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
                "are not supported: keras_vit gives registers no position.")
        if grid is converted.grid:
            raise CheckpointError(
                f"The checkpoint's position table has {rows} rows, which fits neither {int(cls)} + "
                f"{cells} nor {cells} for its {grid[0]}x{grid[1]} patch grid.")
    if cls and math.isqrt(rows - 1) ** 2 == rows - 1:
        return square_grid(rows - 1, "position_embedding"), True
    return square_grid(rows, "position_embedding"), False


def fit_position_embedding(table, new_grid, has_cls_token, old_grid=None, interpolation="bicubic"):
    """Resamples learned positions (1, [cls] + h*w, D) to a new patch grid.

    The patch rows are resampled on their 2-D grid
    (`keras_vit.layers.resample_position_table`); the class-token row is
    kept as is.

    Args:
        table: numpy array (1, rows, D) from a checkpoint.
        new_grid: (h, w) patch grid of the target model.
        has_cls_token: whether the first row belongs to the class token.
        old_grid: the checkpoint's (h, w) grid; a square one when None.
        interpolation: "bicubic" or "bilinear".

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
    old_grid = old_grid or square_grid(patches.shape[1], "position_embedding")
    return resample_position_table(table, new_grid, old_grid, prefix, interpolation)


def _fit_positions(converted, encoder):
    """The checkpoint's positions on the model's grid, with a zero class row
    added where the checkpoint has none (timm's no_embed_class)."""
    grid, class_row = checkpoint_grid(converted, encoder.grid_size)
    table = converted.tensors[POSITIONS]
    if encoder.use_cls_token and not class_row:
        table = np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
    return fit_position_embedding(table, encoder.grid_size, encoder.use_cls_token, grid, encoder.pos_interpolation)


def _fit_layouts(table, tensors):
    """Reshapes tensors whose layout, not size, differs from the model's:
    flat attention-pooling projections (timm's (D, D)) to per-head ones
    (D, heads, head_dim), and a conv patch kernel (h, w, C, D) to a linear
    patch embedding's (h * w * C, D)."""
    for path, value in tensors.items():
        if path.startswith("map_pooling/attention/") or path == "patch_encoder/projection/kernel":
            if path in table:
                shape = tuple(table[path].shape)
                if value.shape != shape and value.size == math.prod(shape):
                    tensors[path] = value.reshape(shape)


def _check_names(table, converted, paths):
    missing = [p for p in paths if p not in converted.tensors]
    extra = sorted(p for p in converted.tensors if not _is_head(p) and p not in table)
    if not missing and not extra:
        return
    raise CheckpointError(
        "The checkpoint does not match the model's architecture. "
        + (f"Missing from the checkpoint ({len(missing)}): {', '.join(missing[:8])}. " if missing else "")
        + (f"In the checkpoint but not in the model ({len(extra)}): "
           + ", ".join(f"{converted.sources[p]!r} ({p})" for p in extra[:8]) + ". " if extra else "")
        + "Use `from_checkpoint` to build a model that fits the file.")


def _check_shapes(table, converted, paths):
    for path in paths:
        want, got = tuple(table[path].shape), tuple(converted.tensors[path].shape)
        if want != got:
            raise CheckpointError(
                f"Shape mismatch for tensor {converted.sources[path]!r} (model variable "
                f"{path!r}): the checkpoint has shape {got}, the model expects {want}.")


def _fits(table, tensors, paths):
    return all(p in table and p in tensors and tuple(table[p].shape) == tuple(tensors[p].shape) for p in paths)


def _head_plan(table, tensors, replace_head):
    """Decides which head tensors load. Returns (paths, reason or None).

    With `replace_head`, the new head stays as initialised and only the
    pre-logits layer loads (when model and checkpoint both have it).
    Otherwise the whole head loads when it fits, or none of it."""
    model_head = sorted(p for p in table if _is_head(p))
    ckpt_head = sorted(p for p in tensors if _is_head(p))
    if replace_head:
        pre_logits = [p for p in model_head if _first(p) == "pre_logits"]
        return (pre_logits if pre_logits and _fits(table, tensors, pre_logits) else []), None
    if model_head == ckpt_head and _fits(table, tensors, model_head):
        return model_head, None
    if not ckpt_head and not model_head:
        return [], None

    def describe(names, shapes):
        return ", ".join(f"{p} {tuple(shapes[p].shape)}" for p in names) or "none"

    return [], (f"the classifier does not fit (checkpoint: {describe(ckpt_head, tensors)}; "
                f"model: {describe(model_head, table)})")


def assign_weights(model, converted, replace_head=False):
    """Loads converted tensors into a model, all or nothing.

    Every variable but the head's must be in the checkpoint with the right
    shape (learned positions are resampled to the model's patch grid
    first); any mismatch raises before a single variable changes. The head
    (`pre_logits` and `head`) loads when it fits; otherwise it keeps its
    initialisation and a warning says so. `replace_head=True` keeps the new
    head silently and still loads a pre-logits layer the model has. A
    `ViTBackbone` takes the backbone tensors and ignores the classifier's.

    Args:
        model: a `ViTClassifier` or a `ViTBackbone`.
        converted: a `Converted` from `convert_npz` or `convert_timm`.
        replace_head: bool, keep the model's own head silently.

    Returns:
        The list of canonical paths that were loaded.

    Example:
    >>> loaded = assign_weights(model, convert_timm(state_dict))  # doctest: +SKIP
    """
    table = variable_table(model)
    tensors = dict(converted.tensors)  # the caller's Converted is left unchanged
    if not hasattr(model, "backbone"):
        tensors = {p: v for p, v in tensors.items() if not _is_classifier(p)}
    converted = dataclasses.replace(converted, tensors=tensors)
    body = sorted(p for p in table if not _is_head(p))
    _check_names(table, converted, body)
    if POSITIONS in table:
        tensors[POSITIONS] = _fit_positions(converted, getattr(model, "backbone", model).patch_encoder)
    _fit_layouts(table, tensors)
    _check_shapes(table, converted, body)
    head, reason = _head_plan(table, tensors, replace_head)
    if reason:
        warnings.warn(f"The classifier was not loaded: {reason}. It keeps its fresh initialisation; "
                      f"pass replace_head=True to silence this.", stacklevel=3)
    for path in body + head:
        variable = table[path]
        variable.assign(tensors[path].astype(variable.dtype))
    return body + head

