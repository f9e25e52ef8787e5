"""TensorFlow-only training kernels: the exact GELU and LayerNorm, each
forward and each backward compiled by XLA into one pass over memory.

Why: outside XLA, TensorFlow runs every element-wise op as its own pass over
the tensor. The training GELU of a Ti block's MLP (128 x 65 tokens x 768)
is a dozen such passes of 25 MB each, forward and backward, and the CPU
waits on memory, not arithmetic. Compiling only these small functions with
XLA fuses each into one pass, while the matmuls around them stay on
TensorFlow's oneDNN kernels, which beat XLA's on CPU (`benchmarks.mfu`'s
"matmuls alone" rows). Measured on a Ti training step (2-core CPU, batch
128): 916 -> 860 ms with the GELU kernels, 851 ms with the LayerNorm ones
too.

Only the training paths use them (`TransformerBlock` and `LayerNorm` with
``training=True``), only on the TensorFlow backend, and only in layers
constructed with ``kernels="xla"`` (the default there; see
`keras_vit.kernels`): inference graphs, which SavedModel and TFLite export,
keep plain ops, and JAX fuses element-wise work by itself. This module
imports TensorFlow: `keras_vit.kernels.xla_module(kernels)` imports it
only where the backend is TensorFlow, and returns it only where
`available()`.
"""

import functools
import math

import tensorflow as tf

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@functools.lru_cache(maxsize=None)
def available():
    """Whether XLA compiles here: a tiny function is compiled once, eagerly.
    Where it cannot be (a TensorFlow build or device plugin without XLA),
    the layers keep their plain-op training paths.

    Example:
    >>> available() in (True, False)
    True
    """
    try:
        with tf.init_scope():
            return float(tf.function(lambda x: x + 1.0, jit_compile=True)(tf.constant(1.0))) == 2.0
    except Exception:  # noqa: BLE001 - any failure to compile means: not here
        return False


@tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
def _gelu_forward(x):
    return x * (0.5 + 0.5 * tf.math.erf(x * _INV_SQRT2))


@tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
def _gelu_backward(x, upstream):
    # d/dx x * Phi(x) = Phi(x) + x * phi(x)
    cdf = 0.5 + 0.5 * tf.math.erf(x * _INV_SQRT2)
    return upstream * (cdf + x * tf.exp(-0.5 * x * x) * _INV_SQRT_2PI)


@tf.custom_gradient
def gelu_exact(x):
    """Exact GELU, x * Phi(x), with its gradient Phi(x) + x * phi(x); forward
    and backward are one XLA kernel each.

    Example:
    >>> round(float(gelu_exact(tf.constant(1.0))), 4)
    0.8413
    """

    def grad(upstream):
        return _gelu_backward(x, upstream)

    return _gelu_forward(x), grad


def _row_mean(x):
    """The mean of each row of 2-D `x`, as a (rows, 1) column: a dot with a
    column of 1/width. Inside an XLA kernel on CPU the dot runs on Eigen's
    matrix kernels, about twice as fast here as XLA's own reduction along
    the minor axis (Ti rows, 8320 x 192, 2-core CPU: LayerNorm forward
    4.0 -> 2.3 ms with the dots alone, backward 5.4 -> 3.0 ms with every
    sum as a dot; as below, with the forward keeping only the row
    statistics and the column sums of the gamma and beta gradients left to
    `reduce_sum`, which is more exact over many rows, 1.4 and 3.8 ms), with
    the same float32 rounding (outputs within 1e-6 of a float64
    reference)."""
    width = tf.shape(x)[-1]
    return tf.matmul(x, tf.fill(tf.stack([width, 1]), 1.0 / tf.cast(width, x.dtype)))


@tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
def _layer_norm_forward(x, gamma, beta, epsilon):
    # 2-D rows; only the statistics are kept for the backward pass, which
    # recomputes the normalized rows from `x` rather than reading a stored copy.
    mean = _row_mean(x)
    centered = x - mean
    inv = tf.math.rsqrt(_row_mean(centered * centered) + epsilon)
    return centered * inv * gamma + beta, mean, inv


@tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
def _layer_norm_backward(upstream, x, mean, inv, gamma):
    normalized = (x - mean) * inv
    g = upstream * gamma
    dx = inv * (g - _row_mean(g) - normalized * _row_mean(g * normalized))
    return dx, tf.reduce_sum(upstream * normalized, 0), tf.reduce_sum(upstream, 0)


def layer_norm(x, gamma, beta, epsilon):
    """LayerNorm over the last axis of float32 `x`: ``(x - mean) /
    sqrt(var + epsilon) * gamma + beta``, with gradients for `x`, `gamma` and
    `beta`; forward and backward are one XLA kernel each.

    Example:
    >>> y = layer_norm(tf.constant([[1.0, 3.0]]), tf.ones(2), tf.zeros(2), 0.0)
    >>> [round(float(v), 4) for v in y[0]]
    [-1.0, 1.0]
    """
    epsilon = tf.constant(epsilon, tf.float32)

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        rows = tf.reshape(x, tf.stack([-1, tf.shape(x)[-1]]))  # the kernels work on 2-D rows
        y, mean, inv = _layer_norm_forward(rows, gamma, beta, epsilon)

        def grad(upstream):
            dx, dgamma, dbeta = _layer_norm_backward(tf.reshape(upstream, tf.shape(rows)), rows, mean, inv, gamma)
            return tf.reshape(dx, tf.shape(x)), dgamma, dbeta

        return tf.reshape(y, tf.shape(x)), grad

    return normalize(x, gamma, beta)
