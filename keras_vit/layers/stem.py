"""`ConvStem`: a few strided 3x3 convolutions in place of the patchify
convolution, after Xiao et al., "Early Convolutions Help Transformers See
Better" (2021). Each convolution halves the height and width, so a stem of
n convolutions turns an image into a feature map of 2**n-pixel "patches";
`PatchEncoder(conv_stem=...)` then projects each position of that map to a
token. On small images trained for minutes it learns much faster per
epoch than one large patchify convolution.
"""

import keras
from keras import ops

from keras_vit.kernels import resolve_kernels, training_gelu
from keras_vit.layers.norm import LayerNorm
from keras_vit.utils.validation import pair


def check_conv_stem(conv_stem, patch_size, stride, patch_embedding="conv"):
    """Validates a `conv_stem` setting against the patch size, stride and
    patch embedding.

    A stem of n convolutions makes 2**n-pixel square patches side by side,
    so `patch_size` must be 2**n and `stride` the patch size (or None); it
    replaces the patchify convolution, so `patch_embedding` must be "conv".

    Returns:
        The stem's channels as a tuple of ints, or None.

    Example:
    >>> check_conv_stem([16, 32], 4, None)
    (16, 32)
    """
    if conv_stem is None:
        return None
    conv_stem = stem_filters(conv_stem)
    side = 2 ** len(conv_stem)
    patch = pair(patch_size, "patch_size")
    if patch != (side, side) or (stride is not None and pair(stride, "stride") != patch):
        raise ValueError(
            f"A `conv_stem` of {len(conv_stem)} convolutions makes {side}x{side}-pixel patches side by side: "
            f"use patch_size={side} and no stride, or a stem of log2(patch_size) convolutions. Received: "
            f"conv_stem={list(conv_stem)!r}, patch_size={patch_size!r}, stride={stride!r}")
    if patch_embedding != "conv":
        raise ValueError(
            f"`conv_stem` needs patch_embedding='conv'. Received: patch_embedding={patch_embedding!r}")
    return conv_stem


def stem_filters(filters, name="conv_stem"):
    """`filters` as a tuple of positive ints, or a `ValueError` naming `name`."""
    if (not isinstance(filters, (list, tuple)) or not filters
            or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in filters)):
        raise ValueError(
            f"`{name}` must be a non-empty list of channel counts (positive ints), one per 3x3 stride-2 "
            f"convolution, e.g. [32, 64, 128]. Received: {name}={filters!r}")
    return tuple(filters)


@keras.saving.register_keras_serializable(package="keras_vit")
class ConvStem(keras.layers.Layer):
    """Strided 3x3 convolutions, each followed by a LayerNorm over the
    channels and a GELU: (B, H, W, C) to (B, H / 2**n, W / 2**n, filters[-1])
    for n = len(filters), with H and W multiples of 2**n.

    Args:
        filters: list of ints, the channels of each convolution.
        norm_epsilon: float, the LayerNorms' epsilon.
        kernels: None (this backend's default), "xla", "torch" or "plain";
            see `keras_vit.kernels`. With "xla" on TensorFlow the training
            passes of the LayerNorms and of the exact GELU run as XLA
            kernels, as in `TransformerBlock`: on the stem of the auto
            recipe's earlier 10-minute MNIST model (32 px, [32, 64, 128],
            width 128) they are as much
            element-wise work as the whole transformer. Stored resolved in
            the config; every setting computes the same function.

    Example:
    >>> stem = ConvStem([16, 32])
    >>> tuple(stem(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 8, 8, 32)
    """

    def __init__(self, filters, norm_epsilon=1e-6, kernels=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = stem_filters(filters, "filters")
        self.norm_epsilon = float(norm_epsilon)
        self.kernels = resolve_kernels(kernels)
        self.convs, self.norms = [], []
        for i, channels in enumerate(self.filters):
            self.convs.append(keras.layers.Conv2D(
                channels, 3, strides=2, padding="same", use_bias=False, dtype=self.dtype_policy, name=f"conv_{i}"))
            self.norms.append(LayerNorm(
                epsilon=self.norm_epsilon, kernels=self.kernels, dtype=self.dtype_policy, name=f"norm_{i}"))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv, norm in zip(self.convs, self.norms):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)

    def call(self, images, training=None):
        fast = training_gelu(self.kernels, training)
        x = images
        for conv, norm in zip(self.convs, self.norms):
            x = norm(conv(x), training=training)
            x = ops.gelu(x, approximate=False) if fast is None else fast(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            shape = conv.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(filters=list(self.filters), norm_epsilon=self.norm_epsilon, kernels=self.kernels)
        return config
