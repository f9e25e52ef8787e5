"""The pre-norm transformer encoder block and its parts: `DropPath`
(stochastic depth), `LayerScale` and the MLP activations."""

import keras
from keras import ops

from keras_vit.kernels import apply_dense, apply_norm, resolve_kernels, torch_module, training_gelu
from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.norm import layer_norm
from keras_vit.utils.validation import check_choice, check_rate


def gelu_exact(x):
    """The exact GELU, x * Phi(x). On TensorFlow written with Erf
    (TensorFlow's own `gelu` uses Erfc, which is not an ONNX op, and this
    form is what its oneDNN rewrite fuses into the matmul before it);
    elsewhere the backend's own exact GELU, one kernel in eager torch
    instead of five element-wise passes (Ti predict on torch, 2-core CPU:
    2075 -> 1681 CPU ms a batch). The same function (within 1e-6)."""
    if keras.backend.backend() == "tensorflow":
        return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))
    return ops.gelu(x, approximate=False)


ACTIVATIONS = {
    "gelu": gelu_exact,
    "gelu_tanh": lambda x: ops.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * ops.sigmoid(1.702 * x),
    "relu": ops.relu,
    "silu": ops.silu,
}


@keras.saving.register_keras_serializable(package="keras_vit")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a whole residual branch per sample in training.

    Args:
        rate: float in [0, 1), the probability of dropping the branch.
        seed: optional int seed.

    Example:
    >>> tuple(DropPath(0.1)(np.ones((2, 3, 4), "float32"), training=False).shape)
    (2, 3, 4)
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate, "drop_path")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # No weights to create: built from the start. An unbuilt sublayer
        # makes Keras' JAX `predict_on_batch`/`fit` run the whole model
        # eagerly on every call, and `model.quantize` refuse the model.
        self.built = True

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


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerScale(keras.layers.Layer):
    """Multiplies its input by a learned per-channel scale (CaiT's LayerScale).

    Args:
        init_value: float, the initial value of every scale.

    Example:
    >>> tuple(LayerScale(1e-5)(np.ones((2, 3, 4), "float32")).shape)
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


@keras.saving.register_keras_serializable(package="keras_vit")
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
        fused_attention: None (per backend), True or False; see
            `MultiHeadSelfAttention`'s `fused`.
        kernels: None (this backend's default), "xla", "torch" or "plain":
            with "xla" on TensorFlow, the training passes of the exact GELU
            and of the LayerNorms run as XLA kernels; with "torch" on torch,
            the Dense projections run as one ``addmm`` each, the float32
            LayerNorms as one ``layer_norm`` call and the fused attention on
            strided views; see `keras_vit.kernels`.
            Stored resolved in the config; the block computes the same
            function with either.

    Call arguments:
        x: tokens (B, N, D).
        return_attention_scores: if True, also return the attention weights
            (B, num_heads, N, N).

    Example:
    >>> block = TransformerBlock(num_heads=2, mlp_dim=16)
    >>> tuple(block(np.zeros((1, 5, 8), "float32")).shape)
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
        fused_attention=None,
        kernels=None,
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
        self.kernels = resolve_kernels(kernels)

        policy = self.dtype_policy
        self.norm1 = layer_norm(norm_epsilon, "norm1", self.kernels)
        self.attention = MultiHeadSelfAttention(
            num_heads, attention_dropout, use_qkv_bias, qk_norm, norm_epsilon,
            fused=fused_attention, kernels=self.kernels, dtype=policy, name="attention",
        )
        self.norm2 = layer_norm(norm_epsilon, "norm2", self.kernels)
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

    def _residual(self, rows, branch, scale, training, batch):
        if self.dropout_rate > 0.0:
            branch = self.dropout(branch, training=training)
        if self.layer_scale is not None:
            branch = scale(branch)
        if training and self.drop_path_rate > 0.0:
            # Stochastic depth drops whole images: it needs the batch axis.
            dim = rows.shape[-1]
            branch = ops.reshape(self.drop_path(ops.reshape(branch, (batch, -1, dim)), training=training), (-1, dim))
        native = torch_module(self.kernels)
        if native is not None:
            out = native.add_inplace(branch, rows)
            if out is not None:
                return out
        return rows + ops.cast(branch, rows.dtype)

    def call(self, x, training=None, return_attention_scores=False):
        # The block works on (B * N, D) rows. Every Dense is then a 2-D
        # MatMul + BiasAdd, and TensorFlow's grappler fuses each into one
        # oneDNN kernel together with what follows it: the GELU after
        # mlp_dense1 (at inference, and in training with plain kernels) and
        # the residual Add after the attention projection and after
        # mlp_dense2. The same function in every mode: the inference
        # rewrites (LayerNorm folds, heads-first attention) are
        # `keras_vit.export.inference_model`'s.
        shape = ops.shape(x)
        rows = ops.reshape(x, (-1, x.shape[-1]))
        attn = self.attention.call_rows(
            apply_norm(self.norm1, rows, self.kernels, training), shape[0], training=training,
            return_attention_scores=return_attention_scores,
        )
        if return_attention_scores:
            attn, weights = attn
        rows = self._residual(rows, attn, getattr(self, "layer_scale1", None), training, shape[0])
        h = self.mlp(apply_norm(self.norm2, rows, self.kernels, training), training)
        rows = self._residual(rows, h, getattr(self, "layer_scale2", None), training, shape[0])
        x = ops.reshape(rows, shape)
        return (x, weights) if return_attention_scores else x

    def mlp(self, h, training=None):
        """``mlp_dense2(dropout(activation(mlp_dense1(h))))`` on rows."""
        h = apply_dense(self.mlp_dense1, h, self.kernels)
        native = torch_module(self.kernels) if self.activation == "gelu" else None
        fresh = native.gelu_inplace(h) if native is not None else None  # h is ours to overwrite
        h = self.activate(h, training) if fresh is None else fresh
        if self.dropout_rate > 0.0:
            h = self.dropout(h, training=training)
        return apply_dense(self.mlp_dense2, h, self.kernels)

    def activate(self, h, training=None):
        """The MLP activation. In training with ``kernels="xla"`` on
        TensorFlow, the exact GELU is `tensorflow_xla.gelu_exact`: forward
        and backward are one fused pass each instead of a dozen separate
        element-wise ops over the MLP's widest tensor. Otherwise, and always
        at inference, `ACTIVATIONS` (grappler fuses the GELU with the matmul
        and TFLite converts it to its builtin GELU)."""
        fast = training_gelu(self.kernels, training) if self.activation == "gelu" else None
        return (fast or ACTIVATIONS[self.activation])(h)

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
            fused_attention=self.attention.fused,
            kernels=self.kernels,
        )
        return config
