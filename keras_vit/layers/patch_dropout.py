"""Patch dropout: train on a random subset of the patch tokens.

Each training step keeps a random `1 - rate` of every image's patch
tokens (positions already added, so the kept tokens still know where they
are) and all prefix tokens (class, registers); the blocks then run on
fewer tokens, which makes a step cheaper roughly in proportion. At
inference the layer is the identity. (Li et al., "Scaling Language-Image
Pre-training via Masking", and Liu et al., "PatchDropout", 2022.)
"""

import keras
from keras import ops

from keras_vit.utils.validation import check_rate


def kept_tokens(num_patches, rate):
    """How many of `num_patches` patch tokens a training step keeps (at least
    one); `num_patches` may be a tensor (an image size known only at run
    time).

    Example:
    >>> kept_tokens(16, 0.25), kept_tokens(3, 0.9)
    (12, 1)
    """
    if isinstance(num_patches, int):
        return max(1, int(num_patches * (1.0 - rate) + 1e-6))
    scaled = ops.cast(ops.cast(num_patches, "float32") * (1.0 - rate) + 1e-6, "int32")
    return ops.maximum(scaled, 1)


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchDropout(keras.layers.Layer):
    """Keeps a random subset of the patch tokens in training; the identity
    at inference.

    Args:
        rate: float in [0, 1), the fraction of patch tokens dropped.
        num_prefix_tokens: leading tokens (class, registers) always kept.
        seed: optional int seed.

    Example:
    >>> layer = PatchDropout(0.5, num_prefix_tokens=1)
    >>> x = np.ones((2, 17, 8), "float32")
    >>> tuple(layer(x, training=True).shape), tuple(layer(x).shape)
    ((2, 9, 8), (2, 17, 8))
    """

    def __init__(self, rate=0.0, num_prefix_tokens=0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate, "patch_dropout")
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f"`num_prefix_tokens` must be an int >= 0. Received: {num_prefix_tokens!r}")
        self.num_prefix_tokens = num_prefix_tokens
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # no weights (see DropPath)

    def call(self, tokens, training=None):
        if not training or self.rate == 0.0:
            return tokens
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        shape = ops.shape(patches)
        keep = kept_tokens(shape[1], self.rate)
        # a uniform random ranking of each image's tokens; the first `keep` of it are kept
        noise = keras.random.uniform((shape[0], shape[1]), seed=self.seed_generator)
        order = ops.argsort(noise, axis=1)[:, :keep]
        kept = ops.take_along_axis(patches, ops.expand_dims(order, -1), axis=1)
        return ops.concatenate([prefix, kept], axis=1) if self.num_prefix_tokens else kept

    def compute_output_shape(self, input_shape):
        return input_shape  # at inference; training keeps fewer tokens

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, num_prefix_tokens=self.num_prefix_tokens, seed=self.seed)
        return config
