"""Hyperparameter search with KerasTuner: space, failures, resume, chief/workers."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras_tuner
import pytest

from keras_vit.tuning import ViTHyperModel, heads_name, tune
from tests.conftest import REPO

# Everything fixed but what a test varies: 8 px digits, one tiny block.
TINY = {"patch_size": 4, "hidden_dim": 16, "num_heads": 2, "depth": 1, "mlp_ratio": 2,
        "pooling": "gap", "pos_embedding": "learned", "drop_path_rate": 0.0,
        "weight_decay": 0.01, "warmup_epochs": 0.0, "label_smoothing": 0.0,
        "augment": 0.0, "batch_size": 64}


def encoder_blocks(model):
    return model.backbone.blocks


def test_search_space_offers_only_heads_that_divide_the_width():
    hypermodel = ViTHyperModel(16, 10, space={"hidden_dim": [24, 32, 40], "num_heads": [3, 4, 8]})
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    head_entries = [h for h in hp.space if h.name.startswith("num_heads")]
    assert len(head_entries) == 3
    for entry in head_entries:
        (condition,) = entry.conditions
        (width,) = condition.values
        assert entry.name == heads_name(width)
        assert entry.values and all(width % heads == 0 for heads in entry.values)
    # Every (width, heads) pair the space offers builds that model.
    for width, heads_list in hypermodel.valid_heads().items():
        for heads in heads_list:
            hp = keras_tuner.HyperParameters()
            hp.Fixed("hidden_dim", width)
            with hp.conditional_scope("hidden_dim", [width]):
                hp.Fixed(heads_name(width), heads)
            model = hypermodel.build(hp)
            assert encoder_blocks(model)[0].attention.num_heads == heads
            assert model.backbone.hidden_dim == width


def test_conv_stem_entry_builds_a_stem_that_makes_the_patches():
    from keras_vit.cli.tune import _parse_space

    space = _parse_space(["conv_stem=none,stem"], "space")
    assert space == {"conv_stem": ["none", "stem"]}
    hypermodel = ViTHyperModel(16, 10, channels=1, space=space, fixed={**TINY, "hidden_dim": 32})
    hp = keras_tuner.HyperParameters()
    hp.Fixed("conv_stem", "stem")
    encoder = hypermodel.build(hp).backbone.patch_encoder
    assert encoder.patch_size == (4, 4) and list(encoder.stem.filters) == [16, 32]  # log2(4) convolutions
    hp = keras_tuner.HyperParameters()
    hp.Fixed("conv_stem", "none")
    assert hypermodel.build(hp).backbone.patch_encoder.stem is None
    # a stem cannot make 6 px patches: that trial fails, the search goes on
    odd = ViTHyperModel(12, 10, channels=1, fixed={**TINY, "patch_size": 6, "conv_stem": "stem"})
    with pytest.raises(keras_tuner.errors.FailedTrialError,
                       match=r"2 convolutions makes 4x4-pixel patches.*patch_size=6"):
        odd.build(keras_tuner.HyperParameters())
    with pytest.raises(ValueError, match="`conv_stem`.*'none', 'stem'"):
        ViTHyperModel(16, 10, space={"conv_stem": ["yes"]})


def test_fixed_and_narrowed_entries_and_user_hyperparameters():
    hypermodel = ViTHyperModel(16, 10, space={"hidden_dim": [32], "depth": (1, 2)},
                               fixed={"patch_size": 8, "pooling": "gap"})
    hp = keras_tuner.HyperParameters()
    hp.Fixed("depth", 2)
    model = hypermodel.build(hp)
    assert len(encoder_blocks(model)) == 2
    assert model.backbone.patch_size == (8, 8)
    assert hp.get("hidden_dim") == 32
    assert model.pooling == "gap"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(space={"hidden_dim": [30], "num_heads": [4, 8]}), "contradictory"),
        (dict(space={"depth": []}), "empty list"),
        (dict(space={"depth": (4, 2)}), "low <= high"),
        (dict(space={"patch_size": [5, 7]}), "tiles images"),
        (dict(fixed={"width": 3}), "Unknown search-space entries: ['width']"),
    ],
)
def test_bad_search_spaces_fail_before_any_trial(kwargs, message):
    with pytest.raises(ValueError) as info:
        ViTHyperModel(16, 10, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(max_trials=0), "`max_trials` must be an int >= 1"),
        (dict(tuner="grid"), "Unknown `tuner`: 'grid'"),
        (dict(objective="val_f1"), "Unknown `objective`: 'val_f1'"),
        (dict(space={"hidden_dim": [30], "num_heads": [4]}), "contradictory"),
    ],
)
def test_bad_tune_arguments_fail_before_any_trial(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as info:
        tune("digits", directory=tmp_path, epochs=1, **kwargs)
    assert message in str(info.value)
    assert not (tmp_path / "vit" / "oracle.json").exists()


@pytest.mark.parametrize("train_size", [None, "from_info"])
def test_fit_schedule_spans_the_trials_real_steps(train_size):
    from keras_vit.data import load_data

    train, validation, _, info = load_data("digits", 8, 64)
    size = info.split_sizes["train"]
    hypermodel = ViTHyperModel(8, 10, info.channels, fixed=dict(TINY, batch_size=16),
                               train_size=size if train_size else None)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model, train, validation_data=validation, epochs=2, verbose=0)
    steps = -(-size // 16)
    assert int(model.optimizer.iterations) == 2 * steps
    # warmup_epochs is 0: a cosine over the whole run, not over a few steps.
    assert model.optimizer._learning_rate.decay_steps == 2 * steps


def test_search_records_a_nan_trial_as_failed_and_goes_on(tmp_path):
    # Two trials that differ only in the learning rate; 1e9 makes the loss NaN.
    model, hp = tune(
        "digits", image_size=8, max_trials=2, epochs=2, directory=tmp_path,
        project_name="search", fixed=TINY, space={"learning_rate": [3e-3, 1e9]}, verbose=0,
    )
    out = tmp_path / "search"
    rows = json.loads((out / "results.json").read_text())["trials"]
    assert sorted(r["learning_rate"] for r in rows) == [3e-3, 1e9]
    failed = [r for r in rows if r["learning_rate"] == 1e9][0]
    assert failed["status"] == "FAILED" and failed["score"] is None
    assert hp.get("learning_rate") == 3e-3
    good = [r for r in rows if r["learning_rate"] == 3e-3][0]
    assert good["score"] > 0.3  # it learned (chance is 0.1)
    assert (out / "results.csv").read_text().startswith("trial_id,status,score")
    assert (out / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((out / "logs").rglob("*tfevents*"))  # TensorBoard with HParams
    import keras  # (a fresh process reloading a model: tests/test_model.py)

    assert keras.saving.load_model(out / "best_model.keras").count_params() == model.count_params()


def test_a_trial_backup_never_commits_an_epoch_whose_best_checkpoint_was_not_written(tmp_path):
    # A kill at any moment must leave a whole checkpoint of the best epoch the
    # trial's backup has committed (the resumed search loads it as the best
    # model). Here the checkpoint of epoch 2 cannot be written (its path has
    # become a folder): the trial fails and its backup must still end at epoch 1.
    import keras

    from keras_vit.data import load_data
    from keras_vit.tuning import make_tuner

    train, validation, _, info = load_data("digits", 8, 64)
    hypermodel = ViTHyperModel(8, 10, info.channels, fixed=TINY, train_size=info.split_sizes["train"])
    search = make_tuner("random", hypermodel, objective="val_loss", max_trials=1, directory=tmp_path,
                        project_name="search")

    class BlockTheSecondCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                checkpoint = Path(search._get_checkpoint_fname("0"))
                assert checkpoint.is_file()  # epoch 1's, whole
                checkpoint.unlink()
                (checkpoint / "blocked").mkdir(parents=True)

    search.search(train, validation_data=validation, epochs=3, verbose=0, callbacks=[BlockTheSecondCheckpoint()])
    (trial,) = search.oracle.trials.values()
    assert trial.status == "FAILED"
    assert _backup_epoch(tmp_path / "search" / "trial_0") == 1
    assert not [p.name for p in (tmp_path / "search" / "trial_0").iterdir() if ".tmp-" in p.name]


def test_a_kill_before_the_trial_is_recorded_completed_keeps_its_epochs(tmp_path):
    # The trial has run every epoch but KerasTuner has not yet recorded it
    # COMPLETED when the process dies (here: an interrupt in `end_trial`). The
    # backup must still be there, so the resumed search reports the trial
    # without training it again, and then drops the backup.
    import keras

    from keras_vit.data import load_data
    from keras_vit.tuning import make_tuner

    train, validation, _, info = load_data("digits", 8, 64)
    hypermodel = ViTHyperModel(8, 10, info.channels, fixed=TINY, train_size=info.split_sizes["train"])

    def tuner():
        return make_tuner("random", hypermodel, objective="val_loss", max_trials=1, directory=tmp_path,
                          project_name="search")

    first = tuner()

    def killed(trial):
        raise KeyboardInterrupt

    first.oracle.end_trial = killed
    with pytest.raises(KeyboardInterrupt):
        first.search(train, validation_data=validation, epochs=2, verbose=0)
    assert _backup_epoch(tmp_path / "search" / "trial_0") == 2

    class CountEpochs(keras.callbacks.Callback):
        epochs = 0

        def on_epoch_begin(self, epoch, logs=None):
            CountEpochs.epochs += 1

    again = tuner()
    again.search(train, validation_data=validation, epochs=2, verbose=0, callbacks=[CountEpochs()])
    (trial,) = again.oracle.trials.values()
    assert trial.status == "COMPLETED" and trial.score is not None
    assert CountEpochs.epochs == 0
    assert not (tmp_path / "search" / "trial_0" / "backup").exists()


def _cli(tmp_path, *extra):
    return [
        "-m", "keras_vit.cli", "tune", "--image-size", "8", "--directory", str(tmp_path),
        "--project-name", "search", "--patience", "10",
        *[f"--fix={k}={v}" for k, v in TINY.items()], *extra,
    ]


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return env


def _trial_states(out):
    states = {}
    for path in out.glob("trial_*/trial.json"):
        try:  # KerasTuner may be writing it this very moment: read it at the next poll
            states[path.parent.name] = json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
    return states


def _backup_epoch(trial_dir):
    path = trial_dir / "backup" / "training_metadata.json"
    try:
        return json.loads(path.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.quiet
def test_chief_and_two_workers_finish_one_shared_search(tmp_path):
    port = str(_free_port())
    args = _cli(tmp_path, "--max-trials", "4", "--epochs", "1",
                "--space=learning_rate=0.001,0.002,0.003,0.004")
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(_env(), KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=port)
        with open(tmp_path / f"{tuner_id}.log", "w") as log:  # a file: no pipe fills up while we poll
            procs[tuner_id] = subprocess.Popen([sys.executable, *args], env=env, stdout=log,
                                               stderr=subprocess.STDOUT)
        if tuner_id == "chief":
            time.sleep(3)  # let the oracle server start listening
    outputs = {}
    try:
        # the first process to fail fails the test at once (a chief whose workers died would wait forever)
        deadline = time.time() + 600
        while len(outputs) < len(procs):
            assert time.time() < deadline, "the search did not finish in 600 s"
            for tuner_id, proc in procs.items():
                if tuner_id not in outputs and proc.poll() is not None:
                    outputs[tuner_id] = (tmp_path / f"{tuner_id}.log").read_text()
                    assert proc.returncode == 0, f"{tuner_id}:\n{outputs[tuner_id][-3000:]}"
            time.sleep(0.1)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    rows = json.loads((tmp_path / "search" / "results.json").read_text())["trials"]
    assert len(rows) == 4 and all(r["status"] == "COMPLETED" for r in rows)
    assert sorted(r["learning_rate"] for r in rows) == [0.001, 0.002, 0.003, 0.004]
    assert "Worker finished" in outputs["tuner0"] and "Worker finished" in outputs["tuner1"]
    # Both workers ran trials of the shared search.
    ran = {tid: o.count(f"[{tid}] trial ") for tid, o in outputs.items() if tid != "chief"}
    assert all(count >= 1 for count in ran.values()), ran


def _exit_code(argv):
    from keras_vit.cli.main import main

    try:
        return main(argv)
    except SystemExit as exit:  # argparse's usage errors and --help
        return exit.code


def test_cli_rejects_bad_flags_with_usage_error(capsys):
    # in-process: argument checks need no fresh interpreter (test_cli runs the installed script)
    assert _exit_code(["tune", "--max-trials", "0"]) == 2 and "--max-trials" in capsys.readouterr().err
    assert _exit_code(["tune", "--tuner", "grid"]) == 2 and "invalid choice: 'grid'" in capsys.readouterr().err
    assert _exit_code(["tune", "--help"]) == 0
    help_text = capsys.readouterr().out
    for flag in ("--tuner", "--max-trials", "--objective", "--space", "--fix", "--directory"):
        assert flag in help_text


def test_the_old_warmup_fraction_entry_is_read_as_epochs_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'warmup_fraction' is now 'warmup_epochs'"):
        hypermodel = ViTHyperModel(16, 10, epochs=10, space={"warmup_fraction": (0.0, 0.2)},
                                   fixed={"warmup_fraction": 0.1})
    assert hypermodel.space["warmup_epochs"] == 1.0  # fixed wins over the range, as before
    with pytest.warns(DeprecationWarning):
        assert ViTHyperModel(16, 10, epochs=5, space={"warmup_fraction": [0.0, 0.2]}).space["warmup_epochs"] == [0.0, 1.0]


def test_a_trial_becomes_a_recipe_with_the_same_names():
    hypermodel = ViTHyperModel(8, 10, channels=1, fixed=dict(TINY, learning_rate=2e-3, warmup_epochs=0.5))
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    recipe = hypermodel.to_recipe(hp, dataset="digits", epochs=3)
    assert (recipe.learning_rate, recipe.warmup_epochs, recipe.hidden_dim, recipe.num_heads, recipe.mlp_dim,
            recipe.image_size, recipe.epochs, recipe.augment) == (2e-3, 0.5, 16, 2, 32, 8, 3, None)


def test_a_search_whose_every_trial_fails_ends_in_one_clear_line(tmp_path, capsys):
    # A learning rate of 1e9 makes every loss NaN: the command says so, names
    # the first failure and results.csv in its last line, and exits 1 as a
    # failed run, not as a bug (KerasTuner itself prints each failed trial's
    # traceback as the search goes on).
    from keras_vit.cli.main import main

    code = main(_cli(tmp_path, "--max-trials", "1", "--epochs", "1", "--space=learning_rate=1e9")[2:])
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("keras-vit tune: error: Every trial failed (1 tried)")
    assert "results.csv" in last and "The first failure:" in last
    assert "internal error" not in err
    assert (tmp_path / "search" / "results.csv").read_text().count("FAILED") == 1
