"""The layers: shapes, numerics against plain numpy, and config round-trips."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import (
    AttentionPooling,
    ConvStem,
    DropPath,
    LayerScale,
    MultiHeadSelfAttention,
    Patches,
    PatchEncoder,
    TokenPooling,
    TransformerBlock,
    resample_posemb,
    sincos_posemb_2d,
)
from tests.conftest import import_timm

RNG = np.random.default_rng(0)


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------ Patches


@pytest.mark.parametrize(
    "size,patch,stride",
    [((16, 16), 4, None), ((20, 12), (4, 2), None), ((17, 13), 5, 4), ((16, 16), 4, 2)],
)
def test_patches_count_and_contents_equal_image_slices(size, patch, stride):
    images = RNG.random((2, *size, 3)).astype("float32")
    out = ops.convert_to_numpy(Patches(patch, stride)(images))
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    sh, sw = (stride or (ph, pw)) if not isinstance(stride, int) else (stride, stride)
    gh, gw = (size[0] - ph) // sh + 1, (size[1] - pw) // sw + 1
    assert out.shape == (2, gh * gw, ph * pw * 3)
    for index in [0, gw - 1, gh * gw - 1, (gh // 2) * gw + gw // 2]:
        r, c = divmod(index, gw)
        expected = images[:, r * sh : r * sh + ph, c * sw : c * sw + pw, :].reshape(2, -1)
        np.testing.assert_allclose(out[:, index], expected, rtol=0, atol=1e-6)


def test_patches_accept_sizes_unknown_until_run_time():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, Patches(4, stride=2)(inputs))
    assert model.output_shape == (None, None, 48)
    assert model(np.zeros((1, 10, 6, 3), "float32")).shape == (1, 4 * 2, 48)


# ------------------------------------------------------------ PatchEncoder


def big_vision_sincos(h, w, width, temperature=10_000.0):
    """big_vision's posemb_sincos_2d, transcribed to numpy as a reference."""
    y, x = np.mgrid[:h, :w]
    omega = np.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / temperature**omega
    y = np.einsum("m,d->md", y.flatten(), omega)
    x = np.einsum("m,d->md", x.flatten(), omega)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)


def test_sincos_table_follows_big_vision_by_default():
    table = ops.convert_to_numpy(sincos_posemb_2d(3, 5, 16))
    np.testing.assert_allclose(table, big_vision_sincos(3, 5, 16), atol=1e-5)
    encoder = PatchEncoder(16, 4, grid_size=(3, 5), pos_embedding="sincos", use_cls_token=False)
    assert encoder.get_config()["sincos_layout"] == "big_vision"
    np.testing.assert_allclose(
        ops.convert_to_numpy(encoder.patch_positions((3, 5))[0]), big_vision_sincos(3, 5, 16), atol=1e-5)


def test_sincos_config_without_a_layout_loads_as_the_old_one():
    config = PatchEncoder(16, 4, pos_embedding="sincos", use_cls_token=False).get_config()
    del config["sincos_layout"]  # as keras_vit 0.1 wrote it
    assert PatchEncoder.from_config(config).sincos_layout == "rows_interleaved"


def test_rows_interleaved_sincos_table_equals_the_formula():
    gh, gw, dim = 3, 5, 16
    table = ops.convert_to_numpy(sincos_posemb_2d(gh, gw, dim, layout="rows_interleaved"))
    d = dim // 2
    expected = np.zeros((gh, gw, dim))
    for y in range(gh):
        for x in range(gw):
            for axis, pos in enumerate((y, x)):
                for i in range(d // 2):
                    angle = pos / 10000 ** (2 * i / d)
                    expected[y, x, axis * d + 2 * i] = np.sin(angle)
                    expected[y, x, axis * d + 2 * i + 1] = np.cos(angle)
    np.testing.assert_allclose(table, expected.reshape(gh * gw, dim), atol=1e-5)


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("new_grid", [(4, 4), (6, 3), (2, 5), (7, 9)])
def test_resample_posemb_equals_timm_on_every_backend(method, new_grid):
    # timm's `resample_abs_pos_embed` (PyTorch's antialiased interpolation)
    # is the reference a checkpoint loaded at another resolution is held
    # to; `resample_posemb` computes it in keras.ops, so the table is the
    # same on TensorFlow, JAX and PyTorch.
    import torch

    import_timm()
    from timm.layers import resample_abs_pos_embed

    table = RNG.normal(size=(1, 4 * 4, 8)).astype("float32")
    out = ops.convert_to_numpy(resample_posemb(table, new_grid, (4, 4), method))
    reference = resample_abs_pos_embed(
        torch.from_numpy(table), list(new_grid), old_size=[4, 4], num_prefix_tokens=0,
        interpolation=method, antialias=True).numpy()
    np.testing.assert_allclose(out, reference, atol=1e-6)


@pytest.mark.parametrize("new_grid", [(4, 4), (6, 3), (2, 5)])
def test_resample_posemb_bilinear_without_antialias_matches_keras_image_resize(new_grid):
    table = RNG.normal(size=(1, 4 * 4, 8)).astype("float32")
    out = ops.convert_to_numpy(resample_posemb(table, new_grid, (4, 4), "bilinear", antialias=False))
    reference = keras.ops.image.resize(
        table.reshape(1, 4, 4, 8), new_grid, interpolation="bilinear", antialias=False)
    np.testing.assert_allclose(out, ops.convert_to_numpy(reference).reshape(1, -1, 8), atol=1e-5)


def test_resample_posemb_is_identity_on_the_same_grid():
    table = RNG.normal(size=(12, 8)).astype("float32")
    out = ops.convert_to_numpy(resample_posemb(table, (3, 4), (3, 4)))
    np.testing.assert_allclose(out, table, atol=1e-6)


def test_patch_encoder_tokens_and_resampled_positions():
    encoder = PatchEncoder(8, patch_size=4, grid_size=(2, 2), num_registers=2)
    out = encoder(np.zeros((2, 8, 8, 3), "float32"))
    assert out.shape == (2, 1 + 2 + 4, 8)
    # With zero images the patch tokens are the projection bias + positions.
    pos = ops.convert_to_numpy(encoder.position_embedding)
    np.testing.assert_allclose(ops.convert_to_numpy(out)[0, 3:], pos[0, 1:], atol=1e-6)
    # The class token carries the first position row; registers carry none.
    np.testing.assert_allclose(ops.convert_to_numpy(out)[0, 0], pos[0, 0], atol=1e-6)
    np.testing.assert_allclose(
        ops.convert_to_numpy(out)[0, 1:3], ops.convert_to_numpy(encoder.registers)[0], atol=1e-6
    )
    bigger = ops.convert_to_numpy(encoder(np.zeros((1, 12, 16, 3), "float32")))
    assert bigger.shape == (1, 3 + 3 * 4, 8)
    expected = ops.convert_to_numpy(resample_posemb(pos[:, 1:], (3, 4), (2, 2)))
    np.testing.assert_allclose(bigger[0, 3:], expected[0], atol=1e-5)


def test_conv_and_linear_patch_embeddings_compute_the_same_function():
    images = RNG.random((2, 12, 12, 3)).astype("float32")
    conv = PatchEncoder(8, 4, stride=2, grid_size=(5, 5), patch_embedding="conv")
    linear = PatchEncoder(8, 4, stride=2, grid_size=(5, 5), patch_embedding="linear")
    conv(images), linear(images)
    for source, target in zip(conv.weights, linear.weights):
        target.assign(ops.reshape(source, target.shape))
    np.testing.assert_allclose(
        ops.convert_to_numpy(conv(images)), ops.convert_to_numpy(linear(images)), atol=1e-5
    )


# -------------------------------------------------------------- attention


def test_attention_equals_numpy_softmax_qkt_v():
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=2)
    out, weights = layer(x, return_attention_scores=True)
    w_qkv, b_qkv = (ops.convert_to_numpy(w) for w in layer.qkv.weights)
    w_o, b_o = (ops.convert_to_numpy(w) for w in layer.proj.weights)
    q, k, v = np.split(x @ w_qkv + b_qkv, 3, axis=-1)
    heads = lambda t: t.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    expected_weights = numpy_softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(4))
    expected = (expected_weights @ v).transpose(0, 2, 1, 3).reshape(2, 5, 8) @ w_o + b_o
    np.testing.assert_allclose(ops.convert_to_numpy(weights), expected_weights, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, atol=1e-5)


def test_transformer_block_relu_ffn_and_residuals_match_numpy():
    x = RNG.normal(size=(1, 4, 8)).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=16, activation="relu")
    out, weights = block(x, return_attention_scores=True)
    assert weights.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(ops.convert_to_numpy(ops.sum(weights, -1)), 1.0, atol=1e-5)

    def norm(t, layer):
        g, b = (ops.convert_to_numpy(w) for w in layer.weights)
        mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + 1e-6) * g + b

    y = x + ops.convert_to_numpy(block.attention(norm(x, block.norm1)))
    w1, b1 = (ops.convert_to_numpy(w) for w in block.mlp_dense1.weights)
    w2, b2 = (ops.convert_to_numpy(w) for w in block.mlp_dense2.weights)
    expected = y + np.maximum(0, norm(y, block.norm2) @ w1 + b1) @ w2 + b2
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, atol=1e-5)


def test_drop_path_drops_whole_samples_in_training_only():
    x = np.ones((64, 3, 4), "float32")
    layer = DropPath(0.5, seed=1)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x, training=False)), x)
    out = ops.convert_to_numpy(layer(x, training=True))
    per_sample = out.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped whole
    assert 0 < (per_sample[:, 0] == 0).sum() < 64


# --------------------------------------------------------- serialization

LAYERS = [
    lambda: Patches(4, stride=2),
    lambda: PatchEncoder(8, (4, 2), stride=(2, 2), grid_size=(3, 7), num_registers=1,
                         pos_interpolation="bilinear"),
    lambda: PatchEncoder(8, 4, use_cls_token=False, pos_embedding="sincos", patch_embedding="linear"),
    lambda: PatchEncoder(8, 4, grid_size=(2, 4), conv_stem=[4, 6]),
    lambda: ConvStem([4, 6], norm_epsilon=1e-5),
    lambda: TransformerBlock(2, 16, dropout=0.1, attention_dropout=0.1, drop_path=0.2,
                             layer_scale=1e-4, qk_norm=True, activation="gelu_tanh",
                             norm_epsilon=1e-5, use_qkv_bias=False),
    lambda: MultiHeadSelfAttention(2, attention_dropout=0.1, qk_norm=True),
    lambda: TokenPooling("gap", num_prefix_tokens=2),
    lambda: AttentionPooling(2, 16, activation="relu"),
    lambda: DropPath(0.3, seed=3),
    lambda: LayerScale(0.5),
]


@pytest.mark.parametrize("make", LAYERS, ids=lambda f: f().__class__.__name__)
def test_every_layer_round_trips_its_config(make):
    layer = make()
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer) and revived.get_config() == config
    x = RNG.random((2, 8, 16, 3) if isinstance(layer, (Patches, PatchEncoder, ConvStem)) else (2, 5, 8))
    x = x.astype("float32")
    expected = layer(x)
    clone(x)
    for source, target in zip(layer.weights, clone.weights):
        target.assign(source)
    np.testing.assert_allclose(ops.convert_to_numpy(clone(x)), ops.convert_to_numpy(expected), atol=1e-6)


@pytest.mark.parametrize(
    "shape,message",
    [((4, 4, 3), "rank 4"), ((1, 8, 8, 1), "Expected images with 3 channels"),
     ((1, 3, 8, 3), "smaller than the patch size 4")],
)
def test_patch_encoder_rejects_bad_images_clearly(shape, message):
    encoder = PatchEncoder(8, 4, grid_size=(2, 2))
    encoder(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match=message):
        encoder(np.zeros(shape, "float32"))


def test_the_old_interpolation_argument_is_pos_interpolation_with_a_warning():
    """`interpolation` meant position resampling in the backbone and image
    resizing in preprocessing; the backbone's is now `pos_interpolation`."""
    from keras_vit.models import ViTBackbone

    with pytest.warns(DeprecationWarning, match="now `pos_interpolation`"):
        encoder = PatchEncoder(8, 4, grid_size=(2, 2), interpolation="bilinear")
    assert encoder.pos_interpolation == "bilinear"
    with pytest.warns(DeprecationWarning, match="ViTBackbone"):
        backbone = ViTBackbone(image_size=8, patch_size=4, hidden_dim=8, depth=1, num_heads=2, mlp_dim=8,
                               interpolation="bilinear")
    config = backbone.get_config()
    assert config["pos_interpolation"] == "bilinear" and "interpolation" not in config
    config["interpolation"] = config.pop("pos_interpolation")  # as keras_vit 0.2 saved it
    assert ViTBackbone.from_config(config).pos_interpolation == "bilinear"
    old = encoder.get_config()
    old["interpolation"] = old.pop("pos_interpolation")
    assert PatchEncoder.from_config(old).pos_interpolation == "bilinear"
