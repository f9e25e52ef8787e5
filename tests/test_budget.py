"""Training to a time budget and the recipe chosen from the data: the
budget's arithmetic, a real 20-second `keras-vit train --time-budget`, a
budgeted run killed and resumed, and the auto recipe for several data
shapes."""

import json
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_vit.training import RunBackup
from keras_vit.training.auto import DataShape, choose_recipe, describe_source, training_flops
from keras_vit.training.budget import BudgetPlan, learning_rate_at, parse_duration, plan_budget
from keras_vit.training.speed import Speed
from keras_vit.training.recipe import Recipe
from tests.conftest import tiny_train_flags
from tests.test_cli_train import cli, env

TINY = tiny_train_flags()


@pytest.mark.parametrize("value, seconds", [(45, 45.0), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0),
                                            ("1h30m", 5400.0), (" 2.5m ", 150.0), ("20", 20.0)])
def test_durations_parse(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["ten minutes", "10x", "", "-5", 0, -1, True, None, float("inf"), "m"])
def test_bad_durations_name_the_setting(value):
    with pytest.raises(ValueError, match=r"`time_budget` must be"):
        parse_duration(value)


def test_the_plan_fills_the_time_left_and_no_more():
    speed = Speed(train_step=0.05, eval_step=0.02)
    kwargs = dict(steps_per_epoch=40, val_steps=4, test_steps=6)
    plan = plan_budget(100, 90, speed, **kwargs)
    ends = plan.epochs  # one validation pass (and saving) per epoch
    assert plan.planned_steps * speed.train_step + ends * (4 * 0.02 + 0.3) <= 90 - plan.reserve_seconds
    bigger = plan_budget(100, 90 + 2 * speed.train_step + 0.5, speed, **kwargs)
    assert bigger.planned_steps > plan.planned_steps  # more time, more steps
    capped = plan_budget(100, 90, speed, max_steps=120, **kwargs)
    assert capped.planned_steps == 120 and capped.epochs == 3
    resumed = plan_budget(100, 30, speed, done_steps=200, planned_steps=240, **kwargs)
    assert resumed.planned_steps == 240  # the earlier plan, when it still fits


def test_a_budget_too_small_to_train_is_refused_with_what_it_needs():
    with pytest.raises(ValueError, match=r"`time_budget=10` s leaves no time to train.*at least \d+ s"):
        plan_budget(10, 2, Speed(0.5, 0.2), steps_per_epoch=10, val_steps=3, test_steps=3)


def test_the_speed_measurement_prepares_the_validation_batch_once():
    import tensorflow as tf

    from keras_vit.models import build_vit
    from keras_vit.training.optim import compile_model
    from keras_vit.training.speed import measure_speed

    prepared = []

    def count(image, label):  # counts the images the validation pipeline prepares
        prepared.append(1)
        return image, label

    def prepare(image, label):
        image, label = tf.py_function(count, [image, label], (tf.float32, tf.int32))
        return tf.ensure_shape(image, (8, 8, 1)), tf.ensure_shape(label, ())

    x, y = np.random.rand(64, 8, 8, 1).astype("float32"), np.arange(64, dtype="int32") % 10
    train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    val_ds = tf.data.Dataset.from_tensor_slices((x, y)).map(prepare).batch(8)
    model = compile_model(build_vit(image_size=8, num_classes=10, channels=1, patch_size=4, hidden_dim=8, depth=1,
                                    num_heads=2, mlp_dim=16), sparse_labels=True, label_smoothing=0.0,
                          learning_rate=1e-3)
    speed = measure_speed(model, train_ds, val_ds, min_steps=4, min_seconds=0.0)
    # the evaluation steps it timed ran on one batch kept in memory (tf.data
    # may read one batch ahead, more often on a busy machine): the time of a
    # step, not of preparing its images again at every step (48 images or
    # more, before)
    assert speed.eval_step > 0 and 8 <= len(prepared) <= 16


def test_learning_rate_warms_up_then_follows_a_cosine_to_the_floor():
    plan = BudgetPlan(60, 110, 3, 40, 10, 50.0, 5.0, 0.1, 0.03)
    rates = [learning_rate_at(step, plan, 1e-3, 1e-5) for step in range(0, 111)]
    assert rates[0] == 0 and rates[5] == pytest.approx(5e-4) and rates[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # decreasing after the warmup
    assert rates[60] == pytest.approx((1e-3 + 1e-5) / 2) and rates[110] == pytest.approx(1e-5)


def _wait_for(proc, condition, deadline_seconds):
    deadline = time.time() + deadline_seconds
    while not condition():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()}"
        assert time.time() < deadline, "the condition never came"
        time.sleep(0.05)


# 45 s: the start-up (the process start to the first step: importing TensorFlow, the data, tracing)
# took 17 s on a slow spell of the 2-vCPU AMD machine, where a 20 s budget was refused (it needed 33 s)
BUDGET = 45


@pytest.mark.quiet
def test_a_short_budget_ends_within_it_evaluated_and_saved(tmp_path):
    run = tmp_path / "run"
    start = time.time()
    proc = subprocess.run([sys.executable, *cli("--time-budget", f"{BUDGET}s", "--run-dir", str(run), *TINY)],
                          capture_output=True, text=True, env=env(), timeout=120 + BUDGET)
    wall = time.time() - start
    assert proc.returncode == 0, proc.stderr
    # the budget ends with the saved model; the interpreter's exit after it takes ~1 s under load
    assert wall <= BUDGET + 1, f"a {BUDGET} s budget took {wall:.1f} s from the process start to its exit"
    record = json.loads((run / "plan.json").read_text())
    assert record["finished"] and record["sessions"][0]["total_seconds"] <= BUDGET  # start to saved model
    out = proc.stdout
    assert out.index(f"Time budget {BUDGET} s:") < out.index("epoch 1/")  # the plan is shown before training
    history = (run / "history.csv").read_text().splitlines()
    # every epoch the plan held (two or more, unless a loaded machine's slow start-up left time for one)
    assert len(history) - 1 >= min(2, record["plan"]["epochs"]) and "train_seconds" in history[0]
    assert (run / "model.keras").exists() and "accuracy" in json.loads((run / "metrics.json").read_text())["test"]
    last = dict(zip(history[0].split(","), history[-1].split(",")))
    assert float(last["learning_rate"]) < 0.1 * 2e-3  # the cosine reached its end
    session = record["sessions"][0]
    if session["stopped_by_time"]:  # the machine slowed after the last re-plan: the clock ended the cosine first
        assert 0.75 * record["plan"]["planned_steps"] <= session["last_step"], record  # but the plan held nearly
    else:
        assert session["last_step"] == record["plan"]["planned_steps"]


# not `quiet`: the 5-minute budget is far more than its four capped epochs need, even on a busy machine
def test_a_killed_budgeted_run_resumes_and_ends_where_planned(tmp_path):
    run = tmp_path / "run"
    args = cli("--time-budget", "5m", "--epochs", "4", "--batch-size", "8", "--run-dir", str(run), *TINY)
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())
    try:
        _wait_for(proc, lambda: (RunBackup.read_state(run) or {}).get("epoch", 0) >= 1, 240)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = json.loads((run / "plan.json").read_text())
    killed_at = RunBackup.read_state(run)["epoch"]
    assert not first["finished"] and 1 <= killed_at < 4
    rerun = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((run / "plan.json").read_text())
    steps_per_epoch = record["plan"]["steps_per_epoch"]
    planned = first["plan"]["planned_steps"]
    assert planned == 4 * steps_per_epoch  # the epoch cap bounds the plan
    assert f"Resuming at step {killed_at * steps_per_epoch}" in rerun.stdout
    (session,) = record["sessions"]
    assert session["last_step"] == planned and session["steps"] == planned - killed_at * steps_per_epoch
    assert record["plan"]["spent_before"] > 0  # the first session's committed time counts
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 4


def test_too_small_a_budget_touches_nothing(tmp_path, capsys):
    from keras_vit.cli.main import main

    # in this process: the budget counts from the process start, long spent
    run = tmp_path / "run"
    assert main(["train", "--time-budget", "2s", "--run-dir", str(run), *TINY]) == 2
    err = capsys.readouterr().err
    assert "leaves no time to train" in err and "Traceback" not in err and not run.exists()


@pytest.mark.parametrize("shape, budget, size, patch, augment", [
    (DataShape(8, 8, 1, 1797, 10), 600, 16, 4, "digits"),  # scikit-learn digits: a stem's 4x4 grid
    (DataShape(28, 28, 1, 55000, 10), 600, 32, 8, "digits"),  # MNIST, 10 minutes: a conv stem's 4x4 grid
    (DataShape(28, 28, 1, 55000, 10), 120, 32, 8, "none"),  # MNIST, 2 minutes: a smaller model, too few passes to augment
    (DataShape(28, 28, 1, 55000, 10), 3600, 32, 8, "digits"),  # MNIST, an hour: a wider model
    (DataShape(32, 32, 3, 50000, 10), 7200, 32, 8, "light"),  # CIFAR-10
    (DataShape(64, 64, 3, 3000, 200), 600, 64, 8, "medium"),  # Tiny-ImageNet-like, few images
    (DataShape(375, 500, 3, 2000, 5), 600, 128, 16, "medium"),  # photos in folders
    (DataShape(375, 500, 3, 2000, 5), None, 128, 16, "medium"),  # no budget
])
def test_the_auto_recipe_follows_the_data(shape, budget, size, patch, augment):
    fields = choose_recipe(shape, time_budget=budget, cores=2)
    assert (fields["image_size"], fields["patch_size"], fields["augment"]) == (size, patch, augment)
    assert fields["hidden_dim"] % fields["num_heads"] == 0 and fields["mlp_dim"] == 2 * fields["hidden_dim"]
    side, width = min(shape.height, shape.width), fields["hidden_dim"]
    # images up to 80 px get a stem of 3x3 stride-2 convolutions, one per halving of the patch; larger ones patchify
    convolutions = fields["patch_size"].bit_length() - 1 if side <= 80 else 0
    assert fields["conv_stem"] == ([max(8, width // 2 ** (convolutions - 1 - i)) for i in range(convolutions)]
                                   or None)
    Recipe(**{**fields, "dataset": "x"}).validate()  # every choice is a valid setting
    test, val = fields["test_split"], fields["validation_split"]
    held_out = shape.num_examples * (test + (1 - test) * val)  # validation is carved from what the test left
    assert held_out <= 0.3 * shape.num_examples and held_out >= min(1000, 0.25 * shape.num_examples)


@pytest.mark.parametrize("shape", [DataShape(28, 28, 1, 55000, 10), DataShape(32, 32, 3, 1000, 3),
                                   DataShape(200, 300, 3, 200_000, 100)])
def test_a_longer_budget_never_chooses_a_smaller_model(shape):
    costs = [training_flops(f["image_size"], f["patch_size"], f["hidden_dim"], f["depth"], stride=f["stride"],
                            conv_stem=f["conv_stem"])
             for f in (choose_recipe(shape, budget, cores=2) for budget in (30, 300, 3000, 30000, 300000))]
    assert costs == sorted(costs) and costs[0] < costs[-1]
    small = choose_recipe(DataShape(28, 28, 1, 1000, 10), 300000, cores=2)
    assert small["hidden_dim"] <= 96  # few images never get a large model, however long the budget


def test_sources_are_described_without_loading_them(tmp_path):
    from PIL import Image

    x = np.zeros((30, 12, 10, 3), "uint8")
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    assert describe_source(str(tmp_path / "d.npz")) == DataShape(12, 10, 3, 36, 3)
    assert describe_source((x[..., 0], y)) == DataShape(12, 10, 1, 30, 3)
    for label in ("cat", "dog"):
        (tmp_path / "f" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30)).save(tmp_path / "f" / label / f"{i}.png")
    assert describe_source(str(tmp_path / "f")) == DataShape(30, 40, 3, 6, 2)


def test_recipe_sources_choose_auto_for_data_other_than_digits(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((200, 28, 28), "uint8"), y=np.arange(200) % 10)
    auto = Recipe.from_sources(dataset=str(tmp_path / "d.npz"), time_budget="1m", hidden_dim=32)
    assert auto.recipe == "auto" and auto.image_size == 32 and auto.hidden_dim == 32  # flags win
    assert Recipe.from_sources().recipe == "digits"
    named = Recipe.from_sources("small", dataset=str(tmp_path / "d.npz"))
    assert named.recipe == "small" and named.image_size == 32


@pytest.mark.parametrize("side, shown, patch, stem, extra", [
    (12, "16 px, 4 px patches from a stem of 2 convolutions (32,64), width 16, depth 1", 4,
     [32, 64], []),  # tiny images: upsampled to 16 px, a stem of 2 convolutions to a 4x4 grid
    (20, "24 px, 8 px patches from a stem of 3 convolutions (16,32,64), width 16, depth 1", 8,
     [16, 32, 64], []),  # small images: resized to a multiple of 8, a conv stem
    # a named preset keeps its network (patch 4, no stem); the data choose the rest
    (20, "24 px, preset Mu/4 (hidden_dim=16, depth=1, num_heads=2), batch 32", 4, None, ["--preset", "Mu/4"]),
])
def test_the_cli_shows_the_recipe_it_chose_for_the_data(tmp_path, capsys, side, shown, patch, stem, extra):
    from keras_vit.cli.main import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (120, side, side), dtype="uint8"), y=np.arange(120) % 3)
    code = main(["train", "--dataset", str(tmp_path / "d.npz"), "--epochs", "1", "--hidden-dim", "16",
                 "--depth", "1", "--num-heads", "2", "--run-dir", str(tmp_path / "run"), "--verbose", "0", *extra])
    assert code == 0
    out = capsys.readouterr().out
    assert f"Recipe chosen from the data: {shown}" in out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["recipe"] == "auto" and saved["augment"] == "digits" and saved["conv_stem"] == stem
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert model.backbone.patch_encoder.patch_size == (patch, patch) and model.input_shape[1] == int(shown[:2])
    assert (model.backbone.patch_encoder.stem is not None) == bool(stem)


# not `quiet`: two capped epochs need seconds of a budget of 60 s, even on a busy machine
def test_budgeted_steps_count_real_optimizer_steps_with_steps_per_execution(tmp_path):
    from keras_vit import build_vit
    from keras_vit.data import load_data
    from keras_vit.training import train

    data = load_data("digits", 8, 32)
    result = train(lambda: build_vit(image_size=8, num_classes=10, channels=1, patch_size=4, hidden_dim=16,
                                     depth=1, num_heads=2, mlp_dim=32),
                   data, time_budget=60, epochs=2, steps_per_execution=3, jit_compile=False,
                   run_dir=tmp_path / "run", verbose=0)
    record = json.loads((tmp_path / "run" / "plan.json").read_text())
    # counted in optimizer steps (a callback sees one batch in three), in epochs that are not a multiple of 3
    steps_per_epoch = record["plan"]["steps_per_epoch"]
    assert steps_per_epoch % 3 != 0
    assert int(result.model.optimizer.iterations) == record["sessions"][0]["last_step"] == 2 * steps_per_epoch


def test_a_stem_the_auto_recipe_chose_is_named_when_a_flag_conflicts_and_can_be_turned_off(tmp_path):
    from keras_vit.cli.train import channels_arg

    np.savez(tmp_path / "d.npz", x=np.zeros((200, 28, 28), "uint8"), y=np.arange(200) % 10)
    with pytest.raises(ValueError, match=r"use patch_size=8 and no stride.*--conv-stem none turns the stem off"):
        Recipe.from_sources(dataset=str(tmp_path / "d.npz"), patch_size=4)
    assert Recipe.from_sources(dataset=str(tmp_path / "d.npz"), patch_size=4, conv_stem=[]).conv_stem == []
    with pytest.raises(ValueError, match="`conv_stem` must be a non-empty list of channel counts"):
        Recipe.from_sources(dataset=str(tmp_path / "d.npz"), conv_stem=["8"])
    # with a preset, the stem is checked against the preset's patch size, before any data loads
    with pytest.raises(ValueError, match=r"use patch_size=8.*patch_size=4.*--conv-stem none turns the stem off"):
        Recipe.from_sources(dataset=str(tmp_path / "d.npz"), preset="Mu/4", conv_stem=[8, 16, 32])
    assert Recipe.from_sources(dataset=str(tmp_path / "d.npz"), preset="Mu/4", conv_stem=[8, 16]).conv_stem == [8, 16]
    assert channels_arg("none") == [] and channels_arg("8,16,32") == [8, 16, 32]
    with pytest.raises(Exception, match="comma-separated channel counts"):
        channels_arg("8,x")


def test_the_replanned_pace_leaves_out_the_first_calls_compilation(monkeypatch):
    """An epoch whose first train call took 10 s and its last 5 s (compiling
    the step and, on JAX, the short last batch) and the other 98 0.1 s
    each: the next epoch is planned at 0.1 s a step plus its share of the
    1 s of validation, not at 0.26 s (the epoch's wall time over its
    steps), which left a JAX 2-minute run a fifth of its budget unused; and
    the schedule's progress starts again from the step reached."""
    from keras_vit.training import budget

    clock = [1000.0]
    monkeypatch.setattr(budget.time, "time", lambda: clock[0])
    plan = plan_budget(120, 110, Speed(0.1, 0.05), steps_per_epoch=100, val_steps=10, test_steps=10)
    callback = budget.TimeBudget(plan, 1e-3, budget_end=clock[0] + 110)
    callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for batch in range(100):
        clock[0] += 10.0 if batch == 0 else 5.0 if batch == 99 else 0.1
        callback.on_train_batch_end(batch)
    clock[0] += 1.0  # validation and saving
    callback.on_epoch_begin(1)
    left = 110 - plan.reserve_seconds - 25.8  # seconds to the deadline
    expected = 100 + int(left / (0.1 + 1.0 / 100))
    assert abs(plan.planned_steps - expected) <= 1, (plan.planned_steps, expected)
    assert plan.epochs == -(-plan.planned_steps // 100)
    # the learning-rate schedule follows the new plan from the step reached, not the clock since the start
    assert callback.progress_step() == 100
    clock[0] += 0.5 * (callback.deadline - clock[0])
    assert abs(callback.progress_step() - (100 + 0.5 * (plan.planned_steps - 100))) < 1e-6
