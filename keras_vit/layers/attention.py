"""Multi-head self-attention with a fused QKV projection.

The softmax runs in float32 under mixed precision. The backend's fused
kernel (`ops.dot_product_attention`) is used when no attention weights are
asked for and no attention dropout is active; the `fused` argument decides,
and by default it is on exactly where it was measured to pay (JAX and torch
on an accelerator).
"""

import contextlib
import contextvars
import functools
import math

import keras
from keras import ops

from keras_vit.utils.validation import check_rate


def use_fused_attention(fused=None):
    """Whether attention goes through `ops.dot_product_attention`.

    `fused` if it is True or False, else True on JAX and torch with an accelerator
    (fused kernels such as cuDNN's). On CPU the explicit softmax path was
    measured as fast or faster (TensorFlow: 703 vs 708 ms per Ti train step,
    193 vs 204 ms predict; JAX: 918 vs 966 and 233 vs 244 ms CPU time).

    Example:
    >>> use_fused_attention() in (True, False)
    True
    """
    if fused is not None:
        return bool(fused)
    return _accelerator_backend()


_FAST_INFERENCE = contextvars.ContextVar("keras_vit_fast_inference", default=True)


@contextlib.contextmanager
def fast_inference(enabled):
    """Whether layers traced inside this context may rearrange their
    weights for speed at inference on TensorFlow (on by default):
    `LayerNorm.fold` and the heads-first attention
    (`MultiHeadSelfAttention._call_heads_first`). `export_tflite` turns it
    off, so a .tflite file holds the plain graph: LiteRT runs a full-integer
    broadcast BATCH_MATMUL at half the speed of the row-wise FULLY_CONNECTED
    (Ti int8 at batch 1: 8.9 vs 4.7 ms), and int8 calibration then sees the
    usual LayerNorm outputs.

    Example:
    >>> with fast_inference(False):
    ...     pass
    """
    token = _FAST_INFERENCE.set(bool(enabled))
    try:
        yield
    finally:
        _FAST_INFERENCE.reset(token)


def _fast_inference(training):
    """Inference (`training` None or False) on TensorFlow, not turned off by
    `fast_inference(False)`."""
    return ((training is None or training is False) and keras.backend.backend() == "tensorflow"
            and _FAST_INFERENCE.get())


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


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis, computed on
    TensorFlow in fewer passes over memory.

    In training, forward and backward are one XLA kernel each
    (`xla_kernels.layer_norm`, where XLA compiles). In inference, five element-wise ops over the
    whole input instead of Keras' six: ``beta + (x - mean) * (rsqrt(var +
    epsilon) * gamma)`` with ``var`` the mean of ``(x - mean) ** 2``. Same
    weights, same config, same result up to float rounding. Other backends,
    other axes and float64 keep Keras' own call (torch's fused kernel, XLA's fusion
    on JAX). `project(x, dense)` computes ``dense(norm(x))``, at inference on
    TensorFlow with gamma and beta folded into the Dense's weights (`fold`).

    Example:
    >>> norm = LayerNorm(epsilon=1e-6)
    >>> tuple(norm(np.ones((2, 3, 4), "float32")).shape)
    (2, 3, 4)
    """

    def _lean(self, inputs):
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and self.axis in (-1, [-1], rank - 1, [rank - 1])
            and self.center and self.scale and not getattr(self, "rms_scaling", False)
            and keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16", "float32")
        )

    def fold(self, inputs, dense, training=None):
        """``(h, kernel, bias)`` with ``h @ kernel + bias == dense(self(inputs))``:
        gamma folded into the kernel (a scale of its rows) and beta into the
        bias (``beta @ kernel``), so the activations get the centring and one
        multiply by ``rsqrt(var + epsilon)`` per row, not the two passes
        that apply gamma and beta. None where that does not apply: in
        training, off TensorFlow or under `fast_inference(False)`, where
        `call` takes Keras' path, or when `dense` is not a `plain_dense`.
        The norm must be built. The folded weights are computed each call
        from the variables, so they follow any change to them; they are
        small next to the activations. All three come in `dense`'s compute
        dtype.
        """
        if not (_fast_inference(training) and self._lean(inputs) and plain_dense(dense)):
            return None
        centered, inv = self._centered_and_inv(inputs)
        h = centered * inv
        kernel = ops.cast(dense.kernel, "float32")
        bias = ops.matmul(ops.cast(self.beta, "float32")[None], kernel)[0]
        if dense.use_bias:
            bias = bias + ops.cast(dense.bias, "float32")
        kernel = kernel * ops.cast(self.gamma, "float32")[:, None]
        dtype = dense.compute_dtype
        return ops.cast(h, dtype), ops.cast(kernel, dtype), ops.cast(bias, dtype)

    def project(self, inputs, dense, training=None):
        """``dense(self(inputs))``, with this norm folded into `dense`'s
        weights where `fold` applies (see there)."""
        folded = self.fold(inputs, dense, training)
        if folded is None:
            return dense(self(inputs, training=training))
        h, kernel, bias = folded
        return ops.add(ops.matmul(h, kernel), bias)

    def call(self, inputs, training=None):
        if not self._lean(inputs):
            return super().call(inputs)
        x = ops.cast(inputs, "float32")
        gamma, beta = ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")
        if isinstance(training, bool) and training:  # a symbolic flag takes the plain (differentiable) ops
            from keras_vit.layers import xla_kernels

            if xla_kernels.available():
                return ops.cast(xla_kernels.layer_norm(x, gamma, beta, self.epsilon), self.compute_dtype)
        centered, inv = self._centered_and_inv(x)
        return ops.cast(beta + centered * (inv * gamma), self.compute_dtype)

    def _centered_and_inv(self, inputs):
        """``x - mean`` and ``rsqrt(var + epsilon)`` over the last axis, in
        float32 (the statistics both `call` and `fold` start from)."""
        x = ops.cast(inputs, "float32")
        centered = x - ops.mean(x, axis=-1, keepdims=True)
        return centered, ops.rsqrt(ops.mean(ops.square(centered), axis=-1, keepdims=True) + self.epsilon)


def plain_dense(layer):
    """Whether `layer` is a built, unquantized `keras.layers.Dense` without
    activation, whose kernel and bias can be used directly."""
    return (type(layer) is keras.layers.Dense and layer.built and layer.quantization_mode is None
            and layer.activation is keras.activations.linear)


def layer_norm(epsilon, name):
    """A `LayerNorm` over the last axis that always computes in float32."""
    return LayerNorm(epsilon=epsilon, dtype="float32", name=name)



@keras.saving.register_keras_serializable(package="keras_vit")
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
        fused: None (decided per backend, see `use_fused_attention`), True or
            False: whether to call the backend's fused attention kernel when
            no weights are returned and no attention dropout is active.

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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if fused not in (None, True, False):
            raise ValueError(f"`fused` must be None, True or False. Received: fused={fused!r}")
        self.fused = fused
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
        batch, dim = ops.shape(x)[0], x.shape[-1]
        out = self.call_rows(ops.reshape(x, (-1, dim)), batch, training, return_attention_scores)
        if return_attention_scores:
            return ops.reshape(out[0], (batch, -1, dim)), out[1]
        return ops.reshape(out, (batch, -1, dim))

    def call_rows(self, rows, batch, training=None, return_attention_scores=False, norm=None):
        """Attention over tokens given as rows: `rows` is (batch * N, D),
        the output too (and the weights, if asked, (batch, heads, N, N)).
        `norm`, a built `LayerNorm` or None, is applied to the rows first
        (folded into the QKV projection where `LayerNorm.fold` applies).

        `TransformerBlock` calls this to keep its residual stream 2-D: the
        QKV and output projections then run as 2-D MatMul + BiasAdd, which
        TensorFlow fuses into one oneDNN kernel (with the block's residual
        Add after the output projection). At inference on TensorFlow, without
        qk-norm or the fused kernel, `_call_heads_first` takes the QKV
        projection as one batched matmul whose output is already
        heads-first. The layer must be built. A subclass that changes the
        attention overrides this method, not `call` (which reshapes to rows
        and calls it).
        """
        dropout = bool(training) and self.attention_dropout > 0.0
        fused = use_fused_attention(self.fused) and not (return_attention_scores or dropout)
        if (not fused and not self.qk_norm and _fast_inference(training)
                and plain_dense(self.qkv) and plain_dense(self.proj)):
            return self._call_heads_first(rows, batch, norm, return_attention_scores)
        qkv = self.qkv(rows) if norm is None else norm.project(rows, self.qkv, training)
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
        out = self.proj(ops.reshape(out, (-1, self.num_heads * self.head_dim)))
        return (out, weights) if return_attention_scores else out

    def _call_heads_first(self, rows, batch, norm, return_attention_scores):
        """`call_rows` at inference on TensorFlow (no qk-norm, plain Dense
        projections, not under `fast_inference(False)`), with the weights
        rearranged so that the activations are not transposed on the way in
        and only the biases that change the result are added:

        - the QKV projection is one batched matmul of the rows (normalised
          by `norm`, folded where `LayerNorm.fold` applies) with the kernel
          viewed as (3 * heads, D, head_dim): its output is already
          q, k, v as (heads, B, N, head_dim);
        - 1/√head_dim goes into the query kernel and bias;
        - the key bias adds q·b_k to all the scores of a query, which the
          softmax removes: it is left out;
        - the value bias passes through the weights unchanged (each row sums
          to 1): it joins the output projection's bias, ``b_v @ W_o + b_o``.
        """
        folded = None if norm is None else norm.fold(rows, self.qkv)
        if folded is None:
            h = rows if norm is None else ops.cast(norm(rows), self.compute_dtype)
            kernel, bias = self.qkv.kernel, self.qkv.bias
        else:
            h, kernel, bias = folded
        heads, head_dim, dim = self.num_heads, self.head_dim, h.shape[-1]
        scale = 1.0 / math.sqrt(head_dim)
        kernel = ops.reshape(kernel, (dim, 3, heads * head_dim)) * ops.cast([[scale], [1.0], [1.0]], kernel.dtype)
        kernel = ops.transpose(ops.reshape(kernel, (dim, 3 * heads, head_dim)), (1, 0, 2))
        q, k, v = ops.unstack(ops.reshape(ops.matmul(h[None], kernel), (3, heads, batch, -1, head_dim)), 3, axis=0)
        proj_bias = self.proj.bias
        if bias is not None:
            q_bias, _, v_bias = ops.unstack(ops.reshape(bias, (3, heads * head_dim)), 3, axis=0)
            q = q + ops.reshape(q_bias * scale, (heads, 1, 1, head_dim))
            proj_bias = proj_bias + ops.matmul(v_bias[None], self.proj.kernel)[0]
        weights = ops.softmax(ops.cast(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), "float32"), axis=-1)
        out = ops.transpose(ops.matmul(ops.cast(weights, v.dtype), v), (1, 2, 0, 3))
        out = ops.add(ops.matmul(ops.reshape(out, (-1, heads * head_dim)), self.proj.kernel), proj_bias)
        return (out, ops.transpose(weights, (1, 0, 2, 3))) if return_attention_scores else out

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
        )
        return config
