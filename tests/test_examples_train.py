"""The training examples run end to end at a tiny size."""

import json

import tensorflow_datasets as tfds
from PIL import Image

from tests.conftest import REPO, example, run_python


def test_quickstart_tiny(tmp_path):
    result = example("quickstart.py")(["--epochs", "1", "--tiny", "--run-dir", str(tmp_path)])
    assert len(result.history) == 1 and 0 <= result.test_metrics["accuracy"] <= 1
    assert (tmp_path / "history.png").is_file() and (tmp_path / "model.keras").is_file()


def test_train_cifar10_tiny_with_mocked_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=24):
        result = example("train_cifar10.py")(
            ["--epochs", "1", "--tiny", "--download", "--run-dir", str(tmp_path)])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dataset"] == "cifar10" and config["augment"] == "strong"
    assert config["ema_momentum"] and result.model.optimizer.use_ema
    assert result.model.input_shape == (None, 16, 16, 3) and result.model.output_shape == (None, 10)


def test_train_folder_tiny_in_a_fresh_process(tmp_path):
    for cls, value in (("red", 200), ("blue", 40)):
        for i in range(6):
            path = tmp_path / "images" / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 10), (value, 0, 255 - value)).save(path)
    run = tmp_path / "run"
    proc = run_python([str(REPO / "examples" / "train_folder.py"), str(tmp_path / "images"),
                       "--image-size", "16", "--epochs", "1", "--tiny", "--run-dir", str(run)])
    assert "test accuracy:" in proc.stdout
    info = json.loads((run / "config.json").read_text())["data"]
    assert info["class_names"] == ["blue", "red"] and info["num_classes"] == 2
