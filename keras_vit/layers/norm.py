"""`LayerNorm`, the layers' LayerNormalization over the last axis.

Keras ops only; the TensorFlow XLA training kernel is imported lazily, where
the layer's `kernels` setting and the backend ask for it (see
`keras_vit.kernels`).
"""

import keras
from keras import ops

from keras_vit.kernels import normalizes_last_axis, resolve_kernels, xla_module


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis, computed on
    TensorFlow in fewer passes over memory; the same function on every
    backend and in every mode.

    In inference on TensorFlow: five element-wise ops over the whole input
    instead of Keras' six, ``beta + (x - mean) * (rsqrt(var + epsilon) *
    gamma)`` with ``var`` the mean of ``(x - mean) ** 2``. In training on
    TensorFlow with ``kernels="xla"``: forward and backward are one XLA
    kernel each (`keras_vit.kernels.tensorflow_xla.layer_norm`). Same
    weights, same result up to float rounding. Other backends, other axes
    and float64 keep Keras' own call (torch's fused kernel, XLA's fusion on
    JAX).

    Args:
        kernels: None (this backend's default), "xla", "torch" or "plain";
            see `keras_vit.kernels` (only "xla" changes a LayerNorm's
            kernels). Stored resolved in the config.
        **kwargs: `keras.layers.LayerNormalization`'s arguments.

    Example:
    >>> norm = LayerNorm(epsilon=1e-6, kernels="plain")
    >>> tuple(norm(np.ones((2, 3, 4), "float32")).shape)
    (2, 3, 4)
    >>> norm.get_config()["kernels"]
    'plain'
    """

    def __init__(self, kernels=None, **kwargs):
        super().__init__(**kwargs)
        self.kernels = resolve_kernels(kernels)

    def _lean(self, inputs):
        return (
            keras.backend.backend() == "tensorflow"
            and normalizes_last_axis(self, len(inputs.shape))
            and keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16", "float32")
        )

    def call(self, inputs, training=None):
        if not self._lean(inputs):
            return super().call(inputs)
        x = ops.cast(inputs, "float32")
        gamma, beta = ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")
        if isinstance(training, bool) and training:  # a symbolic flag takes the plain (differentiable) ops
            kernels = xla_module(self.kernels)
            if kernels is not None:
                return ops.cast(kernels.layer_norm(x, gamma, beta, self.epsilon), self.compute_dtype)
        centered, inv = centered_and_inv(x, self.epsilon)
        return ops.cast(beta + centered * (inv * gamma), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(kernels=self.kernels)
        return config


def centered_and_inv(inputs, epsilon):
    """``x - mean`` and ``rsqrt(var + epsilon)`` over the last axis, in
    float32 (the statistics `LayerNorm.call` and the inference fold of
    `keras_vit.export.inference_model` start from)."""
    x = ops.cast(inputs, "float32")
    centered = x - ops.mean(x, axis=-1, keepdims=True)
    return centered, ops.rsqrt(ops.mean(ops.square(centered), axis=-1, keepdims=True) + epsilon)


def layer_norm(epsilon, name, kernels=None):
    """A `LayerNorm` over the last axis that always computes in float32."""
    return LayerNorm(epsilon=epsilon, dtype="float32", name=name, kernels=kernels)
