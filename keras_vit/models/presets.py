"""Deprecated: the architecture preset table moved to `keras_vit.presets`
(`keras_vit.presets.architectures`). Every name is taken from there on
first use, with a `DeprecationWarning`; `keras_vit.PRESETS` and
`keras_vit.models.PRESETS` are the same table."""

from keras_vit._moved import forwarder

__getattr__ = forwarder("keras_vit.models.presets", "keras_vit.presets.architectures")
