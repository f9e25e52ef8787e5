"""`PortableCompile`: a model compiled with `jit_compile="auto"` is saved
with "auto", so each backend that loads the `.keras` file decides for
itself whether to compile.

Keras saves the value the writing backend resolved "auto" to. On
TensorFlow's CPU that is False, and a JAX session loading the file then
predicts without `jax.jit` (a width-64, depth-4 model at batch 128: 205
against 73 ms a `predict_on_batch`); from JAX it is True, and PyTorch
turns on `torch.compile` (tens of seconds before the first prediction).
An explicit True or False is saved as given.
"""

import keras


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
        if hasattr(self, "optimizer") and self.built:
            self.optimizer.build(self.trainable_variables)
