"""Tests of the training recipe and run directories (in-process, tiny)."""

import json

import keras
import numpy as np
import pytest

from keras_vit import build_vit
from keras_vit.data import load_data
from keras_vit.training import (
    RECIPES,
    RunBackup,
    compile_model,
    make_optimizer,
    make_schedule,
    resolve_recipe,
    train,
)
from keras_vit.training.rundir import resume_variables
from keras_vit.utils.io import atomic_path
from tests.conftest import tiny_vit_kwargs

DIGITS = tiny_vit_kwargs(image_size=8, num_classes=10, channels=1, depth=1)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", 8, 128)


def tiny_model():
    keras.utils.set_random_seed(0)
    return build_vit(**DIGITS)


def test_weight_decay_skips_biases_norms_positions_and_tokens():
    model = build_vit(**tiny_vit_kwargs(num_registers=1))
    before = {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights}
    optimizer = make_optimizer(0.1, weight_decay=0.5, clipnorm=None)
    zeros = [keras.ops.zeros_like(w) for w in model.trainable_weights]
    optimizer.apply(zeros, model.trainable_weights)
    excluded = ("bias", "gamma", "beta", "position_embedding", "cls_token", "registers")
    seen = set()
    for w in model.trainable_weights:
        after = keras.ops.convert_to_numpy(w)
        if w.name in excluded:
            seen.add(w.name)
            np.testing.assert_array_equal(after, before[w.path], err_msg=w.path)
        else:  # kernels decay by lr * weight_decay
            np.testing.assert_allclose(after, before[w.path] * (1 - 0.1 * 0.5), rtol=1e-5, err_msg=w.path)
    assert seen == set(excluded)


def test_the_recipe_optimizer_is_one_fused_op_a_weight_and_trains_as_keras_adamw(digits):
    # make_optimizer's AdamW updates each weight with one ResourceApplyAdam op
    # on TensorFlow (Keras' builds about 20); `fit` must end with Keras' weights,
    # and the optimizer stays Keras' class (a .keras file loads without keras_vit's code)
    import tensorflow as tf

    batches = list(digits[0].take(6))  # the same batches for both (the split reshuffles each pass)
    data = tf.data.Dataset.from_tensor_slices(tuple(np.concatenate([b[i] for b in batches]) for i in (0, 1)))
    data = data.batch(int(batches[0][0].shape[0]))
    models = []
    for fused in (True, False):
        model = tiny_model()
        compile_model(model, learning_rate=3e-3, weight_decay=0.05, total_steps=20, warmup_steps=3, clipnorm=1.0)
        if not fused:
            model.compile(optimizer=keras.optimizers.AdamW.from_config(model.optimizer.get_config()), loss=model.loss)
            model.optimizer.exclude_from_weight_decay(var_list=model.no_weight_decay())
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        models.append(model)
    fused, plain = models
    assert type(fused.optimizer) is type(plain.optimizer) is keras.optimizers.AdamW  # saved as Keras' own
    assert int(fused.optimizer.iterations) == int(plain.optimizer.iterations) == 6
    for a, b in zip(fused.weights, plain.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=2e-6,
                                   err_msg=a.path)
    x, y = batches[0]
    ops = {op.type for op in tf.function(lambda x, y: fused.train_step((x, y))).get_concrete_function(
        x, y).graph.get_operations()}
    assert "ResourceApplyAdam" in ops


def test_schedule_warms_up_linearly_then_decays_to_the_minimum():
    schedule = make_schedule(1e-3, total_steps=100, warmup_steps=10, min_learning_rate=1e-5)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    np.testing.assert_allclose(values[:3], [0.0, 5e-4, 1e-3], rtol=1e-5)
    assert 1e-5 < values[3] < 1e-3
    np.testing.assert_allclose(values[4], 1e-5, rtol=1e-4)
    assert make_schedule(3e-4) == 3e-4


@pytest.mark.parametrize("kwargs, match", [
    (dict(label_smoothing=0.1, sparse_labels=True), "one-hot"),
    (dict(label_smoothing=1.5), "label_smoothing"),
    (dict(steps_per_execution=0), "steps_per_execution"),
    (dict(jit_compile="yes"), "jit_compile"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(ema_momentum=1.5), "ema_momentum"),
    (dict(gradient_accumulation_steps=0), "gradient_accumulation_steps"),
    (dict(total_steps=10, warmup_steps=10), "warmup_steps"),
])
def test_compile_model_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compile_model(tiny_model(), **kwargs)


def test_train_writes_a_complete_run_directory(tmp_path, digits):
    run = tmp_path / "run"
    result = train(tiny_model, digits, epochs=2, run_dir=run, learning_rate=3e-3, warmup_epochs=0.5,
                   seed=0, verbose=0)  # jit_compile="auto": XLA where available
    for name in ("config.json", "history.csv", "history.png", "metrics.json", "model.keras",
                 "checkpoints/best.keras", "backup/training_metadata.json"):
        assert (run / name).is_file(), name
    # Per epoch only the resume state and an improved best model are written,
    # not the whole model with its optimizer (gigabytes an epoch for ViT-B).
    assert not (run / "checkpoints" / "last.keras").exists()
    assert not isinstance(RunBackup(run), keras.callbacks.BackupAndRestore)
    assert list((run / "logs").rglob("events.out.tfevents*")), "no TensorBoard logs"
    assert (run / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and "val_accuracy" in lines[0] and len(lines) == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["resumed_from_epoch"] == 0
    assert metrics["test"] == result.test_metrics and 0 <= metrics["test"]["accuracy"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert config["learning_rate"] == 3e-3 and config["data"]["num_classes"] == 10
    # leftovers of atomic writes would start with a dot
    assert not [p for p in run.rglob(".*") if p.name not in (".keras_vit.lock", ".keras_vit.dir")]  # the lock, the marker
    reloaded = keras.saving.load_model(run / "model.keras")
    images = next(iter(digits[2]))[0]
    np.testing.assert_allclose(reloaded.predict(images, verbose=0),
                               result.model.predict(images, verbose=0), atol=1e-5)
    loss, accuracy = reloaded.evaluate(digits[2], verbose=0)
    np.testing.assert_allclose(accuracy, metrics["test"]["accuracy"], atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="counts TensorFlow's traces of the step")
def test_train_traces_the_train_step_once(tmp_path, digits):
    # Keras on TensorFlow creates the optimizer's variables inside the first
    # trace, and tf.function then traces the whole step again; `train`
    # creates them before `fit` (6-10 s of the digits recipe's first epoch).
    model, traces = tiny_model(), []
    step = model.train_step
    model.train_step = lambda data: traces.append(data) or step(data)
    train(model, digits, epochs=2, run_dir=tmp_path / "run", seed=0, verbose=0)
    assert len(traces) == 1


def test_rerun_resumes_from_the_backup_and_checks_the_config(tmp_path, digits):
    run = tmp_path / "run"
    train(tiny_model, digits, epochs=1, run_dir=run, seed=0, verbose=0, jit_compile=False)
    result = train(tiny_model, digits, epochs=3, run_dir=run, seed=0, verbose=0, jit_compile=False)
    assert result.initial_epoch == 1
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert len((run / "history.csv").read_text().splitlines()) == 4
    with pytest.raises(ValueError, match="changed: learning_rate"):
        train(tiny_model, digits, epochs=3, run_dir=run, learning_rate=0.5, seed=0, verbose=0, jit_compile=False)
    # a finished run re-evaluates without training again
    again = train(tiny_model, digits, epochs=3, run_dir=run, seed=0, verbose=0, jit_compile=False)
    assert again.initial_epoch == 3 and len(again.history) == 3
    # resume=False starts over
    restarted = train(tiny_model, digits, epochs=1, run_dir=run, seed=0, verbose=0, resume=False,
                      jit_compile=False)
    assert restarted.initial_epoch == 0 and len(restarted.history) == 1
    assert len((run / "history.csv").read_text().splitlines()) == 2


def _values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _restored(run, model):
    """`model`, compiled, after the resume step of `train` (RunBackup.on_train_begin)."""
    compile_model(model, jit_compile=False)
    backup = RunBackup(run)
    backup.set_model(model)
    backup.on_train_begin()
    return model


def test_the_resume_state_restores_weights_optimizer_and_seeds_exactly(tmp_path, digits):
    run = tmp_path / "run"
    trained = train(tiny_model, digits, epochs=1, run_dir=run, seed=0, verbose=0, jit_compile=False).model
    state = RunBackup.read_state(run)
    assert state["weights"] == "epoch-0001.npz" and sorted(p.name for p in (run / "backup").iterdir()) == [
        "epoch-0001.npz", "training_metadata.json"]
    # the finished run again: `train` resumes its model from the backup and only evaluates
    resumed = train(tiny_model, digits, epochs=1, run_dir=run, seed=0, verbose=0, jit_compile=False)
    assert resumed.initial_epoch == 1
    steps = int(keras.ops.convert_to_numpy(trained.optimizer.iterations))
    assert steps > 0 and int(keras.ops.convert_to_numpy(resumed.model.optimizer.iterations)) == steps
    expected = _values(resume_variables(trained))
    assert len(expected) > 2 * len(trained.trainable_variables)  # the optimizer's moments too
    for want, got in zip(expected, _values(resume_variables(resumed.model)), strict=True):
        np.testing.assert_array_equal(got, want)
    # another model is refused, naming the file and --restart
    with pytest.raises(ValueError, match=r"epoch-0001.npz is corrupt .*do not match.*--restart"):
        _restored(run, build_vit(**{**DIGITS, "depth": 2}))


def test_a_resume_state_written_as_keras_weights_still_resumes(tmp_path, digits):
    # run directories written before the .npz resume state hold epoch-NNNN.weights.h5
    run = tmp_path / "run"
    trained = train(tiny_model, digits, epochs=1, run_dir=run, seed=0, verbose=0, jit_compile=False).model
    metadata = run / "backup" / "training_metadata.json"
    state = json.loads(metadata.read_text())
    (run / "backup" / state["weights"]).unlink()
    trained.save_weights(run / "backup" / "epoch-0001.weights.h5")
    metadata.write_text(json.dumps({**state, "weights": "epoch-0001.weights.h5"}))
    resumed = train(tiny_model, digits, epochs=1, run_dir=run, seed=0, verbose=0, jit_compile=False)
    assert resumed.initial_epoch == 1  # finished: restored, then only evaluated
    for want, got in zip(_values(resume_variables(trained)), _values(resume_variables(resumed.model)), strict=True):
        np.testing.assert_array_equal(got, want)
    result = train(tiny_model, digits, epochs=2, run_dir=run, seed=0, verbose=0, jit_compile=False)
    assert result.initial_epoch == 1 and sorted(p.name for p in (run / "backup").iterdir()) == [
        "epoch-0002.npz", "training_metadata.json"]


def test_resume_true_needs_a_backup(tmp_path, digits):
    with pytest.raises(ValueError, match="holds no backup"):
        train(tiny_model, digits, epochs=1, run_dir=tmp_path, resume=True, verbose=0)


def test_ema_accumulation_and_int_labels(tmp_path):
    data = load_data("digits", 8, 64, label_mode="int")
    result = train(tiny_model, data, epochs=1, run_dir=tmp_path, label_smoothing=0.0,
                   ema_momentum=0.9, gradient_accumulation_steps=2, steps_per_execution=2,
                   jit_compile=False, verbose=0)
    optimizer = result.model.optimizer
    assert optimizer.use_ema and optimizer.gradient_accumulation_steps == 2
    assert result.test_metrics["accuracy"] > 0


def test_mixed_precision_builds_the_model_under_the_policy(tmp_path):
    data = load_data("digits", 8, 256, test_split=0.5)
    result = train(tiny_model, data, epochs=1, run_dir=tmp_path, precision="mixed_bfloat16",
                   jit_compile=False, verbose=0)
    assert result.model.backbone.blocks[0].dtype_policy.name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    images = next(iter(data[2]))[0]
    assert keras.backend.standardize_dtype(result.model(images).dtype) == "float32"
    with pytest.raises(ValueError, match="built with the 'float32' policy"):
        train(tiny_model(), data, epochs=1, run_dir=tmp_path / "b", precision="mixed_float16")


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "epochs"),
    (dict(warmup_epochs=2), "warmup_epochs"),
    (dict(precision="fp8"), "precision"),
    (dict(strategy="gossip"), "strategy"),
    (dict(resume="maybe"), "resume"),
])
def test_train_rejects_bad_arguments(tmp_path, digits, kwargs, match):
    kwargs = {"epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        train(tiny_model, digits, run_dir=tmp_path, **kwargs)


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_resolve_recipe_priorities(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nhidden-dim: 32\nrecipe: digits\n")
    config = resolve_recipe(config_file=path, epochs=7)
    assert config.epochs == 7 and config.hidden_dim == 32
    assert config.depth == RECIPES["digits"]["depth"]
    assert config.run_dir.endswith("digits-digits")
    with pytest.raises(ValueError, match="Unknown setting.*colour"):
        resolve_recipe(colour="red")
    with pytest.raises(ValueError, match="recipe"):
        resolve_recipe("huge")
    (tmp_path / "c.txt").write_text("epochs: 1")
    with pytest.raises(ValueError, match=".yaml, .yml or .json"):
        resolve_recipe(config_file=tmp_path / "c.txt")


def test_strategies_and_worker_info(monkeypatch):
    import tensorflow as tf

    from keras_vit.training import get_strategy, worker_info

    assert get_strategy("auto") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="no TPU was found"):
        get_strategy("tpu")
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}}))
    assert worker_info() == (2, 3, False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert worker_info() == (0, 3, True)


def test_recipe_warmup_longer_than_a_short_run_is_shortened_with_a_warning():
    with pytest.warns(UserWarning, match="warmup_epochs=3 is not shorter than epochs=2"):
        config = resolve_recipe("digits", epochs=2)
    assert config.warmup_epochs == pytest.approx(0.2)


@pytest.mark.parametrize("overrides, message", [
    (dict(epochs=0), "`epochs` must be an int >= 1. Received: epochs=0"),
    (dict(batch_size=True), "`batch_size` must be an int >= 1. Received: batch_size=True"),
    (dict(learning_rate="fast"), "`learning_rate` must be a number >= 0"),
    (dict(validation_split=1.5), "`validation_split` must be in [0, 1)"),
    (dict(download="yes"), "`download` must be a bool"),
    (dict(pooling="max"), "Unknown `pooling`: 'max'"),
    (dict(augment="wild"), "Unknown `augment`: 'wild'"),
    (dict(jit_compile="maybe"), "Unknown `jit_compile`: 'maybe'"),
])
def test_one_recipe_checks_every_setting_before_anything_runs(overrides, message):
    with pytest.raises(ValueError) as info:
        resolve_recipe("digits", **overrides)
    assert message in str(info.value)


def test_the_recipe_fields_are_the_train_flags():
    import dataclasses

    from keras_vit.cli.main import build_parser
    from keras_vit.training import Recipe

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {option for action in train_parser._actions for option in action.option_strings}
    for field in dataclasses.fields(Recipe):
        if field.name != "resume":
            assert "--" + field.name.replace("_", "-") in flags, field.name
    assert {"--resume", "--restart", "--config"} <= flags


def test_invalid_settings_are_refused_before_the_run_directory_is_touched(tmp_path, digits):
    run = tmp_path / "run"
    train(tiny_model, digits, epochs=1, run_dir=run, seed=0, verbose=0)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    bad_model = lambda: build_vit(**tiny_vit_kwargs(hidden_dim=16, num_heads=3, num_classes=10, channels=1))  # noqa
    with pytest.raises(ValueError, match="divisible by `num_heads`"):
        train(bad_model, digits, epochs=1, run_dir=run, resume=False, verbose=0)
    with pytest.raises(ValueError, match="model has 4 classes but the data has 10"):
        train(lambda: build_vit(**tiny_vit_kwargs(channels=1)), digits, epochs=1, run_dir=run, resume=False)
    with pytest.raises(ValueError, match="Unknown `monitor`: 'val_f1'"):
        train(tiny_model, digits, epochs=1, run_dir=run, resume=False, monitor="val_f1")
    with pytest.raises(ValueError, match="`steps_per_epoch` must be an int >= 1"):
        train(tiny_model, digits, epochs=1, run_dir=run, resume=False, steps_per_epoch=0)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing deleted


def test_a_run_directory_in_use_is_refused_and_stale_temporaries_are_cleaned(tmp_path, digits):
    from keras_vit.utils.locks import exclusive_lock

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = run / "checkpoints" / ".best.keras.tmp-123-abcd.keras"
    stale.write_text("left by a killed write")
    with exclusive_lock(run, "run directory"):  # another run holds it
        with pytest.raises(ValueError, match="run directory .* is in use by process"):
            train(tiny_model, digits, epochs=1, run_dir=run, verbose=0)
    assert stale.exists()
    train(tiny_model, digits, epochs=1, run_dir=run, verbose=0)
    assert not stale.exists()


def test_nan_loss_stops_the_run_and_keeps_the_last_good_epoch(tmp_path, digits):
    run = tmp_path / "run"
    train(tiny_model, digits, epochs=1, run_dir=run, seed=0, verbose=0)
    good = json.loads((run / "backup" / "training_metadata.json").read_text())
    class PoisonSecondEpoch(keras.callbacks.Callback):  # a weight turns NaN, as in a divergence
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.head.kernel.assign(np.full(self.model.head.kernel.shape, np.nan, "float32"))

    with pytest.raises(ValueError, match="loss became NaN or infinite in epoch 2"):
        train(tiny_model, digits, epochs=2, run_dir=run, seed=0, verbose=0, callbacks=[PoisonSecondEpoch()])
    state = json.loads((run / "backup" / "training_metadata.json").read_text())
    assert state["epoch"] == good["epoch"] == 1


def test_data_that_cannot_train_a_classifier_is_refused():
    x = np.random.default_rng(0).uniform(0, 255, (20, 8, 8)).astype("float32")
    with pytest.raises(ValueError, match="a classifier needs at least 2 classes"):
        load_data((x, np.zeros(20, "int32")), 8, 4)
    x[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite pixels .* first at index 3"):
        load_data((x, np.arange(20) % 2), 8, 4)
    with pytest.raises(ValueError, match="empty"):
        load_data((np.zeros((0, 8, 8)), np.zeros(0, "int32")), 8, 4)


def test_compile_model_exempts_what_the_model_names_in_no_weight_decay():
    model = build_vit(**tiny_vit_kwargs())
    exempt = model.no_weight_decay() + [model.head.kernel]  # a model may name more than the defaults
    model.no_weight_decay = lambda: exempt
    compile_model(model, learning_rate=0.1, weight_decay=0.5, clipnorm=None, label_smoothing=0.0,
                  sparse_labels=True)
    before = keras.ops.convert_to_numpy(model.head.kernel).copy()
    other = model.backbone.blocks[0].mlp_dense1.kernel
    other_before = keras.ops.convert_to_numpy(other).copy()
    weights = model.trainable_weights
    model.optimizer.apply([keras.ops.zeros_like(w) for w in weights], weights)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.head.kernel), before)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(other), other_before * (1 - 0.1 * 0.5), rtol=1e-5)
