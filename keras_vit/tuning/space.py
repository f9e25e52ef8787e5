"""The search space's names, without KerasTuner: the default space, the
entries sampled on a log scale, the objectives and the tuners. The
command line builds its `keras-vit tune` options from these before any
command runs, so that no other command pays for importing KerasTuner."""

# The default search space. A list is a choice; a (low, high) tuple is a
# range, sampled on a log scale for the entries in LOG_SCALE. Every entry
# can be narrowed or fixed through `ViTHyperModel(space=..., fixed=...)`.
DEFAULT_SPACE = {
    # architecture
    "patch_size": [2, 4],
    "hidden_dim": [32, 48, 64, 96],
    "num_heads": [2, 3, 4],
    "depth": (2, 6),
    "mlp_ratio": [2, 4],
    "pooling": ["cls", "gap"],
    "pos_embedding": ["learned", "sincos"],
    "drop_path_rate": (0.0, 0.2),
    # "stem": 3x3 stride-2 convolutions (`ConvStem`) make the patches, as
    # many as log2(patch_size), channels doubling up to the width
    "conv_stem": ["none"],
    # recipe
    "learning_rate": (3e-4, 3e-3),
    "weight_decay": (1e-3, 1e-1),
    "warmup_epochs": (0.0, 2.0),  # epochs of linear warmup, as `Recipe.warmup_epochs`
    "label_smoothing": [0.0, 0.1],
    "augment": [0.0, 0.1, 0.3],
    "batch_size": [32, 64],
}
LOG_SCALE = ("learning_rate", "weight_decay")
OBJECTIVES = ("val_accuracy", "val_loss", "accuracy", "loss")
# KerasTuner's tuners by name (`keras_vit.tuning.hypermodel.TUNERS` holds the classes)
TUNER_NAMES = ("random", "hyperband", "bayesian")
