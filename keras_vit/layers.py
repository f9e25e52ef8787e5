"""Serializable Keras 3 layers of the Vision Transformer.

The layers follow the data: images are cut into `Patches` (or projected by a
strided convolution inside `PatchEncoder`), the `PatchEncoder` adds class and
register tokens and position embeddings, `TransformerBlock`s mix the tokens,
and `AttentionPooling` is the optional "map" pooling head.

Every layer uses `keras.ops` only, so the same code runs on TensorFlow, JAX
and PyTorch, and every layer is registered under the package name
``keras_vit`` so that `.keras` files reload with ``safe_mode=True`` and no
``custom_objects``.
"""

import functools
import math

import keras
from keras import ops

PACKAGE = "keras_vit"

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@ops.custom_gradient
def _gelu_exact_custom_grad(x):
    """Exact GELU, x * Φ(x), with a hand-written gradient Φ(x) + x * φ(x).

    The same function as `ops.gelu(x, approximate=False)`. TensorFlow's
    automatic gradient of that formula runs about ten element-wise ops over
    the MLP's widest tensor; this one runs five and reuses Φ(x).
    """
    cdf = 0.5 * (1.0 + ops.erf(x * _INV_SQRT2))

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return upstream * (cdf + x * ops.exp(-0.5 * ops.square(x)) * _INV_SQRT_2PI)

    return x * cdf, grad


def _gelu_exact(x):
    """Exact GELU for training: on TensorFlow with the hand-written gradient
    (XLA fuses the automatic one elsewhere; keras.ops.custom_gradient does not
    exist on torch). Inference keeps `ops.gelu`, which grappler fuses with
    the matmul and TFLite converts to its builtin GELU (not so `ops.erf`)."""
    if keras.backend.backend() == "tensorflow":
        return _gelu_exact_custom_grad(x)
    return ops.gelu(x, approximate=False)


ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "gelu_tanh": lambda x: ops.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * ops.sigmoid(1.702 * x),
    "relu": ops.relu,
    "silu": ops.silu,
}
POS_EMBEDDINGS = ("learned", "sincos", "none")
INTERPOLATIONS = ("bicubic", "bilinear")
PATCH_EMBEDDINGS = ("conv", "linear")
# Whether `MultiHeadSelfAttention` calls `ops.dot_product_attention` when no
# attention weights are requested and no attention dropout is active: None
# decides per backend (`use_fused_attention`), True/False force it.
FUSED_ATTENTION = None


# --------------------------------------------------------------------------
# Small helpers: argument checks and pure functions on position embeddings.
# --------------------------------------------------------------------------


def pair(value, name):
    """Returns `value` as an (h, w) pair of positive ints, or raises."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or min(value) <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a pair (h, w) of positive "
            f"ints. Received: {name}={value!r}"
        )
    return tuple(int(v) for v in value)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(
            f"Unknown `{name}`: {value!r}. Accepted values: "
            + ", ".join(repr(c) for c in choices)
        )
    return value


def check_rate(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")
    return float(value)


def grid_size(image_size, patch_size, stride=None, name="image_size"):
    """Number of patches along each axis for images of `image_size`.

    Raises a `ValueError` naming sizes that would work when the image is
    smaller than a patch or the stride does not tile it exactly.
    """
    patch_size = pair(patch_size, "patch_size")
    stride = pair(stride or patch_size, "stride")
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


def sincos_posemb_2d(grid_h, grid_w, dim, temperature=10000.0):
    """Fixed 2-D sine/cosine position embeddings, shape (grid_h * grid_w, dim).

    The first half of the channels encodes the row, the second half the
    column. Along each axis, with ``d = dim / 2`` channels,
    ``PE(pos, 2i) = sin(pos / T^(2i/d))`` and
    ``PE(pos, 2i+1) = cos(pos / T^(2i/d))``. `grid_h` and `grid_w` may be
    symbolic (known only at run time).
    """
    if dim % 4:
        raise ValueError(
            f"`hidden_dim` must be divisible by 4 for pos_embedding='sincos'. "
            f"Received: hidden_dim={dim}"
        )
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


def _interpolation_matrix(in_size, out_size, method):
    """(out_size, in_size) matrix that resamples one axis.

    Half-pixel centres; taps that fall outside the input are dropped and the
    rest renormalised, as `keras.ops.image.resize` does on TensorFlow and
    JAX. Bicubic uses Keys' kernel with a = -0.5.
    """
    in_f = ops.cast(in_size, "float32")
    centres = (ops.arange(out_size, dtype="float32") + 0.5) * in_f / ops.cast(
        out_size, "float32"
    ) - 0.5
    base = ops.floor(centres)
    t = centres - base
    if method == "bicubic":

        def kernel(d):
            d = ops.abs(d)
            near = (1.5 * d - 2.5) * d * d + 1.0
            far = ((-0.5 * d + 2.5) * d - 4.0) * d + 2.0
            return ops.where(d <= 1.0, near, ops.where(d < 2.0, far, 0.0))

        offsets = (-1, 0, 1, 2)
    else:
        kernel = lambda d: ops.maximum(1.0 - ops.abs(d), 0.0)  # noqa: E731
        offsets = (0, 1)
    source = ops.arange(in_size, dtype="float32")[None, :]
    matrix = 0.0
    for offset in offsets:
        index = base + offset
        weight = kernel(t - offset)
        matrix = matrix + weight[:, None] * ops.cast(ops.equal(index[:, None], source), "float32")
    return matrix / ops.sum(matrix, axis=1, keepdims=True)


def resample_posemb(posemb, new_grid, old_grid=None, method="bicubic"):
    """Resamples patch position embeddings on their 2-D grid.

    Args:
        posemb: (N, D) or (1, N, D) embeddings of the patch tokens only
            (class and register rows excluded), laid out row by row.
        new_grid: (h, w) target grid; entries may be symbolic.
        old_grid: (h, w) source grid; defaults to a square grid of N.
        method: "bicubic" or "bilinear".

    Returns:
        The embeddings on the new grid, with the input's rank.
    """
    check_choice(method, "interpolation", INTERPOLATIONS)
    rank = len(posemb.shape)
    table = ops.reshape(posemb, (-1, posemb.shape[-1]))
    if old_grid is None:
        side = int(round(math.sqrt(table.shape[0])))
        old_grid = (side, side)
    table = ops.reshape(ops.cast(table, "float32"), (old_grid[0], old_grid[1], -1))
    rows = _interpolation_matrix(old_grid[0], new_grid[0], method)
    cols = _interpolation_matrix(old_grid[1], new_grid[1], method)
    table = ops.einsum("ih,hwd,jw->ijd", rows, table, cols)
    table = ops.reshape(table, (-1, posemb.shape[-1]))
    return table[None] if rank == 3 else table


# --------------------------------------------------------------------------
# Patches and the patch encoder.
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
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
    >>> Patches(8)(images).shape
    (2, 16, 192)
    >>> Patches(8, stride=4)(images).shape
    (2, 49, 192)
    """

    def __init__(self, patch_size, stride=None, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = pair(patch_size, "patch_size")
        self.stride = pair(stride or patch_size, "stride")

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


@keras.saving.register_keras_serializable(package=PACKAGE)
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
        interpolation: "bicubic" or "bilinear", used to resample learned
            positions.
        patch_embedding: "conv" (one strided convolution) or "linear"
            (`Patches` followed by a `Dense` layer); the two compute the
            same function.

    Example:
    >>> encoder = PatchEncoder(64, patch_size=8, grid_size=(4, 4))
    >>> encoder(np.zeros((2, 32, 32, 3), "float32")).shape
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
        interpolation="bicubic",
        patch_embedding="conv",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(hidden_dim, int) or hidden_dim <= 0:
            raise ValueError(f"`hidden_dim` must be a positive int. Received: {hidden_dim!r}")
        if not isinstance(num_registers, int) or num_registers < 0:
            raise ValueError(
                f"`num_registers` must be an int >= 0. Received: {num_registers!r}"
            )
        self.hidden_dim = hidden_dim
        self.patch_size = pair(patch_size, "patch_size")
        self.stride = pair(stride or patch_size, "stride")
        self.grid_size = None if grid_size is None else pair(grid_size, "grid_size")
        self.use_cls_token = bool(use_cls_token)
        self.num_registers = num_registers
        self.pos_embedding = check_choice(pos_embedding, "pos_embedding", POS_EMBEDDINGS)
        self.interpolation = check_choice(interpolation, "interpolation", INTERPOLATIONS)
        self.patch_embedding = check_choice(
            patch_embedding, "patch_embedding", PATCH_EMBEDDINGS
        )
        if pos_embedding == "learned" and self.grid_size is None:
            raise ValueError("`grid_size` is required with pos_embedding='learned'.")
        if pos_embedding == "sincos" and hidden_dim % 4:
            sincos_posemb_2d(1, 1, hidden_dim)  # raises the hidden_dim error
        if patch_embedding == "conv":
            self.projection = keras.layers.Conv2D(
                hidden_dim,
                self.patch_size,
                strides=self.stride,
                padding="valid",
                dtype=self.dtype_policy,
                name="projection",
            )
        else:
            self.patches = Patches(self.patch_size, self.stride, dtype=self.dtype_policy, name="patches")
            self.projection = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="projection")

    @property
    def num_prefix_tokens(self):
        return int(self.use_cls_token) + self.num_registers

    def build(self, input_shape):
        self.channels = input_shape[-1]
        if self.patch_embedding == "conv":
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
            return sincos_posemb_2d(grid[0], grid[1], self.hidden_dim)[None]
        if self.pos_embedding == "none":
            return None
        table = self.position_embedding[:, int(self.use_cls_token) :, :]
        if all(isinstance(g, int) for g in grid) and tuple(grid) == self.grid_size:
            return table
        return resample_posemb(table, grid, self.grid_size, self.interpolation)

    def call(self, images):
        check_images(images, self.channels, self.patch_size, self.stride)
        batch = ops.shape(images)[0]
        if self.patch_embedding == "conv":
            x = self.projection(images)
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
            interpolation=self.interpolation,
            patch_embedding=self.patch_embedding,
        )
        return config


# --------------------------------------------------------------------------
# The transformer encoder block and its parts.
# --------------------------------------------------------------------------


def use_fused_attention():
    """Whether attention goes through `ops.dot_product_attention`.

    `FUSED_ATTENTION` if set, else True on JAX and torch with an accelerator
    (fused kernels such as cuDNN's). On CPU the explicit softmax path was
    measured as fast or faster (TensorFlow: 703 vs 708 ms per Ti train step,
    193 vs 204 ms predict; JAX: 918 vs 966 and 233 vs 244 ms CPU time).

    Example:
    >>> use_fused_attention() in (True, False)
    True
    """
    if FUSED_ATTENTION is not None:
        return bool(FUSED_ATTENTION)
    return _accelerator_backend()


@functools.lru_cache(maxsize=None)
def _accelerator_backend():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def layer_norm(epsilon, name):
    """LayerNormalization that always computes in float32."""
    return keras.layers.LayerNormalization(epsilon=epsilon, dtype="float32", name=name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a whole residual branch per sample in training.

    Args:
        rate: float in [0, 1), the probability of dropping the branch.
        seed: optional int seed.

    Example:
    >>> DropPath(0.1)(np.ones((2, 3, 4), "float32"), training=False).shape
    (2, 3, 4)
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate, "drop_path")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return x / keep * ops.cast(mask, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerScale(keras.layers.Layer):
    """Multiplies its input by a learned per-channel scale (CaiT's LayerScale).

    Args:
        init_value: float, the initial value of every scale.

    Example:
    >>> LayerScale(1e-5)(np.ones((2, 3, 4), "float32")).shape
    (2, 3, 4)
    """

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
            name="gamma",
        )

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(init_value=self.init_value)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention, softmax(Q Kᵀ / √d) V, with a fused QKV
    projection.

    The softmax runs in float32 under mixed precision. Can return the
    attention weights, shape (B, num_heads, N, N).

    Args:
        num_heads: int, the number of heads; must divide the input width.
        attention_dropout: float in [0, 1), dropout on the attention weights.
        use_qkv_bias: bool, whether the QKV projection has a bias.
        qk_norm: bool, LayerNorm on each head's queries and keys.
        norm_epsilon: float, epsilon of the qk-norm layers.

    Example:
    >>> attn = MultiHeadSelfAttention(num_heads=2)
    >>> out, weights = attn(np.zeros((1, 5, 8), "float32"), return_attention_scores=True)
    >>> out.shape, weights.shape
    ((1, 5, 8), (1, 2, 5, 5))
    """

    def __init__(
        self,
        num_heads,
        attention_dropout=0.0,
        use_qkv_bias=True,
        qk_norm=False,
        norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"`num_heads` must be a positive int. Received: {num_heads!r}")
        self.num_heads = num_heads
        self.attention_dropout = check_rate(attention_dropout, "attention_dropout")
        self.use_qkv_bias = bool(use_qkv_bias)
        self.qk_norm = bool(qk_norm)
        self.norm_epsilon = norm_epsilon
        self.qkv = None
        self.proj = None
        self.dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy, name="attention_dropout")
        if self.qk_norm:
            self.q_norm = layer_norm(norm_epsilon, "q_norm")
            self.k_norm = layer_norm(norm_epsilon, "k_norm")

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(
                f"`hidden_dim` ({dim}) must be divisible by `num_heads` "
                f"({self.num_heads})."
            )
        self.head_dim = dim // self.num_heads
        self.qkv = keras.layers.Dense(
            3 * dim, use_bias=self.use_qkv_bias, dtype=self.dtype_policy, name="qkv"
        )
        self.qkv.build(input_shape)
        self.proj = keras.layers.Dense(dim, dtype=self.dtype_policy, name="proj")
        self.proj.build(input_shape)
        if self.qk_norm:
            self.q_norm.build((None, None, None, self.head_dim))
            self.k_norm.build((None, None, None, self.head_dim))

    def call(self, x, training=None, return_attention_scores=False):
        batch = ops.shape(x)[0]
        qkv = ops.reshape(self.qkv(x), (batch, -1, 3, self.num_heads, self.head_dim))
        dropout = bool(training) and self.attention_dropout > 0.0
        if use_fused_attention() and not (
            return_attention_scores or dropout
        ):
            # The backend's fused kernel takes (B, N, heads, head_dim).
            q, k, v = self._normalize_qk(*ops.unstack(qkv, 3, axis=2))
            out = ops.dot_product_attention(q, k, v, scale=1.0 / math.sqrt(self.head_dim))
        else:
            # One transpose to (3, B, heads, N, head_dim), then unstack: the
            # gradient of unstack is one stack, where slicing `qkv[:, :, i]`
            # costs three zero-filled full-size gradients on TensorFlow.
            q, k, v = self._normalize_qk(*ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0))
            scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
            scores = ops.cast(scores, "float32") / math.sqrt(self.head_dim)
            weights = ops.softmax(scores, axis=-1)
            out = ops.matmul(ops.cast(self.dropout(weights, training=training), v.dtype), v)
            out = ops.transpose(out, (0, 2, 1, 3))
        out = self.proj(ops.reshape(out, (batch, -1, self.num_heads * self.head_dim)))
        return (out, weights) if return_attention_scores else out

    def _normalize_qk(self, q, k, v):
        if self.qk_norm:
            q = ops.cast(self.q_norm(q), v.dtype)
            k = ops.cast(self.k_norm(k), v.dtype)
        return q, k, v

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            attention_dropout=self.attention_dropout,
            use_qkv_bias=self.use_qkv_bias,
            qk_norm=self.qk_norm,
            norm_epsilon=self.norm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """A pre-norm transformer encoder block.

    ``x = x + DropPath(LayerScale(Attention(LayerNorm(x))))`` then
    ``x = x + DropPath(LayerScale(MLP(LayerNorm(x))))`` where the MLP is two
    Dense layers with the activation between them. LayerNorms compute in
    float32 under mixed precision.

    Args:
        num_heads: int, number of attention heads; must divide the width.
        mlp_dim: int, width of the hidden MLP layer.
        dropout: float in [0, 1), dropout after the attention projection and
            in the MLP.
        attention_dropout: float in [0, 1), dropout on attention weights.
        drop_path: float in [0, 1), stochastic depth rate of this block.
        layer_scale: None or float, the initial LayerScale value.
        qk_norm: bool, normalise queries and keys per head.
        activation: one of "gelu", "gelu_tanh", "quick_gelu", "relu", "silu".
        norm_epsilon: float, LayerNorm epsilon.
        use_qkv_bias: bool, whether the QKV projection has a bias.

    Call arguments:
        x: tokens (B, N, D).
        return_attention_scores: if True, also return the attention weights
            (B, num_heads, N, N).

    Example:
    >>> block = TransformerBlock(num_heads=2, mlp_dim=16)
    >>> block(np.zeros((1, 5, 8), "float32")).shape
    (1, 5, 8)
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout=0.0,
        attention_dropout=0.0,
        drop_path=0.0,
        layer_scale=None,
        qk_norm=False,
        activation="gelu",
        norm_epsilon=1e-6,
        use_qkv_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(mlp_dim, int) or mlp_dim <= 0:
            raise ValueError(f"`mlp_dim` must be a positive int. Received: {mlp_dim!r}")
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout_rate = check_rate(dropout, "dropout")
        self.attention_dropout = check_rate(attention_dropout, "attention_dropout")
        self.drop_path_rate = check_rate(drop_path, "drop_path")
        self.layer_scale = layer_scale
        self.qk_norm = bool(qk_norm)
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.norm_epsilon = norm_epsilon
        self.use_qkv_bias = bool(use_qkv_bias)

        policy = self.dtype_policy
        self.norm1 = layer_norm(norm_epsilon, "norm1")
        self.attention = MultiHeadSelfAttention(
            num_heads, attention_dropout, use_qkv_bias, qk_norm, norm_epsilon,
            dtype=policy, name="attention",
        )
        self.norm2 = layer_norm(norm_epsilon, "norm2")
        self.mlp_dense1 = keras.layers.Dense(mlp_dim, dtype=policy, name="mlp_dense1")
        self.mlp_dense2 = None
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=policy, name="dropout")
        self.drop_path = DropPath(self.drop_path_rate, dtype=policy, name="drop_path")
        if layer_scale is not None:
            self.layer_scale1 = LayerScale(layer_scale, dtype=policy, name="layer_scale1")
            self.layer_scale2 = LayerScale(layer_scale, dtype=policy, name="layer_scale2")

    def build(self, input_shape):
        dim = input_shape[-1]
        self.norm1.build(input_shape)
        self.attention.build(input_shape)
        self.norm2.build(input_shape)
        self.mlp_dense1.build(input_shape)
        self.mlp_dense2 = keras.layers.Dense(dim, dtype=self.dtype_policy, name="mlp_dense2")
        self.mlp_dense2.build((None, None, self.mlp_dim))
        if self.layer_scale is not None:
            self.layer_scale1.build(input_shape)
            self.layer_scale2.build(input_shape)

    def _residual(self, x, branch, scale, training):
        branch = self.dropout(branch, training=training)
        if self.layer_scale is not None:
            branch = scale(branch)
        return x + ops.cast(self.drop_path(branch, training=training), x.dtype)

    def call(self, x, training=None, return_attention_scores=False):
        attn = self.attention(
            self.norm1(x), training=training, return_attention_scores=return_attention_scores
        )
        if return_attention_scores:
            attn, weights = attn
        x = self._residual(x, attn, getattr(self, "layer_scale1", None), training)
        # The MLP runs on (B * N, D) rows: as 2-D MatMul + bias + GELU,
        # TensorFlow's grappler fuses the three into one oneDNN kernel in
        # inference, where the plain exact GELU (not the training one with
        # its hand-written gradient) keeps the fusable pattern.
        h = ops.reshape(self.norm2(x), (-1, x.shape[-1]))
        h = self.mlp_dense1(h)
        if self.activation == "gelu" and training:
            h = _gelu_exact(h)
        else:
            h = ACTIVATIONS[self.activation](h)
        h = self.mlp_dense2(self.dropout(h, training=training))
        h = ops.reshape(h, ops.shape(x))
        x = self._residual(x, h, getattr(self, "layer_scale2", None), training)
        return (x, weights) if return_attention_scores else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout=self.dropout_rate,
            attention_dropout=self.attention_dropout,
            drop_path=self.drop_path_rate,
            layer_scale=self.layer_scale,
            qk_norm=self.qk_norm,
            activation=self.activation,
            norm_epsilon=self.norm_epsilon,
            use_qkv_bias=self.use_qkv_bias,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenPooling(keras.layers.Layer):
    """Pools tokens (B, N, D) into one vector (B, D).

    Args:
        mode: "cls" takes the first token (the class token); "gap" averages
            the patch tokens, skipping the first `num_prefix_tokens`.
        num_prefix_tokens: int, tokens before the patches (class and
            register tokens) that "gap" leaves out.

    Example:
    >>> TokenPooling("gap")(np.ones((2, 5, 8), "float32")).shape
    (2, 8)
    """

    def __init__(self, mode="cls", num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice(mode, "pooling", ("cls", "gap"))
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, x):
        if self.mode == "cls":
            return x[:, 0]
        return ops.mean(x[:, self.num_prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, num_prefix_tokens=self.num_prefix_tokens)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionPooling(keras.layers.Layer):
    """Multi-head attention pooling ("map"): a learned query attends over
    the tokens, followed by a residual MLP. Output: (B, D).

    Args:
        num_heads: int, number of attention heads.
        mlp_dim: int, width of the MLP.
        activation: name of the MLP activation (see `TransformerBlock`).
        norm_epsilon: float, LayerNorm epsilon.

    Example:
    >>> AttentionPooling(num_heads=2, mlp_dim=16)(np.zeros((1, 5, 8), "float32")).shape
    (1, 8)
    """

    def __init__(self, num_heads, mlp_dim, activation="gelu", norm_epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.norm_epsilon = norm_epsilon
        self.attention = None
        self.norm = layer_norm(norm_epsilon, "norm")
        self.mlp_dense1 = keras.layers.Dense(mlp_dim, dtype=self.dtype_policy, name="mlp_dense1")
        self.mlp_dense2 = None

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(
                f"`hidden_dim` ({dim}) must be divisible by `num_heads` ({self.num_heads})."
            )
        self.probe = self.add_weight(
            shape=(1, 1, dim), initializer="glorot_uniform", name="probe"
        )
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, dim // self.num_heads, dtype=self.dtype_policy, name="attention"
        )
        self.attention.build((None, 1, dim), (None, None, dim))
        self.norm.build((None, 1, dim))
        self.mlp_dense1.build((None, 1, dim))
        self.mlp_dense2 = keras.layers.Dense(dim, dtype=self.dtype_policy, name="mlp_dense2")
        self.mlp_dense2.build((None, 1, self.mlp_dim))

    def call(self, x):
        probe = ops.broadcast_to(ops.cast(self.probe, x.dtype), (ops.shape(x)[0], 1, x.shape[-1]))
        y = self.attention(probe, x)
        h = self.mlp_dense2(ACTIVATIONS[self.activation](self.mlp_dense1(self.norm(y))))
        return (y + ops.cast(h, y.dtype))[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            activation=self.activation,
            norm_epsilon=self.norm_epsilon,
        )
        return config
