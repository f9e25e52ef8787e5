"""Plain layers, explicit speed: the layers compute the plain ViT (a numpy
reference) in training and inference with either kernel setting; the kernel
setting is stored in the config and round-trips; `inference_model` gives the
plain model's outputs; `keras_vit.layers` imports without TensorFlow."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import ConvStem, MultiHeadSelfAttention, TransformerBlock, ViTBackbone, build_vit
from keras_vit.export.inference import INFERENCE_REWRITES, InferenceModel, fold, inference_model, project
from keras_vit.kernels import KERNELS, resolve_kernels, torch_module, xla_module
from keras_vit.layers import LayerNorm
from keras_vit.layers.attention import LayerNorm as LayerNormFromAttention

RNG = np.random.default_rng(0)
numpy_erf = np.vectorize(math.erf)
BACKEND = keras.backend.backend()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def value_and_grad(fn, x):
    """fn(x) and d sum(fn(x) * x) / dx with the backend's autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * x)
        return ops.convert_to_numpy(y), ops.convert_to_numpy(tape.gradient(loss, x))
    if BACKEND == "jax":
        import jax

        y = fn(x)
        return np.asarray(y), np.asarray(jax.grad(lambda t: (fn(t) * t).sum())(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    y = fn(x)
    (y * x).sum().backward()
    return y.detach().numpy(), x.grad.numpy()


def randomize(layer, scale=0.5):
    """Every weight of `layer` random (biases, gamma and beta included)."""
    layer.set_weights([RNG.normal(size=w.shape).astype("float32") * scale for w in layer.get_weights()])


def numpy_norm(t, layer, epsilon=1e-6):
    g, b = (ops.convert_to_numpy(w) for w in layer.weights)
    return (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + epsilon) * g + b


def numpy_attention(x, layer):
    """softmax(q kᵀ / √d) v and its weights, from the layer's QKV and output
    kernels and biases, in numpy."""
    (w, *b), (wo, bo) = ([ops.convert_to_numpy(t) for t in dense.weights] for dense in (layer.qkv, layer.proj))
    b = b[0] if b else 0.0  # use_qkv_bias=False
    batch, tokens, dim = x.shape
    qkv = (x @ w + b).reshape(batch, tokens, 3, layer.num_heads, -1).transpose(2, 0, 3, 1, 4)
    scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2) / np.sqrt(qkv.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ qkv[2]).transpose(0, 2, 1, 3).reshape(batch, tokens, dim) @ wo + bo, weights


def numpy_gelu(h):
    return h * 0.5 * (1 + numpy_erf(h / np.sqrt(2)))


# --- the kernel setting -------------------------------------------------------


def test_kernel_setting_resolves_at_construction_and_refuses_unknown_values():
    expected = "xla" if BACKEND == "tensorflow" and xla_module("xla") is not None else "plain"
    expected = "torch" if BACKEND == "torch" else expected
    assert resolve_kernels() == expected
    assert [resolve_kernels(k) for k in KERNELS] == list(KERNELS)  # stored as given
    assert xla_module("plain") is None and torch_module("plain") is None
    if BACKEND != "tensorflow":
        assert xla_module("xla") is None  # "xla" falls back to plain ops here
    if BACKEND != "torch":
        assert torch_module("torch") is None  # and "torch" here
    for layer in (LayerNorm(), MultiHeadSelfAttention(2), TransformerBlock(2, 8)):
        assert layer.kernels == expected and layer.get_config()["kernels"] == expected
    with pytest.raises(ValueError, match="kernels"):
        TransformerBlock(2, 8, kernels="fast")
    assert LayerNormFromAttention is LayerNorm  # still importable from where it was


def test_exact_gelu_training_kernel_and_its_gradient_equal_the_formula():
    x = np.linspace(-6, 6, 101, dtype="float32")
    cdf = 0.5 * (1 + numpy_erf(x / np.sqrt(2)))
    pdf = np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)
    for kernels in KERNELS:
        block = TransformerBlock(2, 8, kernels=kernels)
        y, grad = value_and_grad(lambda t: block.activate(t, training=True), x)  # the training GELU
        np.testing.assert_allclose(y, x * cdf, atol=1e-6)
        # d/dx sum(gelu(x) * x) = gelu(x) + x * gelu'(x), gelu' = cdf + x * pdf
        np.testing.assert_allclose(grad, x * cdf + x * (cdf + x * pdf), atol=1e-5)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_fused_and_explicit_attention_compute_the_same_output(qk_norm):
    x = RNG.normal(size=(2, 7, 16)).astype("float32")
    explicit_layer = MultiHeadSelfAttention(num_heads=4, qk_norm=qk_norm, fused=False)
    fused_layer = MultiHeadSelfAttention(num_heads=4, qk_norm=qk_norm, fused=True)
    explicit_layer.build(x.shape)
    fused_layer.build(x.shape)
    randomize(explicit_layer)
    fused_layer.set_weights(explicit_layer.get_weights())
    assert fused_layer.get_config()["fused"] is True and explicit_layer.get_config()["fused"] is False
    explicit = ops.convert_to_numpy(explicit_layer(x))
    fused = ops.convert_to_numpy(fused_layer(x))
    # Weights requested: the explicit path runs even when fused is chosen.
    with_weights, weights = fused_layer(x, return_attention_scores=True)
    np.testing.assert_allclose(fused, explicit, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(with_weights), explicit, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(ops.sum(weights, -1)), 1.0, atol=1e-5)


def test_fused_attention_default_is_resolved_at_construction():
    layer = MultiHeadSelfAttention(2)
    assert layer.fused in (True, False)
    assert MultiHeadSelfAttention.from_config(layer.get_config()).fused is layer.fused


def test_attention_dropout_in_training_uses_the_weights_path():
    x = RNG.normal(size=(4, 9, 8)).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=2, attention_dropout=0.5, fused=True)
    inference = ops.convert_to_numpy(layer(x, training=False))
    training = ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(training, inference, atol=1e-4)  # dropout did act


@pytest.mark.parametrize("training", [False, True])
def test_attention_with_random_biases_matches_numpy(training):
    x = RNG.normal(size=(3, 7, 12)).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=3)
    layer.build(x.shape)
    randomize(layer)
    expected, expected_weights = numpy_attention(x, layer)
    out, weights = layer(x, training=training, return_attention_scores=True)
    plain = layer(x, training=training)
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), expected_weights, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(plain), expected, atol=1e-4)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("use_qkv_bias", [True, False])
def test_gelu_block_matches_numpy_in_training_and_inference_modes(use_qkv_bias, kernels):
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=16, use_qkv_bias=use_qkv_bias, kernels=kernels)
    block.build(x.shape)
    randomize(block)
    outs = [block(x, training=False), block(x, training=True), block(x), block(x, return_attention_scores=True)[0]]
    y = x + numpy_attention(numpy_norm(x, block.norm1), block.attention)[0]
    w1, b1 = (ops.convert_to_numpy(w) for w in block.mlp_dense1.weights)
    w2, b2 = (ops.convert_to_numpy(w) for w in block.mlp_dense2.weights)
    expected = y + numpy_gelu(numpy_norm(y, block.norm2) @ w1 + b1) @ w2 + b2
    for out in outs:
        np.testing.assert_allclose(ops.convert_to_numpy(out), expected, atol=1e-4)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 8), (15, 8), (2, 3, 4, 8)])
def test_layer_norm_equals_keras_layer_normalization_and_its_gradients(shape, training, kernels):
    x = (RNG.normal(size=shape) * 3 + 1).astype("float32")
    ours, keras_norm = LayerNorm(epsilon=1e-6, kernels=kernels), keras.layers.LayerNormalization(epsilon=1e-6)
    ours.build(shape)
    keras_norm.build(shape)
    for target in (ours, keras_norm):  # the same non-trivial gamma and beta
        target.gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
        target.beta.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
    y, grad = value_and_grad(lambda t: ours(t, training=training), x)
    y_keras, grad_keras = value_and_grad(keras_norm, x)
    np.testing.assert_allclose(y, y_keras, atol=1e-5)
    np.testing.assert_allclose(grad, grad_keras, atol=1e-4)
    assert LayerNorm.from_config(ours.get_config()).get_config() == ours.get_config()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's XLA training kernels")
@pytest.mark.parametrize("shape", [(24, 8), (4, 6, 8), (2, 3, 4, 8)])
def test_layer_norm_training_kernel_gives_keras_gradients_for_gamma_and_beta(shape):
    import tensorflow as tf

    assert xla_module("xla") is not None  # XLA compiles on the CPU, so these tests exercise the kernels
    x = tf.constant((RNG.normal(size=shape) * 2 - 1).astype("float32"))
    upstream = tf.constant(RNG.normal(size=shape).astype("float32"))
    grads = []
    for norm in (LayerNorm(epsilon=1e-5, kernels="xla"), keras.layers.LayerNormalization(epsilon=1e-5)):
        norm.build(shape)
        norm.gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(norm(x, training=True) * upstream)
        grads.append(tape.gradient(loss, [norm.gamma, norm.beta]))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4)


@pytest.mark.skipif(BACKEND == "jax", reason="JAX computes in float64 only with jax_enable_x64")
def test_layer_norm_keeps_float64():
    x = RNG.normal(size=(3, 8))
    ours, theirs = LayerNorm(dtype="float64"), keras.layers.LayerNormalization(dtype="float64")
    y = ops.convert_to_numpy(ours(x, training=True))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ops.convert_to_numpy(theirs(x)), atol=1e-12)


def test_block_drop_path_drops_whole_images_on_its_rows():
    x = RNG.normal(size=(32, 5, 8)).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=16, drop_path=0.5)
    inference = ops.convert_to_numpy(block(x, training=False))
    training = ops.convert_to_numpy(block(x, training=True))
    # An image whose two branches were both dropped passes through unchanged;
    # the rest differ from the input. No image is changed on some rows only.
    unchanged = np.isclose(training, x, atol=1e-6).reshape(32, -1)
    assert (unchanged.all(1) | ~unchanged.any(1)).all()
    assert 0 < unchanged.all(1).sum() < 32
    assert not np.allclose(training, inference)


# --- the kernel setting round-trips ------------------------------------------------


@pytest.mark.parametrize("kernels", KERNELS)
def test_kernel_setting_round_trips_through_config_and_a_keras_file(kernels, tmp_path):
    backbone = ViTBackbone(image_size=16, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32,
                           pre_norm=True, kernels=kernels)
    assert backbone.get_config()["kernels"] == kernels
    assert all(layer.kernels == kernels for layer in (backbone.blocks[0], backbone.norm, backbone.norm_pre))
    assert ViTBackbone.from_config(backbone.get_config()).get_config() == backbone.get_config()
    for layer in (TransformerBlock(2, 8, kernels=kernels), MultiHeadSelfAttention(2, qk_norm=True, kernels=kernels)):
        revived = type(layer).from_config(layer.get_config())
        assert revived.get_config() == layer.get_config() and revived.get_config()["kernels"] == kernels
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, LayerNorm(kernels=kernels)(TransformerBlock(2, 16, kernels=kernels)(inputs)))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.kernels for layer in loaded.layers[1:]] == [kernels, kernels]
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), atol=1e-6)


@pytest.mark.parametrize("kernels", KERNELS)
def test_conv_stem_kernels_give_the_plain_numbers_and_round_trip(kernels):
    x = RNG.normal(size=(2, 8, 8, 3)).astype("float32")
    fast, plain = ConvStem([4, 8], kernels=kernels), ConvStem([4, 8], kernels="plain")
    for stem in (fast, plain):
        stem.build(x.shape)
    randomize(fast)
    plain.set_weights(fast.get_weights())
    weights = ops.convert_to_tensor(RNG.normal(size=(2, 2, 2, 8)).astype("float32"))
    for training in (True, False):
        # value_and_grad wants x's shape back: x scaled by a weighted sum of the stem's output
        a, grad_a = value_and_grad(lambda t: t * ops.sum(fast(t, training=training) * weights), x)
        b, grad_b = value_and_grad(lambda t: t * ops.sum(plain(t, training=training) * weights), x)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(grad_a, grad_b, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ops.convert_to_numpy(ops.stop_gradient(fast(x, training=training))),
                                   ops.convert_to_numpy(ops.stop_gradient(plain(x, training=training))), atol=1e-5)
    assert ConvStem.from_config(fast.get_config()).kernels == kernels
    assert all(norm.kernels == kernels for norm in fast.norms)
    backbone = ViTBackbone(image_size=16, patch_size=4, conv_stem=[4, 8], hidden_dim=16, depth=1, num_heads=2,
                           mlp_dim=32, kernels=kernels)
    encoder = backbone.patch_encoder
    assert encoder.kernels == encoder.stem.kernels == kernels
    assert type(encoder).from_config(encoder.get_config()).stem.kernels == kernels
    old = fast.get_config()
    old.pop("kernels")  # a stem saved before the setting existed
    assert ConvStem.from_config(old).kernels == resolve_kernels()


def test_an_old_config_without_the_setting_loads_with_this_backends_default():
    config = TransformerBlock(2, 8).get_config()
    config.pop("kernels")
    assert TransformerBlock.from_config(config).kernels == resolve_kernels()


@pytest.mark.parametrize("kernels", ["xla", "torch"])
@pytest.mark.parametrize("fused", [True, False])
def test_every_kernel_setting_gives_the_plain_training_numbers(kernels, fused):
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    fast = TransformerBlock(2, 16, kernels=kernels, fused_attention=fused)
    plain = TransformerBlock(2, 16, kernels="plain", fused_attention=False)
    for block in (fast, plain):
        block.build(x.shape)
    randomize(fast)
    plain.set_weights(fast.get_weights())
    for training in (True, False):
        a, grad_a = value_and_grad(lambda t: fast(t, training=training), x)
        b, grad_b = value_and_grad(lambda t: plain(t, training=training), x)
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(grad_a, grad_b, atol=1e-4)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch kernels run on the torch backend only")
def test_torch_kernels_give_weight_gradients_lora_and_quantized_numbers_of_the_plain_block():
    import torch

    x = torch.tensor(RNG.normal(size=(2, 5, 8)).astype("float32"))
    fast, plain = TransformerBlock(2, 16, kernels="torch"), TransformerBlock(2, 16, kernels="plain")
    for block in (fast, plain):
        block.build(x.shape)
    randomize(fast)
    plain.set_weights(fast.get_weights())
    grads = []
    for block in (fast, plain):
        (block(x, training=True) ** 2).sum().backward()
        grads.append([w.value.grad.numpy().copy() for w in block.trainable_weights])
    for fast_grad, plain_grad in zip(*grads):
        np.testing.assert_allclose(fast_grad, plain_grad, atol=1e-4)
    before = x.clone()
    with torch.no_grad():  # inference: the GELU and residual adds write over the block's own tensors
        np.testing.assert_allclose(fast(x).numpy(), plain(x).numpy(), atol=1e-5)
    assert torch.equal(x, before)  # never over the caller's
    for block in (fast, plain):  # LoRA: the addmm takes the kernel with its low-rank update
        block.mlp_dense1.enable_lora(2)
        block.mlp_dense1.lora_kernel_a.assign(np.full((8, 2), 0.1, "float32"))
        block.mlp_dense1.lora_kernel_b.assign(np.ones((2, 16), "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(fast(x)), ops.convert_to_numpy(plain(x)), atol=1e-5)
    fast.mlp_dense2.quantize("int8")  # a quantized Dense keeps its own call
    plain.mlp_dense2.quantize("int8")
    np.testing.assert_allclose(ops.convert_to_numpy(fast(x)), ops.convert_to_numpy(plain(x)), atol=1e-5)


def _run(code, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_a_model_saved_with_xla_kernels_runs_with_plain_numbers_on_another_backend(tmp_path):
    other = "jax" if BACKEND != "jax" else "tensorflow"
    x = RNG.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    model = build_vit(image_size=16, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32,
                      num_classes=3, kernels="xla")
    randomize(model, 0.2)
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", ops.convert_to_numpy(model(x, training=True)))
    result = _run(f"""
        import json, numpy as np, keras, keras_vit
        model = keras.saving.load_model({str(tmp_path / "m.keras")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        y = keras.ops.convert_to_numpy(model(x, training=True))
        print(json.dumps(dict(kernels=model.backbone.kernels,
                              error=float(np.abs(y - np.load({str(tmp_path / "y.npy")!r})).max()))))
        """, other)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["kernels"] == "xla" and report["error"] < 1e-4


@pytest.mark.backend_independent  # its own process on JAX, whichever backend pytest runs on
def test_the_layers_package_imports_without_tensorflow():
    result = _run("""
        import sys
        import keras_vit.layers
        leaked = "tensorflow" in sys.modules
        print("tensorflow imported:", leaked)
        assert not leaked
        """, "jax")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


# --- inference_model ---------------------------------------------------------------


def _tiny(**overrides):
    kwargs = dict(image_size=16, patch_size=4, hidden_dim=16, depth=2, num_heads=2, mlp_dim=32, num_classes=5)
    kwargs.update(overrides)
    model = build_vit(**kwargs)
    randomize(model, 0.3)  # biases, LayerNorm gammas and betas far from their initial values
    return model


@pytest.mark.parametrize("overrides", [
    dict(pooling="cls"),
    dict(pooling="gap", use_qkv_bias=False),
    dict(pooling="map", layer_scale=0.1),
    dict(pooling="cls", qk_norm=True, num_registers=2),
    dict(pooling="gap", num_registers=1, class_token=False, fused_attention=True),
])
def test_inference_model_gives_the_plain_models_outputs(overrides):
    model = _tiny(**overrides)
    x = RNG.uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    fast = inference_model(model)
    plain = ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(ops.convert_to_numpy(fast(x)), plain, atol=1e-5)
    np.testing.assert_allclose(fast.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)
    fused = model.backbone.blocks[0].attention.fused  # the default is per backend (torch: fused)
    expected = ["layer_norm_fold"] if overrides.get("qk_norm") or fused else list(INFERENCE_REWRITES)
    assert fast.inference_rewrites == expected
    assert fast.get_config()["inference_rewrites"] == expected
    assert {id(v) for v in fast.weights} == {id(v) for v in model.weights}  # shared, not copied


def test_inference_model_follows_the_weights_and_reloads(tmp_path):
    model = _tiny(fused_attention=False)  # both rewrites apply, on every backend
    fast = inference_model(model)
    x = RNG.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    randomize(model, 0.3)  # after the transform: the folds are computed from the variables
    np.testing.assert_allclose(ops.convert_to_numpy(fast(x)), ops.convert_to_numpy(model(x)), atol=1e-5)
    fast.save(tmp_path / "fast.keras")
    loaded = keras.saving.load_model(tmp_path / "fast.keras")
    assert isinstance(loaded, InferenceModel) and loaded.inference_rewrites == list(INFERENCE_REWRITES)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), atol=1e-5)


@pytest.mark.parametrize("setting", ["auto", False])
def test_inference_model_keeps_the_jit_compile_the_model_was_given(setting, tmp_path):
    """"auto" stays "auto" in the inference model and its file, so the
    backend that loads it decides (as for the classifier's own file)."""
    model = _tiny()
    model.compile(loss="sparse_categorical_crossentropy", jit_compile=setting)
    fast = inference_model(model)
    assert fast.jit_compile_setting == setting
    fast.save(tmp_path / "fast.keras")
    assert keras.saving.load_model(tmp_path / "fast.keras").get_compile_config()["jit_compile"] == setting


def test_inference_model_of_a_backbone_and_of_a_mixed_precision_model():
    backbone = _tiny().backbone
    x = RNG.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(inference_model(backbone)(x)),
                               ops.convert_to_numpy(backbone(x)), atol=1e-5)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = _tiny()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    y = ops.convert_to_numpy(ops.cast(inference_model(model)(x), "float32"))
    expected = ops.convert_to_numpy(ops.cast(model(x), "float32"))
    np.testing.assert_allclose(y, expected, atol=0.1 * np.abs(expected).max())


def test_inference_model_refuses_a_subclassed_model():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        inference_model(Custom())


@pytest.mark.parametrize("offset", [0.0, 100.0])  # a large mean stays centred on the activations
@pytest.mark.parametrize("use_bias,activation", [(True, None), (False, None), (True, "relu")])
def test_layer_norm_folded_into_the_next_dense_equals_norm_then_dense(use_bias, activation, offset):
    x = (RNG.normal(size=(15, 8)) * 2 + offset).astype("float32")
    norm, dense = LayerNorm(epsilon=1e-6), keras.layers.Dense(6, use_bias=use_bias, activation=activation)
    norm.build(x.shape)
    dense.build(x.shape)
    norm.gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    norm.beta.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
    randomize(dense, 1.0)
    y = ops.convert_to_numpy(project(norm, x, dense))  # an activated Dense is not folded
    np.testing.assert_allclose(y, ops.convert_to_numpy(dense(norm(x))), atol=1e-4, rtol=1e-5)


def test_layer_norm_folded_under_float16_stays_finite_on_constant_and_offset_rows():
    x = RNG.normal(size=(4, 8)).astype("float32")
    x[0] = 80.0  # a constant row: its variance is 0, so 1 / sqrt(var + eps) is 1000
    x[1] += 500.0
    norm = LayerNorm(dtype="float32")
    dense = keras.layers.Dense(4, dtype="mixed_float16")
    norm.build(x.shape)
    dense.build(x.shape)
    norm.beta.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
    y = ops.convert_to_numpy(ops.cast(project(norm, x, dense), "float32"))
    expected = ops.convert_to_numpy(ops.cast(dense(norm(x)), "float32"))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, expected, atol=0.02, rtol=0.01)


def test_layer_norm_folded_under_mixed_precision_returns_the_dense_dtype():
    x = RNG.normal(size=(6, 8)).astype("float32")
    norm = LayerNorm(dtype="float32")
    dense = keras.layers.Dense(4, dtype="mixed_bfloat16")
    norm.build(x.shape)
    dense.build(x.shape)
    h, kernel, bias = fold(norm, x, dense)
    assert {keras.backend.standardize_dtype(t.dtype) for t in (h, kernel, bias)} == {"bfloat16"}
    y = project(norm, x, dense)
    expected = ops.convert_to_numpy(ops.cast(dense(norm(x)), "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(ops.cast(y, "float32")), expected, atol=0.05, rtol=0.02)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch kernel module runs on the torch backend")
def test_torch_kernel_docstring_examples_run():
    import doctest

    from keras_vit.kernels import torch_native

    result = doctest.testmod(torch_native, extraglobs={"np": np})
    assert result.attempted > 0 and result.failed == 0
