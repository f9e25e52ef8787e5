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
import errno
import time

import keras

from keras_vit.training.budget import parse_duration
from keras_vit.training.distribute import PRECISIONS, get_strategy
from keras_vit.training.recipe import DATA, DEFAULTS, HARDWARE, MODEL, OPTIM, RUN
from keras_vit.training.rundir import RunBackup
from keras_vit.training.session import TrainSession
from keras_vit.utils.io import DiskFullError, is_disk_full
from keras_vit.utils.locks import exclusive_lock
from keras_vit.utils.validation import check_choice, check_positive_int, strict_keywords


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
        if len(data) not in (2, 3, 4):
            raise ValueError(
                "`data` must be load_data's (train, validation, test, info), a tuple "
                f"(train, validation[, test]) or a training dataset. Received a tuple of {len(data)}.")
        splits = (*data, *[None] * (4 - len(data)))
    else:
        splits = (data, None, None, None)
    if not hasattr(splits[0], "cardinality"):
        raise ValueError(
            "`data` must be load_data's (train, validation, test, info), a tuple (train, validation[, test]) "
            f"of tf.data.Datasets or a training dataset; its training part is a {type(splits[0]).__name__}. "
            "For arrays, pass load_data((x, y), image_size, batch_size).")
    return splits


@strict_keywords()
def train(
    model,
    data,
    *,
    epochs=None,
    run_dir,
    time_budget=None,
    budget_start=None,
    learning_rate=DEFAULTS.learning_rate,
    weight_decay=DEFAULTS.weight_decay,
    warmup_epochs=DEFAULTS.warmup_epochs,
    min_learning_rate=DEFAULTS.min_learning_rate,
    label_smoothing=DEFAULTS.label_smoothing,
    clipnorm=DEFAULTS.clipnorm,
    ema_momentum=DEFAULTS.ema_momentum,
    gradient_accumulation_steps=DEFAULTS.gradient_accumulation_steps,
    progressive_resize=DEFAULTS.progressive_resize,
    precision=DEFAULTS.precision,
    jit_compile=DEFAULTS.jit_compile,
    steps_per_execution=DEFAULTS.steps_per_execution,
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

    The recipe's settings default to `Recipe`'s (`keras_vit.training.recipe.DEFAULTS`).
    Re-running the same call after the process died (even by `kill -9`)
    resumes from the last completed epoch; a finished run re-evaluates and
    rewrites its artifacts without training again.

    Args:
        model: a `keras.Model`, or a function returning one. Pass a function
            to build the model under `precision` and `strategy`.
        data: `load_data`'s (train, validation, test, info), a tuple
            (train, validation[, test]) or a training dataset.
        epochs: int, total epochs of the run (resumed epochs included);
            with `time_budget`, the most epochs to plan (optional).
        run_dir: path of the run directory.
        time_budget: None, seconds, or a duration such as "10m" or "2h":
            the step time is measured after compilation and the run plans
            as many steps as fit, so that training, validation, the final
            evaluation and saving end within the budget; the learning rate
            follows warmup and a cosine over the planned steps (see
            `keras_vit.training.budget`). The plan and the times are
            recorded in `plan.json`.
        budget_start: `time.time()` at which the budget began (default: the
            call of `train`; the CLI passes its own start).
        learning_rate, weight_decay, min_learning_rate, label_smoothing,
        clipnorm, ema_momentum, gradient_accumulation_steps: the recipe, see
            `make_optimizer` and `compile_model`.
        warmup_epochs: epochs (may be fractional) of linear warmup.
        progressive_resize: the fraction of the run trained at about half
            the image side (`keras_vit.training.progressive`); 0 for none.
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
    budget_start = time.time() if budget_start is None else budget_start
    if time_budget is not None:
        time_budget = parse_duration(time_budget)
    elif epochs is None:
        raise ValueError("`epochs` is required unless a `time_budget` is given.")
    train_ds, val_ds, test_ds, info = _split_data(data)
    steps_per_epoch = _check_train_args(epochs, warmup_epochs, precision, monitor, steps_per_epoch, train_ds)
    _check_accumulation(gradient_accumulation_steps, steps_per_epoch)
    if val_ds is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    recipe = dict(
        epochs=epochs, learning_rate=learning_rate, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, min_learning_rate=min_learning_rate,
        label_smoothing=label_smoothing, clipnorm=clipnorm, ema_momentum=ema_momentum,
        gradient_accumulation_steps=gradient_accumulation_steps, precision=precision,
        progressive_resize=progressive_resize, jit_compile=jit_compile, steps_per_execution=steps_per_execution,
        strategy=strategy if isinstance(strategy, (str, type(None))) else type(strategy).__name__,
        steps_per_epoch=steps_per_epoch, monitor=monitor, seed=seed, time_budget=time_budget,
    )
    run = TrainSession(run_dir=run_dir, splits=(train_ds, val_ds, test_ds), info=info, recipe=recipe,
                       budget_start=budget_start, resume=resume, verbose=verbose, epochs=epochs)
    run.place(strategy)
    keras.utils.set_random_seed(seed) if seed is not None else None
    # Everything that can be refused is checked before the run directory is touched.
    model = run.build_and_compile(model)
    run.claim(config)  # ours to write into? Before the lock file and the cleaning of temporaries touch it
    with exclusive_lock(run.run_dir, "run directory"), _disk_full_is_named(run.run_dir):
        run.prepare(model, config)
        backup = run.fit(model, callbacks)
        run.finish(model, backup)
    return TrainResult(model=model, history=backup.history_rows, test_metrics=run.metrics.get("test"),
                       run_dir=str(run.run_dir), initial_epoch=backup.restored_epoch)


MONITORS = ("val_accuracy", "val_loss", "accuracy", "loss")


@contextlib.contextmanager
def _disk_full_is_named(run_dir):
    """Turns a full disk, however deep it was reported, into a `DiskFullError`
    that says what is kept and how to go on."""
    try:
        yield
    except Exception as err:  # h5py, TensorFlow and zipfile report a full disk in their own types
        if not is_disk_full(err):
            raise
        state = RunBackup.read_state(run_dir)
        kept = f"its last committed epoch ({state['epoch']})" if state else "no finished epoch"
        raise DiskFullError(
            errno.ENOSPC, f"The disk is full: no space left while writing the run directory {run_dir} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Every file there is whole; it keeps "
            f"{kept}. Free some space and re-run the same command to resume.") from err


def _check_accumulation(gradient_accumulation_steps, steps_per_epoch):
    if isinstance(gradient_accumulation_steps, int) and gradient_accumulation_steps > steps_per_epoch:
        raise ValueError(
            f"`gradient_accumulation_steps={gradient_accumulation_steps}` is more than the {steps_per_epoch} "
            "steps of an epoch: the weights would rarely or never be updated. Use at most "
            f"gradient_accumulation_steps={steps_per_epoch} (or smaller batches).")


def _check_train_args(epochs, warmup_epochs, precision, monitor, steps_per_epoch, train_ds):
    """Checks `train`'s arguments; returns the steps per epoch."""
    if epochs is not None:
        check_positive_int(epochs, "epochs")
    if (isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0
            or (epochs is not None and warmup_epochs >= epochs)):
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


def train_from_config(recipe, budget_start=None):
    """Loads the data, builds a ViT and trains it as a `Recipe` says.

    Args:
        recipe: a `Recipe` (e.g. from `Recipe.from_sources`).
        budget_start: `time.time()` at which a time budget began (default:
            now).

    Returns:
        A `TrainResult`.

    Example:
    >>> result = train_from_config(Recipe.from_sources("digits", epochs=1))
    """
    from keras_vit.data import load_data
    from keras_vit.models import build_vit

    budget_start = time.time() if budget_start is None else budget_start
    strategy = get_strategy(recipe.strategy)  # before any other TF work
    data = recipe.group(DATA)
    source, size, batch = data.pop("dataset"), data.pop("image_size"), data.pop("batch_size")
    train_ds, val_ds, test_ds, info = load_data(source, size, batch, seed=recipe.seed, **data)
    model = recipe.group(MODEL, keep_none=False)
    preset = model.pop("preset", None)
    model["conv_stem"] = model.get("conv_stem") or None  # [] ("none") turns off a stem a recipe chose

    def build():
        return build_vit(preset, image_size=size, num_classes=info.num_classes, channels=info.channels,
                         class_names=list(info.class_names), **model)

    run = {k: v for k, v in {**recipe.group(RUN), **recipe.group(OPTIM), **recipe.group(HARDWARE)}.items()
           if k not in ("recipe", "strategy")}
    return train(build, (train_ds, val_ds, test_ds, info), **run, strategy=strategy,
                 config={**recipe.to_dict(), "derived": list(getattr(recipe, "derived", ()))},
                 budget_start=budget_start)
