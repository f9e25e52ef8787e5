"""`build_vit`: the Vision Transformer as a functional Keras model.

One preset table (`PRESETS`) decodes names such as ``"B/16"``; keyword
arguments override a preset's values.
"""

import keras

from keras_vit import layers as L

# width, depth, heads, mlp width; the patch size comes from the name.
_SIZES = {
    "Mu": (64, 6, 4, 128),  # micro: small images, small data
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "M": (512, 12, 8, 2048),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}
# The one preset table: name -> (size, patch size, natural image size).
PRESETS = {
    name: dict(
        zip(("hidden_dim", "depth", "num_heads", "mlp_dim"), _SIZES[name.split("/")[0]]),
        patch_size=int(name.split("/")[1]),
        image_size=image_size,
    )
    for name, image_size in {
        # small images (28 to 64 px)
        "Mu/4": 32, "Mu/8": 64, "Ti/4": 32, "Ti/8": 64, "S/4": 32, "S/8": 64,
        # the standard ViT family at 224 px
        "Ti/16": 224, "Ti/32": 224, "S/16": 224, "S/32": 224, "M/16": 224,
        "M/32": 224, "B/8": 224, "B/16": 224, "B/32": 224, "L/16": 224,
        "L/32": 224, "H/14": 224,
    }.items()
}
DEFAULT_VARIANT = "B/16"
POOLINGS = ("cls", "gap", "map")


def resolve_config(variant=None, **overrides):
    """Merges a preset with keyword overrides (None means "not given")."""
    if variant is None:
        variant = DEFAULT_VARIANT
    if variant not in PRESETS:
        raise ValueError(
            f"Unknown `variant`: {variant!r}. Known variants: {', '.join(PRESETS)}"
        )
    config = dict(PRESETS[variant])
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def _check_positive_int(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def build_vit(
    variant=None,
    *,
    image_size=224,
    num_classes=1000,
    patch_size=None,
    stride=None,
    channels=3,
    hidden_dim=None,
    depth=None,
    num_heads=None,
    mlp_dim=None,
    pooling="cls",
    pos_embedding="learned",
    num_registers=0,
    class_token=None,
    representation_size=None,
    head_units=None,
    dropout=0.0,
    attention_dropout=0.0,
    drop_path_rate=0.0,
    layer_scale=None,
    qk_norm=False,
    activation="gelu",
    use_qkv_bias=True,
    include_rescaling=True,
    classifier_activation=None,
    reference_image_size=None,
    interpolation="bicubic",
    patch_embedding="conv",
    norm_epsilon=1e-6,
    name=None,
):
    """Builds a Vision Transformer classifier as a functional `keras.Model`.

    Args:
        variant: a preset name from `PRESETS` such as "B/16" or "Ti/4"; the
            architecture arguments left as None come from it. Defaults to
            "B/16".
        image_size: int, (h, w) pair, or None for a model that accepts any
            image size at least one patch large (positions are then built
            for `reference_image_size` and resampled per input).
        num_classes: int, number of classes; 0 returns the pooled features.
        patch_size, stride: int or (h, w) pair; a stride smaller than the
            patch gives overlapping patches.
        channels: int, image channels.
        hidden_dim, depth, num_heads, mlp_dim: the transformer's size.
        pooling: "cls" (class token), "gap" (mean of the patch tokens) or
            "map" (attention pooling with a learned query).
        pos_embedding: "learned", "sincos" or "none".
        num_registers: int, number of register tokens.
        class_token: bool or None; None adds a class token exactly when
            `pooling="cls"` (True also keeps one with "gap" or "map", as
            timm's models with `global_pool="avg"` do).
        representation_size: optional int, a tanh pre-logits layer.
        head_units: optional list of ints, an MLP head (GELU, dropout).
        dropout: float in [0, 1), dropout on embeddings, in blocks and
            before the head.
        attention_dropout: float in [0, 1).
        drop_path_rate: float in [0, 1), stochastic depth, rising linearly
            from 0 in the first block to this value in the last.
        layer_scale: None or float, the initial LayerScale value.
        qk_norm: bool, normalise queries and keys.
        activation: MLP activation: "gelu", "gelu_tanh", "quick_gelu",
            "relu" or "silu".
        use_qkv_bias: bool, bias in the QKV projection.
        include_rescaling: bool; if True the model takes pixels in [0, 255]
            (uint8 or float) and maps them to [-1, 1] itself.
        classifier_activation: None (logits) or an activation name such as
            "softmax"; computed in float32.
        reference_image_size: image size the learned positions are built for
            when `image_size` is None; defaults to the preset's size.
        interpolation: "bicubic" or "bilinear" resampling of positions.
        patch_embedding: "conv" or "linear" (`Patches` + `Dense`).
        norm_epsilon: float, LayerNorm epsilon.
        name: optional model name; defaults to "vit".

    Returns:
        A `keras.Model` mapping images (B, H, W, channels) to float32 logits
        (B, num_classes).

    Example:
    >>> model = build_vit(image_size=32, num_classes=10, patch_size=8,
    ...                   hidden_dim=32, depth=1, num_heads=2, mlp_dim=64)
    >>> model(np.zeros((1, 32, 32, 3))).shape
    (1, 10)
    """
    cfg = resolve_config(
        variant,
        patch_size=patch_size,
        hidden_dim=hidden_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
    )
    for key in ("hidden_dim", "depth", "num_heads", "mlp_dim", "channels"):
        _check_positive_int(cfg.get(key, channels), key)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(f"`num_classes` must be an int >= 0. Received: num_classes={num_classes!r}")
    if cfg["hidden_dim"] % cfg["num_heads"]:
        raise ValueError(
            f"`hidden_dim` must be divisible by `num_heads`. Received: "
            f"hidden_dim={cfg['hidden_dim']}, num_heads={cfg['num_heads']}. "
            f"Head counts that divide it: "
            f"{[h for h in range(1, 17) if cfg['hidden_dim'] % h == 0]}"
        )
    L.check_choice(pooling, "pooling", POOLINGS)
    L.check_choice(pos_embedding, "pos_embedding", L.POS_EMBEDDINGS)
    L.check_choice(activation, "activation", tuple(L.ACTIVATIONS))
    for rate_name, rate in (
        ("dropout", dropout),
        ("attention_dropout", attention_dropout),
        ("drop_path_rate", drop_path_rate),
    ):
        L.check_rate(rate, rate_name)
    patch = L.pair(cfg["patch_size"], "patch_size")
    stride = L.pair(stride or patch, "stride")
    if image_size is None:
        reference = L.pair(reference_image_size or cfg["image_size"], "reference_image_size")
        input_hw = (None, None)
    else:
        reference = input_hw = L.pair(image_size, "image_size")
    grid = L.grid_size(reference, patch, stride, "image_size" if image_size else "reference_image_size")
    if representation_size is not None:
        _check_positive_int(representation_size, "representation_size")
    for units in head_units or ():
        _check_positive_int(units, "head_units")

    use_cls = pooling == "cls" if class_token is None else bool(class_token)
    if pooling == "cls" and not use_cls:
        raise ValueError("`pooling='cls'` needs a class token; got class_token=False.")
    dim, depth = cfg["hidden_dim"], cfg["depth"]
    inputs = keras.Input(shape=(*input_hw, channels), name="images")
    x = inputs
    if include_rescaling:
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(x)
    x = L.PatchEncoder(
        dim,
        patch,
        stride=stride,
        grid_size=grid,
        use_cls_token=use_cls,
        num_registers=num_registers,
        pos_embedding=pos_embedding,
        interpolation=interpolation,
        patch_embedding=patch_embedding,
        name="patch_encoder",
    )(x)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(depth):
        x = L.TransformerBlock(
            cfg["num_heads"],
            cfg["mlp_dim"],
            dropout=dropout,
            attention_dropout=attention_dropout,
            drop_path=drop_path_rate * i / max(depth - 1, 1),
            layer_scale=layer_scale,
            qk_norm=qk_norm,
            activation=activation,
            norm_epsilon=norm_epsilon,
            use_qkv_bias=use_qkv_bias,
            name=f"encoder_block_{i}",
        )(x)
    x = L.layer_norm(norm_epsilon, "encoder_norm")(x)
    if pooling == "map":
        x = L.AttentionPooling(
            cfg["num_heads"], cfg["mlp_dim"], activation, norm_epsilon, name="map_pooling"
        )(x)
    else:
        x = L.TokenPooling(pooling, num_prefix_tokens=int(use_cls) + num_registers, name=f"{pooling}_pooling")(x)
    if representation_size:
        x = keras.layers.Dense(representation_size, activation="tanh", name="pre_logits")(x)
    for i, units in enumerate(head_units or ()):
        x = keras.layers.Dense(units, activation="gelu", name=f"head_dense_{i}")(x)
        x = keras.layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
    if num_classes:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        x = keras.layers.Dense(num_classes, dtype="float32", name="head")(x)
        if classifier_activation:
            x = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, x, name=name or "vit")
