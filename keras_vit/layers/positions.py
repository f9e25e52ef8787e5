"""Small pure functions on position tables: the fixed 2-D sine/cosine
table (`sincos_posemb_2d`) and resampling learned positions on their grid
(`resample_posemb`). `keras.ops` only; grid sizes may be symbolic."""

import math
import warnings

import numpy as np
from keras import ops

from keras_vit.utils.validation import check_choice

# How a learned position table is resampled to another grid. Not image
# resizing: that is `keras_vit.preprocessing.INTERPOLATIONS`.
POS_INTERPOLATIONS = ("bicubic", "bilinear")
SINCOS_LAYOUTS = ("big_vision", "rows_interleaved")


def renamed_interpolation(kwargs, pos_interpolation, owner):
    """`pos_interpolation`, or the `interpolation` keyword (its name until
    keras_vit 0.2) taken out of `kwargs` with a `DeprecationWarning`."""
    if "interpolation" not in kwargs:
        return pos_interpolation
    warnings.warn(f"{owner}(interpolation=...) is now `pos_interpolation` (how learned positions are resampled; "
                  "`interpolation` elsewhere means image resizing); `interpolation` will be removed in 0.4.",
                  DeprecationWarning, stacklevel=3)
    return kwargs.pop("interpolation")


def renamed_in_config(config):
    """A config saved before the rename (``interpolation``) read as ``pos_interpolation``, silently."""
    config = dict(config)
    if "interpolation" in config:
        config.setdefault("pos_interpolation", config.pop("interpolation"))
    return config


def sincos_posemb_2d(grid_h, grid_w, dim, temperature=10000.0, layout="big_vision"):
    """Fixed 2-D sine/cosine position embeddings, shape (grid_h * grid_w, dim).

    Two channel layouts, recorded in `PatchEncoder`'s config:

    - "big_vision" (the default, as big_vision's `posemb_sincos_2d`): with
      ``q = dim / 4`` and ``w_i = T^(-i / (q - 1))``, the channels are
      ``[sin(x w), cos(x w), sin(y w), cos(y w)]`` for column x and row y.
    - "rows_interleaved" (keras_vit 0.1): the first half encodes the row,
      the second the column, each as interleaved
      ``sin(pos / T^(2i/d)), cos(pos / T^(2i/d))`` with ``d = dim / 2``.

    `grid_h` and `grid_w` may be symbolic (known only at run time).

    Example:
    >>> tuple(sincos_posemb_2d(2, 3, 8).shape)
    (6, 8)
    """
    check_choice(layout, "sincos_layout", SINCOS_LAYOUTS)
    if dim % 4:
        raise ValueError(
            f"`hidden_dim` must be divisible by 4 for pos_embedding='sincos'. "
            f"Received: hidden_dim={dim}"
        )
    if layout == "big_vision":
        quarter = dim // 4
        steps = ops.arange(quarter, dtype="float32") / max(quarter - 1, 1)
        omega = 1.0 / ops.power(temperature, steps)
        ys = ops.repeat(ops.arange(grid_h, dtype="float32"), grid_w)
        xs = ops.tile(ops.arange(grid_w, dtype="float32"), [grid_h])
        x_angles, y_angles = xs[:, None] * omega[None], ys[:, None] * omega[None]
        return ops.concatenate(
            [ops.sin(x_angles), ops.cos(x_angles), ops.sin(y_angles), ops.cos(y_angles)], axis=1)
    axis_dim = dim // 2
    exponent = ops.arange(0, axis_dim, 2, dtype="float32") / axis_dim
    inv_freq = 1.0 / ops.power(temperature, exponent)

    def encode(n):
        angles = ops.arange(n, dtype="float32")[:, None] * inv_freq[None, :]
        interleaved = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
        return ops.reshape(interleaved, (-1, axis_dim))

    rows = ops.broadcast_to(encode(grid_h)[:, None, :], (grid_h, grid_w, axis_dim))
    cols = ops.broadcast_to(encode(grid_w)[None, :, :], (grid_h, grid_w, axis_dim))
    return ops.reshape(ops.concatenate([rows, cols], axis=-1), (-1, dim))


def _interpolation_matrix(in_size, out_size, method, antialias=True):
    """(out_size, in_size) matrix that resamples one axis.

    Half-pixel centres; taps that fall outside the input are dropped and the
    rest renormalised. Bicubic uses Keys' kernel with a = -0.5. With
    `antialias`, shrinking widens the kernel by the scale (a low-pass
    filter), as PyTorch's ``interpolate(..., antialias=True)`` and PIL do;
    enlarging is the same either way.
    """
    in_f, out_f = ops.cast(in_size, "float32"), ops.cast(out_size, "float32")
    scale = in_f / out_f
    centres = (ops.arange(out_size, dtype="float32") + 0.5) * scale - 0.5
    if method == "bicubic":

        def kernel(d):
            d = ops.abs(d)
            near = (1.5 * d - 2.5) * d * d + 1.0
            far = ((-0.5 * d + 2.5) * d - 4.0) * d + 2.0
            return ops.where(d <= 1.0, near, ops.where(d < 2.0, far, 0.0))

    else:
        kernel = lambda d: ops.maximum(1.0 - ops.abs(d), 0.0)  # noqa: E731
    width = ops.maximum(scale, 1.0) if antialias else 1.0
    source = ops.arange(in_size, dtype="float32")[None, :]
    matrix = kernel((source - centres[:, None]) / width)
    return matrix / ops.sum(matrix, axis=1, keepdims=True)


def resample_posemb(posemb, new_grid, old_grid=None, method="bicubic", antialias=True):
    """Resamples patch position embeddings on their 2-D grid.

    Args:
        posemb: (N, D) or (1, N, D) embeddings of the patch tokens only
            (class and register rows excluded), laid out row by row.
        new_grid: (h, w) target grid; entries may be symbolic.
        old_grid: (h, w) source grid; defaults to a square grid of N.
        method: "bicubic" or "bilinear".
        antialias: bool, widen the kernel when shrinking the grid (timm's
            `resample_abs_pos_embed` does, with PyTorch's antialiased
            interpolation); enlarging is the same either way.

    Returns:
        The embeddings on the new grid, with the input's rank.
    """
    check_choice(method, "interpolation", POS_INTERPOLATIONS)
    rank = len(posemb.shape)
    table = ops.reshape(posemb, (-1, posemb.shape[-1]))
    if old_grid is None:
        side = int(round(math.sqrt(table.shape[0])))
        old_grid = (side, side)
    table = ops.reshape(ops.cast(table, "float32"), (old_grid[0], old_grid[1], -1))
    check_choice(antialias, "antialias", (True, False))
    rows = _interpolation_matrix(old_grid[0], new_grid[0], method, antialias)
    cols = _interpolation_matrix(old_grid[1], new_grid[1], method, antialias)
    table = ops.einsum("ih,hwd,jw->ijd", rows, table, cols)
    table = ops.reshape(table, (-1, posemb.shape[-1]))
    return table[None] if rank == 3 else table


def resample_position_table(table, new_grid, old_grid, num_prefix=0, method="bicubic"):
    """A learned position table (1, prefix + h * w, D), as numpy, on a new
    patch grid: the patch rows go through `resample_posemb`, the
    `num_prefix` rows before them (a class token's) are kept as they are.
    What loading a checkpoint or a preset at another image size does.

    Example:
    >>> resample_position_table(np.zeros((1, 1 + 4 * 4, 8)), (2, 3), (4, 4), num_prefix=1).shape
    (1, 7, 8)
    """
    table = np.asarray(table).astype("float32")
    patches = resample_posemb(table[:, num_prefix:], tuple(new_grid), tuple(old_grid), method)
    return np.concatenate([table[:, :num_prefix], ops.convert_to_numpy(patches)], axis=1)
