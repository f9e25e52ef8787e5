"""The search: tuners that resume after a crash, results files, and `tune`.

`ViTHyperModel` is a `keras_tuner.HyperModel` whose `fit` applies the
training recipe (`keras_vit.training.compile_model`) with each trial's
batch size, learning rate, weight decay, warmup, label smoothing and
augmentation strength. `tune` runs a search, resumes it after a crash,
records failed trials and writes the results. KerasTuner's chief/worker
mode (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`) spreads one search over several processes.
"""

import functools
import os
import shutil

import keras
import keras_tuner
import numpy as np
from keras_tuner.src.engine.tuner_utils import SaveBestEpoch  # not re-exported (keras-tuner 1.4)

from keras_vit.tuning.hypermodel import TUNERS, ViTHyperModel, heads_name
from keras_vit.tuning.space import OBJECTIVES
from keras_vit.utils.io import atomic_path, new_figure, remove_stale_temporaries, save_figure, write_csv, write_json
from keras_vit.utils.locks import LOCK_NAME, exclusive_lock
from keras_vit.utils.ownership import BACKUP, TUNING_PROJECT, check_directory_name, claim_directory, owned_entries
from keras_vit.utils.validation import SearchFailedError, check_choice, strict_keywords


class _ResumableTuner:
    """Mixin: a trial keeps a kill-safe backup of its last epoch in its own
    folder (`keras_vit.training.RunBackup`, atomic writes), so a search
    killed mid-trial resumes that trial from its last completed epoch. With
    several executions per trial an interrupted trial restarts instead."""

    def run_trial(self, trial, *args, **kwargs):
        from keras_vit.training import RunBackup

        print(f"[{self.tuner_id}] trial {trial.trial_id}: {trial.hyperparameters.values}", flush=True)
        trial_dir = self.get_trial_dir(trial.trial_id)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if self.executions_per_trial == 1:
            state = RunBackup.read_state(trial_dir)
            if state and kwargs.get("epochs") and state["epoch"] >= kwargs["epochs"]:
                # killed after its last epoch was backed up: the trial is done, report it
                self._drop_backup(trial.trial_id)
                return self._best_row(state["history"])
            callbacks.append(RunBackup(trial_dir, monitor=self.oracle.objective.name, artifacts=False))
        return super().run_trial(trial, *args, callbacks=callbacks, **kwargs)

    def on_search_begin(self):
        """Removes the backups a kill left behind completed trials (the
        chief's oracle knows them; a worker's client does not)."""
        super().on_search_begin()
        for trial in getattr(self.oracle, "trials", {}).values():
            if trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED:
                self._drop_backup(trial.trial_id)

    def on_trial_end(self, trial):
        """Drops a completed trial's backup only after KerasTuner has recorded
        it COMPLETED: a kill between the two then finds a completed trial (a
        leftover backup is harmless), never a running one without a backup,
        which the resumed search would rerun from its first epoch. A failed
        trial keeps its backup."""
        super().on_trial_end(trial)
        if trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED:
            self._drop_backup(trial.trial_id)

    def _drop_backup(self, trial_id):
        """Deletes a trial's backup folder (`RunBackup`'s), if it has one."""
        shutil.rmtree(os.path.join(self.get_trial_dir(trial_id), BACKUP), ignore_errors=True)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        """Fits with KerasTuner's best-epoch checkpoint (`SaveBestEpoch`,
        which it appends after our callbacks) written atomically and before
        the backup commits the epoch, so that a kill at any moment leaves a
        whole checkpoint of the best epoch the backup has committed (a kill
        during its plain write left a half-written ``checkpoint.weights.h5``
        that the resumed search could not load)."""
        from keras_vit.training import RunBackup

        callbacks = kwargs.pop("callbacks", None) or []
        for callback in callbacks:
            # one checkpoint callback serves every execution of a trial: wrap it once
            if isinstance(callback, SaveBestEpoch) and "_save_model" not in vars(callback):
                callback._save_model = functools.partial(_save_checkpoint_atomically, callback, callback._save_model)
        callbacks = sorted(callbacks, key=lambda c: isinstance(c, RunBackup))  # stable: the backups last
        return super()._build_and_fit_model(trial, *args, callbacks=callbacks, **kwargs)

    def _best_row(self, rows):
        """The metrics of the best backed-up epoch, as KerasTuner takes them."""
        name = self.oracle.objective.name
        pick = min if self.oracle.objective.direction == "min" else max
        best = pick((r for r in rows if r.get(name) is not None), key=lambda r: r[name])
        return {k: v for k, v in best.items() if k not in ("epoch", "learning_rate")}


def _save_checkpoint_atomically(checkpoint, save_as_keras_tuner_does):
    """`SaveBestEpoch._save_model` through the package's atomic writer; a
    tf.distribute worker that must not checkpoint (not the chief) saves as
    KerasTuner does, into a temporary folder it deletes."""
    strategy = getattr(checkpoint.model, "distribute_strategy", None)
    if keras.backend.backend() == "tensorflow" and strategy is not None and not strategy.extended.should_checkpoint:
        return save_as_keras_tuner_does()
    with atomic_path(checkpoint.filepath) as tmp:
        checkpoint.model.save_weights(tmp)


def make_tuner(kind, hypermodel, *, objective, max_trials, executions_per_trial=1,
               directory="tuning", project_name="vit", overwrite=False, seed=None,
               distribution_strategy=None, max_epochs=None, hyperparameters=None):
    """Creates a KerasTuner tuner of `kind` ("random", "hyperband" or
    "bayesian") whose trials resume after a crash.

    Example:
    >>> tuner = make_tuner("random", ViTHyperModel(16, 10), objective="val_accuracy",
    ...                    max_trials=2, directory="/tmp/search")
    """
    check_choice(kind, "tuner", tuple(TUNERS))
    base = TUNERS[kind]
    cls = type(f"Resumable{base.__name__}", (_ResumableTuner, base), {})
    direction = "min" if "loss" in objective else "max"
    kwargs = dict(
        hypermodel=hypermodel,
        objective=keras_tuner.Objective(objective, direction),
        executions_per_trial=executions_per_trial,
        directory=str(directory),
        project_name=project_name,
        overwrite=overwrite,
        seed=seed,
        distribution_strategy=distribution_strategy,
        hyperparameters=hyperparameters,
        max_consecutive_failed_trials=max(3, max_trials),
    )
    if kind == "hyperband":
        kwargs.update(max_epochs=max_epochs or hypermodel.epochs, hyperband_iterations=1)
    else:
        kwargs["max_trials"] = max_trials
    return cls(**kwargs)


def _first_failure(tuner):
    """The message KerasTuner kept for the first failed trial, or ''."""
    for trial in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
        message = (getattr(trial, "message", None) or "").strip()
        if message:
            return message.splitlines()[-1][:300]
    return ""


def trial_rows(tuner):
    """One dict per trial: id, status, score, best step and hyperparameters."""
    rows = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
        values = {k: v for k, v in trial.hyperparameters.values.items()
                  if not k.startswith("num_heads_for_")}
        values["num_heads"] = trial.hyperparameters.values.get(heads_name(values.get("hidden_dim")))
        rows.append(dict(
            trial_id=trial.trial_id,
            status=str(trial.status),
            score=None if trial.score is None else float(trial.score),
            best_step=trial.best_step,
            **values,
        ))
    return rows


def write_results(rows, out_dir, objective):
    """Writes `results.csv`, `results.json` and `trials.png` under `out_dir`,
    each atomically."""
    write_csv(os.path.join(out_dir, "results.csv"), rows)
    write_json(os.path.join(out_dir, "results.json"), {"objective": objective, "trials": rows})
    fig = new_figure(figsize=(6, 3.5))
    ax = fig.subplots()
    done = [(i, r["score"]) for i, r in enumerate(rows) if r["score"] is not None]
    failed = [i for i, r in enumerate(rows) if r["score"] is None]
    if done:
        ax.plot(*zip(*done), "o", label="trial score")
        best = np.maximum.accumulate if "loss" not in objective else np.minimum.accumulate
        ax.plot([i for i, _ in done], best([s for _, s in done]), "-", label="best so far")
    if failed:
        ax.plot(failed, [0] * len(failed), "x", color="red", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, os.path.join(out_dir, "trials.png"))


@strict_keywords()
def tune(
    data="digits",
    *,
    tuner="random",
    max_trials=10,
    executions_per_trial=1,
    objective="val_accuracy",
    directory="tuning",
    project_name="vit",
    epochs=10,
    patience=3,
    image_size=None,
    batch_size=64,
    space=None,
    fixed=None,
    hyperparameters=None,
    overwrite=False,
    seed=0,
    strategy=None,
    tensorboard=True,
    verbose=1,
):
    """Searches architectures and recipes; returns the best model and its
    hyperparameters.

    Re-running the same call after a crash (with `overwrite=False`) resumes
    the search: finished trials are kept and an interrupted trial resumes
    from its last completed epoch. Trials that fail (NaN loss, out of
    memory, an invalid combination) are recorded as failed and the search
    goes on. Writes under `directory/project_name`: `best_model.keras`,
    `results.csv`, `results.json`, `trials.png` and TensorBoard logs with
    the HParams dashboard (`logs/`).

    Args:
        data: a `keras_vit.data.load_data` source ("digits", a TFDS name, a
            folder, an .npz path, arrays) or its returned
            (train, validation, test, info) tuple. The test split is never
            used by the search.
        tuner: "random", "hyperband" or "bayesian".
        max_trials: int >= 1 (for hyperband, the budget comes from `epochs`).
        executions_per_trial: models trained per trial (scores averaged).
        objective: "val_accuracy", "val_loss", "accuracy" or "loss".
        directory, project_name: where the search lives: the folder
            `directory/project_name`, which must be new, empty or a tuning
            project of keras_vit (`keras_vit.utils.ownership`); with
            `overwrite`, only what a search wrote there is deleted.
        epochs: epochs per trial; patience: early-stopping patience.
        image_size: image size for `load_data` (default 16 for digits).
        batch_size: batch size used to load the data (each trial re-batches).
        space, fixed: see `ViTHyperModel`.
        hyperparameters: an optional `keras_tuner.HyperParameters` whose
            values override the space.
        overwrite: start afresh instead of resuming.
        seed: int seed for the oracle and data split.
        strategy: None or a `tf.distribute` strategy (or its name, see
            `keras_vit.training.get_strategy`) each trial runs under.
        tensorboard: write TensorBoard logs with the HParams dashboard.
        verbose: Keras verbosity during trials.

    Returns:
        (best_model, best_hyperparameters); (None, None) on a distributed
        worker, whose results the chief writes.

    Example:
    >>> model, hp = tune("digits", max_trials=2, epochs=1, directory="/tmp/search",
    ...                  fixed={"depth": 1})
    """
    _check_tune_args(tuner, objective, max_trials, executions_per_trial, epochs)
    out_dir = project_path(directory, project_name)
    inputs = (data,) if isinstance(data, (str, os.PathLike)) else ()
    claim_directory(out_dir, TUNING_PROJECT, inputs=inputs, flag="directory/project_name", mark=False)
    train, validation, info = _search_data(data, image_size, batch_size, seed, objective)
    hypermodel = ViTHyperModel(
        info.image_size, info.num_classes, info.channels, space=space, fixed=fixed,
        epochs=epochs, patience=patience, objective=objective,
        train_size=info.split_sizes.get("train"),
    )
    if isinstance(strategy, str):
        from keras_vit.training import get_strategy

        strategy = get_strategy(strategy)
    with _project_lock(out_dir):
        claim_directory(out_dir, TUNING_PROJECT, inputs=inputs, flag="directory/project_name")
        _prepare_project(out_dir, overwrite)
        search = make_tuner(
            tuner, hypermodel, objective=objective, max_trials=max_trials,
            executions_per_trial=executions_per_trial, directory=directory,
            project_name=project_name, overwrite=False, seed=seed,
            distribution_strategy=strategy, max_epochs=epochs, hyperparameters=hyperparameters,
        )
        callbacks = []
        if tensorboard and keras.backend.backend() == "tensorflow":
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")))
        search.search(train, validation_data=validation, epochs=epochs, callbacks=callbacks,
                      verbose=verbose)
        if _is_distributed_worker():
            return None, None
        return _finish_search(search, out_dir, objective)


def _check_tune_args(tuner, objective, max_trials, executions_per_trial, epochs):
    check_choice(tuner, "tuner", tuple(TUNERS))
    check_choice(objective, "objective", OBJECTIVES)
    if not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"`max_trials` must be an int >= 1. Received: max_trials={max_trials!r}")
    if not isinstance(executions_per_trial, int) or executions_per_trial < 1:
        raise ValueError(
            f"`executions_per_trial` must be an int >= 1. Received: executions_per_trial={executions_per_trial!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be an int >= 1. Received: epochs={epochs!r}")


def _search_data(data, image_size, batch_size, seed, objective):
    """(train, validation, info) of `tune`'s data: `load_data`'s tuple or a source it loads."""
    from keras_vit.data import load_data

    if isinstance(data, tuple) and len(data) == 4:
        train, validation, _, info = data
    else:
        size = image_size or 16
        train, validation, _, info = load_data(data, size, batch_size, seed=seed)
    if validation is None and objective.startswith("val_"):
        raise ValueError(f"objective={objective!r} needs a validation split; the data has none.")
    return train, validation, info


def _finish_search(search, out_dir, objective):
    """Writes the results and the best model; returns (best_model, best_hyperparameters)."""
    rows = trial_rows(search)
    write_results(rows, out_dir, objective)
    if not any(r["score"] is not None for r in rows):
        first = _first_failure(search)
        raise SearchFailedError(
            f"Every trial failed ({len(rows)} tried); see {os.path.join(out_dir, 'results.csv')}."
            + (f" The first failure: {first}" if first else ""))
    best_hp = search.get_best_hyperparameters(1)[0]
    best_model = search.get_best_models(1)[0]
    with atomic_path(os.path.join(out_dir, "best_model.keras")) as tmp:
        best_model.save(tmp)
    return best_model, best_hp


def project_path(directory, project_name):
    """The folder of a search, `directory/project_name`; refuses an empty
    name for either and a `project_name` that would leave `directory`
    (absolute, or with a ``..``).

    Example:
    >>> project_path("tuning", "vit")
    'tuning/vit'
    """
    check_directory_name(directory, "directory")
    if not isinstance(project_name, str) or not project_name.strip():
        raise ValueError(f"`project_name` must name a sub-folder of `directory`. Received: "
                         f"project_name={project_name!r}")
    if os.path.isabs(project_name) or ".." in project_name.replace("\\", "/").split("/"):
        raise ValueError(f"`project_name` must be a folder name inside `directory` ({os.fspath(directory)!r}), "
                         f"not an absolute path or one with '..'. Received: project_name={project_name!r}")
    return os.path.join(os.fspath(directory), project_name)


def _project_lock(out_dir):
    """The tuning project's exclusive lock; in KerasTuner's chief/worker
    mode every tuner process shares the folder, so each locks its own id."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    name = LOCK_NAME if "KERASTUNER_ORACLE_IP" not in os.environ else f".keras_vit.{tuner_id}.lock"
    return exclusive_lock(out_dir, "tuning project", lock_name=name)


def _prepare_project(out_dir, overwrite):
    """Under the lock: deletes an earlier search for `overwrite` (only what a
    search writes, `TUNING_PROJECT.entries`: a user's file there is kept, as
    are the lock and the marker; KerasTuner's own overwrite would delete
    everything) and the temporaries of killed writes."""
    for entry in owned_entries(out_dir, TUNING_PROJECT) if overwrite else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for folder in [out_dir] + [e.path for e in os.scandir(out_dir) if e.is_dir() and e.name.startswith("trial_")]:
        remove_stale_temporaries(folder)
        remove_stale_temporaries(os.path.join(folder, BACKUP))


def _is_distributed_worker():
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")
