"""LoRA and quantization of a built model: the changes made to its Dense
layers after construction, and what a config records of them.

`LoRA` is the mixin that gives `ViTBackbone` `enable_lora`;
`quantized_layers` and `requantize` carry `model.quantize(...)` through a
config, for the backbone and the classifier alike.
"""

import keras

from keras_vit.utils.validation import check_positive_int, strict_keywords

# The Dense layers of a block LoRA can target, by the names `enable_lora` takes.
LORA_TARGETS = ("qkv", "proj", "mlp_dense1", "mlp_dense2")
DEFAULT_LORA_TARGETS = ("qkv", "proj")


def quantized_layers(model, skip=()):
    """``{path: mode}`` of the quantized layers of `model` (`model.quantize`),
    leaving out the layers of the models in `skip` (a nested backbone records
    its own). A config records this: our layers make their Dense layers in
    `build`, not from a config of their own, so a reloaded model is
    quantized again from it (`requantize`) before its weights load."""
    skipped = {id(layer) for part in skip for layer in part._flatten_layers()}
    return {layer.path: layer.quantization_mode for layer in model._flatten_layers(include_self=False)
            if id(layer) not in skipped and getattr(layer, "quantization_mode", None)}


def requantize(model, modes):
    """Quantizes the layers of `model` named in `modes` (``{path: mode}``,
    from `quantized_layers`) with `model.quantize`'s default config per mode."""
    for mode in sorted(set(modes.values())):
        model.quantize(mode, filters=lambda layer, mode=mode: modes.get(layer.path) == mode
                       and getattr(layer, "quantization_mode", None) is None)


def check_lora_args(rank, target_names):
    """Validates `enable_lora`'s arguments; returns the target names as a tuple."""
    check_positive_int(rank, "rank")
    if target_names is None:
        return DEFAULT_LORA_TARGETS
    names = [target_names] if isinstance(target_names, str) else target_names
    if (not isinstance(names, (list, tuple)) or not names
            or not all(isinstance(n, str) and n in LORA_TARGETS for n in names)):
        raise ValueError(
            f"`target_names` must be None (the default {list(DEFAULT_LORA_TARGETS)}) or a non-empty list of "
            f"names from {list(LORA_TARGETS)}. Received: target_names={target_names!r}")
    return tuple(dict.fromkeys(names))


class LoRA:
    """Mixin of `ViTBackbone`: LoRA on the Dense layers of its `blocks`."""

    @strict_keywords()
    def enable_lora(self, rank, target_names=None):
        """Enables LoRA (low-rank adaptation, `keras.layers.Dense.enable_lora`)
        on Dense layers of every block and freezes every other weight of the
        backbone, as keras-hub's backbones do: `trainable_weights` are then
        exactly the LoRA matrices (A of shape (in, rank), B of shape
        (rank, out), B starting at zero so the outputs do not change).
        Compile (again) after this call. A saved model holds each kernel
        with its LoRA update merged in, and reloads as a plain model.

        Args:
            rank: int > 0, the rank of the updates.
            target_names: None (the attention's "qkv" and "proj") or a list
                of names from `LORA_TARGETS`: "qkv", "proj", "mlp_dense1",
                "mlp_dense2".

        Example:
        >>> from keras_vit.models import ViTBackbone
        >>> backbone = ViTBackbone(image_size=16, patch_size=4, hidden_dim=8,
        ...                        depth=1, num_heads=2, mlp_dim=16)
        >>> backbone.enable_lora(2)
        >>> sorted(v.name for v in backbone.trainable_weights)
        ['lora_kernel_a', 'lora_kernel_a', 'lora_kernel_b', 'lora_kernel_b']
        """
        targets = check_lora_args(rank, target_names)
        if getattr(self, "_lora_targets", None):
            raise ValueError(
                f"LoRA is already enabled on this backbone (rank {self._lora_rank} on "
                f"{list(self._lora_targets)}); it can be enabled once.")
        self._lora_rank, self._lora_targets = rank, targets
        for dense in self._lora_layers():
            dense.enable_lora(rank)
        self._freeze_for_lora()

    @property
    def lora_enabled(self):
        """Whether `enable_lora` was called on this backbone."""
        return bool(getattr(self, "_lora_targets", None))

    def _lora_layers(self):
        return [layer for block in self.blocks for name, layer in (
            ("qkv", block.attention.qkv), ("proj", block.attention.proj),
            ("mlp_dense1", block.mlp_dense1), ("mlp_dense2", block.mlp_dense2))
            if name in self._lora_targets]

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`. With LoRA enabled, Keras loads each
        saved (merged) kernel into the frozen kernel and zeroes both LoRA
        matrices, from where they get no gradient; A is drawn afresh (B
        stays zero, so the outputs are the loaded model's) and training can
        go on (a resumed LoRA run)."""
        super().load_weights(filepath, *args, **kwargs)
        self._reseed_lora()

    def _reseed_lora(self):
        if self.lora_enabled:
            for dense in self._lora_layers():
                a = dense.lora_kernel_a
                a.assign(keras.initializers.HeUniform()(a.shape, dtype=a.dtype))

    def _freeze_for_lora(self):
        """Makes the LoRA matrices the only trainable weights (after
        `enable_lora`; again after anything set `trainable` on the backbone).

        Containers keep ``trainable=True``; the layers without sublayers but
        the LoRA ones are frozen, and the variables get their flags
        explicitly. On TensorFlow, Keras skips setting `trainable` to the
        value a layer already has, sublayers included: a frozen container
        would not pass a later ``backbone.trainable = False`` on to its LoRA
        layers.
        """
        targets = {id(dense) for dense in self._lora_layers()}
        lora = {id(v) for dense in self._lora_layers() for v in (dense.lora_kernel_a, dense.lora_kernel_b)}
        layers = list(self._flatten_layers(include_self=True))
        leaves = {id(layer) for layer in layers if len(list(layer._flatten_layers())) == 1}
        for layer in layers:
            if id(layer) not in leaves:
                layer.trainable = True
        for layer in layers:
            if id(layer) in leaves:
                layer.trainable = id(layer) in targets
        for variable in self.weights:
            variable.trainable = id(variable) in lora
