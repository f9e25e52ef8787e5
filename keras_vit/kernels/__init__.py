"""Which kernels the layers compute with: a setting chosen when a layer is
constructed and stored, resolved, in its config.

- ``"xla"``: on the TensorFlow backend, the training passes of the exact
  GELU and of `LayerNorm` run as XLA kernels (`tensorflow_xla`), one pass
  over memory each forward and backward. Everything else, and every
  inference pass, uses the same `keras.ops` as ``"plain"``. On other
  backends, or where XLA does not compile, the setting falls back to the
  plain ops: a model saved with ``kernels="xla"`` on TensorFlow loads and
  runs on JAX and torch with the plain numbers.
- ``"plain"``: `keras.ops` only.

`None` (the layers' default) resolves here, at construction, to ``"xla"`` on
TensorFlow where XLA compiles and to ``"plain"`` elsewhere. Either setting
computes the same function (within float rounding, 1e-5 in float32).

This module imports only Keras; the TensorFlow module is imported lazily,
when the backend is TensorFlow and a layer's setting asks for it.
"""

import keras

KERNELS = ("xla", "plain")


def resolve_kernels(kernels=None):
    """The stored kernel setting for the argument `kernels`: "xla" or
    "plain" as given, or for None the default of this backend.

    Example:
    >>> resolve_kernels("plain")
    'plain'
    >>> resolve_kernels() in KERNELS
    True
    """
    if kernels is None:
        return "xla" if xla_module("xla") is not None else "plain"
    if kernels not in KERNELS:
        raise ValueError(f"`kernels` must be None, 'xla' or 'plain'. Received: kernels={kernels!r}")
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
