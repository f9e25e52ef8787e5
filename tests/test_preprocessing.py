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
