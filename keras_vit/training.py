"""The training recipe, run directories that resume, and `keras-vit train`.

The recipe is a thin layer over `model.compile` / `model.fit`:

* `make_optimizer`: AdamW with linear warmup and cosine decay, no weight
  decay on biases, norms, position embeddings and tokens, global
  gradient-norm clipping, optional EMA and gradient accumulation.
* `compile_model`: the optimizer plus a label-smoothed cross-entropy.
* `get_strategy` / `set_precision`: `tf.distribute` strategies (or
  `keras.distribution.DataParallel` on JAX) and mixed precision.
* `train`: builds (or takes) a model, compiles and fits it with a run
  directory that holds everything and resumes after a crash.
* `RECIPES`: named settings, e.g. "digits", the small-data recipe that
  trains a ViT from scratch on the bundled digits.

A run directory holds::

    config.json          the resolved configuration
    checkpoints/         last.keras and best.keras
    backup/              the BackupAndRestore state (weights + metadata)
    logs/                TensorBoard logs
    history.csv          one row per epoch
    history.png          loss and accuracy curves
    metrics.json         test (and validation) metrics
    model.keras          the final model

Every file is written under a temporary name in its own folder and renamed
into place, so a kill at any moment never leaves a half-written file where
a good one was.
"""

import contextlib
import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
import sys
import time
import traceback
import warnings
from pathlib import Path

import keras

from keras_vit.layers import check_choice

NO_WEIGHT_DECAY = ("bias", "gamma", "beta", "position_embedding", "cls_token", "registers", "probe")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "mirrored", "multi_worker", "tpu")
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


# --------------------------------------------------------------------------
# Atomic files.
# --------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; renames it into place when
    the block succeeds and removes it when it fails.

    The temporary name keeps the file's suffixes (".keras", ".weights.h5")
    because Keras checks them.

    Args:
        path: the final file path.

    Example:
    >>> with atomic_path("run/metrics.json") as tmp:
    ...     Path(tmp).write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.remove(tmp)  # Keras refuses some existing files; the name stays unique.
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, data):
    """Writes `data` as JSON atomically. Example: `write_json("a.json", {})`."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, default=str) + "\n")


def write_history_csv(path, rows):
    """Writes history rows (dicts) as CSV atomically, one row per epoch.

    Example: `write_history_csv("history.csv", [{"epoch": 1, "loss": 0.5}])`.
    """
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue())


def plot_history(path, rows):
    """Plots loss and accuracy curves of history rows to a PNG atomically.

    Uses matplotlib's Agg canvas; the global backend is left alone.

    Example: `plot_history("history.png", [{"epoch": 1, "loss": 0.5}])`.
    """
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [row.get(prefix + metric) for row in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker="o", markersize=3,
                        label="validation" if prefix else "train")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# --------------------------------------------------------------------------
# The recipe: optimizer, loss, precision, strategy.
# --------------------------------------------------------------------------


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


def _outputs_probabilities(model):
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
    from_logits = not _outputs_probabilities(model)
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


def set_precision(precision):
    """Sets Keras' global dtype policy; build models after calling it.

    Keras scales the loss itself under "mixed_float16".

    Args:
        precision: "float32", "mixed_float16" or "mixed_bfloat16".

    Example:
    >>> set_precision("mixed_bfloat16"); set_precision("float32")
    """
    check_choice(precision, "precision", PRECISIONS)
    keras.mixed_precision.set_global_policy(precision)


def _tf_config():
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def worker_info():
    """(task index, number of workers, is chief) from `TF_CONFIG`.

    Example:
    >>> worker_info()  # without TF_CONFIG
    (0, 1, True)
    """
    config = _tf_config()
    cluster, task = config.get("cluster", {}), config.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return index, max(workers, 1), is_chief


def get_strategy(strategy="auto"):
    """Returns the distribution strategy to build and train under.

    On TensorFlow: "auto" picks `MultiWorkerMirroredStrategy` when
    `TF_CONFIG` names several workers, `MirroredStrategy` with several
    GPUs, else the default strategy; "mirrored", "multi_worker" (reads
    `TF_CONFIG`) and "tpu" ask for one. A multi-worker strategy must be
    created before any other TensorFlow work in the process.

    On JAX: "auto" sets `keras.distribution.DataParallel` when there are
    several devices and returns None; the other names raise.

    Args:
        strategy: "auto", "mirrored", "multi_worker", "tpu", or a
            `tf.distribute.Strategy` (returned as is).

    Returns:
        A `tf.distribute.Strategy`, or None on JAX.

    Example:
    >>> strategy = get_strategy("auto")
    >>> with strategy.scope():
    ...     model = build_vit("Mu/4", image_size=32, num_classes=10)
    """
    if not isinstance(strategy, str):
        return strategy
    check_choice(strategy, "strategy", STRATEGIES)
    backend = keras.backend.backend()
    if backend == "jax":
        if strategy != "auto":
            raise ValueError(
                f"`strategy={strategy!r}` needs the TensorFlow backend; on JAX use "
                "strategy='auto' (keras.distribution.DataParallel over all devices).")
        devices = keras.distribution.list_devices()
        if len(devices) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return None
    if backend != "tensorflow":
        if strategy != "auto":
            raise ValueError(f"`strategy={strategy!r}` needs the TensorFlow backend (backend: {backend}).")
        return None
    import tensorflow as tf

    if strategy == "auto":
        if worker_info()[1] > 1:
            strategy = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            strategy = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError) as err:
        raise ValueError(f"`strategy='tpu'` but no TPU was found: {err}") from None
    return tf.distribute.TPUStrategy(resolver)


# --------------------------------------------------------------------------
# Run directory state: an atomic BackupAndRestore that also keeps the
# history and the best score, and writes the per-epoch artifacts.
# --------------------------------------------------------------------------


def _float(value):
    return float(keras.ops.convert_to_numpy(value))


class RunBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose state survives `kill -9` at any moment.

    At the end of each epoch it writes, in this order: `last.keras` (and
    `best.keras` when the monitored metric improved), the weights with the
    optimizer state under a new per-epoch name, then `training_metadata.json`
    (epoch, weights file, history rows, best score), which is the commit
    point; then `history.csv` and `history.png`. Every write is atomic.
    On `fit` start it restores the last committed state.

    Args:
        run_dir: the run directory.
        monitor: metric for `best.keras`, e.g. "val_accuracy".
        artifacts: bool, also write checkpoints, history.csv and
            history.png (False on non-chief workers).

    Example:
    >>> model.fit(ds, epochs=10, callbacks=[RunBackup("runs/a")])
    """

    def __init__(self, run_dir, monitor="val_accuracy", artifacts=True):
        self.run_dir = Path(run_dir)
        super().__init__(backup_dir=str(self.run_dir / "backup"), save_freq="epoch",
                         delete_checkpoint=False)
        self.monitor = monitor
        self.artifacts = artifacts
        self.history_rows = []
        self.best = None
        self.restored_epoch = 0
        self.state = self.read_state(run_dir)

    @staticmethod
    def read_state(run_dir):
        """The committed backup metadata of `run_dir`, or None."""
        path = Path(run_dir) / "backup" / "training_metadata.json"
        return json.loads(path.read_text()) if path.exists() else None

    def on_train_begin(self, logs=None):
        state = self.state
        if not state:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(Path(self.backup_dir) / state["weights"])
        self.model._initial_epoch = self.restored_epoch = state["epoch"]
        self.history_rows = list(state["history"])
        self.best = state.get("best")

    def _improved(self, value):
        if value is None:
            return False
        if self.best is None:
            return True
        return value < self.best if "loss" in self.monitor else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"epoch": epoch + 1, **{k: _float(v) for k, v in logs.items()}}
        row["learning_rate"] = _float(self.model.optimizer.learning_rate)
        self.history_rows.append(row)
        checkpoints = self.run_dir / "checkpoints"
        if self.artifacts:
            with atomic_path(checkpoints / "last.keras") as tmp:
                self.model.save(tmp)
        value = row.get(self.monitor)
        if self._improved(value):
            self.best = value
            if self.artifacts:
                with atomic_path(checkpoints / "best.keras") as tmp:
                    self.model.save(tmp)
        backup = Path(self.backup_dir)
        weights = f"epoch-{epoch + 1:04d}.weights.h5"
        with atomic_path(backup / weights) as tmp:
            self.model.save_weights(tmp)
        write_json(backup / "training_metadata.json", dict(
            epoch=epoch + 1, batch=0, weights=weights, history=self.history_rows,
            monitor=self.monitor, best=self.best))
        for old in backup.glob("epoch-*.weights.h5"):
            if old.name != weights:
                old.unlink()
        if self.artifacts:
            write_history_files(self.run_dir, self.history_rows)

    def on_train_batch_end(self, batch, logs=None):
        pass


def write_history_files(run_dir, rows):
    """Writes `history.csv` and `history.png` of `run_dir` from history rows.

    Example: `write_history_files("runs/a", [{"epoch": 1, "loss": 0.5}])`.
    """
    if rows:
        write_history_csv(Path(run_dir) / "history.csv", rows)
        plot_history(Path(run_dir) / "history.png", rows)


# --------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Args:
        model: the trained model (EMA weights when EMA was on).
        history: list of per-epoch dicts (all epochs, resumed ones too).
        test_metrics: dict of test metrics, or None without test data.
        run_dir: the run directory.
        initial_epoch: the epoch training started from (> 0 after a resume).

    Example:
    >>> result = train(model, data, epochs=1, run_dir="runs/a")
    >>> result.test_metrics["accuracy"]
    """

    model: keras.Model
    history: list
    test_metrics: dict
    run_dir: str
    initial_epoch: int = 0


def _split_data(data):
    """(train, validation, test, info) from `load_data`'s tuple, a tuple of
    datasets or a single training dataset."""
    if isinstance(data, (tuple, list)):
        if len(data) == 4:
            return tuple(data)
        if len(data) in (2, 3):
            return (*data, *[None] * (4 - len(data)))
        raise ValueError(
            "`data` must be load_data's (train, validation, test, info), a tuple "
            f"(train, validation[, test]) or a training dataset. Received a tuple of {len(data)}.")
    return data, None, None, None


def _is_sparse(dataset):
    spec = getattr(dataset, "element_spec", None)
    if isinstance(spec, tuple) and len(spec) >= 2:
        return spec[1].shape.rank == 1
    return False


def _comparable(config):
    ignored = {"epochs", "verbose", "resume", "run_dir", "config"}
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in ignored}, default=str))


def _prepare_run_dir(run_dir, config, resume):
    """Checks and prepares `run_dir`; returns True when a run resumes."""
    check_choice(resume, "resume", RESUME_MODES)
    run_dir = Path(run_dir)
    state = RunBackup.read_state(run_dir)
    if resume is False:
        for name in ("backup", "checkpoints", "logs"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in ("history.csv", "history.png", "metrics.json", "model.keras", "config.json"):
            (run_dir / name).unlink(missing_ok=True)
        state = None
    elif resume is True and state is None:
        raise ValueError(
            f"`resume=True` but the run directory {run_dir} holds no backup to resume from. "
            "Use resume='auto' to start a new run there.")
    if state is not None and (run_dir / "config.json").exists():
        saved = _comparable(json.loads((run_dir / "config.json").read_text()))
        current = _comparable(config)
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            raise ValueError(
                f"The run directory {run_dir} holds a run with a different configuration "
                f"(changed: {', '.join(changed)}). Use another run directory, the same "
                "settings, or resume=False to start over there.")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config)
    return state is not None


def _prepare_multi_worker(model, train_ds):
    """Lets Keras' `fit` run under `MultiWorkerMirroredStrategy`.

    Keras 3 reduces the per-replica step logs of that strategy with a mean
    along axis 0, which scalars do not have, and reduces a nested batch
    to build the model, which the strategy cannot do. So: give each step's
    logs a length-1 axis, build the model, loss, metrics and optimizer on
    one local batch, and let `fit` take the strategy from the enclosing
    scope.
    """
    def with_batch_axis(step):
        def wrapped(data):
            return {k: keras.ops.expand_dims(v, 0) for k, v in step(data).items()}
        return wrapped

    model.train_step = with_batch_axis(model.train_step)
    model.test_step = with_batch_axis(model.test_step)
    images, labels = next(iter(train_ds))
    model.test_on_batch(images, labels)
    model._distribute_strategy = None


def train(
    model,
    data,
    *,
    epochs,
    run_dir,
    learning_rate=1e-3,
    weight_decay=0.05,
    warmup_epochs=0,
    min_learning_rate=0.0,
    label_smoothing=0.1,
    clipnorm=1.0,
    ema_momentum=None,
    gradient_accumulation_steps=None,
    precision=None,
    jit_compile="auto",
    steps_per_execution=1,
    strategy=None,
    steps_per_epoch=None,
    resume="auto",
    monitor="val_accuracy",
    seed=None,
    callbacks=None,
    config=None,
    verbose="auto",
):
    """Compiles and fits a model with the recipe, in a resumable run directory.

    Re-running the same call after the process died (even by `kill -9`)
    resumes from the last completed epoch; a finished run re-evaluates and
    rewrites its artifacts without training again.

    Args:
        model: a `keras.Model`, or a function returning one. Pass a function
            to build the model under `precision` and `strategy`.
        data: `load_data`'s (train, validation, test, info), a tuple
            (train, validation[, test]) or a training dataset.
        epochs: int, total epochs of the run (resumed epochs included).
        run_dir: path of the run directory.
        learning_rate, weight_decay, min_learning_rate, label_smoothing,
        clipnorm, ema_momentum, gradient_accumulation_steps: the recipe, see
            `make_optimizer` and `compile_model`.
        warmup_epochs: epochs (may be fractional) of linear warmup.
        precision: None (keep the global policy), "float32",
            "mixed_float16" or "mixed_bfloat16".
        jit_compile: True, False or "auto".
        steps_per_execution: batches per compiled call.
        strategy: None, a name accepted by `get_strategy`, or a
            `tf.distribute.Strategy`.
        steps_per_epoch: batches per epoch, needed only when the training
            dataset's length is unknown.
        resume: "auto" resumes when `run_dir` holds a backup of the same
            configuration; True requires one; False starts over, deleting
            the earlier run's state.
        monitor: validation metric that selects `best.keras`.
        seed: optional int for `keras.utils.set_random_seed`.
        callbacks: extra Keras callbacks.
        config: optional dict stored in `config.json` (e.g. model and data
            settings); part of the resume check.
        verbose: `fit`'s verbosity.

    Returns:
        A `TrainResult`.

    Example:
    >>> data = load_data("digits", 16, 64)
    >>> result = train(lambda: build_vit(image_size=16, num_classes=10, channels=1,
    ...                patch_size=4, hidden_dim=32, depth=2, num_heads=2, mlp_dim=64),
    ...                data, epochs=2, run_dir="runs/digits")
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive int. Received: epochs={epochs!r}")
    if not isinstance(warmup_epochs, (int, float)) or not 0 <= warmup_epochs < epochs:
        raise ValueError(
            f"`warmup_epochs` must be in [0, epochs={epochs}). Received: warmup_epochs={warmup_epochs!r}")
    if precision is not None:
        check_choice(precision, "precision", PRECISIONS)
    train_ds, val_ds, test_ds, info = _split_data(data)
    if steps_per_epoch is None:
        steps_per_epoch = int(train_ds.cardinality())
        if steps_per_epoch < 0:
            raise ValueError(
                "The training dataset's length is unknown; pass `steps_per_epoch` (batches per epoch).")
    if val_ds is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    total_steps = steps_per_epoch * epochs
    recipe = dict(
        epochs=epochs, learning_rate=learning_rate, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, min_learning_rate=min_learning_rate,
        label_smoothing=label_smoothing, clipnorm=clipnorm, ema_momentum=ema_momentum,
        gradient_accumulation_steps=gradient_accumulation_steps, precision=precision,
        jit_compile=jit_compile, steps_per_execution=steps_per_execution,
        strategy=strategy if isinstance(strategy, (str, type(None))) else type(strategy).__name__,
        steps_per_epoch=steps_per_epoch, monitor=monitor, seed=seed,
    )
    strategy = get_strategy(strategy) if strategy is not None else None
    worker, num_workers, is_chief = worker_info()
    chief_dir = Path(run_dir)
    # Non-chief workers keep their own state so that files never collide.
    run_dir = chief_dir if is_chief else chief_dir / "workers" / f"worker_{worker}"
    full_config = {**(config or {}), **recipe, "data": info.to_dict() if info else None}
    _prepare_run_dir(run_dir, full_config, resume)

    if seed is not None:
        keras.utils.set_random_seed(seed)
    def scope():
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    with scope():
        if callable(model) and not isinstance(model, keras.Model):
            previous = keras.mixed_precision.global_policy()
            if precision:
                set_precision(precision)
            try:
                model = model()
            finally:
                keras.mixed_precision.set_global_policy(previous)
        elif precision and model.dtype_policy.name != precision:
            raise ValueError(
                f"`precision={precision!r}` but the model was built with the "
                f"{model.dtype_policy.name!r} policy. Pass a function that builds the model, "
                "or build it after set_precision().")
        compile_model(
            model, learning_rate=learning_rate, weight_decay=weight_decay,
            total_steps=total_steps, warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
            min_learning_rate=min_learning_rate, label_smoothing=label_smoothing,
            clipnorm=clipnorm, ema_momentum=ema_momentum,
            gradient_accumulation_steps=gradient_accumulation_steps,
            sparse_labels=_is_sparse(train_ds), jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
    backup = RunBackup(run_dir, monitor=monitor, artifacts=True)
    all_callbacks = [
        backup,
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs")),
        *(callbacks or []),
    ]
    start = time.time()
    metrics = {}
    with scope():
        if num_workers > 1 and strategy is not None:
            _prepare_multi_worker(model, train_ds)
        model.fit(
            train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
            callbacks=all_callbacks, verbose=verbose, shuffle=False,  # the dataset shuffles
        )
        train_seconds = time.time() - start
        for split, ds in (("validation", val_ds), ("test", test_ds)):
            if ds is not None:
                logs = model.evaluate(ds, verbose=0, return_dict=True)
                metrics[split] = {k: _float(v) for k, v in logs.items()}
    write_history_files(run_dir, backup.history_rows)
    write_json(run_dir / "metrics.json", dict(
        **metrics, epochs=len(backup.history_rows), resumed_from_epoch=backup.restored_epoch,
        best={monitor: backup.best}, last_session_seconds=round(train_seconds, 2),
        num_workers=num_workers,
    ))
    with atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)
    return TrainResult(model=model, history=backup.history_rows, test_metrics=metrics.get("test"),
                       run_dir=str(run_dir), initial_epoch=backup.restored_epoch)


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

        data = yaml.safe_load(text)
    elif path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"The config file must end in .yaml, .yml or .json. Received: {path}")
    if not isinstance(data, dict):
        raise ValueError(f"The config file {path} must hold a mapping of settings, not {type(data).__name__}.")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve_config(recipe=None, config_file=None, **overrides):
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
    >>> resolve_config("digits", epochs=1)["hidden_dim"]
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


def train_from_config(config):
    """Loads the data, builds a ViT and trains it from a flat configuration.

    Args:
        config: dict from `resolve_config`.

    Returns:
        A `TrainResult`.

    Example:
    >>> result = train_from_config(resolve_config("digits", epochs=1))
    """
    from keras_vit.data import load_data
    from keras_vit.models import build_vit

    strategy = get_strategy(config["strategy"])  # before any other TF work
    train_ds, val_ds, test_ds, info = load_data(
        config["dataset"], config["image_size"], config["batch_size"],
        validation_split=config["validation_split"], test_split=config["test_split"],
        seed=config["seed"], augment=config["augment"], channels=config["channels"],
        data_dir=config["data_dir"], download=config["download"],
    )
    model_kwargs = {k: config[k] for k in MODEL_KEYS if k != "preset" and config[k] is not None}

    def build():
        return build_vit(config["preset"], image_size=config["image_size"],
                         num_classes=info.num_classes, channels=info.channels, **model_kwargs)

    return train(
        build, (train_ds, val_ds, test_ds, info),
        **{k: config[k] for k in TRAIN_KEYS if k not in ("strategy",)},
        strategy=strategy, config=config,
    )


# --------------------------------------------------------------------------
# `keras-vit train`
# --------------------------------------------------------------------------


def _augment_arg(value):
    try:
        return float(value)
    except ValueError:
        return value


def _jit_arg(value):
    return {"true": True, "false": False, "auto": "auto"}[value.lower()]


def add_cli(subparsers):
    """Registers the `keras-vit train` sub-command.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_cli(parser.add_subparsers())
    """
    from keras_vit.data import AUGMENTATIONS
    from keras_vit.models import PRESETS, POOLINGS

    parser = subparsers.add_parser(
        "train", help="Train a ViT (default: from scratch on the bundled digits).",
        description=(
            "Train a Vision Transformer in a run directory that resumes after a crash. "
            "Settings come from a recipe, then --config FILE, then the flags; flags left "
            "out keep the recipe's values. Re-running the same command resumes."),
    )
    g = parser.add_argument_group("recipe and run")
    g.add_argument("--recipe", choices=sorted(RECIPES), help=f"named settings (default: {DEFAULT_RECIPE})")
    g.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings (keys as the flags, with _)")
    g.add_argument("--run-dir", help="run directory (default: runs/<dataset>-<recipe>)")
    resume = g.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_const", const=True,
                        help="require a backup in --run-dir and resume from it "
                             "(default: resume when one exists)")
    resume.add_argument("--restart", dest="resume", action="store_const", const=False,
                        help="delete the earlier run's state in --run-dir and start over")
    g.add_argument("--seed", type=int, help="seed of the splits, shuffles and initial weights (default: 0)")
    g.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras progress output (default: bar)")
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", help="'digits' (default), a TFDS name, an image folder or an .npz file")
    g.add_argument("--data-dir", help="TFDS data directory")
    g.add_argument("--download", action="store_const", const=True,
                   help="let TFDS download a missing dataset (needs network)")
    g.add_argument("--image-size", type=int, help="images are resized to this size")
    g.add_argument("--batch-size", type=int, help="batch size")
    g.add_argument("--validation-split", type=float, help="fraction of train held out for validation")
    g.add_argument("--test-split", type=float, help="fraction held out for testing where there is no test split")
    g.add_argument("--augment", type=_augment_arg,
                   help=f"augmentation: one of {', '.join(AUGMENTATIONS)} or a strength in [0, 1]")
    g.add_argument("--channels", type=int, choices=(1, 3), help="convert images to 1 or 3 channels")
    g = parser.add_argument_group("model")
    g.add_argument("--preset", choices=list(PRESETS), metavar="PRESET",
                   help=f"ViT preset: {', '.join(PRESETS)}")
    for flag, kind, text in (
        ("--patch-size", int, "patch size"), ("--hidden-dim", int, "token width"),
        ("--depth", int, "number of transformer blocks"), ("--num-heads", int, "attention heads"),
        ("--mlp-dim", int, "MLP width"), ("--dropout", float, "dropout rate"),
        ("--drop-path-rate", float, "stochastic depth rate of the last block"),
        ("--num-registers", int, "register tokens"),
    ):
        g.add_argument(flag, type=kind, help=text)
    g.add_argument("--pooling", choices=POOLINGS, help="cls, gap or map pooling")
    g.add_argument("--pos-embedding", choices=("learned", "sincos", "none"), help="position embeddings")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="total epochs")
    g.add_argument("--learning-rate", type=float, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (not on biases, norms, tokens)")
    g.add_argument("--warmup-epochs", type=float, help="epochs of linear warmup before cosine decay")
    g.add_argument("--min-learning-rate", type=float, help="learning rate at the end of the cosine")
    g.add_argument("--label-smoothing", type=float, help="label smoothing")
    g.add_argument("--clipnorm", type=float, help="global gradient-norm clipping")
    g.add_argument("--ema-momentum", type=float, help="EMA of the weights with this momentum")
    g.add_argument("--gradient-accumulation-steps", "--grad-accum", type=int,
                   help="batches whose gradients are averaged per update")
    g = parser.add_argument_group("hardware")
    g.add_argument("--precision", choices=PRECISIONS, help="float32 (default) or mixed precision")
    g.add_argument("--jit-compile", type=_jit_arg, metavar="{auto,true,false}", help="XLA compilation")
    g.add_argument("--steps-per-execution", type=int, help="batches per compiled call")
    g.add_argument("--strategy", choices=STRATEGIES, help="distribution strategy (multi_worker reads TF_CONFIG)")
    parser.set_defaults(func=_run_cli, _parser=parser)
    return parser


def _print_table(title, metrics):
    print(f"\n{title}")
    width = max(len(k) for k in metrics)
    print(f"  {'metric'.ljust(width)}  value")
    for key, value in metrics.items():
        print(f"  {key.ljust(width)}  {value:.4f}")


def _run_cli(args):
    parser = args._parser
    settings = {k: getattr(args, k, None) for k in CONFIG_KEYS if k != "recipe"}
    try:
        config = resolve_config(args.recipe, args.config, **settings)
    except ValueError as err:
        parser.error(str(err))
    try:
        result = train_from_config(config)
    except ValueError as err:
        # Our own checks end in this package: print them plainly. Errors from
        # deeper down keep their traceback.
        origin = traceback.extract_tb(err.__traceback__)[-1].filename
        if not origin.startswith(str(Path(__file__).parent)):
            raise
        print(f"keras-vit train: error: {err}", file=sys.stderr)
        return 2
    if result.test_metrics:
        _print_table(f"Test metrics ({len(result.history)} epochs, run dir {result.run_dir})",
                     result.test_metrics)
    return 0
