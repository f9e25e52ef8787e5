"""`ViTHyperModel`: the search space over `build_vit` and the training
recipe, and each trial's `fit` with the recipe, early stopping and failure
handling."""

import math
import warnings

import keras
import keras_tuner
import tensorflow as tf

from keras_vit.layers import POOLINGS, grid_size
from keras_vit.models import build_vit
from keras_vit.training.auto import stem_channels
from keras_vit.tuning.space import DEFAULT_SPACE, LOG_SCALE, OBJECTIVES, TUNER_NAMES
from keras_vit.utils.validation import check_choice, check_number, pair


# Entries renamed to the recipe's names: old name -> (new name, how a value converts given the epochs).
RENAMED = {"warmup_fraction": ("warmup_epochs", lambda fraction, epochs: fraction * epochs)}
# The values each entry takes: (low, high, low_open, high_open) for numbers,
# a tuple of choices for the strings (conv_stem: STEM_CHOICES).
ENTRY_VALUES = {
    **{name: (1, None, False, False) for name in ("patch_size", "hidden_dim", "num_heads", "depth", "mlp_ratio",
                                                    "batch_size")},
    "learning_rate": (0, None, True, False), "weight_decay": (0, None, True, False),
    "drop_path_rate": (0, 1, False, True), "warmup_epochs": (0, None, False, False),
    "label_smoothing": (0, 1, False, True), "augment": (0, 1, False, False),
    "pooling": POOLINGS, "pos_embedding": ("learned", "sincos", "none"),
}
STEM_CHOICES = ("none", "stem")
TUNERS = dict(zip(TUNER_NAMES, (keras_tuner.RandomSearch, keras_tuner.Hyperband,
                                 keras_tuner.BayesianOptimization)))


def _renamed(entries, epochs):
    """`space`/`fixed` entries with deprecated names (`RENAMED`) converted, with a warning."""
    entries = dict(entries or {})
    for old, (new, convert) in RENAMED.items():
        if old in entries:
            warnings.warn(f"The search-space entry {old!r} is now {new!r} (the Recipe's name and unit); "
                          f"{old!r} will be removed in 0.4.", DeprecationWarning, stacklevel=3)
            value = entries.pop(old)
            values = [convert(v, epochs) for v in (value if isinstance(value, (list, tuple)) else [value])]
            entries[new] = type(value)(values) if isinstance(value, (list, tuple)) else values[0]
    return entries


def heads_name(hidden_dim):
    """The name of the `num_heads` entry offered with `hidden_dim`."""
    return f"num_heads_for_{hidden_dim}"


def _check_entry_values(name, values):
    """Refuses values an entry cannot take (a rate of 1, a batch of 0, an
    unknown pooling) before any trial, naming the entry."""
    allowed = ENTRY_VALUES.get(name)
    if allowed is None:
        return
    for value in values:
        if isinstance(allowed[0], str):
            check_choice(value, f"search-space entry {name}", allowed)
        else:
            low, high, low_open, high_open = allowed
            check_number(value, f"search-space entry {name}", low, high, low_open=low_open, high_open=high_open)


class ViTHyperModel(keras_tuner.HyperModel):
    """A search space over `build_vit` and the training recipe.

    Only `num_heads` values that divide a trial's `hidden_dim` are offered
    (a conditional choice per width, named ``num_heads_for_<width>``; to fix
    the heads, fix ``num_heads`` in `space` or `fixed`), and only patch
    sizes that tile the image. `fit` re-batches the training data with the trial's batch size,
    applies the trial's augmentation strength and compiles the model with
    the recipe (AdamW, warmup and cosine decay, label smoothing), early
    stopping on the objective, and marks a trial whose loss turns NaN or
    that runs out of memory as failed.

    Args:
        image_size: int or (h, w) of the training images.
        num_classes: number of classes.
        channels: image channels.
        space: dict overriding entries of `DEFAULT_SPACE`: a list of
            choices, a (low, high) range, or a single value (fixed).
        fixed: dict of values to fix (same as single values in `space`).
        epochs: default epochs per trial (the tuner may pass its own).
        patience: early-stopping patience in epochs; None turns it off.
        objective: the metric early stopping watches.
        build_kwargs: extra keyword arguments for `build_vit`.
        train_size: number of training examples, for the length of the
            learning-rate schedule; None counts them once per trial.

    Example:
    >>> hypermodel = ViTHyperModel(16, 10, space={"hidden_dim": [32, 64]},
    ...                            fixed={"depth": 2})
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    """

    def __init__(
        self,
        image_size,
        num_classes,
        channels=3,
        *,
        space=None,
        fixed=None,
        epochs=10,
        patience=3,
        objective="val_accuracy",
        build_kwargs=None,
        train_size=None,
        name="vit",
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        self.train_size = train_size
        self.image_size = pair(image_size, "image_size")
        self.num_classes = num_classes
        self.channels = channels
        self.epochs = epochs
        self.patience = patience
        self.objective = check_choice(objective, "objective", OBJECTIVES)
        self.build_kwargs = dict(build_kwargs or {})
        space, fixed = _renamed(space, epochs), _renamed(fixed, epochs)
        unknown = set(space or {}) | set(fixed or {})
        unknown -= set(DEFAULT_SPACE)
        if unknown:
            raise ValueError(
                f"Unknown search-space entries: {sorted(unknown)}. Known entries: "
                f"{', '.join(DEFAULT_SPACE)}"
            )
        self.space = dict(DEFAULT_SPACE)
        self.space.update(space or {})
        self.space.update({k: v for k, v in (fixed or {}).items()})
        self._check_space()

    # ---------------------------------------------------------------- space

    def _values(self, name):
        """The candidate values of a discrete entry."""
        value = self.space[name]
        if isinstance(value, list):
            return value
        if isinstance(value, tuple):
            return list(range(value[0], value[1] + 1))
        return [value]

    def _check_space(self):
        for name, value in self.space.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            kind = str if name in ("pooling", "pos_embedding", "conv_stem") else (
                float if name in ("drop_path_rate", "learning_rate", "weight_decay", "warmup_epochs",
                                  "label_smoothing", "augment") else int)
            if not all((isinstance(v, (int, float)) and not isinstance(v, bool)) if kind is float
                       else (isinstance(v, kind) and not isinstance(v, bool)) for v in values):
                raise ValueError(
                    f"The search-space entry `{name}` takes {'strings' if kind is str else kind.__name__ + 's'}. "
                    f"Received: {name}={value!r}")
            if isinstance(value, list) and not value:
                raise ValueError(f"The search-space entry `{name}` is an empty list of choices.")
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(
                    f"The search-space entry `{name}` must be a (low, high) range with "
                    f"low <= high. Received: {value!r}"
                )
            _check_entry_values(name, values)
        for stem in self._values("conv_stem"):
            check_choice(stem, "conv_stem", STEM_CHOICES)
        patches = [p for p in self._values("patch_size") if self._tiles(p)]
        if not patches:
            raise ValueError(
                f"No `patch_size` in {self._values('patch_size')} tiles images of "
                f"{self.image_size}: choose sizes that divide the image."
            )
        self.space["patch_size"] = patches if isinstance(self.space["patch_size"], list) else patches[0]
        pairs = self.valid_heads()
        if not pairs:
            raise ValueError(
                f"The search space is contradictory: no `hidden_dim` in "
                f"{self._values('hidden_dim')} is divisible by any `num_heads` in "
                f"{self._values('num_heads')}."
            )
        if "sincos" in self._values("pos_embedding") and not any(d % 4 == 0 for d in pairs):
            raise ValueError("pos_embedding='sincos' needs a `hidden_dim` divisible by 4.")

    def _tiles(self, patch):
        try:
            grid_size(self.image_size, patch)
            return True
        except ValueError:
            return False

    def valid_heads(self):
        """Maps each candidate `hidden_dim` to the `num_heads` that divide it
        (widths with none are left out)."""
        heads = self._values("num_heads")
        pairs = {d: [h for h in heads if d % h == 0] for d in self._values("hidden_dim")}
        return {d: h for d, h in pairs.items() if h}

    def _hp(self, hp, name):
        """Registers entry `name` in `hp` and returns its value."""
        value = self.space[name]
        if isinstance(value, list):
            return hp.Choice(name, value) if len(value) > 1 else hp.Fixed(name, value[0])
        if isinstance(value, tuple):
            low, high = value
            if isinstance(low, int) and isinstance(high, int):
                return hp.Int(name, low, high)
            return hp.Float(name, low, high, sampling="log" if name in LOG_SCALE else "linear")
        return hp.Fixed(name, value)

    # ---------------------------------------------------------------- build

    def build(self, hp):
        pairs = self.valid_heads()
        dims = list(pairs)
        hidden_dim = hp.Choice("hidden_dim", dims) if len(dims) > 1 else hp.Fixed("hidden_dim", dims[0])
        num_heads = None
        for dim, heads in pairs.items():
            # One conditional entry per width, each offering only its divisors;
            # distinct names keep TensorBoard's HParams dashboard unambiguous.
            name = heads_name(dim)
            with hp.conditional_scope("hidden_dim", [dim]):
                value = hp.Choice(name, heads) if len(heads) > 1 else hp.Fixed(name, heads[0])
            if dim == hidden_dim:
                num_heads = value
        pos_embedding = self._hp(hp, "pos_embedding")
        if pos_embedding == "sincos" and hidden_dim % 4:
            pos_embedding = "learned"
        patch_size = self._hp(hp, "patch_size")
        # A stem of log2(patch_size) convolutions (rounded down): where the
        # patch size is not a power of two, build_vit's stem check fails the trial.
        stem = stem_channels(hidden_dim, max(1, patch_size.bit_length() - 1))
        try:
            model = build_vit(
                image_size=self.image_size,
                num_classes=self.num_classes,
                channels=self.channels,
                patch_size=patch_size,
                conv_stem=stem if self._hp(hp, "conv_stem") == "stem" else None,
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                depth=self._hp(hp, "depth"),
                mlp_dim=hidden_dim * self._hp(hp, "mlp_ratio"),
                pooling=self._hp(hp, "pooling"),
                pos_embedding=pos_embedding,
                drop_path_rate=self._hp(hp, "drop_path_rate"),
                **self.build_kwargs,
            )
        except ValueError as err:  # a combination the user's fixed values rule out
            raise keras_tuner.errors.FailedTrialError(f"Invalid combination: {err}") from err
        for name in ("learning_rate", "weight_decay", "warmup_epochs", "label_smoothing", "augment", "batch_size"):
            self._hp(hp, name)
        return model

    def to_recipe(self, hp, **overrides):
        """A trial's settings as a `Recipe` (the tuner's names are the
        recipe's), to train that model again, e.g. longer, with
        `keras_vit.training.train_from_config`; `overrides` (the dataset,
        epochs, ...) win. Only square image sizes have a recipe.

        Example:
        >>> recipe = hypermodel.to_recipe(best_hp, dataset="digits", epochs=60)  # doctest: +SKIP
        """
        from keras_vit.training.recipe import Recipe

        values = hp.values
        if self.image_size[0] != self.image_size[1]:
            raise ValueError(f"A Recipe has one image size; this search's images are {self.image_size}.")
        hidden_dim, patch_size = values["hidden_dim"], values["patch_size"]
        stem = stem_channels(hidden_dim, max(1, patch_size.bit_length() - 1))
        settings = dict(
            image_size=self.image_size[0], channels=self.channels, epochs=self.epochs, patch_size=patch_size,
            conv_stem=stem if values["conv_stem"] == "stem" else [], hidden_dim=hidden_dim,
            num_heads=values[heads_name(hidden_dim)], depth=values["depth"],
            mlp_dim=hidden_dim * values["mlp_ratio"], augment=float(values["augment"]) or None,
            **{name: values[name] for name in ("pooling", "pos_embedding", "drop_path_rate", "learning_rate",
                                               "weight_decay", "warmup_epochs", "label_smoothing", "batch_size")})
        recipe = Recipe(**{**settings, **overrides})
        recipe.validate()
        return recipe

    # ------------------------------------------------------------------ fit

    def fit(self, hp, model, x, *args, validation_data=None, epochs=None, callbacks=None, **kwargs):
        """Trains `model` with the trial's recipe.

        Args:
            hp: the trial's `HyperParameters`.
            model: the model from `build`.
            x: a batched `tf.data.Dataset` of (images, one-hot labels); it is
                re-batched with the trial's `batch_size`.
            validation_data: a batched validation dataset.
            epochs: epochs of this trial (defaults to `self.epochs`).
            callbacks: callbacks from the tuner.
        """
        from keras_vit.data import augment_batches, augmentation_options, build_augmentation
        from keras_vit.training import compile_model
        from keras_vit.models.portable import build_optimizer

        epochs = epochs or self.epochs
        batch_size = hp.get("batch_size")
        examples = self.train_size or sum(1 for _ in x.unbatch())
        steps = -(-examples // batch_size)  # the schedule's length needs the real step count
        train = x.unbatch().batch(batch_size).apply(tf.data.experimental.assert_cardinality(steps))
        options = augmentation_options(float(hp.get("augment")) or None)
        if options:
            train = augment_batches(train, build_augmentation(self.image_size, self.num_classes, **options))
        total_steps = max(steps * epochs, 2)
        compile_model(
            model,
            learning_rate=hp.get("learning_rate"),
            weight_decay=hp.get("weight_decay"),
            total_steps=total_steps,
            warmup_steps=min(int(round(hp.get("warmup_epochs") * steps)), total_steps - 1),
            label_smoothing=hp.get("label_smoothing"),
        )
        callbacks = list(callbacks or []) + [keras.callbacks.TerminateOnNaN()]
        if self.patience is not None:
            callbacks.append(keras.callbacks.EarlyStopping(
                self.objective, patience=self.patience, restore_best_weights=True))
        build_optimizer(model)  # on TensorFlow, the train step is then traced once, not twice
        try:
            history = model.fit(train, *args, validation_data=validation_data, epochs=epochs,
                                callbacks=callbacks, **kwargs)
        except Exception as err:  # out of memory and other resource errors
            if "ResourceExhausted" in type(err).__name__ or "out of memory" in str(err).lower():
                raise keras_tuner.errors.FailedTrialError(f"Out of memory: {err}") from err
            raise
        losses = history.history.get("loss", [])
        if not losses or not all(math.isfinite(v) for v in losses):
            raise keras_tuner.errors.FailedTrialError(f"The loss is not finite: {losses}")
        return history
