"""Keras' own paths on our models: `model.quantize`, LoRA (`enable_lora`,
`fine_tune(lora_rank=...)`) and `model.export`. Runs on every backend;
the SavedModel and LiteRT checks need TensorFlow."""

import json
import zipfile

import keras
import numpy as np
import pytest

from keras_vit.export import inference_model
from keras_vit.models import ViTClassifier
from keras_vit.models.lora import LORA_TARGETS
from keras_vit.training.finetune import set_backbone_trainable
from tests.conftest import BACKEND, run_python
from tests.test_finetune import image_folder, tiny_checkpoint  # noqa: F401  (fixtures)

TF_ONLY = pytest.mark.skipif(BACKEND != "tensorflow", reason="SavedModel and LiteRT export need TensorFlow")


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).integers(0, 256, size=(64, 16, 16, 3)).astype("float32")


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def predict(model, x):
    """The model's inference outputs, called eagerly (a traced `predict` per
    model would cost seconds on TensorFlow)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def quantized_pair(mode):
    """(float model, the same model quantized to `mode`)."""
    from keras_vit import build_vit
    from tests.conftest import tiny_vit_kwargs

    models = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        models.append(build_vit(**tiny_vit_kwargs(num_classes=10, hidden_dim=32, mlp_dim=64)))
    models[1].quantize(mode)
    return tuple(models)


@pytest.fixture(scope="module")
def int8_pair():
    return quantized_pair("int8")  # quantizing takes seconds on TensorFlow: shared


# --- quantization -----------------------------------------------------------


def test_int8_classifier_predicts_close_to_float(int8_pair, batch):
    float_model, model = int8_pair
    assert model.backbone.blocks[0].attention.qkv.quantization_mode == "int8"
    assert model.head.quantization_mode == "int8"
    expected, got = softmax(predict(float_model, batch)), softmax(predict(model, batch))
    # A random-init model's 10 probabilities lie close together, which makes
    # top-1 agreement a strict test. Measured (TF, JAX, torch): agreement
    # 0.98-1.0, max |diff| 0.014-0.017, mean 1.4e-3.
    assert np.mean(expected.argmax(-1) == got.argmax(-1)) >= 0.95
    assert np.abs(expected - got).max() < 0.03
    assert np.abs(expected - got).mean() < 3e-3
    # `inference_model`'s rewrites read Dense kernels directly; on a
    # quantized Dense they must step aside.
    plain = predict(model, batch[:8])
    np.testing.assert_allclose(predict(inference_model(model), batch[:8]), plain, atol=1e-6)
    np.testing.assert_allclose(model.predict(batch[:8], verbose=0), plain, atol=1e-6)  # traced too
    # The backbone alone (quantized with the classifier): tokens close to float.
    tokens, float_tokens = predict(model.backbone, batch[:8]), predict(float_model.backbone, batch[:8])
    assert np.abs(tokens - float_tokens).max() < 0.05 * np.abs(float_tokens).max()


def test_int8_backbone_quantizes_on_its_own(batch):
    from keras_vit.models import ViTBackbone

    backbone = ViTBackbone(image_size=16, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32)
    expected = predict(backbone, batch[:4])
    backbone.quantize("int8")
    assert backbone.blocks[0].mlp_dense1.quantization_mode == "int8"
    assert backbone.get_config()["quantized_layers"]["encoder_block_0/attention/qkv"] == "int8"
    got = predict(backbone, batch[:4])
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
    reloaded = ViTBackbone.from_config(backbone.get_config())
    reloaded.set_weights(backbone.get_weights())
    np.testing.assert_allclose(predict(reloaded, batch[:4]), got, atol=1e-6)


def test_int8_model_saves_and_reloads_in_a_fresh_process(int8_pair, batch, tmp_path):
    """The config records the quantized layers (our Dense layers are made in
    `build`, not from a config of their own); the reloaded model quantizes
    them again before its weights load and predicts the same."""
    model = int8_pair[1]
    model.save(tmp_path / "int8.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "int8.keras").read("config.json"))["config"]
    assert config["quantized_layers"] == {"head": "int8"}
    assert config["backbone"]["config"]["quantized_layers"]["encoder_block_1/attention/qkv"] == "int8"
    np.save(tmp_path / "x.npy", batch[:8])
    run_python(
        "import keras, numpy as np, keras_vit\n"
        f"d = {str(tmp_path)!r}\n"
        "m = keras.saving.load_model(f'{d}/int8.keras')\n"
        "assert m.backbone.blocks[0].attention.qkv.quantization_mode == 'int8'\n"
        "np.save(f'{d}/out.npy', keras.ops.convert_to_numpy(m(np.load(f'{d}/x.npy'))))\n", lean=True)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), predict(model, batch[:8]), atol=1e-5)


def test_jit_compile_is_saved_as_given_so_the_loading_backend_resolves_auto(tiny_vit, tmp_path):
    """Keras saves what the writing backend resolved "auto" to (False on
    TensorFlow's CPU, True on JAX), so another backend loaded the file
    without `jax.jit`, or with `torch.compile`; our models save "auto"."""
    settings = ("auto", False)
    for setting in settings:
        model = tiny_vit()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=setting)
        assert model.get_compile_config()["jit_compile"] == setting
        model.save(tmp_path / f"{setting}.keras")
    reader = "jax" if BACKEND != "jax" else "torch"
    proc = run_python("import keras, numpy as np, keras_vit\n"
                      f"for setting in {[str(s) for s in settings]!r}:\n"
                      f"    m = keras.saving.load_model(f'{tmp_path}/{{setting}}.keras')\n"
                      "    m.predict_on_batch(np.zeros((2, 16, 16, 3), 'float32'))\n"
                      "    print('JIT', setting, m.jit_compile, m.get_compile_config()['jit_compile'])\n",
                      env={"KERAS_BACKEND": reader}, lean=True)
    # "auto": jax.jit on JAX, eager on PyTorch; False stays False
    assert f"JIT auto {reader == 'jax'} auto" in proc.stdout, proc.stdout + proc.stderr
    assert "JIT False False False" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", ["int4", "float8"])
def test_int4_and_float8_save_and_reload(mode, batch, tmp_path):
    float_model, model = quantized_pair(mode)
    got = predict(model, batch)
    # Measured agreement with the float model: int4 0.84-0.89, float8
    # 0.89-0.97 (its scales start at 1: it is a training mode).
    assert np.mean(predict(float_model, batch).argmax(-1) == got.argmax(-1)) >= 0.75
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.head.quantization_mode == mode
    np.testing.assert_allclose(predict(reloaded, batch[:8]), got[:8], atol=1e-6)


@TF_ONLY
def test_int8_model_exports(int8_pair, batch, tmp_path):
    import tensorflow as tf

    from keras_vit.export import export_saved_model

    model = int8_pair[1]
    expected = predict(model, batch[:8])
    model.export(str(tmp_path / "keras_export"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "keras_export"))  # kept: its variables live as long as it does
    np.testing.assert_allclose(np.asarray(loaded.serve(batch[:8])), expected, atol=1e-5)
    export_saved_model(model, tmp_path / "served")
    served = tf.saved_model.load(str(tmp_path / "served"))
    out = served.signatures["serving_default"](images=tf.constant(batch[:8].astype("uint8")))
    np.testing.assert_allclose(out["probabilities"].numpy(), softmax(expected), atol=1e-5)


# --- LoRA -------------------------------------------------------------------


def lora_weights(backbone, targets=("qkv", "proj")):
    layers = {"qkv": lambda b: b.attention.qkv, "proj": lambda b: b.attention.proj,
              "mlp_dense1": lambda b: b.mlp_dense1, "mlp_dense2": lambda b: b.mlp_dense2}
    return [w for block in backbone.blocks for t in targets
            for w in (layers[t](block).lora_kernel_a, layers[t](block).lora_kernel_b)]


def ids(variables):
    return {id(v) for v in variables}


@pytest.mark.parametrize("rank", [0, -1, 1.5, True, "2", None])
def test_enable_lora_refuses_a_bad_rank(tiny_vit, rank):
    model = tiny_vit()
    with pytest.raises(ValueError, match="`rank`"):
        model.enable_lora(rank)
    assert len(model.trainable_weights) == len(model.weights)  # nothing changed


@pytest.mark.parametrize("targets", ["bogus", [], ["qkv", "nope"], [1], {"qkv": 1}])
def test_enable_lora_refuses_bad_target_names(tiny_vit, targets):
    model = tiny_vit()
    with pytest.raises(ValueError, match=r"`target_names`.*'qkv', 'proj', 'mlp_dense1', 'mlp_dense2'"):
        model.enable_lora(2, target_names=targets)
    assert len(model.trainable_weights) == len(model.weights)


def test_backbone_lora_leaves_only_the_lora_matrices_trainable(tiny_vit, images):
    backbone = tiny_vit().backbone
    before = predict(backbone, images)
    backbone.enable_lora(3)
    assert backbone.lora_enabled
    assert ids(backbone.trainable_weights) == ids(lora_weights(backbone))
    assert backbone.blocks[0].attention.qkv.lora_kernel_a.shape == (16, 3)
    assert backbone.blocks[0].attention.qkv.lora_kernel_b.shape == (3, 48)
    np.testing.assert_allclose(predict(backbone, images), before, atol=1e-6)  # B starts at 0
    with pytest.raises(ValueError, match="already enabled"):
        backbone.enable_lora(3)


def test_lora_target_names_select_the_layers(tiny_vit):
    backbone = tiny_vit().backbone
    backbone.enable_lora(2, target_names=list(LORA_TARGETS))
    assert ids(backbone.trainable_weights) == ids(lora_weights(backbone, LORA_TARGETS))
    backbone = tiny_vit().backbone
    backbone.enable_lora(2, target_names=["mlp_dense2"])
    assert ids(backbone.trainable_weights) == ids(lora_weights(backbone, ["mlp_dense2"]))
    assert not backbone.blocks[0].attention.qkv.lora_enabled


def test_classifier_lora_trains_only_lora_and_head(tiny_vit, batch, tmp_path):
    model = tiny_vit()
    model.enable_lora(2)
    head = [model.head.kernel, model.head.bias]
    assert ids(model.trainable_weights) == ids(lora_weights(model.backbone) + head)
    # set_backbone_trainable (fine_tune's stages) composes with LoRA.
    set_backbone_trainable(model, False)
    assert ids(model.trainable_weights) == ids(head)
    set_backbone_trainable(model, True)
    assert ids(model.trainable_weights) == ids(lora_weights(model.backbone) + head)

    before = {id(v): np.array(v.numpy()) for v in model.weights}
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = np.arange(len(batch)) % 4
    model.fit(batch, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    changed = {id(v) for v in model.weights if not np.array_equal(before[id(v)], v.numpy())}
    assert changed == ids(lora_weights(model.backbone) + head)

    expected = predict(model, batch[:8])
    # `inference_model` reads `Dense.kernel`, which merges LoRA.
    np.testing.assert_allclose(predict(inference_model(model), batch[:8]), expected, atol=1e-5)
    model.save(tmp_path / "lora.keras")
    reloaded = keras.saving.load_model(tmp_path / "lora.keras")
    assert isinstance(reloaded, ViTClassifier)
    np.testing.assert_allclose(predict(reloaded, batch[:8]), expected, atol=1e-5)

    # load_weights into a LoRA model: same outputs, and LoRA can still train
    # (Keras zeroes both matrices on load; A is drawn afresh).
    model.save_weights(tmp_path / "lora.weights.h5")
    again = tiny_vit()
    again.enable_lora(2)
    again.load_weights(tmp_path / "lora.weights.h5")
    np.testing.assert_allclose(predict(again, batch[:8]), expected, atol=1e-5)
    qkv = again.backbone.blocks[0].attention.qkv
    assert np.abs(qkv.lora_kernel_a.numpy()).max() > 0
    again.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    again.fit(batch[:16], labels[:16], batch_size=16, epochs=1, verbose=0)
    assert np.abs(qkv.lora_kernel_b.numpy()).max() > 0


def test_fine_tune_with_lora_rank_keeps_the_backbone(tiny_checkpoint, image_folder, tmp_path):
    """The full stage trains the LoRA matrices and the head; every weight the
    checkpoint provides keeps its value."""
    from keras_vit.models import from_checkpoint
    from keras_vit.training.finetune import fine_tune

    def values(model):
        return {v.path: np.array(v.numpy()) for v in model.weights}

    pretrained = values(from_checkpoint(tiny_checkpoint))
    result = fine_tune(tiny_checkpoint, image_folder, run_dir=tmp_path / "run", epochs=1, frozen_epochs=1,
                       batch_size=8, learning_rate=1e-2, test_split=0.25, lora_rank=2, verbose=0)
    model = result.model
    assert [row["stage"] for row in result.history] == ["head", "full"]
    assert model.backbone.lora_enabled
    after = values(model)
    backbone_paths = [p for p in pretrained if not p.startswith("head")]
    assert "encoder_block_0/attention/qkv/kernel" in backbone_paths
    for path in backbone_paths:
        np.testing.assert_array_equal(after[path], pretrained[path], err_msg=path)
    assert min(np.abs(w.numpy()).max() for w in lora_weights(model.backbone)[1::2]) > 0  # every B trained
    head_stage = keras.saving.load_model(tmp_path / "run" / "head" / "model.keras")
    assert not np.allclose(head_stage.head.kernel.numpy(), model.head.kernel.numpy())  # the full stage trained it
    # The saved model is plain (LoRA merged into the kernels) and predicts the same.
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras")
    x = np.random.default_rng(0).integers(0, 256, (4, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(predict(saved, x), predict(model, x), atol=1e-5)


@pytest.mark.parametrize("rank", [0, -2, 1.5, True])
def test_fine_tune_refuses_a_bad_lora_rank(rank, tmp_path):
    from keras_vit.training.finetune import fine_tune

    with pytest.raises(ValueError, match="`lora_rank`"):
        fine_tune("never-loaded.npz", "digits", run_dir=tmp_path / "run", lora_rank=rank)
    assert not (tmp_path / "run").exists()


def test_finetune_command_passes_lora_rank(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import keras_vit.training.finetune as finetune
    from keras_vit.cli.main import build_parser

    seen = {}

    def fake_fine_tune(checkpoint, data, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(test_metrics={}, run_dir=str(tmp_path), history=[],
                               model=SimpleNamespace(num_classes=2))

    monkeypatch.setattr(finetune, "fine_tune", fake_fine_tune)
    args = build_parser().parse_args(["finetune", "ckpt.npz", "digits", "--run-dir", str(tmp_path),
                                      "--lora-rank", "4"])
    assert args.run(args) == 0
    assert seen["lora_rank"] == 4
    args = build_parser().parse_args(["finetune", "ckpt.npz", "digits", "--run-dir", str(tmp_path)])
    args.run(args)
    assert seen["lora_rank"] is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "c", "d", "--run-dir", "r", "--lora-rank", "0"])


# --- Keras' own export (`model.export`) ----------------------------------------


@pytest.fixture(scope="module")
def float_model():
    from keras_vit import build_vit
    from tests.conftest import tiny_vit_kwargs

    keras.utils.set_random_seed(0)
    model = build_vit(**tiny_vit_kwargs())
    model(np.zeros((1, 16, 16, 3), "float32"))  # Keras' ONNX export refuses a model never called
    return model


@TF_ONLY
def test_keras_export_tf_saved_model(float_model, batch, tmp_path):
    import tensorflow as tf

    float_model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))  # kept: its variables live as long as it does
    np.testing.assert_allclose(np.asarray(loaded.serve(batch[:8])), predict(float_model, batch[:8]), atol=1e-5)


@TF_ONLY
def test_keras_export_litert(float_model, batch, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = tmp_path / "model.tflite"
    float_model.export(str(path), format="litert", verbose=False)
    interpreter = Interpreter(model_path=str(path))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert tuple(inp["shape"]) == (1, 16, 16, 3)  # Keras exports batch 1
    interpreter.allocate_tensors()
    expected = predict(float_model, batch[:4])
    for image, want in zip(batch[:4], expected):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(out["index"])[0], want, atol=1e-4)
