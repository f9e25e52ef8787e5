"""The benchmark configurations and the two contenders built from them.

Both contenders compute the same function: pixels in [0, 255] are rescaled to
[-1, 1], cut into patches by one strided convolution, given a class token and
learned positions, passed through `depth` pre-norm blocks (fused or separate
QKV projections, exact GELU MLP), a final LayerNorm, and a linear head on the
class token. `build_contender` checks that both have the same parameter count.
"""

import dataclasses

import keras

from keras_vit import build_vit

CONTENDERS = ("keras_vit", "keras_hub")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One model configuration of the suite.

    Args:
        name: short name used on the command line and in the tables.
        image_size: square image side in pixels.
        patch_size: square patch side.
        hidden_dim, depth, num_heads, mlp_dim: the transformer's size.
        batch_size: images per step.
        num_classes: width of the linear head.
        dtype_policy: Keras dtype policy, "float32" or "mixed_bfloat16".
        steps: timed steps per repeat (train and inference each).

    Example:
    >>> CONFIGS["ti"].tokens
    65
    """

    name: str
    image_size: int
    patch_size: int
    hidden_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    batch_size: int
    num_classes: int = 10
    dtype_policy: str = "float32"
    steps: int = 3

    @property
    def tokens(self):
        """Sequence length: patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def replace(self, **changes):
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


CONFIGS = {
    # The Ti-like CIFAR configuration: width 192, depth 6, 3 heads.
    "ti": BenchConfig("ti", 32, 4, 192, 6, 3, 768, batch_size=128, steps=4),
    # ViT-S/16 at 224 px with a small batch (CPU-sized).
    "s16": BenchConfig("s16", 224, 16, 384, 12, 6, 1536, batch_size=8, num_classes=1000, steps=2),
    # The GPU configuration: ViT-B/16, 224 px, bf16, batch 256.
    "b16-gpu": BenchConfig(
        "b16-gpu", 224, 16, 768, 12, 12, 3072, batch_size=256, num_classes=1000,
        dtype_policy="mixed_bfloat16", steps=20,
    ),
    # A tiny configuration for smoke tests of the suite itself.
    "tiny": BenchConfig("tiny", 16, 4, 32, 2, 2, 64, batch_size=4, steps=2),
}


def build_keras_vit(cfg):
    """`build_vit` with the configuration's size (class token, linear head)."""
    return build_vit(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_dim=cfg.hidden_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_dim=cfg.mlp_dim,
        num_classes=cfg.num_classes,
        pooling="cls",
        name="keras_vit",
    )


def build_keras_hub(cfg):
    """keras-hub's `ViTBackbone` between the same rescaling and linear head."""
    try:
        import keras_hub
    except ImportError as err:  # pragma: no cover - depends on the extra
        raise ImportError(
            "The keras_hub contender needs keras-hub: pip install 'keras-vision-transformer[benchmarks]' "
            "or pass --contenders keras_vit."
        ) from err

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(cfg.image_size, cfg.image_size, 3),
        patch_size=cfg.patch_size,
        num_layers=cfg.depth,
        num_heads=cfg.num_heads,
        hidden_dim=cfg.hidden_dim,
        mlp_dim=cfg.mlp_dim,
        use_class_token=True,
    )
    inputs = keras.Input((cfg.image_size, cfg.image_size, 3), name="images")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inputs)
    x = backbone(x)[:, 0]
    outputs = keras.layers.Dense(cfg.num_classes, dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name="keras_hub")


BUILDERS = {"keras_vit": build_keras_vit, "keras_hub": build_keras_hub}


def seed_everything(seed):
    """Seeds Python, NumPy and Keras; leaves TensorFlow alone on other
    backends (`keras.utils.set_random_seed` imports it whenever installed)."""
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)


def build_contender(name, cfg, jit_compile):
    """Builds and compiles one contender for training.

    Args:
        name: "keras_vit" or "keras_hub".
        cfg: a `BenchConfig`.
        jit_compile: bool, XLA compilation of the train and predict steps.

    Returns:
        The compiled `keras.Model` (AdamW, sparse cross-entropy on logits).

    Example:
    >>> model = build_contender("keras_vit", CONFIGS["tiny"], jit_compile=False)
    """
    if name not in BUILDERS:
        raise ValueError(f"Unknown contender: {name!r}. Accepted values: {', '.join(CONTENDERS)}")
    keras.mixed_precision.set_dtype_policy(cfg.dtype_policy)
    try:
        seed_everything(0)
        model = BUILDERS[name](cfg)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model
