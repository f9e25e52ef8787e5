"""The optimizer, schedule and loss a recipe describes.

* `make_schedule`: linear warmup then cosine decay.
* `make_optimizer`: AdamW with the ViT weight-decay exclusions (what the
  model names in `no_weight_decay()`: biases, norms, positions, tokens),
  global gradient-norm clipping, optional EMA and gradient accumulation.
* `fuse_adam_updates`: on TensorFlow, one fused op per weight for Keras'
  Adam and AdamW updates (`make_optimizer` uses it).
* `compile_model`: the optimizer plus a label-smoothed cross-entropy.
"""

import keras

from keras_vit.models.classifier import NO_DECAY_NAME_PATTERNS as NO_WEIGHT_DECAY
from keras_vit.training.recipe import DEFAULTS
from keras_vit.utils.validation import check_choice, strict_keywords


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
    if (isinstance(min_learning_rate, bool) or not isinstance(min_learning_rate, (int, float))
            or not 0 <= min_learning_rate <= learning_rate):
        raise ValueError(
            f"`min_learning_rate` must be a number in [0, learning_rate={learning_rate}]. "
            f"Received: min_learning_rate={min_learning_rate!r}")
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
    learning_rate=DEFAULTS.learning_rate,
    *,
    weight_decay=DEFAULTS.weight_decay,
    total_steps=None,
    warmup_steps=0,
    min_learning_rate=DEFAULTS.min_learning_rate,
    clipnorm=DEFAULTS.clipnorm,
    ema_momentum=DEFAULTS.ema_momentum,
    gradient_accumulation_steps=DEFAULTS.gradient_accumulation_steps,
    beta_2=0.999,
    no_weight_decay=NO_WEIGHT_DECAY,
):
    """AdamW with warmup + cosine decay and the ViT weight-decay exclusions.
    The defaults are `Recipe`'s (`keras_vit.training.recipe.DEFAULTS`).

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
        A `keras.optimizers.AdamW`, with `fuse_adam_updates` on TensorFlow.

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
    return fuse_adam_updates(optimizer)


def fuse_adam_updates(optimizer):
    """Gives a Keras Adam or AdamW, on TensorFlow, an update of one fused
    `ResourceApplyAdam` op per weight (and a weight decay of two); returns
    the optimizer. Its class, config and saved files stay Keras' own.

    Keras' update builds about 20 ops per weight, recomputing the bias
    correction for each: a width-64, depth-4 ViT's train step had some
    3,000 optimizer ops of 5,500, and tracing and first running them cost
    seconds at the start of every run (that model's first `fit` call, the
    optimizer built beforehand, 2 cores: 6.2 s against 10.1 s, medians of
    three fresh processes each). `ResourceApplyAdam` computes Adam as Keras
    writes it, so the weights agree to float rounding. Keras' own update
    still runs on other backends (PyTorch's is already a fused
    `torch._foreach` one), with `amsgrad`, under a `tf.distribute`
    strategy and for sparse gradients.

    Example:
    >>> import numpy as np
    >>> optimizer = fuse_adam_updates(keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.1))
    >>> weight = keras.Variable(np.ones(3, "float32"))
    >>> optimizer.apply([keras.ops.ones(3)], [weight])
    >>> [round(float(w), 4) for w in keras.ops.convert_to_numpy(weight)]
    [0.989, 0.989, 0.989]
    """
    if keras.backend.backend() == "tensorflow" and isinstance(optimizer, keras.optimizers.Adam | keras.optimizers.AdamW):
        import types

        optimizer._backend_update_step = types.MethodType(_fused_update_step, optimizer)
        optimizer._apply_weight_decay = types.MethodType(_fused_weight_decay, optimizer)
    return optimizer


def _fusable(optimizer, grads):
    import tensorflow as tf

    return not optimizer.amsgrad and not tf.distribute.has_strategy() and all(isinstance(g, tf.Tensor) for g in grads)


def _fused_weight_decay(self, variables):
    if self.weight_decay is None or not _fusable(self, []):
        return type(self)._apply_weight_decay(self, variables)
    import tensorflow as tf

    for variable in variables:
        if self._use_weight_decay(variable):
            value = variable.value
            value.assign_sub(value * (tf.cast(self.learning_rate, value.dtype) * tf.cast(self.weight_decay, value.dtype)))


def _fused_update_step(self, grads, trainable_variables, learning_rate):
    if not _fusable(self, grads):
        return type(self)._backend_update_step(self, grads, trainable_variables, learning_rate)
    import tensorflow as tf

    step, shared = tf.cast(self.iterations + 1, "float32"), {}
    for gradient, variable in zip(grads, trainable_variables):
        dtype = variable.dtype
        if dtype not in shared:  # the scalars, once a dtype
            beta_1, beta_2 = (tf.cast(b, dtype) for b in (self.beta_1, self.beta_2))
            shared[dtype] = dict(
                beta1_power=tf.pow(beta_1, tf.cast(step, dtype)), beta2_power=tf.pow(beta_2, tf.cast(step, dtype)),
                lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype))
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.value.handle, m=self._momentums[index].value.handle, v=self._velocities[index].value.handle,
            grad=tf.cast(gradient, dtype), use_locking=False, **shared[dtype])


def outputs_probabilities(model):
    if hasattr(model, "outputs_logits"):
        return not model.outputs_logits
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax" and last.name == "predictions"


@strict_keywords(make_optimizer, exclude=("no_weight_decay",))
def compile_model(model, *, label_smoothing=DEFAULTS.label_smoothing, sparse_labels=False,
                  jit_compile=DEFAULTS.jit_compile, steps_per_execution=DEFAULTS.steps_per_execution,
                  **optimizer):
    """Compiles `model` with the recipe's optimizer, loss and accuracy. The
    defaults are `Recipe`'s (`keras_vit.training.recipe.DEFAULTS`).

    Args:
        model: a classifier returning logits (or softmax probabilities from
            a layer named "predictions").
        **optimizer: `make_optimizer`'s arguments (learning_rate,
            weight_decay, total_steps, warmup_steps, min_learning_rate,
            clipnorm, ema_momentum, gradient_accumulation_steps, beta_2).
        label_smoothing: float in [0, 1); needs one-hot labels.
        sparse_labels: True for int labels (then no label smoothing).
        jit_compile: True, False or "auto". "auto" is Keras' choice: XLA
            on JAX, and on TensorFlow only with a GPU and no tf.distribute
            strategy (a CPU-only TensorFlow runs without it); PyTorch runs
            eagerly. True compiles everywhere: XLA on TensorFlow and JAX,
            `torch.compile` on PyTorch, which on CPU compiles for minutes.
        steps_per_execution: batches run per compiled call (TensorFlow and
            JAX; must be 1 on PyTorch).

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
    if steps_per_execution > 1 and keras.backend.backend() == "torch":
        raise ValueError(
            f"`steps_per_execution={steps_per_execution}` runs several batches per compiled call on the "
            "TensorFlow and JAX backends only; Keras' PyTorch backend runs one batch per call. "
            "Use steps_per_execution=1, or KERAS_BACKEND=jax or tensorflow.")
    check_choice(jit_compile, "jit_compile", (True, False, "auto"))
    from_logits = not outputs_probabilities(model)
    if sparse_labels:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    optimizer = make_optimizer(**optimizer)
    if hasattr(model, "no_weight_decay"):  # the model names its own exemptions (keras_vit models do)
        optimizer.exclude_from_weight_decay(var_list=model.no_weight_decay())
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy],
                  jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    return model

# --------------------------------------------------------------------------
# Flat configurations: recipes + config files + flags -> a trained run.
# --------------------------------------------------------------------------
