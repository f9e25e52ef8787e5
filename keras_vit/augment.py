"""Training augmentation made of Keras preprocessing layers only: named
strengths (`AUGMENTATIONS`, the one list of their names), `augmentation_options`,
`build_augmentation`, a function on batches of float pixels in [0, 255]
and one-hot labels, and `augment_batches`, which maps it over a batched
`tf.data.Dataset` with a seed of its own for each batch, so that a seeded
run augments the same way however many cores run the map. TensorFlow is
imported when an augmentation is built, so the names can be read without
it."""

from keras_vit.utils.validation import check_choice, check_rate, check_seed, pair

# Named augmentation strengths: keyword arguments of `build_augmentation`.
AUGMENTATIONS = {
    "none": {},
    # shapes that must not be mirrored (digits, letters)
    "digits": dict(translate=0.1, rotate=0.04),
    "light": dict(flip=True, translate=0.1),
    "medium": dict(flip=True, crop_padding=0.125, rand_augment=0.3, mixup=0.2),
    "strong": dict(flip=True, crop_padding=0.125, rand_augment=0.5, mixup=0.8, cutmix=1.0),
}


class _ZeroPad:
    """Zero-pads a batch of images by (pad_h, pad_w) on each side with
    `tf.pad`. The random Keras preprocessing layers switch to TensorFlow
    inside `tf.data` on every backend; `keras.layers.ZeroPadding2D` does not."""

    def __init__(self, pad_h, pad_w):
        self.paddings = [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]]

    def __call__(self, images, training=True):
        import tensorflow as tf

        return tf.pad(images, self.paddings)


def augmentation_options(augment):
    """Resolves `augment` (a name from `AUGMENTATIONS`, a strength in
    [0, 1], a dict of `build_augmentation` options or None) to a dict.

    A float strength `s` scales a "strong" recipe: flips, padding-and-crop,
    RandAugment of magnitude `s`, MixUp alpha `0.8 s` and CutMix at `s`.

    Args:
        augment: None, str, float or dict.

    Returns:
        dict of keyword arguments for `build_augmentation`.

    Example:
    >>> augmentation_options("light")
    {'flip': True, 'translate': 0.1}
    """
    if augment is None:
        return {}
    if isinstance(augment, str):
        check_choice(augment, "augment", tuple(AUGMENTATIONS))
        return dict(AUGMENTATIONS[augment])
    if isinstance(augment, dict):
        return dict(augment)
    if isinstance(augment, (int, float)) and not isinstance(augment, bool) and 0 <= augment <= 1:
        if augment == 0:
            return {}
        return dict(
            flip=True, crop_padding=0.125, rand_augment=float(augment),
            mixup=round(0.8 * augment, 4), cutmix=float(augment),
        )
    raise ValueError(
        f"`augment` must be None, a strength in [0, 1], a dict of options or one of "
        f"{', '.join(repr(a) for a in AUGMENTATIONS)}. Received: augment={augment!r}"
    )


def build_augmentation(image_size, num_classes, *, flip=False, crop_padding=0.0, translate=0.0, rotate=0.0,
                       zoom=0.0, rand_augment=0.0, rand_augment_ops=2, mixup=0.0, cutmix=0.0, seed=None):
    """Builds the training augmentation, a function on batches.

    Every step is a Keras preprocessing layer; a step whose option is 0 or
    False is left out. Image steps run first, then MixUp and CutMix, which
    mix the one-hot labels too (each is applied to a random half of the
    batches when both are on).

    Args:
        image_size: int or (h, w), the size of the images.
        num_classes: number of classes (for checks of the label shape).
        flip: bool, random horizontal flips.
        crop_padding: fraction of the size to zero-pad on each side before
            a random crop back to `image_size` (CIFAR-style crops).
        translate: fraction of the size for random translations.
        rotate: fraction of a full turn for random rotations.
        zoom: fraction for random zoom in and out.
        rand_augment: RandAugment magnitude in [0, 1]; 0 turns it off.
        rand_augment_ops: number of RandAugment operations per image.
        mixup: MixUp alpha; 0 turns it off.
        cutmix: CutMix factor; 0 turns it off.
        seed: optional int for the layers' random generators.

    Returns:
        A function `(images, labels, seed=None) -> (images, labels)` on
        batches of float pixels in [0, 255]; labels must be one-hot when
        MixUp or CutMix is on. Without `seed`, the layers draw from their
        own random generators, whose state every call advances. With
        `seed`, a (2,) integer tensor, every random draw is a stateless
        function of it: the same batch and seed give the same result in any
        order and on any thread (`augment_batches` gives each batch one).
        Its `steps` are the image layers in order, its `options` the
        settings.

    Example:
    >>> import tensorflow as tf
    >>> augment = build_augmentation(16, 10, flip=True, mixup=0.2)
    >>> x, y = augment(tf.zeros((4, 16, 16, 3)), tf.one_hot([1, 2, 3, 4], 10))
    >>> a, _ = augment(tf.random.uniform((4, 16, 16, 3)), tf.one_hot([1, 2, 3, 4], 10), seed=tf.constant([7, 0]))
    """
    height, width = pair(image_size, "image_size")
    for name, value in (("crop_padding", crop_padding), ("translate", translate),
                        ("rotate", rotate), ("zoom", zoom)):
        check_rate(value, name)
    if not 0 <= rand_augment <= 1:
        raise ValueError(f"`rand_augment` must be in [0, 1]. Received: rand_augment={rand_augment!r}")
    if mixup < 0 or cutmix < 0:
        raise ValueError(f"`mixup` and `cutmix` must be >= 0. Received: mixup={mixup!r}, cutmix={cutmix!r}")
    steps = _image_steps(height, width, flip, crop_padding, translate, rotate, zoom, rand_augment,
                         rand_augment_ops, seed)
    mixers = _mixers(mixup, cutmix, seed)
    augment = _augment_fn(steps, mixers, num_classes, seed)
    augment.steps = tuple(steps)
    augment.options = dict(
        flip=flip, crop_padding=crop_padding, translate=translate, rotate=rotate, zoom=zoom,
        rand_augment=rand_augment, rand_augment_ops=rand_augment_ops, mixup=mixup, cutmix=cutmix,
    )
    return augment


def _image_steps(height, width, flip, crop_padding, translate, rotate, zoom, rand_augment, rand_augment_ops,
                 seed):
    """The image-only augmentation layers, in order; a step whose option is off is left out."""
    import keras

    steps = []
    if flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if crop_padding:
        pad_h, pad_w = max(1, round(crop_padding * height)), max(1, round(crop_padding * width))
        # tf.pad, not keras.layers.ZeroPadding2D: that layer runs on the Keras
        # backend (JAX or torch arrays), which cannot take tf.data's symbolic tensors
        steps.append(_ZeroPad(pad_h, pad_w))
        steps.append(keras.layers.RandomCrop(height, width, seed=seed))
    if translate:
        steps.append(keras.layers.RandomTranslation(translate, translate, fill_mode="constant", seed=seed))
    if rotate:
        steps.append(keras.layers.RandomRotation(rotate, fill_mode="constant", seed=seed))
    if zoom:
        steps.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed))
    if rand_augment:
        layer = _rand_augment()(value_range=(0, 255), num_ops=rand_augment_ops, factor=rand_augment, seed=seed)
        if isinstance(getattr(layer, "equalization", None), keras.layers.Equalization):
            layer.equalization = _equalization()(value_range=(0, 255))
        steps.append(layer)
    return steps


def _rand_augment():
    """`keras.layers.RandAugment` that, in tf.data, computes only the
    operations it drew. Keras' layer draws `num_ops` operations for the
    batch, then computes every one of its 11 operations `num_ops` times on
    the whole batch and keeps the drawn one with `where`; this one runs
    the drawn operation alone (`tf.switch_case`), from the same draws, so
    its images are Keras' images. On 2 cores, 32 px colour batches of 128,
    two operations at magnitude 0.5: 287 ms of CPU a batch with Keras'
    layer, 68 ms with this one; the "medium" pipeline went from 2.05 to
    0.34 CPU ms an image (`python -m benchmarks.run --sections pipeline`)."""
    import keras

    class RandAugment(keras.layers.RandAugment):
        def transform_images(self, images, transformation, training=True):
            if not training or self.backend.name != "tensorflow":
                return super().transform_images(images, transformation, training)
            import tensorflow as tf

            images = tf.cast(images, self.compute_dtype)
            chosen, transforms = transformation["layer_idxes"], transformation["transforms"]

            def branch(name, value, source):
                return lambda: tf.cast(getattr(self, name).transform_images(source, value), self.compute_dtype)

            for i in range(self.num_ops):
                source = images
                images = tf.switch_case(tf.cast(chosen[i], tf.int32),
                                        [branch(name, value, source) for name, value in transforms.items()])
            return images

    return RandAugment


def _equalization():
    """`keras.layers.Equalization` whose histogram, in tf.data, is one
    TensorFlow bincount on every backend. Keras chooses the histogram by the
    global backend: under JAX it adds a 256-step loop of whole-batch
    comparisons to the tf.data graph even where the layer runs in
    TensorFlow, and RandAugment computes its equalization twice a batch.
    On JAX, building and first iterating a RandAugment pipeline of 8 px
    batches took 9.2 s with Keras' layer and 1.9 s with this one (PyTorch:
    1.6 s); the counts, and so the images, are the same."""
    import keras

    class Equalization(keras.layers.Equalization):
        def _custom_histogram_fixed_width(self, values, value_range, nbins):
            if self.backend.name != "tensorflow":
                return super()._custom_histogram_fixed_width(values, value_range, nbins)
            low, high = (self.backend.cast(v, "float32") for v in value_range)
            bins = self.backend.cast((self.backend.cast(values, "float32") - low) * (nbins - 1) / (high - low),
                                     "int32")
            flat = self.backend.numpy.reshape(self.backend.numpy.clip(bins, 0, nbins - 1), [-1])
            return self.backend.numpy.bincount(flat, minlength=nbins)

    return Equalization


def _mixers(mixup, cutmix, seed):
    """The MixUp and CutMix layers that are on."""
    import keras

    mixers = []
    if mixup:
        mixers.append(keras.layers.MixUp(alpha=mixup, seed=seed))
    if cutmix:
        mixers.append(keras.layers.CutMix(factor=cutmix, seed=seed))
    return mixers


def _augment_fn(steps, mixers, num_classes, seed):
    """The function on batches: the image steps, then one mixer (a random one when both are on)."""
    import tensorflow as tf  # tf.data runs augmentation in TensorFlow on every backend

    rng = tf.random.Generator.from_seed(seed or 0) if len(mixers) == 2 else None

    def augment(images, labels, seed=None):
        images = tf.cast(images, "float32")
        for index, layer in enumerate(steps):
            images = _call_seeded(layer, seed, index, images)
        if mixers and (labels.shape.rank != 2 or labels.shape[-1] != num_classes):
            raise ValueError(
                "MixUp and CutMix need one-hot labels of shape (batch, num_classes); use "
                f"label_mode='categorical'. Received labels of shape {labels.shape}."
            )

        def mix(index):
            out = _call_seeded(mixers[index], seed, len(steps) + index, {"images": images, "labels": labels})
            return tf.cast(out["images"], "float32"), tf.cast(out["labels"], "float32")

        if len(mixers) == 2:
            coin = rng.uniform(()) if seed is None else tf.random.stateless_uniform(
                (), seed=tf.random.experimental.stateless_fold_in(seed, len(steps) + 2))
            images, labels = tf.cond(coin < 0.5, lambda: mix(0), lambda: mix(1))
        elif mixers:
            images, labels = mix(0)
        return tf.clip_by_value(images, 0.0, 255.0), labels

    augment.takes_batch_seed = True
    return augment


def _call_seeded(layer, seed, salt, data):
    """``layer(data, training=True)``; with a batch `seed`, every random
    draw of the layer is a fold of (`seed`, `salt`, the draw's number) for
    the one call. Keras' random preprocessing layers take each draw's seed
    from their `_get_seed_generator()` (a stateful counter, or for
    RandAugment the generator its sub-layers draw from too); the call is
    traced once by tf.data, so the generator is swapped for the trace."""
    if seed is None or not hasattr(layer, "_get_seed_generator"):
        return layer(data, training=True)
    import tensorflow as tf

    draws = _folded_draws(tf.random.experimental.stateless_fold_in(seed, salt))
    object.__setattr__(layer, "_get_seed_generator", lambda backend=None: draws)  # bypasses Layer tracking
    try:
        return layer(data, training=True)
    finally:
        object.__delattr__(layer, "_get_seed_generator")


def _folded_draws(seed):
    """A `keras.random.SeedGenerator` without state: its n-th draw is
    `seed` folded with n."""
    import keras
    import tensorflow as tf

    class FoldedDraws(keras.random.SeedGenerator):
        def __init__(self):  # no state variable: each draw is a function of `seed`
            self.draws = 0

        def next(self, ordered=True):
            self.draws += 1
            return tf.random.experimental.stateless_fold_in(seed, self.draws)

    return FoldedDraws()


def augment_batches(batches, augment, seed=None):
    """`batches` (a batched `tf.data.Dataset` of (images, labels)) mapped
    by `augment` in parallel. A function from `build_augmentation` gets a
    seed of its own for each batch, drawn from `seed` and drawn again on
    each pass over the data: with an int `seed` the augmented batches of
    every epoch are the same on every run, however many threads run the
    map. Any other function is mapped as it is.

    Example:
    >>> import tensorflow as tf
    >>> batches = tf.data.Dataset.from_tensor_slices((tf.zeros((8, 16, 16, 1)), tf.zeros((8,)))).batch(4)
    >>> augmented = augment_batches(batches, build_augmentation(16, 10, translate=0.1), seed=0)
    >>> [tuple(x.shape) for x, _ in augmented]
    [(4, 16, 16, 1), (4, 16, 16, 1)]
    """
    import tensorflow as tf

    check_seed(seed, allow_none=True)
    if not getattr(augment, "takes_batch_seed", False):
        return batches.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    @tf.autograph.experimental.do_not_convert  # graph ops only (tf.cond): see data.py's `prepare`
    def seeded(batch, draw):
        return augment(*batch, seed=tf.stack([draw, tf.constant(0, tf.int64)]))

    return tf.data.Dataset.zip(batches, seeds).map(seeded, num_parallel_calls=tf.data.AUTOTUNE)
