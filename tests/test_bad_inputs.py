"""Bad inputs a user can hand the package: each is refused with a
`ValueError` (or the CLI's exit 2) that names the file or the parameter,
before anything is written — never a crash on the first batch, never a
silent acceptance. In-process and tiny."""

import io
import json
import os
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from keras_vit import build_vit
from keras_vit.cli.main import main as cli_main
from keras_vit.data import load_data
from keras_vit.training import train
from keras_vit.utils.io import load_keras_file
from tests.conftest import tiny_vit_kwargs


def image_folder(root, n=4):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype="uint8")).save(root / label / f"{i}.png")
    return root


def tiff_bytes():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(buffer, "TIFF")
    return buffer.getvalue()


def one_bit_bmp(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 2, (8, 8)).astype(bool)).convert("1").save(path)


@pytest.mark.parametrize("name, write, reason", [
    ("tiff.png", lambda p: p.write_bytes(tiff_bytes()), "TIFF data that TensorFlow's image decoder cannot read"),
    ("one_bit.bmp", one_bit_bmp, "BMP data that TensorFlow's image decoder cannot read"),
])
def test_images_pillow_reads_but_tensorflow_cannot_are_caught_when_listed(tmp_path, name, write, reason):
    root = image_folder(tmp_path / "images")
    write(root / "a" / name)
    with pytest.raises(ValueError, match=f"1 unreadable file.*a/{name} \\({reason}"):
        load_data(str(root), 8, 4, on_bad_files="error")
    with pytest.warns(UserWarning, match=f"Skipped 1 unreadable file.*{name}"):
        splits = load_data(str(root), 8, 4, test_split=0, validation_split=0)
    batches = list(splits[0])  # the bad file is skipped: every batch decodes
    assert sum(len(labels) for _, labels in batches) == 8


def test_a_palette_gif_loads_as_one_channel(tmp_path):
    root = image_folder(tmp_path / "images")
    rgb = np.zeros((8, 8, 3), "uint8")
    rgb[..., 0] = 255  # pure red: gray 76 (ITU-R 601-2 luma)
    Image.fromarray(rgb).convert("P").save(root / "a" / "red.gif")
    train_ds, _, _, info = load_data(str(root), 8, 16, channels=1, test_split=0, validation_split=0,
                                     label_mode="int")
    images = np.concatenate([x for x, _ in train_ds.as_numpy_iterator()])
    assert info.channels == 1 and images.shape == (9, 8, 8, 1)
    assert any(np.allclose(image, 76, atol=1.5) for image in images)


def test_npz_sources_that_are_not_npz_files(tmp_path):
    (tmp_path / "x.npz").mkdir()
    with pytest.raises(ValueError, match="The .npz path .*x.npz is a directory, not an .npz file"):
        load_data(str(tmp_path / "x.npz"), 8, 4)
    path = tmp_path / "t.npz"
    np.savez(path, x=np.zeros((10, 8, 8)), y=np.arange(10) % 2)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"The .npz file .*t.npz cannot be read .*truncated"):
        load_data(str(path), 8, 4)
    np.save(tmp_path / "single.npy", np.zeros(3))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    with pytest.raises(ValueError, match="single.npz holds a single array"):
        load_data(str(tmp_path / "single.npz"), 8, 4)


def test_too_few_images_name_the_split_that_takes_them():
    x = np.zeros((2, 8, 8), "float32")
    with pytest.raises(ValueError, match=r"`validation_split=0.1` of the 1 training image.*validation_split=0"):
        load_data((x, np.array([0, 1])), 8, 4)
    with pytest.raises(ValueError, match=r"`test_split=0.5` of the 1 training image.*test_split=0"):
        load_data((x[:1], np.array([0])), 8, 4, test_split=0.5, validation_split=0)
    train_ds, _, _, info = load_data((x, np.array([0, 1])), 8, 4, test_split=0, validation_split=0)
    assert info.split_sizes["train"] == 2


@pytest.mark.parametrize("arrays", [
    (np.zeros((0, 8, 8)), np.zeros(0, "int32")),
    (np.zeros((0,)), np.zeros(0, "int32")),
])
def test_empty_arrays(arrays):
    with pytest.raises(ValueError, match=r"arrays are empty \(0 images\)"):
        load_data(arrays, 8, 4)


def test_a_cache_path_that_cannot_be_written(tmp_path):
    data = (np.zeros((20, 8, 8), "float32"), np.arange(20) % 2)
    with pytest.raises(ValueError, match="folder of `cache` does not exist: .*nowhere"):
        load_data(data, 8, 4, cache=str(tmp_path / "nowhere" / "cache"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="folder of `cache` does not exist"):
        load_data(data, 8, 4, cache=str(tmp_path / "file" / "cache"))
    with pytest.raises(ValueError, match="`cache` is a file prefix, not a directory"):
        load_data(data, 8, 4, cache=str(tmp_path))
    with pytest.raises(ValueError, match="`cache` must be True, False or a file path prefix"):
        load_data(data, 8, 4, cache=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_a_keras_file_with_a_malformed_config_is_named(tmp_path, capsys):
    good = tmp_path / "good.keras"
    build_vit(**tiny_vit_kwargs(depth=1)).save(good)
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        for item in source.infolist():
            target.writestr(item, b"{not json" if item.filename == "config.json" else source.read(item))
    with pytest.raises(ValueError, match=r"config.json inside the model file .*bad.keras is not valid JSON"):
        load_keras_file(bad)
    (tmp_path / "cut.keras").write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut.keras is not a readable .keras archive"):
        load_keras_file(tmp_path / "cut.keras")
    for command in (["export", str(bad), "-o", str(tmp_path / "out")], ["predict", str(bad), str(tmp_path)]):
        assert cli_main(command) == 2
        err = capsys.readouterr().err
        assert "bad.keras is not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# Each of these has a test here even where a Hypothesis property may draw it.
@pytest.mark.backend_independent
@pytest.mark.parametrize("overrides, message", [
    (dict(head_units=8), "`head_units` must be None or a list of positive ints. Received: head_units=8"),
    (dict(classifier_activation="bogus"), "Unknown `classifier_activation`: 'bogus'. Accepted values: None"),
    (dict(layer_scale="big"), "`layer_scale` must be None or a number. Received: layer_scale='big'"),
    (dict(norm_epsilon="x"), "`norm_epsilon` must be a number > 0. Received: norm_epsilon='x'"),
    (dict(norm_epsilon=-1.0), "`norm_epsilon` must be a number > 0. Received: norm_epsilon=-1.0"),
    (dict(num_registers=True), "`num_registers` must be an int >= 0. Received: num_registers=True"),
    (dict(qk_norm="false"), "Unknown `qk_norm`: 'false'. Accepted values: True, False"),
    (dict(stride=0), "`stride` must be a positive int or a pair (h, w) of positive ints"),
])
def test_build_vit_names_the_bad_argument(overrides, message):
    with pytest.raises(ValueError) as info:
        build_vit(**tiny_vit_kwargs(**overrides))
    assert message in str(info.value)


def digits_arrays():
    rng = np.random.default_rng(0)
    return load_data((rng.uniform(0, 255, (24, 8, 8)).astype("float32"), np.arange(24) % 2), 8, 8,
                     validation_split=0.25, test_split=0)


def small(width=8):
    keras.utils.set_random_seed(0)
    return build_vit(**tiny_vit_kwargs(image_size=8, num_classes=2, channels=1, depth=1, hidden_dim=width,
                                       mlp_dim=16))


def test_run_dir_naming_a_file_and_an_unknown_monitor(tmp_path, capsys):
    data = digits_arrays()
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ValueError, match="`run_dir` names a file, not a directory"):
        train(small, data, epochs=1, run_dir=tmp_path / "file", verbose=0)
    with pytest.raises(ValueError, match="Unknown `monitor`: 'val_f1'. Accepted values: 'val_accuracy'"):
        train(small, data, epochs=1, run_dir=tmp_path / "run", monitor="val_f1", verbose=0)
    assert not (tmp_path / "run").exists()
    assert cli_main(["train", "--run-dir", str(tmp_path / "file"), "--epochs", "1", "--image-size", "8",
                     "--patch-size", "4"]) == 2
    assert "`run_dir` names a file, not a directory" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "not a directory"


def test_a_wider_model_in_a_finished_run_directory_names_the_differing_settings(tmp_path):
    data = digits_arrays()
    train(small, data, epochs=1, run_dir=tmp_path / "run", verbose=0, jit_compile=False)
    def files():
        return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.name != ".keras_vit.lock"}

    before = files()
    with pytest.raises(ValueError, match=r"different configuration \(changed: model.backbone.hidden_dim: 8 -> 16"):
        train(lambda: small(16), data, epochs=1, run_dir=tmp_path / "run", verbose=0, jit_compile=False)
    assert files() == before  # refused before anything was written
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["backbone.hidden_dim"] == 8


def test_predict_top_k_zero_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["predict", "m.keras", "x.png", "--top-k", "0"])
    assert exit_.value.code == 2 and "--top-k: expected an int >= 1, got 0" in capsys.readouterr().err



@pytest.mark.parametrize("kwargs, message", [
    (dict(shuffle_buffer=0), "`shuffle_buffer` must be an int >= 1. Received: shuffle_buffer=0"),
    (dict(seed="a"), "`seed` must be an int. Received: seed='a'"),
])
def test_load_data_names_bad_shuffle_and_seed(kwargs, message):
    with pytest.raises(ValueError) as info:
        load_data((np.zeros((20, 8, 8)), np.arange(20) % 2), 8, 4, **kwargs)
    assert message in str(info.value)



def test_train_names_a_model_or_data_of_the_wrong_kind_and_a_floor_above_the_peak(tmp_path):
    data = digits_arrays()
    with pytest.raises(ValueError, match="`model` must be a keras.Model or a function returning one. Received: int"):
        train(5, data, epochs=1, run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="`model` is a function that returned str, not a keras.Model"):
        train(lambda: "model", data, epochs=1, run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="`data` must be .* its training part is a NoneType"):
        train(small, None, epochs=1, run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="its training part is a ndarray. For arrays, pass load_data"):
        train(small, (np.zeros((4, 8, 8, 1)), np.zeros(4)), epochs=1, run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match=r"`min_learning_rate` must be a number in \[0, learning_rate=0.001\]"):
        train(small, data, epochs=1, run_dir=tmp_path / "a", learning_rate=1e-3, min_learning_rate=1.0)
    assert not (tmp_path / "a").exists()


def _unknown_word_calls(tmp_path):
    """(call, misspelt word, the name it should have been) across the public API."""
    from keras_vit.explain import explain
    from keras_vit.export import export_onnx, export_saved_model, export_tflite, load_predictor
    from keras_vit.models import ViTBackbone, ViTClassifier, from_checkpoint
    from keras_vit.training import fine_tune
    from keras_vit.tuning import tune

    model = build_vit(**tiny_vit_kwargs(depth=1))
    body = {k: v for k, v in tiny_vit_kwargs(depth=1).items() if k != "num_classes"}
    data = (np.zeros((8, 16, 16, 3), "uint8"), np.arange(8) % 4)
    out = tmp_path / "out"
    return [
        (lambda: build_vit("Mu/4", num_clases=5), "num_clases", "num_classes"),
        (lambda: ViTClassifier.from_preset("Mu/4", num_clases=5), "num_clases", "num_classes"),
        (lambda: ViTClassifier.from_preset("Mu/4", bogus=1), "bogus", None),
        (lambda: ViTBackbone.from_preset("Mu/4", hiden_dim=8), "hiden_dim", "hidden_dim"),
        (lambda: ViTBackbone(**body, num_register=1), "num_register", "num_registers"),
        (lambda: ViTClassifier(model.backbone, pooling="gap", num_clases=3), "num_clases", "num_classes"),
        (lambda: train(model, data, run_dir=out, epoch=1), "epoch", "epochs"),
        (lambda: fine_tune("Mu/4", data, run_dir=out, learning_rat=1e-3), "learning_rat", "learning_rate"),
        (lambda: fine_tune("Mu/4", data, run_dir=out, drop_path=0.1), "drop_path", "drop_path_rate"),
        (lambda: tune(data, directory=out, max_trial=2), "max_trial", "max_trials"),
        (lambda: load_data(data, 16, 4, validation_splt=0.1), "validation_splt", "validation_split"),
        (lambda: export_saved_model(model, out, topk=3), "topk", "top_k"),
        (lambda: export_tflite(model, out, quantisation="int8"), "quantisation", "quantization"),
        (lambda: export_onnx(model, out, opst=17), "opst", "opset"),
        (lambda: load_predictor(out, class_name=["a"]), "class_name", "class_names"),
        (lambda: explain(out, model, out, alpa=0.5), "alpa", "alpha"),
        (lambda: from_checkpoint(out, num_clases=3), "num_clases", "num_classes"),
        (lambda: model.backbone.save_to_preset(directry=out), "directry", "directory"),
        (lambda: model.enable_lora(4, target_name=["qkv"]), "target_name", "target_names"),
        (lambda: model.backbone.forward_intermediates(data[0], indice=[0]), "indice", "indices"),
    ]


def test_unknown_keyword_arguments_are_refused_with_the_closest_name(tmp_path):
    for call, word, closest in _unknown_word_calls(tmp_path):
        with pytest.raises(TypeError) as info:
            call()
        assert isinstance(info.value, ValueError)  # keras_vit's argument errors are ValueErrors too
        assert f"`{word}`" in str(info.value), str(info.value)
        assert (f"Did you mean `{closest}`?" if closest else "Accepted: ") in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    kept = build_vit("Mu/4", depth=1, name="mine", dtype="float32")  # Keras' own words still work
    assert kept.name == "mine" and keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(kept)).name == "mine"


# --- issue 26, item 4: silently wrong data ---------------------------------

GRAY = np.random.default_rng(1).integers(0, 256, (24, 8, 8)).astype("uint8")
LABELS = np.arange(24) % 4


def test_labels_that_are_not_class_indices_are_refused_unless_remapped():
    with pytest.raises(ValueError, match="remap_labels=True") as info:
        load_data((GRAY, LABELS * 1000), 8, 4)  # built a 3,001-class model
    assert "0..3000" in str(info.value)
    with pytest.raises(ValueError, match="remap_labels=True"):
        load_data((GRAY, np.array(["cat", "dog", "eel", "fox"])[LABELS]), 8, 4)
    *_, info = load_data((GRAY, LABELS * 1000), 8, 4, remap_labels=True)
    assert info.num_classes == 4 and info.class_names == ["0", "1000", "2000", "3000"]
    *_, info = load_data((GRAY, np.array(["cat", "dog", "eel", "fox"])[LABELS]), 8, 4, remap_labels=True)
    assert info.class_names == ["cat", "dog", "eel", "fox"]


def test_pixels_already_in_0_1_are_scaled_with_a_one_line_warning():
    raw = load_data((GRAY, LABELS), 8, 24, validation_split=0, test_split=0, label_mode="int", shuffle_buffer=1)
    with pytest.warns(UserWarning, match=r"floats in \[0, 1\]; keras_vit scaled them to \[0, 255\]"):
        unit = load_data((GRAY / 255.0, LABELS), 8, 24, validation_split=0, test_split=0, label_mode="int",
                         shuffle_buffer=1)
    np.testing.assert_allclose(next(iter(unit[0]))[0], next(iter(raw[0]))[0], atol=1e-3)


def test_a_split_that_leaves_fewer_training_images_than_classes_is_refused():
    with pytest.raises(ValueError, match="The training split holds 3 image"):
        load_data((GRAY[:4], LABELS[:4]), 8, 4, validation_split=0)  # one image per class


def test_gradient_accumulation_beyond_an_epoch_is_refused_with_the_limit(tmp_path):
    data = load_data((GRAY, LABELS), 8, 4, validation_split=0, test_split=0)
    with pytest.raises(ValueError, match="Use at most gradient_accumulation_steps=6"):
        train(build_vit(**tiny_vit_kwargs(image_size=8, channels=1, depth=1)), data, epochs=1,
              run_dir=tmp_path / "run", gradient_accumulation_steps=1_000_000_000)
    assert not (tmp_path / "run").exists()


def test_blank_and_duplicate_class_names_are_refused(tmp_path):
    for names, word in ((["a", " ", "c", "d"], "blank"), (["a", "b", "a", "d"], "twice")):
        with pytest.raises(ValueError, match=word):
            build_vit(**tiny_vit_kwargs(depth=1), class_names=names)
    np.savez(tmp_path / "d.npz", x=GRAY, y=LABELS, class_names=np.array(["a", "b", "a", "d"]))
    with pytest.raises(ValueError, match="names 'a' twice"):
        load_data(str(tmp_path / "d.npz"), 8, 4)
    image_folder(tmp_path / "folder")
    (tmp_path / "folder" / "a").rename(tmp_path / "folder" / " ")
    with pytest.raises(ValueError, match="blank name"):
        load_data(str(tmp_path / "folder"), 8, 4, validation_split=0, test_split=0)


def test_train_on_a_folder_keeps_its_class_names_through_export(tmp_path):
    from keras_vit.export import export_saved_model, load_predictor

    image_folder(tmp_path / "data", n=3)
    assert cli_main(["train", "--dataset", str(tmp_path / "data"), "--recipe", "digits", "--image-size", "8",
                     "--patch-size", "4", "--hidden-dim", "8", "--depth", "1", "--num-heads", "2", "--mlp-dim", "8",
                     "--epochs", "1", "--validation-split", "0", "--test-split", "0", "--warmup-epochs", "0",
                     "--verbose", "0", "--run-dir", str(tmp_path / "run")]) == 0
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    export_saved_model(model, tmp_path / "sm")
    assert load_predictor(tmp_path / "sm").class_names == ["a", "b"]  # was ['0', '1']
