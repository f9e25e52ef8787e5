"""Fine-tuning a pretrained checkpoint (`keras_vit.training.finetune`) and
`keras-vit finetune`: a frozen head-only stage, then everything, at a new
resolution; the saved model reloads in a fresh process."""

import numpy as np
import pytest

from keras_vit.convert import variable_table
from keras_vit.models import from_checkpoint
from keras_vit.models import build_vit
from keras_vit.training.finetune import fine_tune, set_backbone_trainable
from tests.conftest import example, run_python
from tests.test_convert import original_npz_arrays, pixels


@pytest.fixture
def tiny_checkpoint(tmp_path):
    path = tmp_path / "vit.npz"
    np.savez(path, **original_npz_arrays())
    return path


def test_set_backbone_trainable_leaves_only_the_head_trainable():
    model = build_vit(image_size=16, num_classes=3, patch_size=4, hidden_dim=16, depth=1, num_heads=2,
                      mlp_dim=32, pooling="map", fc_norm=True, final_norm=False, representation_size=8,
                      head_units=[12])
    set_backbone_trainable(model, False)
    head = [model.head.kernel, model.head.bias, *model.head_hidden[0].weights]
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in head}
    set_backbone_trainable(model, True)
    assert len(model.trainable_weights) == len(model.weights)


@pytest.fixture
def image_folder(tmp_path):
    """Two classes a ViT can tell apart: dark and bright 16 x 16 images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, low in (("dark", 0), ("bright", 150)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(8):
            pixels_ = rng.integers(low, low + 100, (16, 16, 3)).astype("uint8")
            Image.fromarray(pixels_).save(tmp_path / "data" / label / f"{i}.png")
    return tmp_path / "data"


def weights_of(model, prefix):
    return {p: v.numpy().copy() for p, v in variable_table(model).items() if p.startswith(prefix)}


def test_frozen_stage_trains_only_the_new_head(tiny_checkpoint, image_folder, tmp_path):
    pretrained = from_checkpoint(tiny_checkpoint)
    result = fine_tune(tiny_checkpoint, image_folder, run_dir=tmp_path / "run", epochs=0,
                         frozen_epochs=2, batch_size=8, test_split=0.25, verbose=0)
    model = result.model
    assert model.output_shape == (None, 2)  # two class folders
    assert model.class_names == ["bright", "dark"]  # recorded from the data
    for path, value in weights_of(pretrained, "encoder_block").items():
        np.testing.assert_array_equal(weights_of(model, path)[path], value)
    assert [row["stage"] for row in result.history] == ["head", "head"]
    assert (tmp_path / "run" / "head" / "model.keras").exists()


def test_fine_tune_at_a_new_resolution_learns_and_saves(tiny_checkpoint, image_folder, tmp_path):
    pretrained = from_checkpoint(tiny_checkpoint)
    run_dir = tmp_path / "run"
    result = fine_tune(tiny_checkpoint, image_folder, run_dir=run_dir, image_size=20, epochs=4,
                         frozen_epochs=1, batch_size=8, learning_rate=1e-3, test_split=0.25, verbose=0)
    model = result.model
    assert model.input_shape == (None, 20, 20, 3)
    assert model.backbone.patch_encoder.position_embedding.shape == (1, 1 + 25, 16)
    assert [row["stage"] for row in result.history] == ["head"] + ["full"] * 4
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert "accuracy" in result.test_metrics
    before = weights_of(pretrained, "encoder_block_0/attention/qkv/kernel")
    after = weights_of(model, "encoder_block_0/attention/qkv/kernel")
    assert not np.allclose(before["encoder_block_0/attention/qkv/kernel"], after["encoder_block_0/attention/qkv/kernel"])
    # The saved model (resampled positions, new head) reloads in a fresh
    # process (importing keras_vit, no custom_objects) with the same logits.
    images = pixels(20, 20)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", model.predict(images, verbose=0))
    proc = run_python([
        "-c",
        "import keras, keras_vit, numpy as np, sys; d = sys.argv[1];"
        "m = keras.models.load_model(sys.argv[2]);"
        "np.testing.assert_allclose(m.predict(np.load(d + '/x.npy'), verbose=0), np.load(d + '/y.npy'), atol=1e-5);"
        "print('classes', m.output_shape[-1])",
        str(tmp_path), str(run_dir / "model.keras"),
    ], lean=True)
    assert "classes 2" in proc.stdout


def test_finetune_command(tiny_checkpoint, image_folder, tmp_path, capsys):
    from keras_vit.cli import main as cli

    # in this process (`keras-vit finetune` in a fresh one: tests/test_hub.py)
    run_dir = tmp_path / "cli"
    assert cli.main(["finetune", str(tiny_checkpoint), str(image_folder), "--run-dir", str(run_dir), "--epochs", "1",
                     "--frozen-epochs", "0", "--batch-size", "8", "--test-split", "0.25"]) == 0
    assert f"Saved {run_dir / 'model.keras'} (2 classes, 1 epochs; test accuracy=" in capsys.readouterr().out
    assert (run_dir / "history.csv").exists()


def test_finetune_command_bad_input(tiny_checkpoint, image_folder, tmp_path, capsys):
    from keras_vit.cli import main as cli

    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    assert cli.main(["finetune", str(text), str(image_folder), "--run-dir", str(tmp_path / "r")]) == 2
    assert "keras-vit finetune: error: Unknown checkpoint format" in capsys.readouterr().err
    assert cli.main(["finetune", str(tiny_checkpoint), str(image_folder), "--run-dir", str(tmp_path / "r"),
                     "--epochs", "0", "--frozen-epochs", "0"]) == 2
    assert "Nothing to train" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["finetune", str(tiny_checkpoint), str(image_folder)])  # no --run-dir
    assert "--run-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["finetune", str(tiny_checkpoint), str(image_folder), "--run-dir", str(tmp_path / "r"),
                  "--frozen-epochs", "-1"])
    assert exit_info.value.code == 2
    assert "--frozen-epochs: expected an int >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_fine_tune_bad_input(tiny_checkpoint, image_folder, tmp_path):
    run = dict(run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="`epochs` must be an int >= 0. Received: epochs=-1"):
        fine_tune(tiny_checkpoint, image_folder, epochs=-1, **run)
    with pytest.raises(ValueError, match="Nothing to train"):
        fine_tune(tiny_checkpoint, image_folder, epochs=0, frozen_epochs=0, **run)
    with pytest.raises(ValueError, match="Unknown checkpoint format"):
        fine_tune(image_folder / "dark" / "0.png", image_folder, **run)
    with pytest.raises(ValueError, match="`source` must be"):
        fine_tune(tiny_checkpoint, 42, **run)
    assert not (tmp_path / "run").exists()


def test_finetune_example_demo_runs_offline(capsys):
    example("finetune_pretrained.py")(["--demo", "--epochs", "1", "--frozen-epochs", "1"])
    out = capsys.readouterr().out
    assert "input (24, 24), 10 classes ['0', '1', '2'" in out
    assert "loss:" in out and "(first epoch, head)" in out
    assert "test accuracy:" in out


def test_a_preset_directory_gives_its_size_and_channels_without_being_built(tmp_path):
    from keras_vit.presets import get_preset_loader

    model = build_vit(image_size=(16, 24), num_classes=3, channels=1, patch_size=4, hidden_dim=16, depth=1,
                      num_heads=2, mlp_dim=32)
    model.save_to_preset(tmp_path / "preset")
    (tmp_path / "preset" / "model.weights.h5").write_bytes(b"not weights")  # never read: nothing is built
    assert get_preset_loader(str(tmp_path / "preset")).geometry() == ((16, 24), 1)
    timm_dir = tmp_path / "timm"
    timm_dir.mkdir()
    (timm_dir / "model.safetensors").write_bytes(b"")
    (timm_dir / "config.json").write_text(
        '{"architecture": "vit_tiny_patch4_32", "pretrained_cfg": {"input_size": [3, 32, 48]}}')
    assert get_preset_loader(str(timm_dir)).geometry() == ((32, 48), 3)
