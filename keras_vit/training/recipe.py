"""The training recipe: named recipes, flat settings from recipes, config
files and flags, and the optimizer, schedule and loss they describe.

* `make_optimizer`: AdamW with linear warmup and cosine decay, no weight
  decay on what the model names in `no_weight_decay()` (biases, norms,
  positions, tokens), global gradient-norm clipping, optional EMA and
  gradient accumulation.
* `compile_model`: the optimizer plus a label-smoothed cross-entropy.
* `RECIPES`: named settings, e.g. "digits", the small-data recipe that
  trains a ViT from scratch on the bundled digits; `resolve_recipe` merges
  a recipe, a config file and overrides.
"""

import json
import os
import warnings
from pathlib import Path

import keras

from keras_vit.utils.validation import check_choice

NO_WEIGHT_DECAY = ("bias", "gamma", "beta", "position_embedding", "cls_token", "registers", "probe")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
RESUME_MODES = ("auto", True, False)

# Named recipes: flat settings shared by `train_from_config` and the CLI.
# Model keys go to `build_vit`, data keys to `load_data`, the rest to
# `train`.
RECIPES = {
    # From scratch on scikit-learn's 8x8 digits upsampled to 16 px: one
    # 2x2 patch per original pixel, a narrow 4-block ViT, mean pooling,
    # translations and small rotations, label smoothing, stochastic depth.
    "digits": dict(
        dataset="digits", image_size=16, patch_size=2, hidden_dim=64, depth=4, num_heads=4,
        mlp_dim=128, pooling="gap", dropout=0.1, drop_path_rate=0.1, batch_size=64,
        augment="digits", epochs=50, learning_rate=2e-3, weight_decay=0.05, warmup_epochs=3,
        label_smoothing=0.1, clipnorm=1.0,
    ),
    # Small images (28 to 64 px) and small data: a micro ViT with 4x4
    # patches, strong regularisation and augmentation.
    "small": dict(
        image_size=32, preset="Mu/4", pooling="gap", dropout=0.0, drop_path_rate=0.1,
        batch_size=128, augment="medium", epochs=100, learning_rate=1e-3, weight_decay=0.05,
        warmup_epochs=5, label_smoothing=0.1, clipnorm=1.0,
    ),
    # CIFAR-10 from scratch on an accelerator: ViT-Ti with 4x4 patches,
    # RandAugment + MixUp + CutMix, EMA of the weights, mixed precision.
    "cifar10": dict(
        dataset="cifar10", image_size=32, preset="Ti/4", pooling="gap", drop_path_rate=0.1,
        batch_size=128, augment="strong", epochs=200, learning_rate=1e-3, weight_decay=0.05,
        warmup_epochs=10, label_smoothing=0.1, clipnorm=1.0, ema_momentum=0.9998,
        precision="mixed_float16",
    ),
}
DEFAULT_RECIPE = "digits"
# Names `keras_vit.data.AUGMENTATIONS` defines (listed here so the CLI can
# offer them without importing the data pipeline).
AUGMENT_NAMES = ("none", "digits", "light", "medium", "strong")

def make_schedule(learning_rate, total_steps=None, warmup_steps=0, min_learning_rate=0.0):
    """Linear warmup then cosine decay (a constant rate without `total_steps`).

    Args:
        learning_rate: peak learning rate.
        total_steps: optimizer steps of the whole run, warmup included.
        warmup_steps: steps of linear warmup from 0.
        min_learning_rate: the rate at the end of the cosine.

    Returns:
        A float or a `keras.optimizers.schedules.CosineDecay`.

    Example:
    >>> schedule = make_schedule(1e-3, total_steps=1000, warmup_steps=100)
    >>> float(schedule(100))
    0.001
    """
    if not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
        raise ValueError(f"`learning_rate` must be a positive number. Received: learning_rate={learning_rate!r}")
    if total_steps is None:
        return float(learning_rate)
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"`warmup_steps` must be an int in [0, total_steps={total_steps}). "
            f"Received: warmup_steps={warmup_steps!r}")
    alpha = min_learning_rate / learning_rate
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0, total_steps - warmup_steps, alpha=alpha,
        warmup_target=float(learning_rate), warmup_steps=warmup_steps)


def make_optimizer(
    learning_rate=1e-3,
    *,
    weight_decay=0.05,
    total_steps=None,
    warmup_steps=0,
    min_learning_rate=0.0,
    clipnorm=1.0,
    ema_momentum=None,
    gradient_accumulation_steps=None,
    beta_2=0.999,
    no_weight_decay=NO_WEIGHT_DECAY,
):
    """AdamW with warmup + cosine decay and the ViT weight-decay exclusions.

    Args:
        learning_rate: peak learning rate.
        weight_decay: decoupled weight decay (scaled by the learning rate).
        total_steps: optimizer steps of the run; None keeps the rate
            constant.
        warmup_steps: linear warmup steps.
        min_learning_rate: final learning rate of the cosine.
        clipnorm: global gradient-norm clipping; None turns it off.
        ema_momentum: None, or the momentum of an exponential moving
            average of the weights that replaces them at the end of `fit`.
        gradient_accumulation_steps: None, or the number of batches whose
            gradients are averaged before each update.
        beta_2: Adam's second-moment decay.
        no_weight_decay: variable names (regular expressions) that get no
            weight decay: biases, norm scales and offsets, position
            embeddings, class and register tokens, the MAP probe.

    Returns:
        A `keras.optimizers.AdamW`.

    Example:
    >>> optimizer = make_optimizer(1e-3, total_steps=1000, warmup_steps=100)
    """
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"`weight_decay` must be a number >= 0. Received: weight_decay={weight_decay!r}")
    if clipnorm is not None and (not isinstance(clipnorm, (int, float)) or clipnorm <= 0):
        raise ValueError(f"`clipnorm` must be None or > 0. Received: clipnorm={clipnorm!r}")
    if ema_momentum is not None and not 0 < ema_momentum < 1:
        raise ValueError(f"`ema_momentum` must be None or in (0, 1). Received: ema_momentum={ema_momentum!r}")
    if gradient_accumulation_steps is not None and (
            not isinstance(gradient_accumulation_steps, int) or gradient_accumulation_steps < 1):
        raise ValueError(
            "`gradient_accumulation_steps` must be None or an int >= 1. "
            f"Received: gradient_accumulation_steps={gradient_accumulation_steps!r}")
    optimizer = keras.optimizers.AdamW(
        make_schedule(learning_rate, total_steps, warmup_steps, min_learning_rate),
        weight_decay=weight_decay,
        beta_2=beta_2,
        global_clipnorm=clipnorm,
        use_ema=ema_momentum is not None,
        ema_momentum=ema_momentum or 0.99,
        gradient_accumulation_steps=(
            gradient_accumulation_steps if (gradient_accumulation_steps or 1) > 1 else None),
    )
    optimizer.exclude_from_weight_decay(var_names=list(no_weight_decay))
    return optimizer


def outputs_probabilities(model):
    if hasattr(model, "outputs_logits"):
        return not model.outputs_logits
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax" and last.name == "predictions"


def compile_model(
    model,
    *,
    learning_rate=1e-3,
    weight_decay=0.05,
    total_steps=None,
    warmup_steps=0,
    min_learning_rate=0.0,
    label_smoothing=0.1,
    clipnorm=1.0,
    ema_momentum=None,
    gradient_accumulation_steps=None,
    sparse_labels=False,
    jit_compile="auto",
    steps_per_execution=1,
):
    """Compiles `model` with the recipe's optimizer, loss and accuracy.

    Args:
        model: a classifier returning logits (or softmax probabilities from
            a layer named "predictions").
        learning_rate, weight_decay, total_steps, warmup_steps,
        min_learning_rate, clipnorm, ema_momentum,
        gradient_accumulation_steps: see `make_optimizer`.
        label_smoothing: float in [0, 1); needs one-hot labels.
        sparse_labels: True for int labels (then no label smoothing).
        jit_compile: True, False or "auto" (XLA where supported).
        steps_per_execution: batches run per compiled call.

    Returns:
        The compiled model.

    Example:
    >>> model = compile_model(build_vit(image_size=16, num_classes=10, patch_size=4,
    ...                       hidden_dim=16, depth=1, num_heads=2, mlp_dim=32),
    ...                       learning_rate=1e-3, total_steps=100, warmup_steps=10)
    """
    if not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
        raise ValueError(f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing!r}")
    if sparse_labels and label_smoothing:
        raise ValueError(
            f"`label_smoothing={label_smoothing}` needs one-hot labels; load the data with "
            "label_mode='categorical' or set label_smoothing=0.")
    if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
        raise ValueError(
            f"`steps_per_execution` must be an int >= 1. Received: steps_per_execution={steps_per_execution!r}")
    check_choice(jit_compile, "jit_compile", (True, False, "auto"))
    from_logits = not outputs_probabilities(model)
    if sparse_labels:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    optimizer = make_optimizer(
        learning_rate, weight_decay=weight_decay, total_steps=total_steps,
        warmup_steps=warmup_steps, min_learning_rate=min_learning_rate, clipnorm=clipnorm,
        ema_momentum=ema_momentum, gradient_accumulation_steps=gradient_accumulation_steps,
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy],
                  jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    return model

# --------------------------------------------------------------------------
# Flat configurations: recipes + config files + flags -> a trained run.
# --------------------------------------------------------------------------

DATA_KEYS = ("dataset", "data_dir", "download", "image_size", "batch_size", "validation_split",
             "test_split", "augment", "channels")
MODEL_KEYS = ("preset", "patch_size", "hidden_dim", "depth", "num_heads", "mlp_dim", "pooling",
              "dropout", "drop_path_rate", "num_registers", "pos_embedding")
TRAIN_KEYS = ("epochs", "learning_rate", "weight_decay", "warmup_epochs", "min_learning_rate",
              "label_smoothing", "clipnorm", "ema_momentum", "gradient_accumulation_steps",
              "precision", "jit_compile", "steps_per_execution", "strategy", "run_dir", "resume",
              "seed", "verbose")
CONFIG_KEYS = ("recipe",) + DATA_KEYS + MODEL_KEYS + TRAIN_KEYS
DEFAULTS = dict(
    recipe=DEFAULT_RECIPE, dataset="digits", download=False, image_size=32, batch_size=64,
    validation_split=0.1, test_split=0.2, epochs=10, learning_rate=1e-3, weight_decay=0.05,
    warmup_epochs=0, min_learning_rate=0.0, label_smoothing=0.1, clipnorm=1.0, jit_compile="auto",
    steps_per_execution=1, strategy="auto", resume="auto", seed=0, verbose="auto",
)


def read_config_file(path):
    """Reads a YAML or JSON file of flat settings (keys of `CONFIG_KEYS`;
    dashes and underscores both accepted).

    Args:
        path: a ``.yaml``, ``.yml`` or ``.json`` file.

    Returns:
        dict of settings.

    Example:
    >>> read_config_file("digits.yaml")
    {'epochs': 30, 'hidden_dim': 64}
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"The config file does not exist: {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:  # syntax errors, and tags such as !!python/... that safe_load refuses
            raise ValueError(f"The config file {path} is not valid YAML (or uses tags that are not "
                             f"allowed): {' '.join(str(err).split())}") from None
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"The config file {path} is not valid JSON: {err}") from None
    else:
        raise ValueError(f"The config file must end in .yaml, .yml or .json. Received: {path}")
    if not isinstance(data, dict):
        raise ValueError(f"The config file {path} must hold a mapping of settings, not {type(data).__name__}.")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve_recipe(recipe=None, config_file=None, **overrides):
    """Merges, in increasing priority: `DEFAULTS`, a recipe from `RECIPES`,
    a config file, and keyword overrides (None values are ignored).

    Args:
        recipe: a name from `RECIPES`; defaults to the config file's
            "recipe" or "digits".
        config_file: optional YAML/JSON path (see `read_config_file`).
        **overrides: settings named in `CONFIG_KEYS`.

    Returns:
        dict with every key of `CONFIG_KEYS`.

    Example:
    >>> resolve_recipe("digits", epochs=1)["hidden_dim"]
    64
    """
    from_file = read_config_file(config_file) if config_file else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted((set(from_file) | set(overrides)) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown setting(s): {', '.join(unknown)}. Accepted settings: {', '.join(CONFIG_KEYS)}")
    name = recipe or overrides.get("recipe") or from_file.get("recipe") or DEFAULT_RECIPE
    check_choice(name, "recipe", tuple(RECIPES))
    config = dict.fromkeys(CONFIG_KEYS)
    config.update(DEFAULTS)
    config.update(RECIPES[name])
    config.update(from_file)
    config.update(overrides)
    config["recipe"] = name
    if isinstance(config["epochs"], int) and (config["warmup_epochs"] or 0) >= config["epochs"] > 0:
        warnings.warn(
            f"warmup_epochs={config['warmup_epochs']} is not shorter than epochs={config['epochs']}; "
            f"using warmup_epochs={0.1 * config['epochs']:g} (10% of the run).", stacklevel=2)
        config["warmup_epochs"] = 0.1 * config["epochs"]
    if config["run_dir"] is None:
        dataset = Path(str(config["dataset"])).name or "data"
        config["run_dir"] = os.path.join("runs", f"{dataset}-{name}".replace(":", "_"))
    return config
