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
from pathlib import Path

import keras

from keras_vit.training.budget import parse_duration, plan_record, start_budget
from keras_vit.training.distribute import PRECISIONS, get_strategy, prepare_multi_worker, set_precision, worker_info
from keras_vit.training.auto import tool_record
from keras_vit.training.optim import compile_model
from keras_vit.training.progressive import progressive_callbacks
from keras_vit.training.recipe import DATA, HARDWARE, MODEL, OPTIM, RUN
from keras_vit.training.rundir import RunBackup, model_settings, prepare_run_dir, to_float, write_history_files
from keras_vit.utils.io import DiskFullError, atomic_path, is_disk_full, remove_stale_temporaries, write_json
from keras_vit.utils.locks import exclusive_lock
from keras_vit.utils.ownership import check_directory_name
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


def _is_sparse(dataset):
    spec = getattr(dataset, "element_spec", None)
    if isinstance(spec, tuple) and len(spec) >= 2:
        return spec[1].shape.rank == 1
    return False


@strict_keywords()
def train(
    model,
    data,
    *,
    epochs=None,
    run_dir,
    time_budget=None,
    budget_start=None,
    learning_rate=1e-3,
    weight_decay=0.05,
    warmup_epochs=0,
    min_learning_rate=0.0,
    label_smoothing=0.1,
    clipnorm=1.0,
    ema_momentum=None,
    gradient_accumulation_steps=None,
    progressive_resize=0.0,
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
    run = _Run(run_dir=run_dir, splits=(train_ds, val_ds, test_ds), info=info, recipe=recipe,
               budget_start=budget_start, resume=resume, verbose=verbose, epochs=epochs)
    run.place(strategy)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    # Everything that can be refused is checked before the run directory is touched.
    model = run.build_and_compile(model)
    with exclusive_lock(run.run_dir, "run directory"), _disk_full_is_named(run.run_dir):
        run.prepare(model, config)
        backup = run.fit(model, callbacks)
        run.finish(model, backup)
    return TrainResult(model=model, history=backup.history_rows, test_metrics=run.metrics.get("test"),
                       run_dir=str(run.run_dir), initial_epoch=backup.restored_epoch)


@dataclasses.dataclass
class _Run:
    """One call of `train` after its arguments are checked: where it writes,
    its time budget, and the steps prepare, fit and finish."""

    run_dir: object
    splits: tuple
    info: object
    recipe: dict
    budget_start: float
    resume: object
    verbose: object
    epochs: object  # the epochs to fit: the time budget's plan replaces the requested number
    strategy: object = None
    num_workers: int = 1
    budget: object = None
    timers: list = dataclasses.field(default_factory=list)  # the TimeBudget first, then a ProgressiveResize
    previous: object = None
    metrics: dict = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def place(self, strategy):
        """Resolves the strategy and the worker's own run directory."""
        self.strategy = get_strategy(strategy) if strategy is not None else None
        worker, self.num_workers, is_chief = worker_info()
        if self.recipe["time_budget"] is not None and self.num_workers > 1:
            raise ValueError(
                "`time_budget` does not work with multi-worker training yet: each worker would plan its "
                "own number of steps and the collective steps would not match. Give `epochs` instead.")
        # Non-chief workers keep their own state so that files never collide.
        check_directory_name(self.run_dir, "run_dir")  # Path("") would be the current directory
        run_dir = Path(self.run_dir)
        self.run_dir = run_dir if is_chief else run_dir / "workers" / f"worker_{worker}"
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"`run_dir` names a file, not a directory: {self.run_dir}")

    def build_and_compile(self, model):
        """The model (built under the precision and strategy), compiled with the recipe."""
        recipe, steps_per_epoch = self.recipe, self.recipe["steps_per_epoch"]
        budgeted = recipe["time_budget"] is not None
        with self.scope():
            model = _build(model, recipe["precision"])
            _check_classes(model, self.info)
            compile_model(
                model, learning_rate=recipe["learning_rate"], weight_decay=recipe["weight_decay"],
                # budgeted runs keep a constant rate that `TimeBudget` sets each step
                total_steps=None if budgeted else steps_per_epoch * recipe["epochs"],
                warmup_steps=0 if budgeted else int(round(recipe["warmup_epochs"] * steps_per_epoch)),
                min_learning_rate=recipe["min_learning_rate"], label_smoothing=recipe["label_smoothing"],
                clipnorm=recipe["clipnorm"], ema_momentum=recipe["ema_momentum"],
                gradient_accumulation_steps=recipe["gradient_accumulation_steps"],
                sparse_labels=_is_sparse(self.splits[0]), jit_compile=recipe["jit_compile"],
                steps_per_execution=recipe["steps_per_execution"],
            )
        return model

    def prepare(self, model, config):
        """Plans the time budget (if any) and writes `config.json` (resuming or starting over)."""
        recipe, run_dir = self.recipe, self.run_dir
        if recipe["time_budget"] is not None:
            with self.scope():
                self.budget, self.timers, self.epochs, self.previous = start_budget(
                    model, run_dir, recipe["time_budget"], self.budget_start, self.splits,
                    steps_per_epoch=recipe["steps_per_epoch"], max_epochs=recipe["epochs"],
                    warmup_epochs=recipe["warmup_epochs"], learning_rate=recipe["learning_rate"],
                    min_learning_rate=recipe["min_learning_rate"], resume=self.resume,
                    verbose=self.verbose != 0, progressive_resize=recipe["progressive_resize"])
            self.budget.tools.update(tool_record(config or recipe, self.budget.tools))
        else:
            self.timers = progressive_callbacks(model, recipe["progressive_resize"], recipe["epochs"])
        for folder in (run_dir, run_dir / "checkpoints", run_dir / "backup"):
            remove_stale_temporaries(folder)
        prepare_run_dir(run_dir, {**(config or {}), **recipe, "data": self.info.to_dict() if self.info else None,
                                  "model": model_settings(model)}, self.resume)
        if self.budget is not None:
            write_json(run_dir / "plan.json", plan_record(self.budget, self.timers, self.budget_start, False,
                                                          self.previous))

    def fit(self, model, callbacks):
        """Fits and evaluates; returns the `RunBackup` that recorded the epochs."""
        train_ds, val_ds, test_ds = self.splits
        backup = RunBackup(self.run_dir, monitor=self.recipe["monitor"], artifacts=True)
        fit_callbacks = [*self.timers, backup, keras.callbacks.TerminateOnNaN(),
                         keras.callbacks.TensorBoard(log_dir=str(self.run_dir / "logs")), *(callbacks or [])]
        start = time.time()
        with self.scope():
            if self.num_workers > 1 and self.strategy is not None:
                prepare_multi_worker(model, train_ds)
            model.fit(train_ds, validation_data=val_ds, epochs=self.epochs,
                      steps_per_epoch=self.recipe["steps_per_epoch"], callbacks=fit_callbacks,
                      verbose=0 if self.budget else self.verbose,  # budgeted: one line an epoch
                      shuffle=False)  # the dataset shuffles
            _unshare_ema_values(model)
            if backup.diverged_at is not None:
                raise ValueError(
                    f"The loss became NaN or infinite in epoch {backup.diverged_at}; the run directory keeps "
                    f"the state of epoch {backup.diverged_at - 1}. Lower `learning_rate` or check the data "
                    "for NaN/inf pixels, then re-run with resume=False.")
            self.train_seconds = time.time() - start
            self.metrics = {
                split: {k: to_float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
                for split, ds in (("validation", val_ds), ("test", test_ds)) if ds is not None}
        return backup

    def finish(self, model, backup):
        """Writes the history, the metrics, the final model and the closed plan."""
        run_dir = self.run_dir
        write_history_files(run_dir, backup.history_rows)
        write_json(run_dir / "metrics.json", dict(
            **self.metrics, epochs=len(backup.history_rows), resumed_from_epoch=backup.restored_epoch,
            best={self.recipe["monitor"]: backup.best}, last_session_seconds=round(self.train_seconds, 2),
            num_workers=self.num_workers))
        with atomic_path(run_dir / "model.keras") as tmp:
            model.save(tmp)
        if self.budget is not None:
            write_json(run_dir / "plan.json", plan_record(self.budget, self.timers, self.budget_start, True,
                                                          self.previous))


MONITORS = ("val_accuracy", "val_loss", "accuracy", "loss")


def _unshare_ema_values(model):
    """Gives each weight its own copy of the EMA value `fit` ended with (JAX).

    At the end of `fit`, Keras' optimizer assigns each moving average to its
    weight; on JAX both variables then hold the same array, and the next
    `evaluate` donates the weights' buffers to its compiled step, which
    deletes the averages' too: saving the optimizer afterwards failed with
    "Array has been deleted".
    """
    optimizer = getattr(model, "optimizer", None)
    if keras.backend.backend() != "jax" or not getattr(optimizer, "use_ema", False):
        return
    import jax.numpy as jnp

    for variable in model.trainable_variables:
        variable.assign(jnp.array(variable.value, copy=True))


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


def _build(model, precision):
    """The model itself, or built by the function under `precision`."""
    if callable(model) and not isinstance(model, keras.Model):
        previous = keras.mixed_precision.global_policy()
        if precision:
            set_precision(precision)
        try:
            built = model()
        finally:
            keras.mixed_precision.set_global_policy(previous)
        if not isinstance(built, keras.Model):
            raise ValueError(f"`model` is a function that returned {type(built).__name__}, not a keras.Model.")
        return built
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a keras.Model or a function returning one. Received: {type(model).__name__}")
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
        return build_vit(preset, image_size=size, num_classes=info.num_classes, channels=info.channels, **model)

    run = {k: v for k, v in {**recipe.group(RUN), **recipe.group(OPTIM), **recipe.group(HARDWARE)}.items()
           if k not in ("recipe", "strategy")}
    return train(build, (train_ds, val_ds, test_ds, info), **run, strategy=strategy, config=recipe.to_dict(),
                 budget_start=budget_start)
