"""Attention maps, rollout and PNG overlays of build_vit models."""

import numpy as np
import pytest
from PIL import Image

from keras_vit import explain as V


@pytest.fixture(scope="module")
def model():
    import keras

    from keras_vit import build_vit

    keras.utils.set_random_seed(0)
    return build_vit(image_size=16, num_classes=4, patch_size=4, hidden_dim=16, depth=2, num_heads=2,
                     mlp_dim=32, num_registers=1)


def test_attention_maps_are_every_blocks_softmax_weights(model, images):
    maps = V.attention_maps(model, images)
    tokens = 1 + 1 + 16  # class token, one register, 4 x 4 patches
    assert maps.shape == (2, 3, 2, tokens, tokens)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    # The first block's weights equal that block called on the model's tokens.
    import keras

    block = model.backbone.blocks[0]
    tokens_model = keras.Model(model.backbone.input, block.input)
    _, weights = block(tokens_model(images), return_attention_scores=True)
    np.testing.assert_allclose(maps[0], np.asarray(weights), atol=1e-5)
    # The model itself is unchanged and still predicts.
    assert model.predict(images, verbose=0).shape == (3, 4)


@pytest.mark.parametrize("head_fusion", V.HEAD_FUSIONS)
def test_rollout_rows_sum_to_one(model, images, head_fusion):
    rollout = V.attention_rollout(V.attention_maps(model, images), head_fusion)
    assert rollout.shape == (3, 18, 18)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-5)
    assert (rollout >= 0).all()


def test_rollout_of_one_layer_without_residual_is_the_fused_attention():
    rng = np.random.default_rng(0)
    attention = rng.uniform(size=(1, 2, 3, 5, 5))
    attention /= attention.sum(-1, keepdims=True)
    fused = V.attention_rollout(attention, "max", residual=False)
    expected = attention[0].max(axis=1)
    np.testing.assert_allclose(fused, expected / expected.sum(-1, keepdims=True), rtol=1e-6)
    # the residual term keeps more weight on each token itself
    with_residual = V.attention_rollout(attention, "max")
    assert (np.diagonal(with_residual, axis1=1, axis2=2) > np.diagonal(fused, axis1=1, axis2=2)).all()


def test_heatmap_has_the_patch_grid_shape(tiny_vit):
    cls_model = tiny_vit()
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    heat = V.rollout_heatmap(cls_model, images)
    assert heat.shape == (2, 4, 4)
    assert np.isfinite(heat).all() and (heat > 0).all()
    # no class token, any image size: a 16 x 24 image gives a 4 x 6 grid
    gap_model = tiny_vit(pooling="gap", image_size=None, reference_image_size=16)
    wide = np.random.default_rng(1).uniform(0, 255, (1, 16, 24, 3)).astype("float32")
    assert V.rollout_heatmap(gap_model, wide, "min").shape == (1, 4, 6)
    # a conv stem of two convolutions makes 4-pixel patches: the same 4 x 4 grid at 16 px
    stem_model = tiny_vit(conv_stem=[4, 8])
    assert V.rollout_heatmap(stem_model, images).shape == (2, 4, 4)


def test_overlay_is_a_png_of_the_image_size(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (40, 24, 3)).astype("uint8")
    heat = np.zeros((10, 6))
    heat[0, 0] = 1.0  # the top-left patch
    path = V.save_attention_overlay(image, heat, tmp_path / "out" / "overlay.png", alpha=0.6)
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (24, 40)  # (width, height)
        png.verify()
    with Image.open(path) as png:
        pixels = np.asarray(png.convert("RGB"), dtype="float32")
    # with the jet colormap, the hot corner is red and the cold far corner blue
    assert pixels[0, 0, 0] > pixels[0, 0, 2]
    assert pixels[-1, -1, 2] > pixels[-1, -1, 0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["overlay.png"]  # no temporary left


def test_bad_input_is_refused(model, images, tmp_path):
    with pytest.raises(ValueError, match="Unknown `head_fusion`: 'sum'. Accepted values: 'mean', 'max', 'min'"):
        V.attention_rollout(np.ones((1, 1, 1, 2, 2)), "sum")
    with pytest.raises(ValueError, match=r"\(depth, batch, heads, N, N\)"):
        V.attention_rollout(np.ones((2, 2)))
    with pytest.raises(ValueError, match="`images` must be a batch"):
        V.attention_maps(model, images[0])
    image, heat = np.zeros((8, 8, 3)), np.ones((2, 2))
    with pytest.raises(ValueError, match="`alpha` must be in"):
        V.save_attention_overlay(image, heat, tmp_path / "a.png", alpha=1.5)
    with pytest.raises(ValueError, match="Unknown `cmap`: 'rainbowz'"):
        V.save_attention_overlay(image, heat, tmp_path / "a.png", cmap="rainbowz")
    with pytest.raises(ValueError, match="must end with '.png'"):
        V.save_attention_overlay(image, heat, tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="`heatmap` must be a 2-D map"):
        V.save_attention_overlay(image, np.ones(4), tmp_path / "a.png")
    with pytest.raises(ValueError, match="`image` must be"):
        V.save_attention_overlay(np.zeros((8, 8, 4)), heat, tmp_path / "a.png")
    assert not list(tmp_path.iterdir())
    import keras

    mlp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="is not a ViTClassifier"):
        V.attention_model(mlp)


def test_explain_command_writes_an_overlay(tiny_vit, tmp_path, capsys):
    from keras_vit.cli.main import main

    model = tiny_vit()
    model.save(tmp_path / "vit.keras")
    image = np.random.default_rng(0).integers(0, 256, (30, 20, 3)).astype("uint8")
    Image.fromarray(image).save(tmp_path / "photo.jpg")
    out = tmp_path / "attention.png"
    assert main(["explain", str(tmp_path / "photo.jpg"), "--model", str(tmp_path / "vit.keras"), "-o", str(out),
                 "--head-fusion", "max"]) == 0
    stdout = capsys.readouterr().out
    assert f"Wrote {out}" in stdout and "predicted class" in stdout
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (16, 16)  # the model's input size


def test_explain_works_on_one_channel_models(tiny_vit, tmp_path, capsys):
    """The default digits recipe trains a 1-channel model; explain used to
    convert every image to RGB and fail on it."""
    from keras_vit.cli.main import main

    tiny_vit(channels=1).save(tmp_path / "gray.keras")
    rgb = np.random.default_rng(0).integers(0, 256, (24, 20, 3)).astype("uint8")
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    out = tmp_path / "gray_attention.png"
    assert main(["explain", str(tmp_path / "photo.png"), "--model", str(tmp_path / "gray.keras"),
                 "-o", str(out)]) == 0, capsys.readouterr().err
    with Image.open(out) as png:
        assert png.size == (16, 16)


def test_explain_command_bad_input(tiny_vit, tmp_path, capsys):
    from keras_vit.cli import main as cli

    tiny_vit().save(tmp_path / "vit.keras")
    Image.fromarray(np.zeros((16, 16, 3), "uint8")).save(tmp_path / "photo.png")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", str(tmp_path / "photo.png"), "--model", str(tmp_path / "vit.keras"),
                  "--head-fusion", "sum"])
    assert exit_.value.code == 2 and "invalid choice: 'sum'" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not an image")
    assert cli.main(["explain", str(tmp_path / "notes.txt"), "--model", str(tmp_path / "vit.keras")]) == 2
    assert "keras-vit explain: error: Cannot decode" in capsys.readouterr().err
    assert cli.main(["explain", str(tmp_path / "photo.png"), "--model", str(tmp_path / "notes.txt")]) == 2
    assert "error: Unknown checkpoint format" in capsys.readouterr().err
    assert cli.main(["explain", str(tmp_path / "photo.png"), "--model", str(tmp_path / "vit.keras"),
                     "-o", str(tmp_path / "out.jpg")]) == 2
    assert "must end with '.png'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photo.png", "vit.keras"]
