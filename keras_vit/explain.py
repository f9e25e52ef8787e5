"""Attention maps of a `build_vit` model: raw weights, rollout, overlays.

`attention_maps` runs the model's own layers on a batch and returns every
block's attention weights. `attention_rollout` (Abnar & Zuidema, 2020)
multiplies them through the depth, adding the residual connection as an
identity term, after fusing the heads by their mean, max or min.
`rollout_heatmap` turns that into one (grid_h, grid_w) map per image and
`save_attention_overlay` draws a map over its image as a PNG.
"""

import os

import keras
import numpy as np

from keras_vit import preprocessing
from keras_vit.export.geometry import image_settings
from keras_vit.layers import grid_size
from keras_vit.utils.io import write_png
from keras_vit.utils.validation import check_choice, strict_keywords

HEAD_FUSIONS = ("mean", "max", "min")


def _backbone(model):
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError(
            f"Model {model.name!r} is not a ViTClassifier; attention maps need a build_vit model."
        )
    return backbone


class _BlockWithAttention(keras.layers.Layer):
    """Runs an existing TransformerBlock (sharing its weights) and returns
    (tokens, attention weights). A functional model cannot call the block
    itself for a second output: Keras sizes a layer's outputs by its first
    call."""

    def __init__(self, block, **kwargs):
        super().__init__(name=f"{block.name}_attention", **kwargs)
        self.block = block

    def call(self, x):
        return self.block(x, return_attention_scores=True)


def attention_model(model):
    """A functional model that reuses `model`'s layers and outputs the
    attention weights of every block.

    Args:
        model: a model from `build_vit` (any pooling).

    Returns:
        A `keras.Model` mapping images to a list, one (B, heads, N, N)
        array per block.

    Example:
    >>> sub = attention_model(model)
    >>> [w.shape for w in sub.predict(images)]
    """
    backbone = _backbone(model)
    x = backbone.blocks[0].input
    outputs = []
    for block in backbone.blocks:
        x, weights = _BlockWithAttention(block)(x)
        outputs.append(weights)
    return keras.Model(backbone.input, outputs, name=f"{model.name}_attention")


@strict_keywords()
def attention_maps(model, images, batch_size=32):
    """Attention weights of every block and head.

    Args:
        model: a model from `build_vit`.
        images: array (B, H, W, C) as the model takes them (pixels in
            [0, 255] for a model with `include_rescaling=True`).
        batch_size: int, images per forward pass.

    Returns:
        numpy array (depth, B, heads, N, N); N counts the class and register
        tokens first, then the patches row by row. Each row sums to 1.

    Example:
    >>> maps = attention_maps(model, images)
    >>> maps.shape  # (depth, batch, heads, tokens, tokens)
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"`images` must be a batch (B, H, W, C). Received an array of shape {images.shape}."
        )
    outputs = attention_model(model).predict(images, batch_size=batch_size, verbose=0)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return np.stack([np.asarray(o, dtype="float32") for o in outputs])


@strict_keywords()
def attention_rollout(attention, head_fusion="mean", residual=True):
    """Attention rollout: how much each token draws on each input token.

    Heads are fused (mean, max or min), the residual connection is added as
    ``0.5 * A + 0.5 * I`` with rows renormalised, and the layers are
    multiplied from the first to the last (Abnar & Zuidema, 2020).

    Args:
        attention: array (depth, B, heads, N, N) from `attention_maps`.
        head_fusion: "mean", "max" or "min".
        residual: bool, add the identity term for the skip connections.

    Returns:
        numpy array (B, N, N) whose rows sum to 1.

    Example:
    >>> rollout = attention_rollout(attention_maps(model, images), "max")
    >>> rollout.sum(-1)  # all ones
    """
    check_choice(head_fusion, "head_fusion", HEAD_FUSIONS)
    attention = np.asarray(attention, dtype="float64")
    if attention.ndim != 5 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(
            f"`attention` must have shape (depth, batch, heads, N, N) as returned by "
            f"attention_maps. Received shape {attention.shape}."
        )
    fused = getattr(np, head_fusion)(attention, axis=2)  # (depth, B, N, N)
    tokens = fused.shape[-1]
    rollout = np.broadcast_to(np.eye(tokens), fused.shape[1:]).copy()
    for layer in fused:
        if residual:
            layer = 0.5 * layer + 0.5 * np.eye(tokens)
        layer = layer / layer.sum(axis=-1, keepdims=True)
        rollout = layer @ rollout
    return rollout.astype("float32")


@strict_keywords()
def rollout_heatmap(model, images, head_fusion="mean"):
    """One attention-rollout map per image, on the patch grid.

    With a class token the map is the class token's row of the rollout;
    without one it is the mean of the patch tokens' rows. Only the patch
    columns are kept, reshaped to the grid.

    Args:
        model: a model from `build_vit`.
        images: array (B, H, W, C).
        head_fusion: "mean", "max" or "min".

    Returns:
        numpy array (B, grid_h, grid_w).

    Example:
    >>> rollout_heatmap(model, images).shape  # 224 px, patch 16
    (2, 14, 14)
    """
    images = np.asarray(images)
    encoder = _backbone(model).patch_encoder
    grid = grid_size(images.shape[1:3], encoder.patch_size, encoder.stride, "images")
    rollout = attention_rollout(attention_maps(model, images), head_fusion)
    prefix = encoder.num_prefix_tokens
    rows = rollout[:, 0] if encoder.use_cls_token else rollout[:, prefix:].mean(axis=1)
    return rows[:, prefix:].reshape(len(images), *grid)


def _resize_map(heatmap, size):
    from PIL import Image

    height, width = size
    resized = Image.fromarray(heatmap.astype("float32"), mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(resized, dtype="float32")


@strict_keywords()
def overlay(image, heatmap, alpha=0.5, cmap="jet"):
    """Blends a heatmap, resized to the image and coloured, over the image.

    Args:
        image: array (H, W, 3) or (H, W), pixels in [0, 255] (or [0, 1]
            floats).
        heatmap: 2-D array, e.g. one map of `rollout_heatmap`; scaled to
            [0, 1] by its min and max.
        alpha: float in [0, 1], the heatmap's opacity.
        cmap: a matplotlib colormap name.

    Returns:
        uint8 array (H, W, 3).

    Example:
    >>> overlay(np.zeros((32, 32, 3)), np.eye(4)).shape
    (32, 32, 3)
    """
    import matplotlib

    image = np.asarray(image, dtype="float32")
    heatmap = np.asarray(heatmap, dtype="float32")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"`image` must be (H, W), (H, W, 1) or (H, W, 3). Received shape {image.shape}.")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if heatmap.ndim != 2:
        raise ValueError(f"`heatmap` must be a 2-D map (grid_h, grid_w). Received shape {heatmap.shape}.")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha!r}")
    if cmap not in matplotlib.colormaps:
        raise ValueError(
            f"Unknown `cmap`: {cmap!r}. Accepted values: matplotlib colormap names such as "
            f"'jet', 'viridis', 'inferno', 'magma'."
        )
    if image.max() <= 1.0:
        image = image * 255.0
    heat = _resize_map(heatmap, image.shape[:2])
    span = heat.max() - heat.min()
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    colours = matplotlib.colormaps[cmap](heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * image + alpha * colours
    return np.clip(np.round(blended), 0, 255).astype("uint8")


@strict_keywords()
def save_attention_overlay(image, heatmap, path, alpha=0.5, cmap="jet"):
    """Writes the heatmap drawn over the image as a PNG of the image's size,
    atomically (`keras_vit.utils.io`).

    Args:
        image: array (H, W, 3), (H, W, 1) or (H, W), pixels in [0, 255].
        heatmap: 2-D array, e.g. one map of `rollout_heatmap`.
        path: output file; ".png" is the format written.
        alpha: float in [0, 1], the heatmap's opacity.
        cmap: a matplotlib colormap name.

    Returns:
        The path written.

    Example:
    >>> save_attention_overlay(image, rollout_heatmap(model, image[None])[0], "attention.png")
    """
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"`path` must end with '.png' (the format written). Received: path={path!r}")
    write_png(path, overlay(image, heatmap, alpha, cmap))
    return path


def model_image(source, model):
    """An image (file, bytes or array) prepared for `model` through
    `keras_vit.preprocessing`: the model's channels, its size (when fixed)
    and its recorded interpolation.

    Example:
    >>> model_image("cat.jpg", model).shape
    (224, 224, 3)
    """
    return preprocessing.load_image(source, image_settings(model))


@strict_keywords()
def explain(image_path, model, output, head_fusion="mean", alpha=0.5, cmap="jet"):
    """Writes the attention-rollout overlay of one image and returns
    (path, predicted class index or None).

    Example:
    >>> explain("cat.jpg", load_model("vit.keras"), "cat_attention.png")
    """
    check_choice(head_fusion, "head_fusion", HEAD_FUSIONS)
    image = model_image(image_path, model)
    heatmap = rollout_heatmap(model, image[None], head_fusion)[0]
    save_attention_overlay(image, heatmap, output, alpha, cmap)
    prediction = None
    if model.num_classes > 1:
        prediction = int(np.argmax(model.predict(image[None], verbose=0)[0]))
    return output, prediction
