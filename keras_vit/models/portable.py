"""`PortableCompile`: a model compiled with `jit_compile="auto"` is saved
with "auto", so each backend that loads the `.keras` file decides for
itself whether to compile.

Keras saves the value the writing backend resolved "auto" to. On
TensorFlow's CPU that is False, and a JAX session loading the file then
predicts without `jax.jit` (a width-64, depth-4 model at batch 128: 205
against 73 ms a `predict_on_batch`); from JAX it is True, and PyTorch
turns on `torch.compile` (tens of seconds before the first prediction).
An explicit True or False is saved as given.

`build_optimizer` creates a compiled model's optimizer variables: for a
reloaded model here, and before `fit` in `train` and the tuning trials.
"""

import keras


def build_optimizer(model):
    """Creates the optimizer's variables (moments, and EMA or accumulators
    where it has them) for the model's trainable weights, unless they
    exist. `train` and the tuning trials call it right before `fit`, and
    a reloaded compiled model gets its optimizer state through it.

    On TensorFlow without a distribution strategy, Keras creates them inside
    the first trace of the train step, and `tf.function` then traces the
    whole step a second time because variables were created: on the 2-core
    machine that cost 6-10 s of the digits recipe's first epoch. Built
    beforehand, the step is traced once. (Under a strategy, and on the
    other backends, Keras builds them before tracing, from the same
    trainable weights: what `fit` trains is unchanged.)

    Returns:
        The optimizer.

    Example:
    >>> from keras_vit import build_vit
    >>> model = build_vit(image_size=16, num_classes=10, patch_size=4, hidden_dim=16,
    ...                   depth=1, num_heads=2, mlp_dim=32)
    >>> model.compile(optimizer="adamw", loss="categorical_crossentropy")
    >>> build_optimizer(model).built
    True
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return optimizer


class PortableCompile:
    """Mixin of the models: records the `jit_compile` that `compile` was
    given (`jit_compile_setting`) and saves "auto" as "auto"."""

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # jit_compile is `keras.Model.compile`'s eighth argument
        self.jit_compile_setting = kwargs.get("jit_compile", args[7] if len(args) > 7 else "auto")

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and getattr(self, "jit_compile_setting", None) == "auto":
            config["jit_compile"] = "auto"
        return config

    def compile_from_config(self, config):
        # Keras' own skips a model whose `compile` is overridden; this is it otherwise
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            build_optimizer(self)
