"""`ViTBackbone`: images in, the encoded token sequence out.

A `keras.Model` built functionally in its constructor (the keras-hub
Backbone pattern): the constructor arguments are its whole config, and its
parts are attributes — `rescaling`, `patch_encoder`, `blocks`, `norm` — so
code elsewhere never looks a layer up by name.
"""

import keras
import numpy as np

from keras_vit.kernels import resolve_kernels
from keras_vit.layers import ACTIVATIONS, PATCH_EMBEDDINGS, POS_EMBEDDINGS, POS_INTERPOLATIONS
from keras_vit.layers import PatchDropout, PatchEncoder, TransformerBlock, grid_size, layer_norm
from keras_vit.layers.patching import patch_stride
from keras_vit.layers.positions import renamed_in_config, renamed_interpolation
from keras_vit.layers.stem import check_conv_stem
from keras_vit.models.features import FeatureExtraction
from keras_vit.models.lora import LoRA, quantized_layers, requantize
from keras_vit.models.portable import PortableCompile
from keras_vit.presets.folder import save_to_preset
from keras_vit.presets.loaders import get_preset_loader
from keras_vit.utils.validation import (MODEL_KEYWORDS, check_choice, check_keywords, check_positive_int, check_rate,
                                        pair, parameter_names, strict_keywords)

# Beyond these a model cannot be trained or run on any machine this package
# targets; refusing them up front beats an out-of-memory error deep in the backend.
MAX_PARAMETERS = 10_000_000_000
MAX_TOKENS = 2**17


def check_pixel_batch(x):
    """Refuses inputs that are not a batch of real-valued pixels: bool,
    complex and string arrays, a missing batch axis, an empty batch.
    Datasets and other non-array inputs pass through unchecked."""
    dtype, shape = getattr(x, "dtype", None), getattr(x, "shape", None)
    if dtype is None or shape is None:
        return
    name = getattr(dtype, "name", None) or str(dtype)
    kind = dtype.kind if isinstance(dtype, np.dtype) else ""
    if kind in ("b", "c", "U", "S", "O") or name in ("string", "bool", "object") or "complex" in name:
        raise ValueError(
            f"Images must hold real pixel values (uint8, int or float in [0, 255]). "
            f"Received an array of dtype {name}.")
    if len(shape) == 3:
        raise ValueError(
            f"Expected a batch of images (batch, height, width, channels). Received one of shape "
            f"{tuple(shape)}: add a batch axis, e.g. images[None].")
    if len(shape) == 4 and shape[0] == 0:
        raise ValueError("The batch holds no images (batch size 0).")


def _check_size(c, grid):
    d, mlp = c["hidden_dim"], c["mlp_dim"]
    params = c["depth"] * (4 * d * d + 2 * d * mlp)
    tokens = grid[0] * grid[1]
    if params > MAX_PARAMETERS or tokens > MAX_TOKENS:
        raise ValueError(
            f"The model is too large to build: about {params:,} parameters in its blocks "
            f"(at most {MAX_PARAMETERS:,}) and {tokens:,} patch tokens per image (at most "
            f"{MAX_TOKENS:,}). Check hidden_dim, depth, mlp_dim, image_size and patch_size.")


def _embed(images, rescaling, patch_encoder, dropout, norm_pre, patch_dropout=None):
    """Pixels to the tokens the first block takes."""
    x = rescaling(images) if rescaling is not None else images
    x = dropout(patch_encoder(x))
    if patch_dropout is not None:
        x = patch_dropout(x)
    return norm_pre(x) if norm_pre is not None else x


def _rescaling(mean, std, policy):
    """(x / 255 - mean) / std as one Rescaling layer (per channel if given)."""
    n = max(len(mean), len(std))
    mean, std = (list(v) * (n if len(v) == 1 else 1) for v in (mean, std))
    scale = [1.0 / (255.0 * s) for s in std]
    offset = [-m / s for m, s in zip(mean, std)]
    if n == 1:
        scale, offset = scale[0], offset[0]
    return keras.layers.Rescaling(scale, offset=offset, dtype=policy, name="rescaling")


class ChecksImages:
    """Mixin of the models: refuses bad pixel batches in calls and `predict`
    with a clear error (see `check_pixel_batch`)."""

    def __call__(self, inputs, *args, **kwargs):
        check_pixel_batch(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        check_pixel_batch(x)
        return super().predict(x, *args, **kwargs)


def _check_config(c):
    """Validates the backbone's arguments (a dict) before any layer exists."""
    for key in ("hidden_dim", "depth", "num_heads", "mlp_dim", "channels"):
        check_positive_int(c[key], key)
    check_positive_int(c["num_registers"], "num_registers", minimum=0)
    if c["hidden_dim"] % c["num_heads"]:
        raise ValueError(
            f"`hidden_dim` must be divisible by `num_heads`. Received: hidden_dim={c['hidden_dim']}, "
            f"num_heads={c['num_heads']}. Head counts that divide it: "
            f"{[h for h in range(1, 17) if c['hidden_dim'] % h == 0]}")
    check_choice(c["pos_embedding"], "pos_embedding", POS_EMBEDDINGS)
    check_choice(c["activation"], "activation", tuple(ACTIVATIONS))
    check_choice(c["pos_interpolation"], "pos_interpolation", POS_INTERPOLATIONS)
    check_choice(c["patch_embedding"], "patch_embedding", PATCH_EMBEDDINGS)
    for key in ("class_token", "qk_norm", "use_qkv_bias", "include_rescaling", "pre_norm", "final_norm",
                "patch_bias"):
        check_choice(c[key], key, (True, False))
    check_choice(c["fused_attention"], "fused_attention", (None, True, False))
    if c["conv_stem"] is not None:
        c["conv_stem"] = list(check_conv_stem(c["conv_stem"], c["patch_size"], c["stride"], c["patch_embedding"]))
    for key in ("pixel_mean", "pixel_std"):
        value = c[key]
        if (not isinstance(value, (list, tuple)) or len(value) not in (1, c["channels"])
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or (key == "pixel_std" and min(value) <= 0)):
            raise ValueError(
                f"`{key}` must be a list of 1 or `channels`={c['channels']} numbers"
                f"{' > 0' if key == 'pixel_std' else ''} (fractions of 255). Received: {key}={value!r}")
    for key in ("dropout", "attention_dropout", "drop_path_rate", "patch_dropout"):
        check_rate(c[key], key)
    if c["layer_scale"] is not None and (isinstance(c["layer_scale"], bool) or not isinstance(c["layer_scale"], (int, float))):
        raise ValueError(f"`layer_scale` must be None or a number. Received: layer_scale={c['layer_scale']!r}")
    if isinstance(c["norm_epsilon"], bool) or not isinstance(c["norm_epsilon"], (int, float)) or not c["norm_epsilon"] > 0:
        raise ValueError(f"`norm_epsilon` must be a number > 0. Received: norm_epsilon={c['norm_epsilon']!r}")


def _resolve_config(arguments):
    """Checks the constructor's arguments and resolves them to the stored
    config: pixel statistics as lists, `kernels` resolved, `patch_size` and
    `stride` as pairs, `image_size` and `reference_image_size` as pairs (the
    first None for a model of any size). Returns (config, patch grid)."""
    config = dict(arguments)
    for key in ("pixel_mean", "pixel_std"):
        if isinstance(config[key], (int, float)) and not isinstance(config[key], bool):
            config[key] = (config[key],)
        if isinstance(config[key], tuple):
            config[key] = list(config[key])
    _check_config(config)
    config["kernels"] = resolve_kernels(config["kernels"])
    patch = pair(config["patch_size"], "patch_size")
    stride = patch_stride(patch, config["stride"])
    image_size = config["image_size"]
    if image_size is None:
        reference = pair(config["reference_image_size"] or 224, "reference_image_size")
    else:
        reference = pair(image_size, "image_size")
    grid = grid_size(reference, patch, stride, "image_size" if image_size else "reference_image_size")
    _check_size(config, grid)
    config.update(patch_size=patch, stride=stride, image_size=None if image_size is None else reference,
                  reference_image_size=reference)
    return config, grid


def _make_layers(c, grid, policy):
    """The backbone's layers from its resolved config, as the keyword
    arguments of `ViTBackbone._set_parts`."""
    kernels, epsilon, depth = c["kernels"], c["norm_epsilon"], c["depth"]
    patch_encoder = PatchEncoder(
        c["hidden_dim"], c["patch_size"], stride=c["stride"], grid_size=grid, use_cls_token=c["class_token"],
        num_registers=c["num_registers"], pos_embedding=c["pos_embedding"], pos_interpolation=c["pos_interpolation"],
        patch_embedding=c["patch_embedding"], sincos_layout=c["sincos_layout"], patch_bias=c["patch_bias"],
        conv_stem=c["conv_stem"], kernels=kernels, dtype=policy, name="patch_encoder")
    blocks = [
        TransformerBlock(
            c["num_heads"], c["mlp_dim"], dropout=c["dropout"], attention_dropout=c["attention_dropout"],
            drop_path=c["drop_path_rate"] * i / max(depth - 1, 1), layer_scale=c["layer_scale"],
            qk_norm=c["qk_norm"], activation=c["activation"], norm_epsilon=epsilon,
            use_qkv_bias=c["use_qkv_bias"], fused_attention=c["fused_attention"], kernels=kernels,
            dtype=policy, name=f"encoder_block_{i}")
        for i in range(depth)
    ]
    return dict(
        rescaling=_rescaling(c["pixel_mean"], c["pixel_std"], policy) if c["include_rescaling"] else None,
        patch_encoder=patch_encoder,
        embedding_dropout=keras.layers.Dropout(c["dropout"], dtype=policy, name="embedding_dropout"),
        patch_dropout=PatchDropout(c["patch_dropout"], num_prefix_tokens=patch_encoder.num_prefix_tokens,
                                   dtype=policy, name="patch_dropout") if c["patch_dropout"] else None,
        norm_pre=layer_norm(epsilon, "norm_pre", kernels) if c["pre_norm"] else None,
        blocks=blocks,
        norm=layer_norm(epsilon, "encoder_norm", kernels) if c["final_norm"] else None)


def _wire(parts, c):
    """The functional graph through `parts`: (input, output) tensors."""
    input_hw = (None, None) if c["image_size"] is None else c["image_size"]
    images = keras.Input(shape=(*input_hw, c["channels"]), name="images")
    x = _embed(images, parts["rescaling"], parts["patch_encoder"], parts["embedding_dropout"], parts["norm_pre"],
               parts["patch_dropout"])
    for block in parts["blocks"]:
        x = block(x)
    return images, parts["norm"](x) if parts["norm"] is not None else x


@keras.saving.register_keras_serializable(package="keras_vit")
class ViTBackbone(ChecksImages, FeatureExtraction, LoRA, PortableCompile, keras.Model):
    """The Vision Transformer encoder: images (B, H, W, C) to tokens (B, N, D).

    Token order is ``[class, registers, patches]``; the patches come row by
    row. The output is the sequence after the final LayerNorm (`norm`).

    Args:
        image_size: int, (h, w), or None for a model that takes any size the
            patches tile (positions are then built for
            `reference_image_size` and resampled per input).
        patch_size, stride: int or (h, w); `stride` defaults to the patch
            size, a smaller one gives overlapping patches.
        channels: int, image channels.
        hidden_dim, depth, num_heads, mlp_dim: the transformer's size.
        pos_embedding: "learned", "sincos" or "none".
        num_registers: int, register tokens (they get no position).
        class_token: bool, prepend a learnable class token.
        dropout, attention_dropout: rates in [0, 1).
        drop_path_rate: stochastic depth of the last block, rising linearly
            from 0 in the first.
        layer_scale: None or the initial LayerScale value.
        qk_norm: bool, LayerNorm on each head's queries and keys.
        activation: MLP activation, a key of `keras_vit.layers.ACTIVATIONS`.
        use_qkv_bias: bool, bias in the QKV projection.
        include_rescaling: bool; True maps pixels in [0, 255] to
            ``(x / 255 - pixel_mean) / pixel_std`` inside the model, so it
            takes raw pixels.
        pixel_mean, pixel_std: per-channel (or one) mean and standard
            deviation, as fractions of 255; the default 0.5 and 0.5 give
            the original ViT's [-1, 1], (0.485, 0.456, 0.406) and
            (0.229, 0.224, 0.225) ImageNet's.
        reference_image_size: the size learned positions are built for when
            `image_size` is None (default 224).
        pos_interpolation: "bicubic" or "bilinear" resampling of learned
            positions (`interpolation` until 0.2: still accepted, with a
            `DeprecationWarning`).
        patch_embedding: "conv" or "linear" (the same function).
        norm_epsilon: float > 0, LayerNorm epsilon.
        fused_attention: None (decided per backend), True or False.
        sincos_layout: channel layout of "sincos" positions, "big_vision"
            (default) or "rows_interleaved".
        patch_bias: bool, a bias in the patch projection.
        conv_stem: None, or the channels of 3x3 stride-2 convolutions
            (`keras_vit.layers.ConvStem`) in place of the patchify
            convolution; `patch_size` must then be 2**len(conv_stem), e.g.
            `patch_size=8, conv_stem=[32, 64, 128]`. Learns much faster on
            small images (see the auto recipe).
        pre_norm: bool, a LayerNorm (`norm_pre`) on the embedded tokens
            before the blocks, as CLIP-style towers have.
        final_norm: bool, the LayerNorm after the blocks; False leaves it
            out (`norm` is None), for classifiers that normalise after
            pooling instead (`ViTClassifier(fc_norm=True)`).
        kernels: None (this backend's default), "xla", "torch" or "plain", the
            blocks' and norms' kernels (`keras_vit.kernels`: "xla" runs the
            training GELU and LayerNorms as XLA kernels on TensorFlow,
            "torch" the projections and attention as PyTorch's fused
            kernels on torch; each falls back to plain ops elsewhere).
            Stored resolved in the config; the same function either way.
        patch_dropout: float in [0, 1): in training, the blocks see a random
            `1 - patch_dropout` of each image's patch tokens (prefix tokens
            always); the identity at inference (`keras_vit.layers.PatchDropout`).

    Example:
    >>> backbone = ViTBackbone(image_size=32, patch_size=8, hidden_dim=32,
    ...                        depth=2, num_heads=2, mlp_dim=64)
    >>> tuple(backbone(np.zeros((1, 32, 32, 3))).shape)
    (1, 17, 32)
    >>> [tuple(m.shape) for m in backbone.forward_intermediates(np.zeros((1, 32, 32, 3)), output="maps")]
    [(1, 4, 4, 32), (1, 4, 4, 32)]
    """

    def __init__(
        self,
        *,
        image_size=224,
        patch_size=16,
        stride=None,
        channels=3,
        hidden_dim=768,
        depth=12,
        num_heads=12,
        mlp_dim=3072,
        pos_embedding="learned",
        num_registers=0,
        class_token=True,
        dropout=0.0,
        attention_dropout=0.0,
        drop_path_rate=0.0,
        layer_scale=None,
        qk_norm=False,
        activation="gelu",
        use_qkv_bias=True,
        include_rescaling=True,
        pixel_mean=(0.5,),
        pixel_std=(0.5,),
        reference_image_size=None,
        pos_interpolation="bicubic",
        patch_embedding="conv",
        norm_epsilon=1e-6,
        fused_attention=None,
        sincos_layout="big_vision",
        patch_bias=True,
        pre_norm=False,
        final_norm=True,
        conv_stem=None,
        kernels=None,
        patch_dropout=0.0,
        **kwargs,
    ):
        pos_interpolation = renamed_interpolation(kwargs, pos_interpolation, "ViTBackbone")
        arguments = dict(locals())  # the signature above is the whole config
        for key in ("self", "kwargs", "__class__"):
            arguments.pop(key, None)
        check_keywords(kwargs, parameter_names(ViTBackbone) | set(MODEL_KEYWORDS), "ViTBackbone()")
        config, grid = _resolve_config(arguments)
        policy = keras.dtype_policies.get(kwargs.pop("dtype", None) or keras.config.dtype_policy())
        # Built before `keras.Model.__init__` and set as attributes after it:
        # on the torch backend a layer is a `torch.nn.Module`, which cannot be
        # assigned to a module that is not initialised yet.
        parts = _make_layers(config, grid, policy)
        images, outputs = _wire(parts, config)
        super().__init__(inputs=images, outputs=outputs, **{"name": "vit_backbone", **kwargs})
        self.dtype_policy = policy  # a functional model ignores `dtype`; the config keeps it
        self._set_parts(**parts)
        self._set_config(config)

    def _set_parts(self, *, rescaling, patch_encoder, embedding_dropout, norm_pre, blocks, norm, patch_dropout):
        self.rescaling, self.patch_dropout_layer, self.patch_encoder = rescaling, patch_dropout, patch_encoder
        self.embedding_dropout, self.norm_pre, self.blocks, self.norm = embedding_dropout, norm_pre, blocks, norm

    def _set_config(self, c):
        """Keeps the config (`get_config`) and each of its values as an
        attribute of the same name (its keys are the constructor's
        arguments), read elsewhere as `backbone.hidden_dim`,
        `backbone.patch_size`, ..."""
        self._vit_config = c
        for name, value in c.items():
            setattr(self, name, value)

    def _embed(self, images):
        return _embed(images, self.rescaling, self.patch_encoder, self.embedding_dropout, self.norm_pre,
                      self.patch_dropout_layer)

    # --- what the rest of the package reads ------------------------------

    @property
    def num_prefix_tokens(self):
        """Class and register tokens before the patch tokens."""
        return self.patch_encoder.num_prefix_tokens

    def patch_grid(self, image_size=None):
        """The (h, w) patch grid of images of `image_size` (default: the
        size the model was built for)."""
        size = self.reference_image_size if image_size is None else pair(image_size, "image_size")
        return grid_size(size, self.patch_size, self.stride, "image_size")

    # --- construction -----------------------------------------------------

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable,
                  "dtype": keras.dtype_policies.serialize(self.dtype_policy)}
        config.update(self._vit_config)
        quantized = quantized_layers(self)
        if quantized:
            config["quantized_layers"] = quantized
        return config

    @classmethod
    def from_config(cls, config):
        config = renamed_in_config(config)
        quantized = config.pop("quantized_layers", None)
        backbone = cls(**config)
        if quantized:
            requantize(backbone, quantized)
        return backbone

    @strict_keywords()
    def save_to_preset(self, directory):
        """Writes a preset directory that `from_preset(directory)` loads."""
        return save_to_preset(self, directory)

    @classmethod
    @strict_keywords("keras_vit.models.backbone:ViTBackbone", "keras_vit.models.pretrained:from_checkpoint",
                     extra=(*MODEL_KEYWORDS, "interpolation"), exclude=("path",))
    def from_preset(cls, name, **overrides):
        """A backbone of architecture preset `name` ("B/16", "Mu/4", ...;
        random weights), with its own image size unless `image_size` is
        given, and other arguments overridden; or a pretrained one: a known
        name, ``"hf://owner/repo"``, a preset directory or a checkpoint file
        (`keras_vit.presets.get_preset_loader` tells them apart).

        Example:
        >>> ViTBackbone.from_preset("Mu/4", depth=2).image_size
        (32, 32)
        """
        return get_preset_loader(name).load(cls, **overrides)
