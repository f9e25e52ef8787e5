"""The one image path: the same file gives the same tensor through training
(`load_data`) and through serving (the SavedModel's `serving_bytes`, the
predictor's files), for every channel layout."""

import io

import keras
import numpy as np
import pytest
from PIL import Image

from keras_vit import build_vit
from keras_vit.data import load_data
from keras_vit.preprocessing import ImageSettings, load_image

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the image path is TF ops")


def png_bytes(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):  # odd sizes and modes: the resize and conversion must matter
            array = rng.integers(0, 256, (23 + i, 17 + 2 * i, 3)).astype("uint8")
            mode = ("RGB", "RGBA", "L")[i % 3]
            image = Image.fromarray(array).convert(mode)
            image.save(tmp_path / label / f"{i}.png")
    return tmp_path


def test_training_and_serving_give_the_same_tensor_and_probabilities(folder, tmp_path):
    import tensorflow as tf

    from keras_vit.export import export_saved_model, load_predictor, read_image

    train, _, _, info = load_data(folder, 16, 10, validation_split=0, test_split=0, channels=3,
                                  label_mode="int", cache=False, shuffle_buffer=1)
    assert info.preprocessing == ImageSettings((16, 16), 3).to_dict()
    by_file = {}
    files = sorted(folder.glob("*/*.png"))
    # load_data's images, matched to files by their content through the same settings
    settings = ImageSettings.from_dict(info.preprocessing)
    expected = {str(f): load_image(f, settings) for f in files}
    for images, _ in train:
        for image in images.numpy():
            match = [f for f, e in expected.items() if np.array_equal(e, image)]
            assert len(match) == 1, "every training image equals its file through load_image exactly"
            by_file[match[0]] = image
    assert len(by_file) == len(files)

    model = build_vit(image_size=16, num_classes=2, patch_size=4, hidden_dim=16, depth=1, num_heads=2,
                      mlp_dim=32, preprocessing=info.preprocessing)
    export_saved_model(model, tmp_path / "sm")
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_bytes"]
    data = [f.read_bytes() for f in files]
    served = serve(image_bytes=tf.constant(data))["probabilities"].numpy()
    trained = model.predict(np.stack([by_file[str(f)] for f in files]), verbose=0)
    trained = np.exp(trained) / np.exp(trained).sum(-1, keepdims=True)
    np.testing.assert_allclose(served, trained, atol=1e-6)
    predictor = load_predictor(tmp_path / "sm")
    for f in files:
        np.testing.assert_array_equal(read_image(f, predictor, resize=True), by_file[str(f)])


@pytest.mark.parametrize("mode,channels", [("L", 3), ("RGB", 1), ("RGBA", 3), ("LA", 1), ("I;16", 1)])
def test_files_and_arrays_convert_channels_alike(mode, channels):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        array = rng.integers(0, 65536, (9, 7)).astype("uint16")
        expected = (array >> 8).astype("float32")[..., None]
        np.testing.assert_array_equal(load_image(png_bytes(array), ImageSettings(None, channels)), expected)
        return
    base = rng.integers(0, 256, (9, 7, 4)).astype("uint8")
    array = {"L": base[..., 0], "RGB": base[..., :3], "RGBA": base, "LA": base[..., :2]}[mode]
    from_file = load_image(png_bytes(array, mode), ImageSettings((5, 5), channels))
    from_array = load_image(array, ImageSettings((5, 5), channels))
    assert from_file.shape == (5, 5, channels)
    np.testing.assert_array_equal(from_file, from_array)


def test_settings_are_checked_and_bad_files_named(tmp_path):
    with pytest.raises(ValueError, match="Unknown `interpolation`: 'cubic'"):
        ImageSettings((8, 8), 3, interpolation="cubic")
    with pytest.raises(ValueError, match="Unknown `channels`: 4"):
        ImageSettings((8, 8), 4)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot decode .*x.png"):
        load_image(tmp_path / "x.png", ImageSettings(None, 3))
    with pytest.raises(ValueError, match="No such image file"):
        load_image(tmp_path / "missing.png", ImageSettings(None, 3))


def textured_image(height, width, seed=0):
    """A smooth image with noise on top: resizing it is a real test of the
    kernel and the geometry (an off-by-one crop moves every pixel)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3)).astype("uint8")
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR)).astype(int)
    return np.clip(smooth + rng.integers(-20, 20, smooth.shape), 0, 255).astype("uint8")


# image (h, w), model size (h, w), crop_pct, crop_mode, interpolation
CROPS = {
    "landscape_bicubic": ((37, 53), (16, 16), 0.875, "center", "bicubic"),
    "portrait_0.9": ((53, 37), (16, 16), 0.9, "center", "bicubic"),
    "square_crop_pct_1_bilinear": ((40, 40), (16, 16), 1.0, "center", "bilinear"),
    "non_square_model": ((37, 53), (16, 24), 0.875, "center", "bicubic"),
    "squash": ((30, 61), (12, 20), 0.95, "squash", "bicubic"),
    "enlarged": ((20, 23), (16, 16), 0.875, "center", "bicubic"),
}


@pytest.mark.parametrize("name", sorted(CROPS))
def test_crop_pct_matches_timms_eval_transform(tmp_path, name):
    """An image file prepared with a timm preset's crop_pct / crop_mode /
    interpolation equals timm's own eval transform (PIL resize + centre
    crop) within 2.5 grey levels (PIL rounds to uint8 after each of its two
    passes, we do not); a crop one pixel off is far outside that."""
    from tests.test_convert import import_timm_vit

    import_timm_vit()
    from timm.data import create_transform, resolve_data_config

    image_hw, size, crop_pct, crop_mode, interpolation = CROPS[name]
    Image.fromarray(textured_image(*image_hw)).save(tmp_path / "x.png")
    config = resolve_data_config(pretrained_cfg=dict(
        input_size=(3, *size), interpolation=interpolation, crop_pct=crop_pct, crop_mode=crop_mode,
        mean=(0.0,) * 3, std=(1 / 255,) * 3))
    expected = create_transform(**config)(Image.open(tmp_path / "x.png").convert("RGB")).permute(1, 2, 0).numpy()
    settings = ImageSettings(size, 3, interpolation, True, crop_pct=crop_pct, crop_mode=crop_mode)
    ours = load_image(tmp_path / "x.png", settings)
    assert ours.shape == expected.shape == (*size, 3)
    diff = np.abs(ours - expected)
    shifted = np.abs(ours[1:] - expected[:-1]).mean()
    print(f"crop {name}: max |pixel difference| = {diff.max():.3f}, mean {diff.mean():.3f} "
          f"(one row off: mean {shifted:.1f})")
    assert diff.max() <= 2.5 and diff.mean() < 0.5 < 5 < shifted


def test_crop_settings_are_checked_and_travel():
    with pytest.raises(ValueError, match=r"`crop_pct` must be None or a number in \(0, 1\]. Received: crop_pct=1.5"):
        ImageSettings((16, 16), crop_pct=1.5)
    with pytest.raises(ValueError, match="crop_mode"):
        ImageSettings((16, 16), crop_pct=0.9, crop_mode="border")
    settings = ImageSettings((16, 16), crop_pct=0.9, crop_mode="squash")
    assert ImageSettings.from_dict(settings.to_dict()) == settings


def test_exported_serving_applies_the_recorded_crop(tmp_path):
    """A model that records timm's crop_pct: the SavedModel's serving_bytes
    and the predictors of the SavedModel and the .keras file prepare an
    image file with the same resize + centre crop as `load_image`."""
    import tensorflow as tf

    from keras_vit.export import export_saved_model, load_predictor, read_image, read_saved_model_metadata

    Image.fromarray(textured_image(45, 61)).save(tmp_path / "x.png")
    model = build_vit(image_size=16, num_classes=3, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32,
                      preprocessing=dict(interpolation="bicubic", crop_pct=0.875, crop_mode="center"))
    expected = load_image(tmp_path / "x.png", ImageSettings((16, 16), 3, "bicubic", True, crop_pct=0.875))
    probs = model.predict(expected[None], verbose=0)
    probs = np.exp(probs) / np.exp(probs).sum(-1, keepdims=True)
    export_saved_model(model, tmp_path / "sm")
    assert read_saved_model_metadata(tmp_path / "sm")["preprocessing"]["crop_pct"] == 0.875
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_bytes"]
    served = serve(image_bytes=tf.constant([(tmp_path / "x.png").read_bytes()]))["probabilities"].numpy()
    np.testing.assert_allclose(served, probs, atol=1e-5)
    model.save(tmp_path / "m.keras")
    for artifact in ("sm", "m.keras"):  # no --resize needed: the crop is the model's eval transform
        np.testing.assert_allclose(read_image(tmp_path / "x.png", load_predictor(tmp_path / artifact)), expected,
                                   atol=1e-4)
