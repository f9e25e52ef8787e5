"""Deployment: SavedModel, TFLite in four precisions (run with LiteRT), the
predictor interface, atomic writes and the export / predict / benchmark
commands, checked on a ViT trained on scikit-learn's digits."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from keras_vit import build_vit
from keras_vit import export as E
from keras_vit.utils.io import atomic_path
from keras_vit.cli.main import main as cli_main
from tests.conftest import REPO, run_python

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="exports need TensorFlow")

DIGITS = [f"digit_{i}" for i in range(10)]


# --------------------------------------------------------------------------
# Fixtures: a trained digits model and its artifacts, built once.
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def digits():
    """A ViT trained for a few seconds on 8x8 digits upsampled to 16x16,
    with a held-back test split and the Keras probabilities on it."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(np.kron(data.images, np.ones((2, 2))) * (255 / 16)).astype("uint8")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], data.target[order]
    keras.utils.set_random_seed(0)
    # Wide enough (256) that weights, not per-channel quantization
    # parameters, dominate the file sizes compared below.
    model = build_vit(
        image_size=16, channels=1, num_classes=10, patch_size=8, hidden_dim=256, depth=1,
        num_heads=4, mlp_dim=512,
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train, test = slice(0, 1400), slice(1400, None)
    model.fit(images[train].astype("float32"), labels[train], epochs=10, batch_size=64, verbose=0)
    probs = keras.ops.convert_to_numpy(
        keras.ops.softmax(model.predict(images[test].astype("float32"), verbose=0))
    )
    return dict(
        model=model, x_train=images[train], y_train=labels[train], x_test=images[test],
        y_test=labels[test], probs=probs,
    )


@pytest.fixture(scope="session")
def artifacts(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    model = digits["model"]
    paths = {"savedmodel": E.export_saved_model(model, root / "digits_savedmodel", class_names=DIGITS)}
    train_ds = tf.data.Dataset.from_tensor_slices((digits["x_train"], digits["y_train"])).batch(32)
    for quantization in E.QUANTIZATIONS:
        paths[quantization] = E.export_tflite(
            model, root / f"digits_{quantization}.tflite", quantization,
            representative_data=train_ds, class_names=DIGITS,
        )
    model.save(root / "digits.keras")
    paths["keras"] = root / "digits.keras"
    return paths


def test_digits_model_is_trained(digits):
    accuracy = np.mean(digits["probs"].argmax(-1) == digits["y_test"])
    assert accuracy >= 0.9


# --------------------------------------------------------------------------
# TFLite.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("quantization", E.QUANTIZATIONS)
def test_tflite_uses_builtin_ops_only(artifacts, quantization):
    ops = E.tflite_op_names(artifacts[quantization])
    assert not [op for op in ops if op.startswith("CUSTOM") or "FLEX" in op.upper()], ops
    # Exact GELU lowers to the builtin GELU op, not a Flex Erf.
    assert "GELU" in ops


# Tolerances on the probabilities of held-back digits, and the least top-1
# agreement with the Keras model.
PARITY = {"float32": (1e-4, 1.0), "float16": (5e-3, 0.99), "dynamic": (0.1, 0.98), "int8": (None, 0.97)}


@pytest.mark.parametrize("quantization", E.QUANTIZATIONS)
def test_tflite_parity_with_keras(digits, artifacts, quantization):
    predictor = E.load_predictor(artifacts[quantization])
    assert predictor.kind == "tflite"
    probs = predictor.predict(digits["x_test"])
    atol, min_agreement = PARITY[quantization]
    if atol is not None:
        np.testing.assert_allclose(probs, digits["probs"], atol=atol)
    agreement = np.mean(probs.argmax(-1) == digits["probs"].argmax(-1))
    assert agreement >= min_agreement, agreement


@pytest.mark.parametrize("quantization", E.QUANTIZATIONS)
def test_tflite_batch_one_with_litert(digits, artifacts, quantization):
    interpreter = Interpreter(model_path=str(artifacts[quantization]))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape"]) == [1, 16, 16, 1] and inp["dtype"] == np.float32
    interpreter.set_tensor(inp["index"], digits["x_test"][:1].astype("float32"))
    interpreter.invoke()
    single = interpreter.get_tensor(out["index"])
    batched = E.load_predictor(artifacts[quantization]).predict(digits["x_test"][:8])
    np.testing.assert_allclose(single[0], batched[0], atol=1e-5)


def test_tflite_sizes(artifacts):
    size = {q: os.path.getsize(artifacts[q]) for q in E.QUANTIZATIONS}
    assert size["int8"] <= 0.3 * size["float32"], size
    assert size["dynamic"] <= 0.35 * size["float32"], size
    assert size["float16"] <= 0.55 * size["float32"], size


def test_tflite_carries_class_names(artifacts):
    meta = E.tflite_metadata(artifacts["int8"])
    assert meta["class_names"] == DIGITS and meta["quantization"] == "int8"
    assert E.load_predictor(artifacts["float32"]).class_names == DIGITS


def test_int8_accepts_arrays_and_generators(tiny_vit, tmp_path):
    model = tiny_vit()
    x = np.random.default_rng(3).integers(0, 256, (20, 16, 16, 3), dtype="uint8")
    from_array = E.export_tflite(model, tmp_path / "a.tflite", "int8", representative_data=x)
    from_generator = E.export_tflite(
        model, tmp_path / "g.tflite", "int8", representative_data=lambda: (img for img in x)
    )
    assert from_array.read_bytes() == from_generator.read_bytes()
    assert E.calibration_samples(x, (16, 16, 3), limit=7).shape == (7, 16, 16, 3)


# --------------------------------------------------------------------------
# SavedModel.
# --------------------------------------------------------------------------


def _png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def test_saved_model_parity_in_fresh_process(digits, artifacts, tmp_path):
    x = digits["x_test"][:32]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "probs.npy", digits["probs"][:32])
    (tmp_path / "pngs.json").write_text(json.dumps([_png_bytes(i).hex() for i in x[:4]]))
    code = f"""
import json, numpy as np, tensorflow as tf
loaded = tf.saved_model.load({str(artifacts['savedmodel'])!r})
x, ref = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'probs.npy')!r})
out = loaded.signatures["serving_default"](images=tf.constant(x))
np.testing.assert_allclose(out["probabilities"].numpy(), ref, atol=1e-5, rtol=0)
assert (out["top_k_indices"].numpy()[:, 0] == ref.argmax(-1)).all()
names = [n.decode() for n in out["top_k_class_names"].numpy()[:, 0]]
assert names == ["digit_%d" % i for i in ref.argmax(-1)], names
pngs = [bytes.fromhex(h) for h in json.load(open({str(tmp_path / 'pngs.json')!r}))]
out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(pngs))
np.testing.assert_allclose(out["probabilities"].numpy(), ref[:4], atol=1e-5, rtol=0)
print("signatures:", sorted(loaded.signatures))
"""
    proc = run_python(code, lean=True)
    assert "serving_bytes" in proc.stdout and "serving_default" in proc.stdout


def test_saved_model_cli_lists_signatures(artifacts):
    cli = shutil.which("saved_model_cli")
    command = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    proc = subprocess.run(
        command + ["show", "--dir", str(artifacts["savedmodel"]), "--all"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for expected in ("signature_def['serving_default']", "signature_def['serving_bytes']", "top_k_class_names"):
        assert expected in proc.stdout


def test_saved_model_bytes_signature_resizes_and_decodes_jpeg(digits, artifacts):
    loaded = tf.saved_model.load(str(artifacts["savedmodel"]))
    image = digits["x_test"][0]
    big = np.asarray(Image.fromarray(image[..., 0]).resize((32, 32), Image.NEAREST))
    buffer = io.BytesIO()
    Image.fromarray(big).convert("RGB").save(buffer, format="JPEG", quality=95)
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant([buffer.getvalue()]))
    assert out["probabilities"].shape == (1, 10)
    assert int(out["top_k_indices"][0, 0]) == int(digits["probs"][0].argmax())


def test_dynamic_size_model_exports(tiny_vit, tmp_path):
    model = tiny_vit(image_size=None, reference_image_size=16)
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (2, 16, 16, 3), dtype="uint8")
    large = rng.integers(0, 256, (2, 24, 32, 3), dtype="uint8")
    E.export_saved_model(model, tmp_path / "sm")
    predictor = E.load_predictor(tmp_path / "sm")
    assert predictor.image_size is None and predictor.size == (16, 16)
    for images in (small, large):
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(images.astype("float32"))))
        np.testing.assert_allclose(predictor.predict(images), expected, atol=1e-5)
    # `keras-vit predict` on a folder of mixed sizes: batched by size.
    for name, image in (("a_small.png", small[0]), ("b_large.png", large[0])):
        Image.fromarray(image).save(tmp_path / name)
    results = E.predict_files(predictor, [str(tmp_path)], top_k=1)
    assert [r[0].name for r in results] == ["a_small.png", "b_large.png"]
    for (_, top), images in zip(results, (small, large)):
        assert top[0][0] == str(int(np.argmax(model(images[:1].astype("float32"))[0])))
    # The SavedModel's own signature (what TF Serving calls) refuses a size
    # the patches do not tile instead of silently cropping it.
    import tensorflow as tf

    signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    key = next(iter(signature.structured_input_signature[1]))
    def serving(images):
        return signature(**{key: tf.constant(images.astype("uint8"))})["probabilities"]

    np.testing.assert_allclose(serving(large), predictor.predict(large), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not tiled exactly by patches of 4"):
        serving(rng.integers(0, 256, (1, 18, 16, 3)))
    with pytest.raises(ValueError, match="image_size"):
        E.export_tflite(model, tmp_path / "m.tflite")
    E.export_tflite(model, tmp_path / "m.tflite", image_size=(24, 32))
    tflite = E.load_predictor(tmp_path / "m.tflite")
    assert tflite.image_size == (24, 32)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(large.astype("float32"))))
    np.testing.assert_allclose(tflite.predict(large), expected, atol=1e-4)
    with pytest.raises(ValueError, match="does not fit"):
        tflite.predict(small)


def test_keras_predictor_matches_model(digits, artifacts):
    predictor = E.load_predictor(artifacts["keras"], class_names=DIGITS)
    assert predictor.kind == "keras" and predictor.image_size == (16, 16)
    np.testing.assert_allclose(predictor.predict(digits["x_test"][:16]), digits["probs"][:16], atol=1e-5)


# --------------------------------------------------------------------------
# Atomic writes.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_failed_write_keeps_previous_artifact(tmp_path, kind):
    target = tmp_path / "artifact"
    with atomic_path(target) as tmp:
        if kind == "file":
            tmp.write_bytes(b"good")
        else:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            if kind == "file":
                tmp.write_bytes(b"half")
            else:
                tmp.mkdir()
                (tmp / "saved_model.pb").write_bytes(b"half")
            raise RuntimeError("crash while writing")
    good = target.read_bytes() if kind == "file" else (target / "saved_model.pb").read_bytes()
    assert good == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_killed_export_command_keeps_previous_saved_model(tiny_vit, tmp_path):
    target = tmp_path / "vit_savedmodel"
    E.export_saved_model(tiny_vit(), target)
    images = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3), dtype="uint8")
    before = E.load_predictor(target).predict(images)
    tiny_vit(num_classes=7).save(tmp_path / "other.keras")
    # `keras-vit export` in a fresh process, killed while it writes.
    command = [sys.executable, "-m", "keras_vit.cli", "export", str(tmp_path / "other.keras"), "-o", str(target)]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list(tmp_path.glob(".vit_savedmodel.tmp-*")):
            assert proc.poll() is None and time.time() < deadline, "export finished before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    after = E.load_predictor(target)
    assert len(after.class_names) == 4
    np.testing.assert_allclose(after.predict(images), before, atol=1e-6)
    # The same command, left to finish, replaces the SavedModel.
    assert cli_main(command[3:]) == 0
    assert len(E.load_predictor(target).class_names) == 7


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------


def test_unknown_quantization(tiny_vit, tmp_path):
    with pytest.raises(ValueError, match=r"quantization.*'int4'.*'float32', 'float16', 'dynamic', 'int8'"):
        E.export_tflite(tiny_vit(), tmp_path / "m.tflite", "int4")
    assert not (tmp_path / "m.tflite").exists()


def test_int8_needs_representative_data(tiny_vit, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        E.export_tflite(tiny_vit(), tmp_path / "m.tflite", "int8")
    with pytest.raises(ValueError, match=r"shape \(16, 16, 3\).*\(4, 8, 8, 3\)"):
        E.export_tflite(tiny_vit(), tmp_path / "m.tflite", "int8", representative_data=np.zeros((4, 8, 8, 3)))
    with pytest.raises(ValueError, match="no images"):
        E.export_tflite(tiny_vit(), tmp_path / "m.tflite", "int8", representative_data=[])
    assert not list(tmp_path.iterdir())


def test_model_needing_flex_ops_is_refused(tmp_path):
    images = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: keras.ops.erf(t / 255.0))(images)
    model = keras.Model(images, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="builtin ops only.*TF Select ops: Erf"):
        E.export_tflite(model, tmp_path / "erf.tflite")
    assert not list(tmp_path.iterdir())


VARIANTS = {
    "conv_stem": dict(conv_stem=[4, 8]),
    "map_pooling": dict(pooling="map"),
    "overlapping_linear_patches": dict(patch_embedding="linear", stride=2, image_size=14),
    "softmax_output_registers": dict(classifier_activation="softmax", pooling="gap", num_registers=2),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tflite_variants_use_builtin_ops(tiny_vit, tmp_path, variant):
    model = tiny_vit(**VARIANTS[variant])
    size = model.input_shape[1]
    images = np.random.default_rng(4).integers(0, 256, (3, size, size, 3), dtype="uint8")
    path = E.export_tflite(model, tmp_path / "m.tflite")
    assert not [op for op in E.tflite_op_names(path) if op.startswith("CUSTOM")]
    outputs = model(images.astype("float32"))
    if variant.startswith("softmax"):
        expected = keras.ops.convert_to_numpy(outputs)
    else:
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(outputs))
    np.testing.assert_allclose(E.load_predictor(path).predict(images), expected, atol=1e-5)


def test_other_backends_run_tflite_but_cannot_export(artifacts, digits, tmp_path):
    np.save(tmp_path / "x.npy", digits["x_test"][:8])
    code = f"""
import numpy as np, keras
from keras_vit import build_vit
from keras_vit.export import export_tflite, load_predictor
assert keras.backend.backend() == "jax"
probs = load_predictor({str(artifacts['float32'])!r}).predict(np.load({str(tmp_path / 'x.npy')!r}))
np.save({str(tmp_path / 'probs.npy')!r}, probs)
model = build_vit(image_size=16, num_classes=2, patch_size=8, hidden_dim=8, depth=1, num_heads=1, mlp_dim=8)
try:
    export_tflite(model, {str(tmp_path / 'm.tflite')!r})
except ValueError as err:
    print("ValueError:", err)
"""
    proc = run_python(code, env={"KERAS_BACKEND": "jax"}, lean=True)
    assert "ValueError: Exporting needs the TensorFlow backend" in proc.stdout
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), digits["probs"][:8], atol=1e-4)
    assert not (tmp_path / "m.tflite").exists()


def test_bad_export_arguments(tiny_vit, tmp_path):
    model = tiny_vit()
    with pytest.raises(ValueError, match="class_names.*4 strings"):
        E.export_saved_model(model, tmp_path / "sm", class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"image_size=\(32, 32\)"):
        E.export_tflite(model, tmp_path / "m.tflite", image_size=32)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a SavedModel directory"):
        E.export_saved_model(model, tmp_path / "notes")
    with pytest.raises(ValueError, match="is a directory"):
        E.export_tflite(model, tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="num_classes"):
        E.export_saved_model(tiny_vit(num_classes=0), tmp_path / "features")


def test_load_predictor_rejects_unknown_files(tmp_path):
    (tmp_path / "model.mlmodel").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.keras file, a SavedModel directory.*\.tflite"):
        E.load_predictor(tmp_path / "model.mlmodel")
    (tmp_path / "broken.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match=r"broken.tflite is not a TFLite model \(no 'TFL3'"):
        E.load_predictor(tmp_path / "broken.tflite")
    with pytest.raises(ValueError, match="No such model artifact"):
        E.load_predictor(tmp_path / "missing.keras")


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_folder(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.fromarray(digits["x_test"][i][..., 0]).save(folder / f"test_{i}.png")
    return folder


def _cli(capsys, *argv):
    try:
        code = cli_main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", ["keras", "savedmodel", "int8"])
def test_cli_predict_prints_top_k_table(digits, artifacts, image_folder, capsys, kind):
    extra = ["--class-names", ",".join(DIGITS)] if kind == "keras" else []
    code, out, err = _cli(capsys, "predict", artifacts[kind], image_folder, "--top-k", 2, *extra)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["image", "top-1", "top-2"] and len(lines) == 2 + 6
    for i, line in enumerate(lines[2:]):
        assert line.startswith(str(image_folder / f"test_{i}.png"))
        assert line.split()[1] == DIGITS[digits["probs"][i].argmax()]


def test_cli_predict_globs_and_bad_files(artifacts, image_folder, tmp_path, capsys):
    code, out, _ = _cli(capsys, "predict", artifacts["float32"], str(image_folder / "test_[01].png"))
    assert code == 0 and len(out.strip().splitlines()) == 4
    (tmp_path / "notes.png").write_text("not an image")
    code, _, err = _cli(capsys, "predict", artifacts["float32"], tmp_path / "notes.png")
    assert code == 2 and "Cannot decode" in err and "notes.png" in err
    Image.fromarray(np.zeros((20, 20), "uint8")).save(tmp_path / "big.png")
    code, _, err = _cli(capsys, "predict", artifacts["float32"], tmp_path / "big.png")
    assert code == 2 and "(20, 20)" in err and "(16, 16)" in err and "--resize" in err
    code, out, err = _cli(capsys, "predict", artifacts["float32"], tmp_path / "big.png", "--resize")
    assert code == 0 and "big.png" in out, err
    code, _, err = _cli(capsys, "predict", artifacts["float32"], tmp_path / "nothing_*.png")
    assert code == 2 and "matches no file" in err


def test_cli_export_and_benchmark(artifacts, image_folder, tmp_path, capsys):
    output = tmp_path / "cli_int8.tflite"
    code, out, err = _cli(
        capsys, "export", artifacts["keras"], "--format", "tflite", "--quantization", "int8",
        "--representative-data", image_folder, "--output", output, "--class-names", ",".join(DIGITS),
    )
    assert code == 0, err
    assert "wrote" in out and E.tflite_metadata(output)["class_names"] == DIGITS
    code, _, err = _cli(capsys, "export", artifacts["keras"], "--format", "tflite", "--quantization", "int4")
    assert code == 2 and "--quantization" in err and "'int8'" in err
    code, _, err = _cli(capsys, "export", artifacts["keras"], "--format", "tflite", "--quantization", "int8")
    assert code == 2 and "representative_data" in err
    code, out, err = _cli(
        capsys, "benchmark", artifacts["keras"], artifacts["savedmodel"], output,
        "--batch-size", 4, "--iterations", 3, "--warmup", 1,
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["artifact", "kind", "KiB", "batch", "p50", "ms", "p95", "ms", "images/s"]
    rows = [line.split() for line in lines[2:]]
    assert [(r[1], r[3]) for r in rows] == [
        ("keras", "1"), ("keras", "4"), ("savedmodel", "1"), ("savedmodel", "4"), ("tflite", "1"), ("tflite", "4"),
    ]


def test_loading_a_saved_model_runs_none_of_its_graph_code(tmp_path):
    """A crafted SavedModel whose `metadata` signature writes a file: loading
    it as a predictor reads metadata from a file only, so nothing is written."""
    marker = tmp_path / "pwned.txt"

    class Crafted(tf.Module):
        @tf.function(input_signature=[])
        def metadata(self):
            tf.io.write_file(str(marker), "ran")
            return {"class_names": tf.constant(["a"])}

        @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 3), tf.uint8)])
        def serve(self, images):
            return {"probabilities": tf.ones((tf.shape(images)[0], 1))}

    module = Crafted()
    tf.saved_model.save(module, str(tmp_path / "crafted"),
                        signatures={"serving_default": module.serve, "metadata": module.metadata})
    with pytest.raises(ValueError, match="not a SavedModel from keras_vit"):
        E.load_predictor(tmp_path / "crafted")
    assert not marker.exists()
