"""Images to tokens: `Patches`, `PatchEncoder` and the pure functions on
patch grids (`patch_stride`, `grid_size`); position tables are in
`keras_vit.layers.positions`.

Every function uses `keras.ops` only, so the same code runs on TensorFlow,
JAX and PyTorch.
"""

import keras
from keras import ops

from keras_vit.kernels import resolve_kernels
from keras_vit.layers.stem import ConvStem, check_conv_stem
from keras_vit.layers.positions import (
    POS_INTERPOLATIONS, SINCOS_LAYOUTS, renamed_in_config, renamed_interpolation, resample_posemb, sincos_posemb_2d)
from keras_vit.utils.validation import check_choice, pair

POS_EMBEDDINGS = ("learned", "sincos", "none")
PATCH_EMBEDDINGS = ("conv", "linear")


def patch_stride(patch_size, stride=None):
    """The (h, w) stride: the patch size when `stride` is None. A stride
    larger than the patch would skip pixels the model never sees, so it is
    refused, as are 0 and negative strides.

    Example:
    >>> patch_stride(8), patch_stride(8, 4)
    ((8, 8), (4, 4))
    """
    patch = pair(patch_size, "patch_size")
    stride = patch if stride is None else pair(stride, "stride")
    if any(s > p for s, p in zip(stride, patch)):
        raise ValueError(
            f"`stride` {stride} is larger than `patch_size` {patch}: the pixels between "
            f"patches would never reach the model. Use a stride <= the patch size.")
    return stride


def grid_size(image_size, patch_size, stride=None, name="image_size"):
    """Number of patches along each axis for images of `image_size`.

    Raises a `ValueError` naming sizes that would work when the image is
    smaller than a patch or the stride does not tile it exactly.
    """
    patch_size = pair(patch_size, "patch_size")
    stride = patch_stride(patch_size, stride)
    grid = []
    for axis, size, p, s in zip(("height", "width"), image_size, patch_size, stride):
        if size is None:
            grid.append(None)
            continue
        if size < p:
            raise ValueError(
                f"The image {axis} {size} (from `{name}`) is smaller than the "
                f"patch size {p}. Use images of at least {p} pixels."
            )
        if (size - p) % s:
            lower = p + (size - p) // s * s
            raise ValueError(
                f"The image {axis} {size} (from `{name}`) is not tiled exactly "
                f"by patches of {p} with stride {s}: (size - {p}) must be a "
                f"multiple of {s}. Sizes that work: {lower} or {lower + s}."
            )
        grid.append((size - p) // s + 1)
    return tuple(grid)



@keras.saving.register_keras_serializable(package="keras_vit")
class Patches(keras.layers.Layer):
    """Cuts images into flattened patches.

    Images (B, H, W, C) become (B, N, patch_h * patch_w * C), the patches
    taken row by row, each flattened in (row, column, channel) order. With
    `stride` smaller than `patch_size` the patches overlap (the `step` of
    `patchify`): N = ((H - p) / s + 1) * ((W - p) / s + 1). H and W may be
    unknown until run time.

    Args:
        patch_size: int or (h, w) pair, the size of a patch in pixels.
        stride: int or (h, w) pair, the step between patches; defaults to
            `patch_size` (no overlap).

    Example:
    >>> images = np.zeros((2, 32, 32, 3), "float32")
    >>> tuple(Patches(8)(images).shape)
    (2, 16, 192)
    >>> tuple(Patches(8, stride=4)(images).shape)
    (2, 49, 192)
    """

    def __init__(self, patch_size, stride=None, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = pair(patch_size, "patch_size")
        self.stride = patch_stride(patch_size, stride)

    def call(self, images):
        check_images(images, None, self.patch_size, self.stride)
        if self.stride == self.patch_size:
            batch, height, width, channels = ops.shape(images)
            (ph, pw) = self.patch_size
            x = ops.reshape(images, (batch, height // ph, ph, width // pw, pw, channels))
            x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        else:
            x = ops.image.extract_patches(
                images, self.patch_size, strides=self.stride, padding="valid"
            )
        return ops.reshape(x, (ops.shape(images)[0], -1, self.patch_dim(images.shape[-1])))

    def patch_dim(self, channels):
        return self.patch_size[0] * self.patch_size[1] * channels

    def compute_output_shape(self, input_shape):
        gh, gw = grid_size(input_shape[1:3], self.patch_size, self.stride)
        n = None if gh is None or gw is None else gh * gw
        return (input_shape[0], n, self.patch_dim(input_shape[-1]))

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, stride=self.stride)
        return config


def check_images(images, channels, patch_size, stride):
    """Raises a clear `ValueError` for images of the wrong rank, channel count
    or a size the patches do not tile (checked where the size is known)."""
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(
            f"Expected a batch of images of shape (batch, height, width, "
            f"channels), i.e. rank 4. Received an input of shape {shape}."
        )
    if channels is not None and shape[-1] is not None and shape[-1] != channels:
        raise ValueError(
            f"Expected images with {channels} channels (`channels={channels}`). "
            f"Received images of shape {shape}."
        )
    grid_size(shape[1:3], patch_size, stride, name="the input images")
    if None in shape[1:3] and keras.backend.backend() == "tensorflow":
        _assert_tiled_in_graph(images, patch_size, stride)


def _assert_tiled_in_graph(images, patch_size, stride):
    """In a TensorFlow graph whose height or width is only known at run time
    (a tf.function or SavedModel signature with dynamic H and W), checks the
    tiling when the graph runs instead of letting the patches crop the image
    (JAX and torch always know the shape, and are checked above)."""
    import tensorflow as tf

    if tf.executing_eagerly():
        return
    shape = tf.shape(images)
    for axis, (p, s) in enumerate(zip(patch_size, stride), start=1):
        size = shape[axis]
        tf.debugging.assert_greater_equal(
            size, p, message=f"The input images are smaller than the patch size {p}.")
        tf.debugging.assert_equal(
            tf.math.floormod(size - p, s), 0,
            message=f"The input images' {'height' if axis == 1 else 'width'} is not tiled exactly by "
                    f"patches of {p} with stride {s}: (size - {p}) must be a multiple of {s}.")


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEncoder(keras.layers.Layer):
    """Embeds images as a sequence of tokens.

    Projects each patch linearly to `hidden_dim`, adds position embeddings
    and prepends an optional learnable class token and optional register
    tokens. Output: (B, [cls] + [registers] + N patches, hidden_dim).

    Learned positions are built for `grid_size` and resampled on their 2-D
    grid (class row untouched) whenever the patch grid at run time differs,
    so one model serves several image sizes. Register tokens get no position.

    Args:
        hidden_dim: int, the token width.
        patch_size: int or (h, w) pair.
        stride: int or (h, w) pair; defaults to `patch_size`. Smaller than
            the patch gives overlapping patches.
        grid_size: (h, w) patch grid the learned positions are built for;
            needed for `pos_embedding="learned"`.
        use_cls_token: bool, prepend a learnable class token.
        num_registers: int, number of learnable register tokens.
        pos_embedding: "learned" (trainable, normal init with std 0.02),
            "sincos" (fixed 2-D sine/cosine) or "none".
        pos_interpolation: "bicubic" or "bilinear", used to resample learned
            positions (called `interpolation` until 0.2, still accepted
            with a `DeprecationWarning`).
        patch_embedding: "conv" (one strided convolution) or "linear"
            (`Patches` followed by a `Dense` layer); the two compute the
            same function.
        sincos_layout: channel layout of "sincos" positions, "big_vision"
            or "rows_interleaved" (see `sincos_posemb_2d`). Configs saved
            without it (keras_vit 0.1) load as "rows_interleaved".
        patch_bias: bool, a bias in the patch projection (CLIP-style
            towers have none).
        conv_stem: None, or the channels of a `ConvStem` of 3x3 stride-2
            convolutions that replaces the patchify convolution (then a 1x1
            convolution projects to `hidden_dim`); `patch_size` must be
            2**len(conv_stem), without overlap.
        kernels: None (this backend's default), "xla", "torch" or "plain":
            the kernels of the `ConvStem`, if any (see `keras_vit.kernels`).
            Stored resolved in the config.

    Example:
    >>> encoder = PatchEncoder(64, patch_size=8, grid_size=(4, 4))
    >>> tuple(encoder(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 17, 64)
    """

    def __init__(
        self,
        hidden_dim,
        patch_size,
        stride=None,
        grid_size=None,
        use_cls_token=True,
        num_registers=0,
        pos_embedding="learned",
        pos_interpolation="bicubic",
        patch_embedding="conv",
        sincos_layout="big_vision",
        patch_bias=True,
        conv_stem=None,
        kernels=None,
        **kwargs,
    ):
        pos_interpolation = renamed_interpolation(kwargs, pos_interpolation, "PatchEncoder")
        super().__init__(**kwargs)
        self.conv_stem = check_conv_stem(conv_stem, patch_size, stride, patch_embedding)
        self.patch_bias = check_choice(patch_bias, "patch_bias", (True, False))
        self.sincos_layout = check_choice(sincos_layout, "sincos_layout", SINCOS_LAYOUTS)
        if not isinstance(hidden_dim, int) or hidden_dim <= 0:
            raise ValueError(f"`hidden_dim` must be a positive int. Received: {hidden_dim!r}")
        if not isinstance(num_registers, int) or num_registers < 0:
            raise ValueError(f"`num_registers` must be an int >= 0. Received: {num_registers!r}")
        self.hidden_dim = hidden_dim
        self.patch_size = pair(patch_size, "patch_size")
        self.stride = patch_stride(patch_size, stride)
        self.grid_size = None if grid_size is None else pair(grid_size, "grid_size")
        self.use_cls_token = bool(use_cls_token)
        self.num_registers = num_registers
        self.pos_embedding = check_choice(pos_embedding, "pos_embedding", POS_EMBEDDINGS)
        self.pos_interpolation = check_choice(pos_interpolation, "pos_interpolation", POS_INTERPOLATIONS)
        self.patch_embedding = check_choice(patch_embedding, "patch_embedding", PATCH_EMBEDDINGS)
        if pos_embedding == "learned" and self.grid_size is None:
            raise ValueError("`grid_size` is required with pos_embedding='learned'.")
        if pos_embedding == "sincos" and hidden_dim % 4:
            sincos_posemb_2d(1, 1, hidden_dim)  # raises the hidden_dim error
        self.training_image_size = None  # (h, w): training calls resize to it (training.progressive)
        self.kernels = resolve_kernels(kernels)
        self.stem = None
        if self.conv_stem:
            self.stem = ConvStem(self.conv_stem, kernels=self.kernels, dtype=self.dtype_policy, name="stem")
            self.projection = keras.layers.Conv2D(
                hidden_dim, 1, use_bias=patch_bias, dtype=self.dtype_policy, name="projection")
        elif patch_embedding == "conv":
            self.projection = keras.layers.Conv2D(
                hidden_dim,
                self.patch_size,
                strides=self.stride,
                padding="valid",
                use_bias=patch_bias,
                dtype=self.dtype_policy,
                name="projection",
            )
        else:
            self.patches = Patches(self.patch_size, self.stride, dtype=self.dtype_policy, name="patches")
            self.projection = keras.layers.Dense(
                hidden_dim, use_bias=patch_bias, dtype=self.dtype_policy, name="projection")

    @property
    def num_prefix_tokens(self):
        return int(self.use_cls_token) + self.num_registers

    def build(self, input_shape):
        self.channels = input_shape[-1]
        if self.stem is not None:
            self.stem.build(input_shape)
            self.projection.build(self.stem.compute_output_shape(input_shape))
        elif self.patch_embedding == "conv":
            self.projection.build(input_shape)
        else:
            self.projection.build((None, None, self.patches.patch_dim(self.channels)))
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        if self.use_cls_token:
            self.cls_token = self.add_weight(
                shape=(1, 1, self.hidden_dim), initializer="zeros", name="cls_token"
            )
        if self.num_registers:
            self.registers = self.add_weight(
                shape=(1, self.num_registers, self.hidden_dim),
                initializer=init,
                name="registers",
            )
        if self.pos_embedding == "learned":
            rows = int(self.use_cls_token) + self.grid_size[0] * self.grid_size[1]
            self.position_embedding = self.add_weight(
                shape=(1, rows, self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="position_embedding",
            )

    def patch_positions(self, grid):
        """The position embeddings of the patch tokens for a (h, w) grid,
        shape (1, h * w, hidden_dim), or None without positions."""
        if self.pos_embedding == "sincos":
            return sincos_posemb_2d(grid[0], grid[1], self.hidden_dim, layout=self.sincos_layout)[None]
        if self.pos_embedding == "none":
            return None
        table = self.position_embedding[:, int(self.use_cls_token) :, :]
        if all(isinstance(g, int) for g in grid) and tuple(grid) == self.grid_size:
            return table
        return resample_posemb(table, grid, self.grid_size, self.pos_interpolation)

    def call(self, images, training=None):
        check_images(images, self.channels, self.patch_size, self.stride)
        if training and self.training_image_size is not None:
            images = ops.image.resize(images, self.training_image_size, interpolation="bilinear", antialias=True)
        batch = ops.shape(images)[0]
        if self.patch_embedding == "conv":
            x = self.projection(images if self.stem is None else self.stem(images, training=training))
            grid = ops.shape(x)[1:3]
        else:
            grid = [(s - p) // st + 1 for s, p, st in zip(ops.shape(images)[1:3], self.patch_size, self.stride)]
            x = self.projection(self.patches(images))
        x = ops.reshape(x, (batch, -1, self.hidden_dim))
        positions = self.patch_positions(grid)
        if positions is not None:
            x = x + ops.cast(positions, x.dtype)
        prefix = []
        if self.use_cls_token:
            cls = self.cls_token
            if self.pos_embedding == "learned":
                cls = cls + self.position_embedding[:, :1, :]
            prefix.append(ops.broadcast_to(ops.cast(cls, x.dtype), (batch, 1, self.hidden_dim)))
        if self.num_registers:
            prefix.append(
                ops.broadcast_to(
                    ops.cast(self.registers, x.dtype), (batch, self.num_registers, self.hidden_dim)
                )
            )
        return ops.concatenate(prefix + [x], axis=1) if prefix else x

    def compute_output_shape(self, input_shape):
        gh, gw = grid_size(input_shape[1:3], self.patch_size, self.stride, "the input images")
        n = None if gh is None or gw is None else gh * gw + self.num_prefix_tokens
        return (input_shape[0], n, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            patch_size=self.patch_size,
            stride=self.stride,
            grid_size=self.grid_size,
            use_cls_token=self.use_cls_token,
            num_registers=self.num_registers,
            pos_embedding=self.pos_embedding,
            pos_interpolation=self.pos_interpolation,
            patch_embedding=self.patch_embedding,
            sincos_layout=self.sincos_layout,
            patch_bias=self.patch_bias,
            conv_stem=None if self.conv_stem is None else list(self.conv_stem),
            kernels=self.kernels,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # keras_vit 0.1 wrote no layout and used rows-first, interleaved channels.
        return cls(**{"sincos_layout": "rows_interleaved", **renamed_in_config(config)})
