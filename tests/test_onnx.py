"""ONNX export end to end: ONNX Runtime against the Keras model (dynamic
batch, dynamic image size), the metadata `load_predictor` serves from,
`keras-vit export --format onnx`, argument errors, atomic writes, and
Keras' own `model.export(format="onnx")` on our model."""

import json
import shutil

import keras
import numpy as np
import pytest

from keras_vit import build_vit
from keras_vit import export as E
from keras_vit.export import onnx as O
from tests.conftest import run_python

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("tf2onnx")

tf_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="export_onnx needs TensorFlow")
NAMES = ["ant", "bee", "cat", "dog"]
ATOL = 1e-5


def _model(image_size=32, **overrides):
    keras.utils.set_random_seed(0)
    kwargs = dict(num_classes=4, patch_size=8, hidden_dim=32, depth=2, num_heads=2, mlp_dim=64)
    kwargs.update(overrides)
    if image_size is None:
        kwargs["reference_image_size"] = 32
    return build_vit(image_size=image_size, **kwargs)


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _keras_probabilities(model, images):
    return keras.ops.convert_to_numpy(E.geometry.class_probabilities(model, images))


def _session(path, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """A fixed-size (32 px) classifier, its .keras file and its .onnx file."""
    root = tmp_path_factory.mktemp("onnx_fixed")
    model = _model(32)
    model.save(root / "vit.keras")
    return dict(model=model, keras=root / "vit.keras", onnx=E.export_onnx(model, root / "vit.onnx", class_names=NAMES))


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory):
    """An image_size=None classifier with attention pooling ("map") and its .onnx file."""
    model = _model(None, pooling="map")
    path = tmp_path_factory.mktemp("onnx_dynamic") / "vit_dynamic.onnx"
    return dict(model=model, onnx=E.export_onnx(model, path))


@tf_only
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_keras_at_any_batch(fixed, batch):
    session = _session(fixed["onnx"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("images", "tensor(float)", ["batch", 32, 32, 3])
    assert (out.name, out.shape) == ("probabilities", ["batch", 4])
    images = _pixels((batch, 32, 32, 3), seed=batch)
    got = session.run(None, {"images": images})[0]
    expected = _keras_probabilities(fixed["model"], images)
    assert got.shape == (batch, 4) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= ATOL
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


@tf_only
def test_metadata_and_opset(fixed):
    proto = onnx.load(str(fixed["onnx"]))
    assert {o.domain or "": o.version for o in proto.opset_import}[""] == O.DEFAULT_OPSET == 17
    assert "Erfc" not in {n.op_type for n in proto.graph.node}
    meta = E.onnx_metadata(fixed["onnx"])
    assert meta == json.loads({p.key: p.value for p in proto.metadata_props}["keras_vit"])
    assert meta["class_names"] == NAMES and meta["outputs"] == "probabilities" and meta["opset"] == 17
    assert meta["image_size"] == [32, 32] and meta["size"] == [32, 32] and meta["patch_size"] == [8, 8]
    assert meta["preprocessing"]["interpolation"] == "bilinear"


@tf_only
def test_dynamic_image_size(dynamic):
    session = _session(dynamic["onnx"])
    assert session.get_inputs()[0].shape == ["batch", "height", "width", 3]
    for shape in [(2, 32, 32, 3), (1, 48, 40, 3)]:
        images = _pixels(shape)
        got = session.run(None, {"images": images})[0]
        assert np.abs(got - _keras_probabilities(dynamic["model"], images)).max() <= ATOL, shape
    meta = E.onnx_metadata(dynamic["onnx"])
    assert meta["image_size"] is None and meta["size"] == [32, 32] and meta["class_names"] == ["0", "1", "2", "3"]


@tf_only
def test_load_predictor_serves_onnx_like_keras(fixed, dynamic):
    assert E.artifact_kind(fixed["onnx"]) == "onnx"
    onnx_predictor = E.load_predictor(fixed["onnx"], num_threads=1)
    keras_predictor = E.load_predictor(fixed["keras"], class_names=NAMES)
    assert isinstance(onnx_predictor, E.ONNXPredictor) and onnx_predictor.kind == "onnx"
    assert onnx_predictor.class_names == NAMES and onnx_predictor.image_size == (32, 32)
    assert (onnx_predictor.channels, onnx_predictor.patch_size) == (3, (8, 8))
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3)).astype("uint8")
    got, expected = onnx_predictor.predict(images), keras_predictor.predict(images)
    assert np.abs(got - expected).max() <= ATOL
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    with pytest.raises(ValueError, match=r"\(24, 24\)"):
        onnx_predictor.predict(np.zeros((1, 24, 24, 3), "uint8"))
    flexible = E.load_predictor(dynamic["onnx"])
    assert flexible.image_size is None and flexible.size == (32, 32)
    assert flexible.predict(np.zeros((1, 40, 24, 3), "uint8")).shape == (1, 4)
    with pytest.raises(ValueError, match="patch"):  # 30 px is not tiled by 8 px patches
        flexible.predict(np.zeros((1, 30, 32, 3), "uint8"))
    rows = E.benchmark(onnx_predictor, (1, 2), iterations=2, warmup=1)
    assert [r["batch_size"] for r in rows] == [1, 2]


@tf_only
def test_cli_export_onnx_in_a_subprocess_then_predict_and_benchmark(fixed, tmp_path, capsys):
    from PIL import Image

    from keras_vit.cli.main import main as cli_main

    output = tmp_path / "cli.onnx"
    proc = run_python(["-m", "keras_vit.cli", "export", str(fixed["keras"]), "--format", "onnx",
                       "--output", str(output), "--class-names", ",".join(NAMES)])
    assert f"wrote {output}" in proc.stdout
    assert E.onnx_metadata(output)["class_names"] == NAMES
    images = _pixels((2, 32, 32, 3))
    got = _session(output).run(None, {"images": images})[0]
    assert np.abs(got - _keras_probabilities(fixed["model"], images)).max() <= ATOL

    pixels = np.random.default_rng(2).integers(0, 256, (32, 32, 3)).astype("uint8")
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert cli_main(["predict", str(output), str(tmp_path / "a.png"), "--top-k", "2"]) == 0
    expected = NAMES[int(_keras_probabilities(fixed["model"], pixels[None].astype("float32"))[0].argmax())]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.split()[1] == expected
    assert cli_main(["benchmark", str(output), "--batch-size", "2", "--iterations", "2", "--warmup", "0",
                     "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert "onnx" in table and len(table.strip().splitlines()) == 4


@tf_only
def test_bad_arguments_name_the_parameter(fixed, tmp_path, capsys):
    from keras_vit.cli.main import main as cli_main

    model = fixed["model"]
    for opset in (99, 12, "17", True):
        with pytest.raises(ValueError, match="opset"):
            E.export_onnx(model, tmp_path / "x.onnx", opset=opset)
    with pytest.raises(ValueError, match="class_names"):
        E.export_onnx(model, tmp_path / "x.onnx", class_names=["a"])
    with pytest.raises(ValueError, match="image_size"):
        E.export_onnx(model, tmp_path / "x.onnx", image_size=48)
    with pytest.raises(ValueError, match="check"):
        E.export_onnx(model, tmp_path / "x.onnx", check="yes")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(ValueError, match="path"):
        E.export_onnx(model, tmp_path / "folder.onnx")
    with pytest.raises(ValueError, match="num_threads"):
        E.ONNXPredictor(fixed["onnx"], num_threads=0)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="ONNX Runtime cannot load"):
        E.load_predictor(tmp_path / "junk.onnx")
    assert not list(tmp_path.glob("x.onnx*"))
    for argv, flag in ((["--format", "tflite", "--opset", "17"], "--opset"),
                       (["--format", "onnx", "--quantization", "int8"], "--quantization"),
                       (["--format", "onnx", "--opset", "99"], "opset")):
        try:
            code = cli_main(["export", str(fixed["keras"]), "-o", str(tmp_path / "y.onnx"), *argv])
        except SystemExit as exit_:
            code = exit_.code
        assert code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "y.onnx").exists()


@tf_only
def test_other_backends_are_refused_by_name(fixed, tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="TensorFlow backend.*'jax'"):
        E.export_onnx(fixed["model"], tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


@tf_only
def test_no_half_written_file_on_failure(fixed, tmp_path, monkeypatch):
    import tf2onnx

    target = tmp_path / "vit.onnx"
    shutil.copyfile(fixed["onnx"], target)  # an earlier export of ours, which a new one may replace
    previous = target.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(tf2onnx.convert, "from_function", broken)
    with pytest.raises(ValueError, match="converter crashed"):
        E.export_onnx(fixed["model"], target)
    monkeypatch.undo()

    def wrong(model, data, geo):  # the parity check fails after a complete conversion
        raise ValueError("does not reproduce the model")

    monkeypatch.setattr(O, "_check_parity", wrong)
    with pytest.raises(ValueError, match="does not reproduce"):
        E.export_onnx(fixed["model"], target)
    assert target.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["vit.onnx"]


@tf_only
def test_keras_own_onnx_export_runs_in_onnx_runtime(fixed, tmp_path):
    path = tmp_path / "keras_export.onnx"
    fixed["model"].export(str(path), format="onnx", verbose=False)
    session = _session(path)
    images = _pixels((2, 32, 32, 3))
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    expected = keras.ops.convert_to_numpy(fixed["model"](images, training=False))
    assert np.abs(got - expected).max() <= ATOL


@tf_only
def test_erfc_is_converted(tmp_path, monkeypatch):
    """`ops.gelu(approximate=False)` lowers to TensorFlow's Erfc, which ONNX
    lacks: the converter writes it as 1 - Erf (e.g. for the conv stem)."""
    from keras_vit.layers import block

    monkeypatch.setitem(block.ACTIVATIONS, "gelu", lambda x: keras.ops.gelu(x, approximate=False))
    model = _model(16, depth=1)
    path = E.export_onnx(model, tmp_path / "erfc.onnx")
    assert "Erf" in {n.op_type for n in onnx.load(str(path)).graph.node}
    images = _pixels((2, 16, 16, 3))
    got = _session(path).run(None, {"images": images})[0]
    assert np.abs(got - _keras_probabilities(model, images)).max() <= ATOL
