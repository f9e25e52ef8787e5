"""`ViTClassifier` (a backbone, a pooling, a head) and `build_vit`.

The classifier is a `keras.Model` built functionally in its constructor. It
knows its `backbone` and its head parts as attributes, and its config
records everything needed to serve it: pooling, rescaling (through the
backbone), the classifier activation and so whether it outputs logits, the
class names and the preprocessing it expects.
"""

import keras

from keras_vit.layers import POOLINGS, AttentionPooling, TokenPooling, layer_norm
from keras_vit.models.backbone import ChecksImages, ViTBackbone
from keras_vit.models.lora import check_lora_args, quantized_layers, requantize
from keras_vit.models.portable import PortableCompile
from keras_vit.presets.architectures import FROM_PRESET, HEAD_ARGS, vit_arguments
from keras_vit.presets.folder import save_to_preset
from keras_vit.presets.loaders import get_preset_loader
from keras_vit.utils.validation import (MODEL_KEYWORDS, check_choice, check_class_names, check_keywords,
                                        check_positive_int, check_rate, parameter_names, strict_keywords)

# The one home of the no-weight-decay rule (`no_weight_decay`): every 0-D and
# 1-D variable (biases, norm scales and offsets, LayerScale), and the variables
# of these names (as Keras names them): biases of any rank, tokens, positions,
# the MAP probe.
NO_DECAY_NAMES = ("bias", "cls_token", "registers", "position_embedding", "probe")
# The same rule by name alone, for an optimizer made before it sees a model
# (`keras.optimizers.Optimizer.exclude_from_weight_decay(var_names=...)`):
# the norms' 1-D variables by their names.
NO_DECAY_NAME_PATTERNS = ("gamma", "beta", *NO_DECAY_NAMES)


def no_weight_decay(variables):
    """The variables of `variables` that get no weight decay (see
    `NO_DECAY_NAMES`)."""
    return [v for v in variables if len(v.shape) <= 1 or v.name in NO_DECAY_NAMES]


def _head_layers(backbone, policy, num_classes, pooling, fc_norm, representation_size, head_units, dropout,
                 classifier_activation):
    """(pooler, fc_norm, pre_logits, head_hidden, head_dropout, head, predictions) of a classifier;
    None for a part it does not have."""
    if pooling == "map":
        pooler = AttentionPooling(
            backbone.num_heads, backbone.mlp_dim, backbone.activation, backbone.norm_epsilon,
            dtype=policy, name="map_pooling")
    else:
        pooler = TokenPooling(pooling, num_prefix_tokens=backbone.num_prefix_tokens,
                              dtype=policy, name=f"{pooling}_pooling")
    fc_norm_layer = layer_norm(backbone.norm_epsilon, "fc_norm") if fc_norm else None
    pre_logits = (
        keras.layers.Dense(representation_size, activation="tanh", dtype=policy, name="pre_logits")
        if representation_size else None)
    head_hidden = [
        keras.layers.Dense(units, activation="gelu", dtype=policy, name=f"head_dense_{i}")
        for i, units in enumerate(head_units or ())]
    head_dropout = keras.layers.Dropout(dropout, dtype=policy, name="head_dropout")
    head = keras.layers.Dense(num_classes, dtype="float32", name="head") if num_classes else None
    predictions = (
        keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")
        if num_classes and classifier_activation else None)
    return pooler, fc_norm_layer, pre_logits, head_hidden, head_dropout, head, predictions


def _check_head(num_classes, pooling, representation_size, head_units, dropout,
                classifier_activation, class_names, backbone):
    check_positive_int(num_classes, "num_classes", minimum=0)
    check_choice(pooling, "pooling", POOLINGS)
    if pooling == "cls" and not backbone.class_token:
        raise ValueError("`pooling='cls'` needs a class token; got class_token=False.")
    if representation_size is not None:
        check_positive_int(representation_size, "representation_size")
    if head_units is not None and not isinstance(head_units, (list, tuple)):
        raise ValueError(f"`head_units` must be None or a list of positive ints. Received: head_units={head_units!r}")
    for units in head_units or ():
        check_positive_int(units, "head_units")
    check_rate(dropout, "dropout")
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise ValueError(
                f"Unknown `classifier_activation`: {classifier_activation!r}. Accepted values: None "
                "(logits) or a Keras activation name such as 'softmax' or 'sigmoid'.") from None
    if class_names is not None:
        check_class_names(class_names, num_classes)


@keras.saving.register_keras_serializable(package="keras_vit")
class ViTClassifier(ChecksImages, PortableCompile, keras.Model):
    """An image classifier: `ViTBackbone`, pooling, optional pre-logits or
    MLP head, and a float32 `head`.

    Args:
        backbone: a `ViTBackbone`.
        num_classes: int >= 0; 0 returns the pooled features.
        pooling: "cls" (class token), "gap" (mean of the patch tokens) or
            "map" (attention pooling with a learned query).
        fc_norm: bool, a LayerNorm after the pooling (timm's `fc_norm`, the
            default of its average-pooling models, whose backbone then has
            no final norm: build it with `final_norm=False`).
        representation_size: optional int, a tanh pre-logits layer.
        head_units: optional list of ints, an MLP head (GELU, dropout).
        dropout: float in [0, 1), dropout before the head.
        classifier_activation: None (the outputs are logits) or a Keras
            activation name such as "softmax", computed in float32.
        class_names: optional list of `num_classes` strings.
        preprocessing: optional dict describing how images are prepared for
            this model (e.g. interpolation); stored in the config and read by
            data loading, export and prediction.

    Example:
    >>> backbone = ViTBackbone(image_size=32, patch_size=8, hidden_dim=32,
    ...                        depth=1, num_heads=2, mlp_dim=64)
    >>> model = ViTClassifier(backbone, num_classes=3, pooling="gap")
    >>> tuple(model(np.zeros((2, 32, 32, 3))).shape)
    (2, 3)
    >>> model.outputs_logits
    True
    """

    backbone_cls = ViTBackbone  # what the preset loaders build its backbone as (keras-hub's tasks say so too)

    def __init__(self, backbone, num_classes=1000, pooling="cls", fc_norm=False, representation_size=None,
                 head_units=None, dropout=0.0, classifier_activation=None, class_names=None,
                 preprocessing=None, **kwargs):
        if not isinstance(backbone, ViTBackbone):
            raise ValueError(f"`backbone` must be a ViTBackbone. Received: {type(backbone).__name__}")
        check_keywords(kwargs, parameter_names(ViTClassifier) | set(MODEL_KEYWORDS), "ViTClassifier()")
        _check_head(num_classes, pooling, representation_size, head_units, dropout,
                    classifier_activation, class_names, backbone)
        check_choice(fc_norm, "fc_norm", (True, False))
        if preprocessing is not None and not isinstance(preprocessing, dict):
            raise ValueError(f"`preprocessing` must be None or a dict. Received: {preprocessing!r}")

        policy = keras.dtype_policies.get(kwargs.pop("dtype", None) or backbone.dtype_policy)

        # === Layers === (set as attributes after `keras.Model.__init__`, as
        # the torch backend needs: see `ViTBackbone`)
        layers = _head_layers(backbone, policy, num_classes, pooling, fc_norm, representation_size,
                              head_units, dropout, classifier_activation)
        pooler, fc_norm_layer, pre_logits, head_hidden, head_dropout, head, predictions = layers

        # === Functional model ===
        images = keras.Input(shape=backbone.input_shape[1:], name="images")
        x = pooler(backbone(images))
        if fc_norm_layer is not None:
            x = fc_norm_layer(x)
        if pre_logits is not None:
            x = pre_logits(x)
        for dense in head_hidden:
            x = head_dropout(dense(x))
        if head is not None:
            x = head(head_dropout(x))
            if predictions is not None:
                x = predictions(x)
        super().__init__(inputs=images, outputs=x, **{"name": "vit", **kwargs})

        self.dtype_policy = policy  # a functional model ignores `dtype`; the config keeps it
        self.backbone = backbone
        (self.pooler, self.fc_norm, self.pre_logits, self.head_hidden, self.head_dropout, self.head,
         self.predictions) = layers

        # === Config ===
        self.num_classes, self.pooling, self.use_fc_norm = num_classes, pooling, fc_norm
        self.representation_size, self.classifier_activation = representation_size, classifier_activation
        self.head_units = list(head_units) if head_units else None
        self.dropout = float(dropout)
        self.class_names = list(class_names) if class_names is not None else None
        self.preprocessing = dict(preprocessing) if preprocessing else None

    # --- what the rest of the package reads ------------------------------

    @property
    def outputs_logits(self):
        """True when the outputs are logits (no classifier activation)."""
        return self.head is not None and self.predictions is None

    @property
    def image_size(self):
        return self.backbone.image_size

    @property
    def channels(self):
        return self.backbone.channels

    @property
    def include_rescaling(self):
        return self.backbone.include_rescaling

    def no_weight_decay(self):
        """The variables the optimizer must not decay: every 0-D and 1-D
        variable (biases, norm scales and offsets, LayerScale) and every bias,
        token, position table and MAP probe.

        Example:
        >>> model = build_vit("Mu/4", depth=1)
        >>> all(v.name != "kernel" for v in model.no_weight_decay())
        True
        """
        return no_weight_decay(self.trainable_variables)

    @strict_keywords()
    def enable_lora(self, rank, target_names=None):
        """Enables LoRA on the backbone (`ViTBackbone.enable_lora`: every
        backbone weight but the LoRA matrices is frozen) and keeps the layers
        after it trainable: the pooling, `fc_norm`, pre-logits and the head.
        Compile (again) after this call.

        Args:
            rank: int > 0, the rank of the updates.
            target_names: None (the attention's "qkv" and "proj") or a list
                of names from "qkv", "proj", "mlp_dense1", "mlp_dense2".

        Example:
        >>> model = build_vit(image_size=16, num_classes=3, patch_size=4,
        ...                   hidden_dim=8, depth=1, num_heads=2, mlp_dim=16)
        >>> model.enable_lora(4)
        >>> sorted(v.name for v in model.trainable_weights)
        ['bias', 'kernel', 'lora_kernel_a', 'lora_kernel_a', 'lora_kernel_b', 'lora_kernel_b']
        """
        check_lora_args(rank, target_names)  # before anything changes
        self.trainable = True
        self.backbone.enable_lora(rank, target_names)

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`; with LoRA enabled, the LoRA matrices
        can train on from the loaded weights (see `ViTBackbone.load_weights`)."""
        super().load_weights(filepath, *args, **kwargs)
        self.backbone._reseed_lora()

    # --- construction -----------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "fc_norm": self.use_fc_norm,
            "representation_size": self.representation_size,
            "head_units": self.head_units,
            "dropout": self.dropout,
            "classifier_activation": self.classifier_activation,
            "class_names": self.class_names,
            "preprocessing": self.preprocessing,
            "outputs_logits": self.outputs_logits,
            **({"quantized_layers": quantized} if (quantized := quantized_layers(self, skip=[self.backbone])) else {}),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("outputs_logits", None)  # recorded for readers; follows from the activation
        if isinstance(config["backbone"], dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        quantized = config.pop("quantized_layers", None)
        model = cls(**config)
        if quantized:  # the head's; the backbone's own config quantized the backbone
            requantize(model, quantized)
        return model

    @strict_keywords()
    def save_to_preset(self, directory):
        """Writes a preset directory (config, weights, preprocessing) that
        `ViTClassifier.from_preset(directory)` loads in any process."""
        return save_to_preset(self, directory)

    @classmethod
    @strict_keywords("keras_vit.models.classifier:build_vit", "keras_vit.models.pretrained:from_checkpoint",
                     exclude=("variant", "path"))
    def from_preset(cls, name, **overrides):
        """A classifier of architecture preset `name` (random weights) with
        the preset's image size and class count unless overridden (see
        `build_vit` for the arguments); or a pretrained one: a known name,
        ``"hf://owner/repo"``, a preset directory or a checkpoint file
        (`keras_vit.presets.get_preset_loader` tells them apart). A new
        `num_classes` gets a fresh head; a new `image_size` resamples the
        learned positions.

        Example:
        >>> model = ViTClassifier.from_preset("Mu/4", depth=1)
        >>> model.image_size, model.num_classes
        ((32, 32), 10)
        """
        return get_preset_loader(name).load(cls, **overrides)


@strict_keywords(ViTBackbone, extra=(*HEAD_ARGS, *MODEL_KEYWORDS, "interpolation"))  # interpolation: deprecated
def build_vit(variant=None, *, image_size=FROM_PRESET, num_classes=FROM_PRESET, patch_size=None,
              hidden_dim=None, depth=None, num_heads=None, mlp_dim=None, pooling="cls",
              class_token=None, dropout=0.0, name=None, **kwargs):
    """Builds a Vision Transformer classifier, a `ViTClassifier`.

    Args:
        variant: a preset name from `PRESETS` such as "B/16" or "Ti/4"
            (default "B/16"); its size, patch, image size and class count
            are used for the arguments left out.
        image_size: int, (h, w), or None for a model that takes any size.
        num_classes: int >= 0; 0 returns the pooled features.
        patch_size, hidden_dim, depth, num_heads, mlp_dim: override the
            preset's.
        pooling: "cls", "gap" or "map".
        class_token: None adds a class token exactly when `pooling="cls"`;
            True also keeps one with "gap" or "map" (as timm's
            `global_pool="avg"` models).
        dropout: rate in [0, 1) used in the blocks and before the head.
        name: optional model name (default "vit").
        **kwargs: other `ViTBackbone` arguments (stride, channels,
            pos_embedding, num_registers, attention_dropout, drop_path_rate,
            layer_scale, qk_norm, activation, use_qkv_bias, include_rescaling,
            reference_image_size, pos_interpolation, patch_embedding,
            norm_epsilon, fused_attention, sincos_layout, patch_bias,
            pre_norm, final_norm, conv_stem) and `ViTClassifier` arguments (fc_norm,
            representation_size, head_units, classifier_activation,
            class_names, preprocessing).

    Returns:
        A `ViTClassifier` mapping images (B, H, W, channels) to float32
        logits (B, num_classes).

    Example:
    >>> model = build_vit(image_size=32, num_classes=10, patch_size=8,
    ...                   hidden_dim=32, depth=1, num_heads=2, mlp_dim=64)
    >>> tuple(model(np.zeros((1, 32, 32, 3))).shape)
    (1, 10)
    >>> build_vit("Mu/4", depth=1).image_size
    (32, 32)
    """
    backbone, head = vit_arguments(
        variant, image_size=image_size, num_classes=num_classes, patch_size=patch_size, hidden_dim=hidden_dim,
        depth=depth, num_heads=num_heads, mlp_dim=mlp_dim, pooling=pooling, class_token=class_token,
        dropout=dropout, name=name, **kwargs)
    return ViTClassifier(ViTBackbone(**backbone), **head)
