"""The deployment, tuning and interpretability examples run end to end, tiny
(in the test's process: `tests.conftest.example`)."""

import json

from tests.conftest import example


def test_tune_digits_example(tmp_path, capsys):
    example("tune_digits.py")(["--max-trials", "1", "--epochs", "1", "--image-size", "8",
                               "--directory", str(tmp_path)])
    assert "best hyperparameters:" in capsys.readouterr().out
    rows = json.loads((tmp_path / "digits" / "results.json").read_text())["trials"]
    assert len(rows) == 1 and rows[0]["status"] == "COMPLETED"
    assert (tmp_path / "digits" / "best_model.keras").is_file()


def test_explain_example_demo(tmp_path):
    out = tmp_path / "overlay.png"
    example("explain.py")(["--demo", "--output", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_and_serve_example(tmp_path, capsys):
    example("export_and_serve.py")(["--output", str(tmp_path), "--epochs", "1", "--iterations", "2"])
    names = {p.name for p in tmp_path.iterdir()}
    assert "digits.keras" in names and sum(n.endswith(".tflite") for n in names) == 4
    assert "int8" in capsys.readouterr().out
