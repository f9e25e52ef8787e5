"""The steps of one `train` call after its arguments are checked: where it
writes, building and compiling the model, planning a time budget, fitting,
and writing the artifacts (`keras_vit.training.run` holds `train` itself)."""

import contextlib
import dataclasses
import os
import time
from pathlib import Path

import keras

from keras_vit.models.portable import build_optimizer
from keras_vit.training.tools import tool_record
from keras_vit.training.budget import plan_record, start_budget
from keras_vit.training.distribute import get_strategy, prepare_multi_worker, set_precision, worker_info
from keras_vit.training.optim import compile_model
from keras_vit.training.progressive import progressive_callbacks
from keras_vit.training.rundir import RunBackup, model_settings, prepare_run_dir, run_inputs, to_float
from keras_vit.utils.io import atomic_path, remove_stale_temporaries, write_json
from keras_vit.utils.ownership import BACKUP, RUN_DIR, check_directory_name, claim_directory


@dataclasses.dataclass
class TrainSession:
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
        if os.path.exists(self.run_dir) and not os.path.isdir(self.run_dir):  # os.path: no OSError for odd names
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

    def claim(self, config):
        """Refuses a run directory that is not ours (`claim_directory`), touching nothing."""
        inputs = run_inputs({**(config or {}), "data": self.info.to_dict() if self.info else None})
        claim_directory(self.run_dir, RUN_DIR, inputs=inputs, flag="run_dir", mark=False)

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
        for folder in (run_dir, run_dir / "checkpoints", run_dir / BACKUP):
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
            build_optimizer(model)  # on TensorFlow, the train step is then traced once, not twice
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
        """Writes the metrics, the final model and the closed plan (the
        history files are the `RunBackup`'s, written at the end of `fit`)."""
        run_dir = self.run_dir
        write_json(run_dir / "metrics.json", dict(
            **self.metrics, epochs=len(backup.history_rows), resumed_from_epoch=backup.restored_epoch,
            best={self.recipe["monitor"]: backup.best}, last_session_seconds=round(self.train_seconds, 2),
            num_workers=self.num_workers))
        with atomic_path(run_dir / "model.keras") as tmp:
            model.save(tmp)
        if self.budget is not None:
            write_json(run_dir / "plan.json", plan_record(self.budget, self.timers, self.budget_start, True,
                                                          self.previous))


def _is_sparse(dataset):
    spec = getattr(dataset, "element_spec", None)
    if isinstance(spec, tuple) and len(spec) >= 2:
        return spec[1].shape.rank == 1
    return False


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
