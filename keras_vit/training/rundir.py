"""The state of a run directory: `RunBackup` (the per-epoch resume state),
the history files, and preparing a directory for a new or resumed run.

Every write is atomic (`keras_vit.utils.io`), so `kill -9` at any moment
leaves the last committed epoch intact.
"""

import json
import math
import os
import shutil
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from keras_vit.models.portable import build_optimizer
from keras_vit.utils.io import atomic_path, new_figure, save_figure, write_csv, write_json
from keras_vit.utils.ownership import BACKUP, RUN_DIR, STATE_FILE, claim_directory, owned_entries
from keras_vit.utils.validation import check_choice

RESUME_MODES = ("auto", True, False)


def _corrupt(path, why):
    return (f"The resume state {path} is corrupt ({why}). Start over with --restart (resume=False), which "
            "deletes only what runs wrote in the run directory.")


def _read_state_file(path):
    """A JSON object written by a run, or a `ValueError` that names the file
    and `--restart`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(_corrupt(path, err)) from None
    if not isinstance(data, dict):
        raise ValueError(_corrupt(path, "not a JSON object"))
    return data


def to_float(value):
    return float(keras.ops.convert_to_numpy(value))


# history.png is redrawn at most this often during training (and at its end).
PLOT_EVERY_SECONDS = 20.0


def resume_variables(model):
    """The variables a resumed run needs, in a fixed order: the model's
    (weights, non-trainable state, random seeds) and, once built, its
    optimizer's (step count, moments, averages)."""
    optimizer = getattr(model, "optimizer", None)
    return [*model.variables, *(optimizer.variables if optimizer is not None and optimizer.built else ())]


def save_resume_weights(model, path):
    """Writes `resume_variables(model)` to one ``.npz`` file, atomically.

    The per-epoch resume state: Keras' `save_weights` walks the whole object
    graph in Python (0.12-0.22 s a save for the digits model here, up to a
    sixth of its 1.3 s epoch), this only reads each variable once. The values are
    stored in order (``arr_0``, ...), with float types NumPy cannot store
    (bfloat16) as float32; `load_resume_weights` reads them back into a
    model built the same way."""
    values = []
    for variable in resume_variables(model):
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        values.append(value.astype("float32") if value.dtype.kind == "V" else value)  # ml_dtypes' kind is "V"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, *values)


def load_resume_weights(model, path):
    """Assigns the values `save_resume_weights` wrote to `model`'s
    `resume_variables`; a `ValueError` when the file does not match."""
    variables = resume_variables(model)
    with np.load(path, allow_pickle=False) as data:
        values = [data[f"arr_{i}"] for i in range(len(data.files))]
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [value.shape for value in values]:
        raise ValueError(f"it holds {len(values)} arrays that do not match this model's {len(variables)} variables")
    for variable, value in zip(variables, values):
        variable.assign(value)


class RunBackup(keras.callbacks.Callback):
    """The resume state of a run directory, which survives `kill -9` at any
    moment.

    At the end of each epoch it writes only what resuming needs and what
    changed: `best.keras` when the monitored metric improved, the weights
    with the optimizer state under a new per-epoch name (``epoch-NNNN.npz``,
    `save_resume_weights`; a backup written as Keras' ``.weights.h5`` by
    an earlier version still resumes), then
    `training_metadata.json` (epoch, weights file, history rows, best
    score), which is the commit point; then `history.csv`, and
    `history.png` when `PLOT_EVERY_SECONDS` have passed since it was last
    drawn (drawing takes about 0.3 s, as long as a whole epoch of a small
    data set) and at the end of training. Every write is atomic. On `fit` start it restores the
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
        self.backup_dir = self.run_dir / BACKUP
        self.monitor = monitor
        self.artifacts = artifacts
        self.history_rows = []
        self.best = None
        self.restored_epoch = 0
        self.diverged_at = None
        self.plotted_at = -math.inf
        self.state = self.read_state(run_dir)

    @staticmethod
    def read_state(run_dir):
        """The committed backup metadata of `run_dir`, or None."""
        path = Path(run_dir) / BACKUP / STATE_FILE
        state = _read_state_file(path) if path.exists() else None
        if state is not None and not ({"epoch", "weights", "history"} <= set(state)):
            raise ValueError(_corrupt(path, "fields are missing"))
        return state

    def on_train_begin(self, logs=None):
        state = self.state
        if not state:
            return
        build_optimizer(self.model)
        weights = Path(self.backup_dir) / state["weights"]
        try:
            if weights.suffix == ".npz":
                load_resume_weights(self.model, weights)
            else:  # a run directory written before the .npz resume state
                self.model.load_weights(weights)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise ValueError(_corrupt(weights, " ".join(str(err).split())[:200])) from None
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
        weights = f"epoch-{epoch + 1:04d}.npz"
        save_resume_weights(self.model, backup / weights)
        write_json(backup / STATE_FILE, dict(
            epoch=epoch + 1, batch=0, weights=weights, history=self.history_rows,
            monitor=self.monitor, best=self.best))
        for old in backup.glob("epoch-*"):
            if old.name != weights:
                old.unlink()
        if self.artifacts:
            write_csv(self.run_dir / "history.csv", self.history_rows)
            if time.monotonic() - self.plotted_at >= PLOT_EVERY_SECONDS:
                self._plot()

    def on_train_end(self, logs=None):
        if self.artifacts and self.history_rows:
            self._plot()

    def _plot(self):
        plot_history(self.run_dir / "history.png", self.history_rows)
        self.plotted_at = time.monotonic()


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


_NOISE = {"name", "trainable", "module", "class_name", "registered_name", "build_config", "compile_config",
          "dtype"}


def _flatten(prefix, value, out):
    if isinstance(value, dict) and isinstance(value.get("config"), dict):
        value = value["config"]  # a nested layer or model: its settings, not its wrapper
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOISE:
                _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value
    return out


def model_settings(model):
    """What a run directory records of its model, to refuse resuming it with
    another one: a keras_vit model's settings from its config, else the
    shape of every weight.

    Example: `model_settings(build_vit("Mu/4"))["backbone.hidden_dim"]` is 64.
    """
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if isinstance(config, dict) and "backbone" in config:
        flat = _flatten("", config, {})
        return json.loads(json.dumps({k[1:]: v for k, v in flat.items()}, default=str))
    return {f"weights.{w.path}": list(w.shape) for w in model.weights}


def _comparable(config):
    # a resumed budgeted run keeps its plan, so its budget may be restated
    ignored = {"epochs", "verbose", "resume", "run_dir", "config", "time_budget"}
    flat = {k: v for k, v in config.items() if k not in ignored and k != "model"}
    flat.update({f"model.{k}": v for k, v in (config.get("model") or {}).items()})
    return json.loads(json.dumps(flat, default=str))


# What a run's configuration names that it reads: never its run directory.
INPUT_KEYS = ("dataset", "checkpoint", "preset", "config")


def run_inputs(config):
    """The paths a run reads, from its recorded configuration: the data
    set, checkpoint, preset and settings file, and the folder or .npz that
    `load_data` described as its source."""
    inputs = [config.get(key) for key in INPUT_KEYS]
    source = (config.get("data") or {}).get("source") or ""
    for prefix in ("folder:", "npz:"):
        if isinstance(source, str) and source.startswith(prefix):
            inputs.append(source[len(prefix):])
    return [item for item in inputs if isinstance(item, (str, os.PathLike))]


def prepare_run_dir(run_dir, config, resume):
    """Checks and prepares `run_dir`; returns True when a run resumes.

    The directory must be new, empty or a run directory of ours, and not one
    of the run's inputs (`keras_vit.utils.ownership.claim_directory`, which
    marks it). `resume=False` deletes only what a run writes there."""
    check_choice(resume, "resume", RESUME_MODES)
    inputs = run_inputs(config)
    run_dir = claim_directory(run_dir, RUN_DIR, inputs=inputs, flag="run_dir", mark=False)  # before any change
    state = None if resume is False else RunBackup.read_state(run_dir)  # a corrupt state is no obstacle then
    if resume is False:
        for entry in owned_entries(run_dir, RUN_DIR):
            if entry.name in ("head", "workers"):
                continue  # a fine-tune's head stage and other workers' state are their own runs
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        state = None
    elif resume is True and state is None:
        raise ValueError(
            f"`resume=True` but the run directory {run_dir} holds no backup to resume from. "
            "Use resume='auto' to start a new run there.")
    if state is not None and (run_dir / "config.json").exists():
        recorded = _read_state_file(run_dir / "config.json")
        saved, current = _comparable(recorded), _comparable(config)
        # settings worked out from others (a warmup from the epochs) are not settings that changed
        derived = {"derived", *(recorded.get("derived") or ()), *(config.get("derived") or ())}
        keys = (set(saved) | set(current)) - derived
        if not any(k.startswith("model.") for k in saved):  # written before runs recorded their model
            keys = {k for k in keys if not k.startswith("model.")}
        changed = sorted(k for k in keys if saved.get(k) != current.get(k))
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:12])
            raise ValueError(
                f"The run directory {run_dir} holds a run with a different configuration "
                f"(changed: {details}{' ...' if len(changed) > 12 else ''}). Use another run directory, "
                "the same settings, or resume=False to start over there.")
    claim_directory(run_dir, RUN_DIR, inputs=inputs, flag="run_dir")  # creates and marks it
    write_json(run_dir / "config.json", config)
    return state is not None
