"""Issue 26, item 1: a command never writes or deletes what is not ours
(`keras_vit.utils.ownership`), and the clear errors of issue 26's list
instead of tracebacks. Item 2 (no input file crashes the interpreter) is in
tests/test_image_files.py."""

import json
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from keras_vit import build_vit
from keras_vit.cli.main import main as cli_main
from keras_vit.data import load_data
from keras_vit.training import train
from keras_vit.utils.ownership import MARKER_NAME, RUN_DIR, TUNING_PROJECT, claim_directory
from tests.conftest import run_python, tiny_vit_kwargs
from tests.test_faults import small_disk  # noqa: F401 - a fixture: a 1 MiB tmpfs

# ---------------------------------------------------------------------------
# Item 1: never touch what is not ours
# ---------------------------------------------------------------------------


def snapshot(root):
    """Every file under `root` with its bytes (hidden ones included)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def users_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.keras").write_bytes(b"the user's own model")
    (root / "metrics.json").write_text('{"mine": true}')
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / "a.txt").write_text("my log")
    return snapshot(root)


def tiny_model():
    keras.utils.set_random_seed(0)
    return build_vit(**tiny_vit_kwargs(image_size=8, num_classes=10, channels=1, depth=1))


@pytest.fixture(scope="module")
def digits():
    """40 random 8x8 gray images of 10 classes (a run of one epoch is quick)."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 8, 8, 1)).astype("uint8"), np.arange(40) % 10
    return load_data((x, y), 8, 16, validation_split=0.25, test_split=0)


def test_cli_train_with_an_empty_run_dir_and_restart_leaves_the_users_folder_alone(tmp_path, monkeypatch, capsys):
    from keras_vit.cli.main import main

    before = users_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--dataset", "digits", "--image-size", "8", "--epochs", "1", "--run-dir", "", "--restart"])
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "`run_dir` is an empty string" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before  # nothing replaced, deleted or added (no lock file, no marker)


def test_train_refuses_a_users_folder_and_restart_deletes_only_what_a_run_wrote(tmp_path, digits):
    user = tmp_path / "user"
    before = users_folder(user)
    for resume in ("auto", False):
        with pytest.raises(ValueError, match=r"run directory .*user.*already holds files that keras_vit did not "
                                             r"write \(logs, metrics.json, model.keras\)"):
            train(tiny_model(), digits, epochs=1, run_dir=user, resume=resume, verbose=0)
        assert snapshot(user) == before
    # a run directory of an earlier version (no marker): recognised by its content, resumed, then marked
    run = tmp_path / "run"
    train(tiny_model(), digits, epochs=1, run_dir=run, verbose=0)
    assert (run / MARKER_NAME).is_file()
    (run / MARKER_NAME).unlink()
    (run / "notes.txt").write_text("the user's notes")
    result = train(tiny_model(), digits, epochs=2, run_dir=run, verbose=0)
    assert result.initial_epoch == 1 and (run / MARKER_NAME).is_file()
    # --restart deletes what a run wrote, never the user's file
    from keras_vit.training.rundir import prepare_run_dir

    assert prepare_run_dir(run, {"epochs": 1}, resume=False) is False
    assert sorted(p.name for p in run.iterdir()) == [MARKER_NAME, ".keras_vit.lock", "config.json", "notes.txt"]
    assert (run / "notes.txt").read_text() == "the user's notes"


def test_train_refuses_a_run_dir_inside_its_image_folder(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype="uint8")).save(root / label / f"{i}.png")
    data = load_data(str(root), 8, 4, validation_split=0, test_split=0)
    model = build_vit(**tiny_vit_kwargs(image_size=8, num_classes=2, depth=1))
    with pytest.raises(ValueError, match=r"lies inside the input .*images.* keras_vit never writes where it reads"):
        train(model, data, epochs=1, run_dir=root / "a" / "run", verbose=0)
    assert not (root / "a" / "run").exists()


def test_finetune_into_its_own_preset_directory_is_refused_and_the_preset_still_loads(tmp_path, capsys):
    from keras_vit.models import ViTClassifier

    preset = tmp_path / "preset"
    tiny_model().save_to_preset(preset)
    before = snapshot(preset)
    code = cli_main(["finetune", str(preset), "digits", "--run-dir", str(preset), "--epochs", "1"])
    assert code == 2
    assert "is the input" in capsys.readouterr().err
    assert snapshot(preset) == before
    assert ViTClassifier.from_preset(str(preset)).num_classes == 10


def test_tune_refuses_empty_and_absolute_project_names_and_users_folders(tmp_path, capsys):
    folder = tmp_path / "D"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    other = tmp_path / "x" / "proj"
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("keep")
    for name, message in (("", "`--project-name` must name a sub-folder"),
                          (str(other), "`--project-name` must be a folder name inside `--directory`")):
        code = cli_main(["tune", "--directory", str(folder), "--project-name", name, "--overwrite",
                         "--max-trials", "1", "--epochs", "1"])
        assert code == 2 and message in capsys.readouterr().err
    code = cli_main(["tune", "--directory", "", "--max-trials", "1", "--epochs", "1"])
    assert code == 2 and "`--directory` is an empty string" in capsys.readouterr().err
    # a project folder that a user filled is refused, with --overwrite too, before the data load
    code = cli_main(["tune", "--directory", str(tmp_path), "--project-name", "D", "--overwrite",
                     "--max-trials", "1", "--epochs", "1"])
    assert code == 2 and "already holds files that keras_vit did not write (keep.txt)" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and (other / "keep.txt").read_text() == "keep"


def test_tune_overwrite_deletes_only_what_a_search_wrote(tmp_path):
    from keras_vit.tuning.search import _prepare_project

    project = tmp_path / "proj"
    project.mkdir()
    (project / "oracle.json").write_text("{}")  # an earlier version's search: recognised, then marked
    for name in ("trial_00", "logs"):
        (project / name).mkdir()
    (project / "results.csv").write_text("")
    (project / "tuner0.json").write_text("{}")
    (project / "notes.txt").write_text("mine")
    claim_directory(project, TUNING_PROJECT)
    _prepare_project(str(project), overwrite=True)
    assert sorted(p.name for p in project.iterdir()) == [MARKER_NAME, "notes.txt"]


def test_save_to_preset_replaces_only_a_preset(tmp_path):
    model = tiny_model()
    target = tmp_path / "p"
    model.save_to_preset(target)
    model.save_to_preset(target)  # a preset of ours: replaced
    (target / "README.md").write_text("my notes")
    with pytest.raises(ValueError, match=r"holds files that are not part of a preset directory \(README.md\)"):
        model.save_to_preset(target)
    assert (target / "README.md").read_text() == "my notes"
    before = users_folder(tmp_path / "user")
    with pytest.raises(ValueError, match="already holds files that keras_vit did not write"):
        model.save_to_preset(tmp_path / "user")
    assert snapshot(tmp_path / "user") == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sorted(p.name for p in model.save_to_preset(empty).iterdir()) == [
        "config.json", "model.weights.h5", "preprocessing.json"]


def test_claim_directory_refuses_files_empty_names_and_inputs(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="names a file"):
        claim_directory(tmp_path / "f", flag="run_dir")
    with pytest.raises(ValueError, match="`--run-dir` is an empty string"):
        claim_directory("", flag="--run-dir")
    with pytest.raises(ValueError, match="holds the input"):
        claim_directory(tmp_path, RUN_DIR, inputs=[str(tmp_path / "f")])
    claim_directory(tmp_path / "new", RUN_DIR, inputs=["digits", None, ("not", "a path")])
    assert [p.name for p in (tmp_path / "new").iterdir()] == [MARKER_NAME]


# ---------------------------------------------------------------------------
# Clear errors instead of tracebacks (issue 26's list)
# ---------------------------------------------------------------------------


def test_train_touches_a_refused_folder_not_even_for_its_lock_or_temporaries(tmp_path, digits):
    users_folder(tmp_path / "user")
    (tmp_path / "user" / ".notes.txt.tmp-1-abcdef01").write_text("looks like a temporary of ours; is not")
    before = snapshot(tmp_path / "user")
    with pytest.raises(ValueError, match="already holds files that keras_vit did not write"):
        train(tiny_model(), digits, epochs=1, run_dir=tmp_path / "user", verbose=0)
    assert snapshot(tmp_path / "user") == before


def test_odd_run_directories_are_refused_naming_them(tmp_path, digits):
    (tmp_path / "file").write_text("a file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for run_dir, words in ((tmp_path / "file" / "run", "which is a file"), (tmp_path / ("x" * 300), "255 bytes"),
                           (tmp_path / "dangling", "symbolic link"), ("/proc/self/x", "cannot be created")):
        with pytest.raises(ValueError, match=words):
            train(tiny_model(), digits, epochs=1, run_dir=run_dir, verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file"]


def test_corrupt_resume_state_names_the_file_and_restart_works(tmp_path, digits):
    run, plain = tmp_path / "run", dict(verbose=0, jit_compile=False)
    train(tiny_model(), digits, epochs=1, run_dir=run, **plain)
    metadata = run / "backup" / "training_metadata.json"
    (run / "backup" / json.loads(metadata.read_text())["weights"]).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"The resume state .*epoch-0001.npz is corrupt .*--restart"):
        train(tiny_model(), digits, epochs=2, run_dir=run, **plain)
    metadata.write_text('{"epo')
    with pytest.raises(ValueError, match=r"The resume state .*training_metadata.json is corrupt .*--restart"):
        train(tiny_model(), digits, epochs=2, run_dir=run, **plain)
    assert train(tiny_model(), digits, epochs=1, run_dir=run, resume=False, **plain).initial_epoch == 0


def test_raising_epochs_on_a_finished_run_ignores_the_derived_warmup(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--image-size", "8", "--patch-size", "4", "--hidden-dim", "8",
            "--depth", "1", "--num-heads", "2", "--mlp-dim", "8", "--batch-size", "512", "--augment", "none",
            "--verbose", "0", "--run-dir", str(tmp_path / "run")]
    assert cli_main(args + ["--epochs", "1"]) == 0
    assert "using warmup_epochs=0.1" in capsys.readouterr().err  # derived from --epochs 1
    assert cli_main(args + ["--epochs", "2"]) == 0  # was refused: "changed: warmup_epochs: 0.1 -> 0.2"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["resumed_from_epoch"] == 1


def test_keras_archives_that_inflate_too_far_or_that_safe_mode_refuses(tmp_path):
    from keras_vit.utils.io import MAX_CONFIG_BYTES, load_keras_file

    good = tmp_path / "good.keras"
    tiny_model().save(good)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(tmp_path / "big.keras", "w", zipfile.ZIP_DEFLATED) as big:
        for item in source.infolist():
            if item.filename != "config.json":
                big.writestr(item, source.read(item))
        big.writestr("config.json", b" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ValueError, match=r"big.keras is too large"):
        load_keras_file(tmp_path / "big.keras")
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs)).save(tmp_path / "lambda.keras")
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(tmp_path / "os.keras", "w") as target:
        for item in source.infolist():
            target.writestr(item, json.dumps({"module": "os", "class_name": "system", "config": {}}).encode()
                            if item.filename == "config.json" else source.read(item))
    for name in ("lambda.keras", "os.keras"):
        with pytest.raises(ValueError, match=rf"{name} was refused by Keras' safe mode"):
            load_keras_file(tmp_path / name, safe_mode=True)


def test_data_and_config_files_that_ended_in_tracebacks(tmp_path, monkeypatch):
    from keras_vit.training.auto import describe_source
    from keras_vit.training.distribute import worker_info
    from keras_vit.training.recipe import read_config_file

    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), "uint8"), y=np.zeros((0,), "int64"))
    with pytest.raises(ValueError, match="empty.npz holds no images"):
        describe_source(str(tmp_path / "empty.npz"))  # was a ZeroDivisionError in the auto recipe
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "nested.yaml").write_text("a: " + "[" * 100000 + "]" * 100000)
    for name, words in (("binary.yaml", "not UTF-8"), ("nested.yaml", "nested too deeply")):
        with pytest.raises(ValueError, match=words):
            read_config_file(tmp_path / name)
    with pytest.raises(ValueError, match="`seed` must be an int"):
        load_data((np.zeros((8, 8, 8), "uint8"), np.arange(8) % 2), 8, 4, seed=2**70)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        worker_info()


def test_tune_refuses_impossible_space_values_before_any_trial(tmp_path):
    from keras_vit.tuning import tune

    data = load_data((np.zeros((16, 8, 8), "uint8"), np.arange(16) % 2), 8, 4, test_split=0, validation_split=0.25)
    for kwargs, words in ((dict(space={"learning_rate": (-1.0, 1.0)}), "learning_rate"),
                          (dict(space={"batch_size": [0, 1]}), "batch_size"),
                          (dict(fixed={"pooling": "bogus"}), "pooling")):
        with pytest.raises(ValueError, match=words):
            tune(data, directory=tmp_path / "search", **kwargs)
    (tmp_path / "file").write_text("a file")
    with pytest.raises(ValueError, match="which is a file"):
        tune(data, directory=tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_export_and_explain_never_replace_a_users_file(tmp_path):
    from keras_vit.explain import save_attention_overlay
    from keras_vit.export import export_tflite

    (tmp_path / "mine.tflite").write_text("the user's own file")
    with pytest.raises(ValueError, match="not a .tflite file that keras_vit wrote; refusing"):
        export_tflite(tiny_model(), tmp_path / "mine.tflite")
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(tmp_path / "photo.png")
    image, heat = np.zeros((8, 8, 3), "uint8"), np.ones((2, 2))
    with pytest.raises(ValueError, match="not a PNG that keras_vit wrote; refusing"):
        save_attention_overlay(image, heat, tmp_path / "photo.png")
    save_attention_overlay(image, heat, tmp_path / "ours.png")
    save_attention_overlay(image, heat, tmp_path / "ours.png")  # ours: replaced
    assert (tmp_path / "mine.tflite").read_text() == "the user's own file"


def test_stale_temporaries_of_a_killed_save_to_preset_are_cleaned(tmp_path):
    (tmp_path / ".preset.tmp-99999-deadbeef").mkdir()  # what a save killed mid-write leaves
    tiny_model().save_to_preset(tmp_path / "preset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset"]


def test_an_unknown_keras_backend_is_named(tmp_path):
    proc = run_python(["-m", "keras_vit.cli", "train"], env={"KERAS_BACKEND": "bogus"}, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "KERAS_BACKEND='bogus' names no Keras backend" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_a_full_disk_during_export_and_tune_is_named(small_disk, capsys):
    (small_disk / "ballast").write_bytes(b"\0" * (1000 * 1024))
    tiny_model().save(small_disk.parent / "m.keras")
    assert cli_main(["export", str(small_disk.parent / "m.keras"), "--format", "tflite",
                     "-o", str(small_disk / "m.tflite")]) == 1
    assert cli_main(["tune", "--max-trials", "1", "--epochs", "1", "--image-size", "8",
                     "--directory", str(small_disk / "search")]) == 1
    err = capsys.readouterr().err  # (KerasTuner itself logs the failed trial's traceback)
    assert err.count("error: The disk is full") == 2 and "internal error" not in err
