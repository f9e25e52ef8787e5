"""Deprecated: keras_vit 0.1's `keras_vit.weights`, now `keras_vit.convert` (checkpoint reading and conversion (read_checkpoint, from_checkpoint, load_npz, load_timm)).

Every name is taken from `keras_vit.convert` on first use, with a
`DeprecationWarning`; import from `keras_vit.convert` instead.
"""

from keras_vit._moved import forwarder

__getattr__ = forwarder("keras_vit.weights", "keras_vit.convert")
