"""Progressive resizing: train the first part of a run at a lower
resolution, then at the full one, on the same model (FlexiViT / FixRes
style).

The model keeps its input size: in the low-resolution phase each
`PatchEncoder` resizes the training batch to `low_size` before patching
and resamples its position table to the smaller grid (a linear map of the
learned table, so the positions keep learning); validation, evaluation and
the saved model always see the full size. A step at half the side costs
about a quarter of the patch and block work, so a budget fits more passes
over the data; the last part of the run at the full size adapts the model
to the resolution it is used at.

`ProgressiveResize` is the callback that switches; `low_resolution` picks
the low size; `set_training_size` sets the phase on a model (recompiling
its training step, so every backend sees static shapes in each phase).
"""

import weakref

import keras

from keras_vit.layers.patching import PatchEncoder

# model -> {training size: its compiled training step}
_TRAIN_FUNCTIONS = weakref.WeakKeyDictionary()


def low_resolution(image_size, patch_size, stride=None, factor=0.5):
    """The low training size for `image_size`: about `factor` of its side,
    a whole number of patches and at least two of them a side; None when no
    such size is smaller than the image.

    Example:
    >>> low_resolution(32, 8), low_resolution(16, 2), low_resolution(16, 8)
    (16, 8, None)
    """
    step = stride or patch_size
    grid = max(2, round((image_size * factor - patch_size) / step) + 1)
    low = patch_size + (grid - 1) * step
    return low if low < image_size else None


def low_size_for(model):
    """`low_resolution` for a keras_vit model (None for a model of any size).

    Example:
    >>> from keras_vit import build_vit
    >>> low_size_for(build_vit(image_size=32, patch_size=8, num_classes=2, hidden_dim=8, depth=1, num_heads=1,
    ...                        mlp_dim=8))
    16
    """
    encoders, size = patch_encoders(model), getattr(model, "image_size", None)
    if not encoders or size is None:
        return None
    return low_resolution(min(size), encoders[0].patch_size[0], encoders[0].stride[0])


def patch_encoders(model):
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, PatchEncoder)]


def set_training_size(model, size):
    """Makes training calls of `model` resize their images to `size` (an int
    or (h, w); None: the images as given) and rebuilds the compiled
    training step for it. Inference is unaffected.

    Example: ``set_training_size(model, 16)`` before ``model.fit(...)``.
    """
    encoders = patch_encoders(model)
    if not encoders:
        raise ValueError("Progressive resizing needs a keras_vit model (one with a PatchEncoder); "
                         f"{type(model).__name__} has none.")
    pair = None if size is None else (size, size) if isinstance(size, int) else tuple(size)
    if all(encoder.training_image_size == pair for encoder in encoders):
        return
    previous = encoders[0].training_image_size
    for encoder in encoders:
        encoder.training_image_size = pair
    if getattr(model, "compiled", False):
        # each size's compiled step is kept, so switching back and forth compiles each size once
        steps = _TRAIN_FUNCTIONS.setdefault(model, {})
        if model.train_function is not None:
            steps[previous] = model.train_function
        if steps.get(pair) is not None:
            model.train_function = steps[pair]
        else:
            model.make_train_function(force=True)


class ProgressiveResize(keras.callbacks.Callback):
    """Trains at `low_size` until `switch_fraction` of the run, then at the
    full size.

    The run's progress is the `TimeBudget` callback's (`timer`: it switches
    at the step) when the run has a time budget, else the epoch over
    `epochs` (it switches at the start of an epoch; a resumed run counts its
    earlier epochs).

    Args:
        low_size: int, the low training size.
        switch_fraction: float in (0, 1), the fraction of the run trained at
            `low_size`.
        timer: a `keras_vit.training.budget.TimeBudget`, or None.
        epochs: the run's epochs (without `timer`).

    Example: ``model.fit(ds, epochs=10, callbacks=[ProgressiveResize(16, 0.5, epochs=10)])``.
    """

    def __init__(self, low_size, switch_fraction, *, timer=None, epochs=None):
        super().__init__()
        if isinstance(switch_fraction, bool) or not isinstance(switch_fraction, (int, float)) or not (
                0 < switch_fraction < 1):
            raise ValueError(f"`progressive_resize` must be in (0, 1). Received: {switch_fraction!r}")
        if timer is None and not epochs:
            raise ValueError("ProgressiveResize needs a `timer` (TimeBudget) or `epochs`.")
        self.low_size, self.switch_fraction = low_size, switch_fraction
        self.timer, self.epochs, self.epoch = timer, epochs, 0
        self.switched_at = None  # the step (budgeted) or epoch at which the full size began

    def fraction(self):
        if self.timer is not None:
            return self.timer.progress_step() / max(1, self.timer.plan.planned_steps)
        return self.epoch / self.epochs

    def _switch_if_due(self, position):
        if self.switched_at is None and self.fraction() >= self.switch_fraction:
            self.switched_at = position
            set_training_size(self.model, None)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.timer is None:
            if self.switched_at is None and self.fraction() < self.switch_fraction:
                set_training_size(self.model, self.low_size)  # a no-op once set
            self._switch_if_due(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.timer is not None:
            if self.switched_at is None and not self._is_low():
                set_training_size(self.model, self.low_size)
            self._switch_if_due(self.timer.step)

    def _is_low(self):
        return all(e.training_image_size is not None for e in patch_encoders(self.model))

    def on_train_end(self, logs=None):
        if self.switched_at is None:
            set_training_size(self.model, None)


def progressive_callbacks(model, fraction, epochs):
    """The `ProgressiveResize` callback of a run without a time budget, as a
    list (empty when `fraction` is 0 or the model is too small to resize)."""
    if not fraction:
        return []
    low = low_size_for(model)
    return [ProgressiveResize(low, fraction, epochs=epochs)] if low else []
