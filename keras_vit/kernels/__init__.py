"""Which kernels the layers compute with: a setting chosen when a layer is
constructed and stored, resolved, in its config.

- ``"xla"``: on the TensorFlow backend, the training passes of the exact
  GELU and of `LayerNorm` run as XLA kernels (`tensorflow_xla`), one pass
  over memory each forward and backward. Everything else, and every
  inference pass, uses the same `keras.ops` as ``"plain"``. On other
  backends, or where XLA does not compile, the setting falls back to the
  plain ops: a model saved with ``kernels="xla"`` on TensorFlow loads and
  runs on JAX and torch with the plain numbers.
- ``"torch"``: on the torch backend, the blocks' Dense projections run as
  one ``addmm`` each, their float32 LayerNorms as one ``layer_norm`` call
  and the fused attention as PyTorch's ``scaled_dot_product_attention`` on
  strided views (`torch_native`).
  On other backends, the plain ops.
- ``"plain"``: `keras.ops` only.

`None` (the layers' default) resolves here, at construction, to ``"xla"`` on
TensorFlow where XLA compiles, to ``"torch"`` on torch and to ``"plain"``
elsewhere. Every setting computes the same function (within float
rounding, 1e-5 in float32), so a model saved with one loads and runs on
any backend.

This module imports only Keras; the TensorFlow and torch modules are
imported lazily, when the backend is theirs and a layer's setting asks for
them.
"""

import keras

KERNELS = ("xla", "torch", "plain")


def resolve_kernels(kernels=None):
    """The stored kernel setting for the argument `kernels`: "xla", "torch"
    or "plain" as given, or for None the default of this backend.

    Example:
    >>> resolve_kernels("plain")
    'plain'
    >>> resolve_kernels() in KERNELS
    True
    """
    if kernels is None:
        if keras.backend.backend() == "torch":
            return "torch"
        return "xla" if xla_module("xla") is not None else "plain"
    if kernels not in KERNELS:
        raise ValueError(f"`kernels` must be None, 'xla', 'torch' or 'plain'. Received: kernels={kernels!r}")
    return kernels


def xla_module(kernels):
    """The TensorFlow XLA kernel module where `kernels` is "xla", the
    backend is TensorFlow and XLA compiles here; else None (the caller
    uses plain ops).

    Example:
    >>> xla_module("plain") is None
    True
    """
    if kernels != "xla" or keras.backend.backend() != "tensorflow":
        return None
    from keras_vit.kernels import tensorflow_xla as module

    return module if module.available() else None


def training_gelu(kernels, training):
    """The exact-GELU kernel a layer with this `kernels` setting uses when
    called with `training`: `tensorflow_xla.gelu_exact` (one XLA pass
    forward and one backward) in training with "xla" on TensorFlow; else
    None, and the caller uses its plain op (inference graphs keep it, for
    grappler's fusion and TFLite's builtin GELU).

    Example:
    >>> training_gelu("plain", True) is None and training_gelu("xla", False) is None
    True
    """
    if isinstance(training, bool) and training:  # a symbolic flag takes the plain (differentiable) op
        module = xla_module(kernels)
        if module is not None:
            return module.gelu_exact
    return None


def normalizes_last_axis(norm, rank):
    """Whether `norm` is a `keras.layers.LayerNormalization` over the last
    axis of a rank-`rank` input, with gamma and beta and not RMS scaling:
    the LayerNorm the kernels compute.

    Example:
    >>> normalizes_last_axis(keras.layers.LayerNormalization(), 3)
    True
    """
    return (isinstance(norm, keras.layers.LayerNormalization)
            and norm.axis in (-1, [-1], rank - 1, [rank - 1])
            and norm.center and norm.scale and not getattr(norm, "rms_scaling", False))


def plain_dense(layer):
    """Whether `layer` is a built, unquantized `keras.layers.Dense` (not a
    subclass; LoRA included: its `kernel` carries the low-rank update)
    without activation, so that ``rows @ kernel (+ bias)`` from its
    variables is its output: what the native kernels and the inference
    rewrites (`keras_vit.export.inference`) compute it with.

    Example:
    >>> layer = keras.layers.Dense(3)
    >>> plain_dense(layer), layer.build((None, 2)), plain_dense(layer)
    (False, None, True)
    """
    return (type(layer) is keras.layers.Dense and layer.built and layer.quantization_mode is None
            and layer.activation is keras.activations.linear)


def torch_module(kernels):
    """The PyTorch kernel module where `kernels` is "torch" and the backend
    is torch; else None (the caller uses plain ops).

    Example:
    >>> torch_module("plain") is None
    True
    """
    if kernels != "torch" or keras.backend.backend() != "torch":
        return None
    from keras_vit.kernels import torch_native as module

    return module


def apply_dense(layer, rows, kernels):
    """``layer(rows)`` for a `keras.layers.Dense` on 2-D `rows`, through
    `kernels`' native kernel where there is one for it (torch: one
    ``addmm``), else the layer's own call. For use inside the call of the
    layer that owns `layer`.

    Example:
    >>> layer = keras.layers.Dense(3)
    >>> tuple(apply_dense(layer, np.ones((4, 2), "float32"), "plain").shape)
    (4, 3)
    """
    native = torch_module(kernels)
    if native is not None and plain_dense(layer) and layer.bias is not None:
        return native.dense(layer, rows)
    return layer(rows)


def apply_norm(norm, rows, kernels, training=None):
    """``norm(rows, training=training)`` for a LayerNorm inside the call of
    the layer that owns it, through `kernels`' native kernel where there is
    one for it (torch: one ``layer_norm`` call), else the layer's own call.

    Example:
    >>> norm = keras.layers.LayerNormalization()
    >>> tuple(apply_norm(norm, np.ones((4, 2), "float32"), "plain").shape)
    (4, 2)
    """
    native = torch_module(kernels)
    if native is not None and normalizes_last_axis(norm, len(rows.shape)) and native.norm_applies(norm, rows):
        return native.layer_norm(norm, rows)
    return norm(rows, training=training)
