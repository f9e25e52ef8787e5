"""Multi-head self-attention with a fused QKV projection.

The softmax runs in float32 under mixed precision. The backend's fused
kernel (`ops.dot_product_attention`) is used when no attention weights are
asked for and no attention dropout is active; the `fused` argument decides
when the layer is constructed, and by default it is on exactly where it was
measured to pay (torch, and JAX on an accelerator). The layer computes the
same function in every mode: the inference-only rearrangement of its
weights (heads-first attention) is the explicit transform
`keras_vit.export.inference_model`.
"""

import functools
import math

import keras
from keras import ops

from keras_vit.kernels import apply_dense, resolve_kernels, torch_module
from keras_vit.layers.norm import LayerNorm, layer_norm  # noqa: F401 - LayerNorm was defined here
from keras_vit.utils.validation import check_choice, check_rate


def use_fused_attention(fused=None):
    """Whether attention goes through `ops.dot_product_attention`.

    `fused` if it is True or False, else True on torch (its
    `scaled_dot_product_attention`, CPU included) and on JAX with an
    accelerator (fused kernels such as cuDNN's). Measured on the Ti-like
    model, batch 128, 2-core CPU, in-process A/B under load: torch predict
    2075 -> 1862 CPU ms a batch with the fused kernel. On CPU, TensorFlow and
    JAX ran the explicit softmax path as fast or faster (TensorFlow: 703 vs
    708 ms per Ti train step, 193 vs 204 ms predict; JAX: 918 vs 966 and 233
    vs 244 ms CPU time). Both paths give the same outputs (within 1e-5).

    Example:
    >>> use_fused_attention() in (True, False)
    True
    """
    if fused is not None:
        return bool(fused)
    return _fused_kernel_pays()


@functools.lru_cache(maxsize=None)
def _fused_kernel_pays():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return backend == "torch"


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention, softmax(Q Kᵀ / √d) V, with a fused QKV
    projection.

    The softmax runs in float32 under mixed precision. Can return the
    attention weights, shape (B, num_heads, N, N). The layer computes the
    same function in every mode and on every backend; its kernels are
    chosen at construction and stored in its config.

    Args:
        num_heads: int, the number of heads; must divide the input width.
        attention_dropout: float in [0, 1), dropout on the attention weights.
        use_qkv_bias: bool, whether the QKV projection has a bias.
        qk_norm: bool, LayerNorm on each head's queries and keys.
        norm_epsilon: float, epsilon of the qk-norm layers.
        fused: None (decided for this backend at construction, see
            `use_fused_attention`), True or False: whether to call the
            backend's fused attention kernel when no weights are returned
            and no attention dropout is active. Stored resolved.
        kernels: None, "xla", "torch" or "plain" (see `keras_vit.kernels`):
            the qk-norm layers' kernels, and with "torch" on torch the
            projections as one ``addmm`` each and the fused attention on
            strided views. Stored resolved.

    Example:
    >>> attn = MultiHeadSelfAttention(num_heads=2)
    >>> out, weights = attn(np.zeros((1, 5, 8), "float32"), return_attention_scores=True)
    >>> tuple(out.shape), tuple(weights.shape)
    ((1, 5, 8), (1, 2, 5, 5))
    """

    def __init__(
        self,
        num_heads,
        attention_dropout=0.0,
        use_qkv_bias=True,
        qk_norm=False,
        norm_epsilon=1e-6,
        fused=None,
        kernels=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice(fused, "fused", (None, True, False))
        self.fused = use_fused_attention(fused)
        self.kernels = resolve_kernels(kernels)
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
            self.q_norm = layer_norm(norm_epsilon, "q_norm", self.kernels)
            self.k_norm = layer_norm(norm_epsilon, "k_norm", self.kernels)

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
        batch, dim = ops.shape(x)[0], x.shape[-1]
        out = self.call_rows(ops.reshape(x, (-1, dim)), batch, training, return_attention_scores)
        if return_attention_scores:
            return ops.reshape(out[0], (batch, -1, dim)), out[1]
        return ops.reshape(out, (batch, -1, dim))

    def call_rows(self, rows, batch, training=None, return_attention_scores=False):
        """Attention over tokens given as rows: `rows` is (batch * N, D),
        the output too (and the weights, if asked, (batch, heads, N, N)).

        `TransformerBlock` calls this to keep its residual stream 2-D: the
        QKV and output projections then run as 2-D MatMul + BiasAdd, which
        TensorFlow fuses into one oneDNN kernel (with the block's residual
        Add after the output projection). The layer must be built. A
        subclass that changes the attention overrides this method (or
        `attend`), not `call` (which reshapes to rows and calls it).
        """
        return self.attend(apply_dense(self.qkv, rows, self.kernels), batch, training, return_attention_scores)

    def attend(self, qkv, batch, training=None, return_attention_scores=False):
        """`call_rows` after the QKV projection: `qkv` is its output,
        (batch * N, 3 * D) rows; returns the output projection's rows (and
        the weights, if asked)."""
        dropout = bool(training) and self.attention_dropout > 0.0
        fused = self.fused and not (return_attention_scores or dropout)
        native = torch_module(self.kernels) if fused and not self.qk_norm else None
        if native is not None:
            out = native.attention(qkv, batch, self.num_heads, self.head_dim)
            return apply_dense(self.proj, out, self.kernels)
        qkv = ops.reshape(qkv, (batch, -1, 3, self.num_heads, self.head_dim))
        if fused:
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
        out = apply_dense(self.proj, ops.reshape(out, (-1, self.num_heads * self.head_dim)), self.kernels)
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
            fused=self.fused,
            kernels=self.kernels,
        )
        return config
