"""The budget tools' correctness (not their speed, which benchmarks/
time_to_accuracy.py measures): patch dropout, progressive resizing and
the tools recorded in plan.json. Runs on every backend."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit.layers import PatchDropout
from keras_vit.layers.positions import resample_posemb
from keras_vit.training.progressive import ProgressiveResize, low_resolution, patch_encoders, set_training_size
from tests.conftest import tiny_vit_kwargs


def test_patch_dropout_keeps_prefix_tokens_and_a_subset_of_the_patches_in_training_only():
    tokens = np.random.default_rng(0).normal(size=(3, 1 + 16, 8)).astype("float32")
    layer = PatchDropout(0.25, num_prefix_tokens=1, seed=3)
    out = ops.convert_to_numpy(layer(tokens, training=True))
    assert out.shape == (3, 1 + 12, 8)
    np.testing.assert_array_equal(out[:, 0], tokens[:, 0])
    for image in range(3):  # each kept token is one of that image's patch tokens, none twice
        rows = [int(np.argmin(np.abs(tokens[image, 1:] - row).sum(-1))) for row in out[image, 1:]]
        np.testing.assert_allclose(out[image, 1:], tokens[image, 1:][rows], atol=1e-6)
        assert len(set(rows)) == 12
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(tokens, training=False)), tokens)


def test_patch_dropout_is_refused_out_of_range():
    with pytest.raises(ValueError, match="patch_dropout"):
        PatchDropout(1.0)


def test_a_model_with_patch_dropout_trains_saves_and_reloads_with_it(tiny_vit, tmp_path):
    model = tiny_vit(patch_dropout=0.5)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    model.fit(x, np.arange(8) % 4, batch_size=4, epochs=1, verbose=0)
    tokens = model.backbone(x[:2], training=True)
    assert tuple(tokens.shape) == (2, 1 + 8, 16)  # the class token and half of the 16 patches
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert again.backbone.patch_dropout == 0.5
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_the_low_resolution_is_whole_patches_and_smaller():
    assert low_resolution(32, 8) == 16 and low_resolution(64, 8) == 32 and low_resolution(16, 2) == 8
    assert low_resolution(16, 8) is None  # a 2x2 grid cannot shrink


def test_a_low_resolution_training_call_resamples_the_positions_of_the_same_model(tiny_vit):
    model = tiny_vit(class_token=False, pooling="gap")
    encoder = patch_encoders(model)[0]
    x = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    set_training_size(model, 8)
    low = ops.convert_to_numpy(encoder(x, training=True))
    assert low.shape == (2, 4, 16)  # a 2x2 grid
    # the embedding of the resized images plus the learned table resampled to 2x2
    resized = ops.image.resize(x, (8, 8), interpolation="bilinear", antialias=True)
    patches = ops.reshape(encoder.projection(resized), (2, 4, 16))
    positions = resample_posemb(encoder.position_embedding, (2, 2), (4, 4), encoder.pos_interpolation)
    np.testing.assert_allclose(low, ops.convert_to_numpy(patches + positions), atol=1e-4)
    assert tuple(encoder(x, training=False).shape) == (2, 16, 16)  # inference: the full size
    set_training_size(model, None)
    assert tuple(encoder(x, training=True).shape) == (2, 16, 16)


def test_progressive_resizing_ends_at_full_resolution_with_the_same_weights(tiny_vit):
    model = tiny_vit()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    weights = [id(v) for v in model.weights]
    table_shape = tuple(patch_encoders(model)[0].position_embedding.shape)
    seen = []

    class Sizes(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(patch_encoders(self.model)[0].training_image_size)

    resize = ProgressiveResize(8, 0.5, epochs=4)
    x = np.random.default_rng(2).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    model.fit(x, np.arange(8) % 4, batch_size=4, epochs=4, verbose=0, callbacks=[resize, Sizes()])
    assert seen == [(8, 8), (8, 8), None, None] and resize.switched_at == 2
    assert [id(v) for v in model.weights] == weights and model.image_size == (16, 16)
    assert tuple(patch_encoders(model)[0].position_embedding.shape) == table_shape


# not `quiet`: the 120 s budget is far more than its two capped epochs need, even on a busy machine
@pytest.mark.backend_independent  # the record's logic; CI's JAX and PyTorch passes skip it
def test_plan_json_records_the_tools_of_a_budgeted_run(tmp_path):
    from keras_vit import build_vit
    from keras_vit.data import load_data
    from keras_vit.training.run import train

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (256, 16, 16, 1)).astype("uint8"), np.arange(256) % 4
    data = load_data((x, y), 16, 32, validation_split=0.125, test_split=0.125, label_mode="categorical")
    kwargs = tiny_vit_kwargs(channels=1, patch_dropout=0.25, pooling="gap")
    train(lambda: build_vit(**kwargs), data, run_dir=tmp_path / "run", time_budget=120, epochs=2, progressive_resize=0.5,
          config={"recipe": "auto", "patch_dropout": 0.25, "progressive_resize": 0.5}, verbose=0, seed=0)
    record = json.loads((tmp_path / "run" / "plan.json").read_text())
    tools = record["plan"]["tools"]
    resize = tools["progressive_resize"]
    assert resize["value"] == 0.5 and resize["low_size"] == 8 and resize["fraction"] == 0.5
    assert resize["low_step_seconds"] > 0 and resize["full_step_seconds"] > 0 and resize["why"]
    last = record["sessions"][-1]["last_step"]  # 2 epochs of 7 steps, or fewer on a slow machine
    assert 0 < last <= 14 and (resize["switched_at_step"] is None or 0 < resize["switched_at_step"] <= last)
    assert tools["patch_dropout"]["value"] == 0.25 and tools["ema_momentum"]["value"] == 0.0
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert saved.image_size == (16, 16) and patch_encoders(saved)[0].training_image_size is None
