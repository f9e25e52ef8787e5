"""Deprecated: keras_vit 0.1's `keras_vit.visualize`, now `keras_vit.explain` (attention maps, rollout and overlays).

Every name is taken from `keras_vit.explain` on first use, with a
`DeprecationWarning`; import from `keras_vit.explain` instead.
"""

from keras_vit._moved import forwarder

__getattr__ = forwarder("keras_vit.visualize", "keras_vit.explain")
