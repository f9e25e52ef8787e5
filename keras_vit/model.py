"""Deprecated: keras_vit 0.1's `keras_vit.model`, now `keras_vit.models` (the architecture presets and build_vit).

Every name is taken from `keras_vit.models` on first use, with a
`DeprecationWarning`; import from `keras_vit.models` instead.
"""

from keras_vit._moved import forwarder

__getattr__ = forwarder("keras_vit.model", "keras_vit.models")
