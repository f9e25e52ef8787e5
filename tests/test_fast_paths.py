"""The layers' faster internals compute the same function as the plain ones:
the exact GELU with its hand-written gradient, the fused-attention switch,
the lean LayerNorm and its folding into the next Dense, and the block's training and inference paths on its
(B * N, D) rows."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import MultiHeadSelfAttention, TransformerBlock
from keras_vit.layers.attention import LayerNorm, fast_inference
from keras_vit.layers.block import _gelu_exact as gelu_training

RNG = np.random.default_rng(0)
numpy_erf = np.vectorize(math.erf)


def value_and_grad(fn, x):
    """fn(x) and d sum(fn(x) * x) / dx with the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * x)
        return ops.convert_to_numpy(y), ops.convert_to_numpy(tape.gradient(loss, x))
    if backend == "jax":
        import jax

        y = fn(x)
        return np.asarray(y), np.asarray(jax.grad(lambda t: (fn(t) * t).sum())(x))
    pytest.skip(f"no gradient helper for the {backend} backend")


def test_exact_gelu_and_its_gradient_equal_the_formula():
    x = np.linspace(-6, 6, 101, dtype="float32")
    y, grad = value_and_grad(gelu_training, x)  # the training GELU
    cdf = 0.5 * (1 + numpy_erf(x / np.sqrt(2)))
    pdf = np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(y, x * cdf, atol=1e-6)
    # d/dx sum(gelu(x) * x) = gelu(x) + x * gelu'(x), gelu' = cdf + x * pdf
    np.testing.assert_allclose(grad, x * cdf + x * (cdf + x * pdf), atol=1e-5)
    _, plain_grad = value_and_grad(lambda t: ops.gelu(t, approximate=False), x)
    np.testing.assert_allclose(grad, plain_grad, atol=1e-5)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_fused_and_explicit_attention_compute_the_same_output(qk_norm):
    x = RNG.normal(size=(2, 7, 16)).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=4, qk_norm=qk_norm, fused=False)
    explicit = ops.convert_to_numpy(layer(x))
    layer.fused = True
    fused = ops.convert_to_numpy(layer(x))
    # Weights requested: the explicit path runs even when fused is forced.
    with_weights, weights = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(fused, explicit, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(with_weights), explicit, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(ops.sum(weights, -1)), 1.0, atol=1e-5)


def test_attention_dropout_in_training_uses_the_weights_path():
    x = RNG.normal(size=(4, 9, 8)).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=2, attention_dropout=0.5, fused=True)
    inference = ops.convert_to_numpy(layer(x, training=False))
    training = ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(training, inference, atol=1e-4)  # dropout did act


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


def randomize(layer):
    """Every weight of `layer` random (biases, gamma and beta included)."""
    layer.set_weights([RNG.normal(size=w.shape).astype("float32") * 0.5 for w in layer.get_weights()])


@pytest.mark.parametrize("enabled", [True, False])  # fast_inference(False): the plain graph TFLite export takes
@pytest.mark.parametrize("training", [False, True])  # inference rearranges the weights on TensorFlow
def test_attention_with_random_biases_matches_numpy(training, enabled):
    x = RNG.normal(size=(3, 7, 12)).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=3)
    layer.build(x.shape)
    randomize(layer)
    expected, expected_weights = numpy_attention(x, layer)
    with fast_inference(enabled):
        out, weights = layer(x, training=training, return_attention_scores=True)
        plain = layer(x, training=training)
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), expected_weights, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(plain), expected, atol=1e-4)


@pytest.mark.parametrize("use_qkv_bias", [True, False])
def test_gelu_block_matches_numpy_in_training_and_inference_modes(use_qkv_bias):
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=16, use_qkv_bias=use_qkv_bias)
    block.build(x.shape)
    randomize(block)
    out_inference = ops.convert_to_numpy(block(x, training=False))
    out_training = ops.convert_to_numpy(block(x, training=True))
    out_with_weights, _ = block(x, return_attention_scores=True)

    def norm(t, layer):
        g, b = (ops.convert_to_numpy(w) for w in layer.weights)
        return (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6) * g + b

    y = x + numpy_attention(norm(x, block.norm1), block.attention)[0]
    w1, b1 = (ops.convert_to_numpy(w) for w in block.mlp_dense1.weights)
    w2, b2 = (ops.convert_to_numpy(w) for w in block.mlp_dense2.weights)
    h = norm(y, block.norm2) @ w1 + b1
    expected = y + (h * 0.5 * (1 + numpy_erf(h / np.sqrt(2)))) @ w2 + b2
    for out in (out_inference, out_training, ops.convert_to_numpy(out_with_weights)):
        np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 8), (15, 8), (2, 3, 4, 8)])
def test_layer_norm_equals_keras_layer_normalization_and_its_gradients(shape, training):
    x = (RNG.normal(size=shape) * 3 + 1).astype("float32")
    ours, keras_norm = LayerNorm(epsilon=1e-6), keras.layers.LayerNormalization(epsilon=1e-6)
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


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's XLA training kernels")
@pytest.mark.parametrize("shape", [(24, 8), (4, 6, 8), (2, 3, 4, 8)])
def test_layer_norm_training_kernel_gives_keras_gradients_for_gamma_and_beta(shape):
    import tensorflow as tf

    from keras_vit.layers import xla_kernels

    assert xla_kernels.available()  # XLA compiles on the CPU, so these tests exercise the kernels
    x = tf.constant((RNG.normal(size=shape) * 2 - 1).astype("float32"))
    upstream = tf.constant(RNG.normal(size=shape).astype("float32"))
    grads = []
    for norm in (LayerNorm(epsilon=1e-5), keras.layers.LayerNormalization(epsilon=1e-5)):
        norm.build(shape)
        norm.gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(norm(x, training=True) * upstream)
        grads.append(tape.gradient(loss, [norm.gamma, norm.beta]))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4)


@pytest.mark.parametrize("offset", [0.0, 100.0])  # a large mean is centred inside the matmul
@pytest.mark.parametrize("use_bias,activation", [(True, None), (False, None), (True, "relu")])
@pytest.mark.parametrize("shape", [(15, 8), (3, 5, 8)])
def test_layer_norm_folded_into_the_next_dense_equals_norm_then_dense(shape, use_bias, activation, offset):
    x = (RNG.normal(size=shape) * 2 + offset).astype("float32")
    norm, dense = LayerNorm(epsilon=1e-6), keras.layers.Dense(6, use_bias=use_bias, activation=activation)
    norm.build(shape)
    dense.build(shape)
    norm.gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    norm.beta.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
    dense.kernel.assign(RNG.normal(size=(8, 6)).astype("float32"))
    if use_bias:
        dense.bias.assign(RNG.normal(size=6).astype("float32"))
    back = RNG.normal(size=(6, 8)).astype("float32")  # value_and_grad wants the input's shape back
    y_plain, grad_plain = value_and_grad(lambda t: ops.matmul(dense(norm(t)), back), x)
    for training in (None, False, True):
        y, grad = value_and_grad(lambda t: ops.matmul(norm.project(t, dense, training=training), back), x)
        np.testing.assert_allclose(y, y_plain, atol=1e-3, rtol=1e-5)
        np.testing.assert_allclose(grad, grad_plain, atol=1e-5 * np.abs(grad_plain).max() + 1e-4)


def test_layer_norm_folded_under_float16_stays_finite_on_constant_and_offset_rows():
    x = RNG.normal(size=(4, 8)).astype("float32")
    x[0] = 80.0  # a constant row: its variance is 0, so 1 / sqrt(var + eps) is 1000
    x[1] += 500.0
    norm = LayerNorm(dtype="float32")
    dense = keras.layers.Dense(4, dtype="mixed_float16")
    norm.build(x.shape)
    dense.build(x.shape)
    norm.beta.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
    y = ops.convert_to_numpy(ops.cast(norm.project(x, dense), "float32"))
    expected = ops.convert_to_numpy(ops.cast(dense(norm(x)), "float32"))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, expected, atol=0.02, rtol=0.01)


def test_layer_norm_folded_under_mixed_precision_returns_the_dense_dtype():
    x = RNG.normal(size=(6, 8)).astype("float32")
    norm = LayerNorm(dtype="float32")
    dense = keras.layers.Dense(4, dtype="mixed_bfloat16")
    norm.build(x.shape)
    dense.build(x.shape)
    y = norm.project(x, dense)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    expected = ops.convert_to_numpy(ops.cast(dense(norm(x)), "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(ops.cast(y, "float32")), expected, atol=0.05, rtol=0.02)


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="JAX computes in float64 only with jax_enable_x64")
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
