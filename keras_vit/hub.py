"""Deprecated: the pretrained registry and handle resolution moved to
`keras_vit.presets` (`keras_vit.presets.registry`: `PRETRAINED`,
`resolve_preset`, `parse_hf_handle`, ...). Every name is taken from there on
first use, with a `DeprecationWarning`."""

from keras_vit._moved import forwarder

__getattr__ = forwarder("keras_vit.hub", "keras_vit.presets.registry")
