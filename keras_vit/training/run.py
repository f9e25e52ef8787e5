"""`train`: a model, data and a recipe in a run directory that resumes.

A run directory holds::

    config.json          the resolved configuration
    checkpoints/         best.keras (written when the monitored metric improves)
    backup/              the resume state: weights with the optimizer, metadata
    logs/                TensorBoard logs
    history.csv          one row per epoch
    history.png          loss and accuracy curves
    metrics.json         test (and validation) metrics
    model.keras          the final model

Every file is written under a temporary name and renamed into place
(`keras_vit.utils.io`), so a kill at any moment never leaves a half-written
file where a good one was.
"""

import contextlib
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import keras

from keras_vit.training.distribute import PRECISIONS, get_strategy, prepare_multi_worker, set_precision, worker_info
from keras_vit.training.recipe import MODEL_KEYS, TRAIN_KEYS, compile_model
from keras_vit.utils.io import atomic_path, new_figure, remove_stale_temporaries, save_figure, write_csv, write_json
from keras_vit.utils.locks import exclusive_lock
from keras_vit.utils.validation import check_choice, check_positive_int

RESUME_MODES = ("auto", True, False)


def to_float(value):
    return float(keras.ops.convert_to_numpy(value))


class RunBackup(keras.callbacks.Callback):
    """The resume state of a run directory, which survives `kill -9` at any
    moment.

    At the end of each epoch it writes only what resuming needs and what
    changed: `best.keras` when the monitored metric improved, the weights
    with the optimizer state under a new per-epoch name, then
    `training_metadata.json` (epoch, weights file, history rows, best
    score), which is the commit point; then `history.csv` and
    `history.png`. Every write is atomic. On `fit` start it restores the
    last committed state. (The full model, optimizer included, is not saved
    every epoch: for ViT-B that would be gigabytes an epoch.)

    Args:
        run_dir: the run directory.
        monitor: metric for `best.keras`, e.g. "val_accuracy".
        artifacts: bool, also write checkpoints, history.csv and
            history.png (False on non-chief workers).

    Example:
    >>> model.fit(ds, epochs=10, callbacks=[RunBackup("runs/a")])
    """

    def __init__(self, run_dir, monitor="val_accuracy", artifacts=True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.backup_dir = self.run_dir / "backup"
        self.monitor = monitor
        self.artifacts = artifacts
        self.history_rows = []
        self.best = None
        self.restored_epoch = 0
        self.diverged_at = None
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
        row = {"epoch": epoch + 1, **{k: to_float(v) for k, v in logs.items()}}
        if not all(math.isfinite(v) for v in row.values()):
            self.diverged_at = epoch + 1  # commit nothing: the last good epoch stays the resume point
            return
        row["learning_rate"] = to_float(self.model.optimizer.learning_rate)
        self.history_rows.append(row)
        checkpoints = self.run_dir / "checkpoints"
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


def plot_history(path, rows):
    """Plots loss and accuracy curves of history rows to a PNG atomically.

    Uses a matplotlib Figure on the Agg canvas; the global backend is left alone.

    Example: `plot_history("history.png", [{"epoch": 1, "loss": 0.5}])`.
    """
    epochs = [row["epoch"] for row in rows]
    fig = new_figure(figsize=(10, 4), dpi=100)
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
    save_figure(fig, path)


def write_history_files(run_dir, rows):
    """Writes `history.csv` and `history.png` of `run_dir` from history rows.

    Example: `write_history_files("runs/a", [{"epoch": 1, "loss": 0.5}])`.
    """
    if rows:
        write_csv(Path(run_dir) / "history.csv", rows)
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
    train_ds, val_ds, test_ds, info = _split_data(data)
    steps_per_epoch = _check_train_args(epochs, warmup_epochs, precision, monitor, steps_per_epoch, train_ds)
    if val_ds is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
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
    # Non-chief workers keep their own state so that files never collide.
    run_dir = Path(run_dir) if is_chief else Path(run_dir) / "workers" / f"worker_{worker}"
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"`run_dir` names a file, not a directory: {run_dir}")
    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    if seed is not None:
        keras.utils.set_random_seed(seed)
    # Everything that can be refused is checked before the run directory is touched.
    with scope():
        model = _build(model, precision)
        _check_classes(model, info)
        compile_model(
            model, learning_rate=learning_rate, weight_decay=weight_decay,
            total_steps=steps_per_epoch * epochs, warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
            min_learning_rate=min_learning_rate, label_smoothing=label_smoothing,
            clipnorm=clipnorm, ema_momentum=ema_momentum,
            gradient_accumulation_steps=gradient_accumulation_steps,
            sparse_labels=_is_sparse(train_ds), jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
    with exclusive_lock(run_dir, "run directory"):
        for folder in (run_dir, run_dir / "checkpoints", run_dir / "backup"):
            remove_stale_temporaries(folder)
        _prepare_run_dir(run_dir, {**(config or {}), **recipe, "data": info.to_dict() if info else None}, resume)
        backup = RunBackup(run_dir, monitor=monitor, artifacts=True)
        fit_callbacks = [backup, keras.callbacks.TerminateOnNaN(),
                         keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs")), *(callbacks or [])]
        start = time.time()
        with scope():
            if num_workers > 1 and strategy is not None:
                prepare_multi_worker(model, train_ds)
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=fit_callbacks, verbose=verbose, shuffle=False)  # the dataset shuffles
            if backup.diverged_at is not None:
                raise ValueError(
                    f"The loss became NaN or infinite in epoch {backup.diverged_at}; the run directory keeps "
                    f"the state of epoch {backup.diverged_at - 1}. Lower `learning_rate` or check the data "
                    "for NaN/inf pixels, then re-run with resume=False.")
            train_seconds = time.time() - start
            metrics = {split: {k: to_float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
                       for split, ds in (("validation", val_ds), ("test", test_ds)) if ds is not None}
        write_history_files(run_dir, backup.history_rows)
        write_json(run_dir / "metrics.json", dict(
            **metrics, epochs=len(backup.history_rows), resumed_from_epoch=backup.restored_epoch,
            best={monitor: backup.best}, last_session_seconds=round(train_seconds, 2), num_workers=num_workers))
        with atomic_path(run_dir / "model.keras") as tmp:
            model.save(tmp)
    return TrainResult(model=model, history=backup.history_rows, test_metrics=metrics.get("test"),
                       run_dir=str(run_dir), initial_epoch=backup.restored_epoch)


MONITORS = ("val_accuracy", "val_loss", "accuracy", "loss")


def _check_train_args(epochs, warmup_epochs, precision, monitor, steps_per_epoch, train_ds):
    """Checks `train`'s arguments; returns the steps per epoch."""
    check_positive_int(epochs, "epochs")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or not 0 <= warmup_epochs < epochs:
        raise ValueError(
            f"`warmup_epochs` must be in [0, epochs={epochs}). Received: warmup_epochs={warmup_epochs!r}")
    if precision is not None:
        check_choice(precision, "precision", PRECISIONS)
    check_choice(monitor, "monitor", MONITORS)
    if steps_per_epoch is not None:
        return check_positive_int(steps_per_epoch, "steps_per_epoch")
    steps = int(train_ds.cardinality())
    if steps < 0:
        raise ValueError("The training dataset's length is unknown; pass `steps_per_epoch` (batches per epoch).")
    if steps == 0:
        raise ValueError("The training dataset is empty.")
    return steps


def _build(model, precision):
    """The model itself, or built by the function under `precision`."""
    if callable(model) and not isinstance(model, keras.Model):
        previous = keras.mixed_precision.global_policy()
        if precision:
            set_precision(precision)
        try:
            return model()
        finally:
            keras.mixed_precision.set_global_policy(previous)
    if precision and model.dtype_policy.name != precision:
        raise ValueError(
            f"`precision={precision!r}` but the model was built with the {model.dtype_policy.name!r} "
            "policy. Pass a function that builds the model, or build it after set_precision().")
    return model


def _check_classes(model, info):
    classes = getattr(model, "num_classes", None)
    if info is not None and classes is not None and classes != info.num_classes:
        raise ValueError(
            f"The model has {classes} classes but the data has {info.num_classes} "
            f"({', '.join(map(str, info.class_names[:10]))}). Build it with num_classes={info.num_classes}.")


def train_from_config(config):
    """Loads the data, builds a ViT and trains it from a flat configuration.

    Args:
        config: dict from `resolve_recipe`.

    Returns:
        A `TrainResult`.

    Example:
    >>> result = train_from_config(resolve_recipe("digits", epochs=1))
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
