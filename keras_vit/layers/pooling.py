"""Pooling of the token sequence into one vector: the class token, the mean
of the patch tokens (`TokenPooling`) or multi-head attention pooling with a
learned query (`AttentionPooling`, "map")."""

import keras
from keras import ops

from keras_vit.layers.attention import layer_norm
from keras_vit.layers.block import ACTIVATIONS
from keras_vit.utils.validation import check_choice

# The ways a classifier pools its tokens: the class token, the mean of the
# patch tokens (both `TokenPooling`) or attention pooling (`AttentionPooling`).
POOLINGS = ("cls", "gap", "map")


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenPooling(keras.layers.Layer):
    """Pools tokens (B, N, D) into one vector (B, D).

    Args:
        mode: "cls" takes the first token (the class token); "gap" averages
            the patch tokens, skipping the first `num_prefix_tokens`.
        num_prefix_tokens: int, tokens before the patches (class and
            register tokens) that "gap" leaves out.

    Example:
    >>> tuple(TokenPooling("gap")(np.ones((2, 5, 8), "float32")).shape)
    (2, 8)
    """

    def __init__(self, mode="cls", num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice(mode, "pooling", POOLINGS[:2])
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


@keras.saving.register_keras_serializable(package="keras_vit")
class AttentionPooling(keras.layers.Layer):
    """Multi-head attention pooling ("map"): a learned query attends over
    the tokens, followed by a residual MLP. Output: (B, D).

    Args:
        num_heads: int, number of attention heads.
        mlp_dim: int, width of the MLP.
        activation: name of the MLP activation (see `TransformerBlock`).
        norm_epsilon: float, LayerNorm epsilon.

    Example:
    >>> tuple(AttentionPooling(num_heads=2, mlp_dim=16)(np.zeros((1, 5, 8), "float32")).shape)
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
