"""Bad inputs thrown at the Python API and the `keras-vit` CLI, counted.

Each case is something a user could plausibly pass by mistake. It counts as

- clear: the API raised a `ValueError` (keras_vit's error type) whose message
  names the parameter or file; the CLI exited 2 with
  ``keras-vit COMMAND: error: ...`` (or argparse's usage error) naming it,
  and no traceback;
- unclear: another exception type, a traceback, or a message that does not
  name what was wrong;
- silent: accepted without a word.

Run from a source checkout (the package never imports `benchmarks/`)::

    python -m benchmarks.adversarial            # prints one line per case, then the counts
    python -m benchmarks.adversarial --cli-subprocess   # CLI cases in fresh processes (slower)
    python -m benchmarks.adversarial --only edges       # only issue 26's cases (benchmarks/adversarial_edges.py)

The CLI cases run `keras_vit.cli.main.main(argv)` in this process by
default: the same code as the ``keras-vit`` command, without the start-up
of a new interpreter per case.
"""

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
import zipfile
from pathlib import Path

import numpy as np

from benchmarks.adversarial_edges import edge_api_cases, edge_cli_cases, edge_files

REPO = Path(__file__).resolve().parents[1]


def _files(root):
    """The bad files the cases point at."""
    from PIL import Image

    from keras_vit import build_vit

    rng = np.random.default_rng(0)
    files = {}

    def folder(name, extra=None):
        path = root / name
        for label in ("a", "b"):
            (path / label).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype="uint8")).save(path / label / f"{i}.png")
        if extra:
            extra(path / "a")
        return str(path)

    def tiff(where):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(buffer, "TIFF")
        (where / "tiff.png").write_bytes(buffer.getvalue())

    files["tiff_folder"] = folder("tiff", tiff)
    files["bmp1_folder"] = folder("bmp1", lambda w: Image.fromarray(
        rng.integers(0, 2, (8, 8)).astype(bool)).convert("1").save(w / "one.bmp"))
    files["text_folder"] = folder("text", lambda w: (w / "notes.png").write_text("not an image"))
    files["empty_class"] = folder("empty_class")
    for image in (root / "empty_class" / "b").iterdir():
        image.unlink()
    (root / "x.npz").mkdir()
    files["dir_npz"] = str(root / "x.npz")
    np.savez(root / "t.npz", x=np.zeros((10, 8, 8)), y=np.arange(10) % 2)
    (root / "t.npz").write_bytes((root / "t.npz").read_bytes()[:200])
    files["truncated_npz"] = str(root / "t.npz")
    np.savez(root / "keys.npz", images=np.zeros((10, 8, 8)), labels=np.arange(10) % 2)
    files["wrong_keys_npz"] = str(root / "keys.npz")
    (root / "file").write_text("a file")
    files["file"] = str(root / "file")
    model = build_vit(image_size=8, patch_size=4, num_classes=2, hidden_dim=8, depth=1, num_heads=2, mlp_dim=16)
    model.save(root / "good.keras")
    files["good_keras"] = str(root / "good.keras")
    with zipfile.ZipFile(root / "good.keras") as source, zipfile.ZipFile(root / "bad.keras", "w") as target:
        for item in source.infolist():
            target.writestr(item, b"{not json" if item.filename == "config.json" else source.read(item))
    files["bad_keras"] = str(root / "bad.keras")
    (root / "cut.keras").write_bytes((root / "good.keras").read_bytes()[:300])
    files["cut_keras"] = str(root / "cut.keras")
    (root / "notes.tflite").write_text("not a flatbuffer")
    files["text_tflite"] = str(root / "notes.tflite")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype="uint8")).save(root / "image.png")
    files["image"] = str(root / "image.png")
    files["root"] = root
    return files


def api_cases(f):
    """(name, function, words the message must hold) for the Python API."""
    from keras_vit import build_vit
    from keras_vit.data import load_data
    from keras_vit.export import export_saved_model, export_tflite, load_predictor
    from keras_vit.training import train
    from keras_vit.tuning import tune
    from keras_vit.utils.io import load_keras_file

    tiny = dict(image_size=8, patch_size=4, num_classes=2, hidden_dim=8, depth=1, num_heads=2, mlp_dim=16)
    x = np.random.default_rng(0).uniform(0, 255, (24, 8, 8)).astype("float32")
    y = np.arange(24) % 2
    root = f["root"]

    def data():
        return load_data((x, y), 8, 8, validation_split=0.25, test_split=0)

    def model(**overrides):
        return lambda: build_vit(**{**tiny, "channels": 1, **overrides})

    def fit(**kwargs):
        run_dir = kwargs.pop("run_dir", None) or tempfile.mkdtemp(dir=root)
        return train(kwargs.pop("model", model()), kwargs.pop("data", None) or data(),
                     **{"epochs": 1, "verbose": 0, "jit_compile": False, **kwargs}, run_dir=run_dir)

    def wider_in_finished_run():
        run_dir = root / "finished"
        fit(run_dir=run_dir)
        fit(run_dir=run_dir, model=model(hidden_dim=16))

    cases = [(f"build_vit({k}={v!r})", (lambda k=k, v=v: build_vit(**{**tiny, k: v})), [k]) for k, v in [
        ("head_units", 8), ("classifier_activation", "bogus"), ("layer_scale", "big"), ("norm_epsilon", "x"),
        ("norm_epsilon", -1.0), ("num_registers", True), ("qk_norm", "false"), ("stride", 0),
        ("image_size", 0), ("patch_size", (4,)), ("hidden_dim", 2.5), ("num_heads", 0), ("dropout", 1.0),
        ("pooling", None), ("pos_embedding", 5), ("activation", "swish2"), ("include_rescaling", "yes"),
        ("fused_attention", "maybe"), ("representation_size", -1), ("patch_embedding", "pixels"),
        ("sincos_layout", "x"), ("channels", 0), ("mlp_dim", 0), ("depth", True), ("num_classes", 1.5),
        ("class_names", ["only-one"]), ("attention_dropout", "0.1"), ("drop_path_rate", -0.1),
        ("image_size", (8, 8, 3)), ("stride", 8), ("interpolation", "lanczos"), ("pixel_mean", "imagenet"),
    ]]
    cases += [
        ("load_data(TIFF bytes in a .png)", lambda: load_data(f["tiff_folder"], 8, 4, on_bad_files="error"),
         ["tiff.png"]),
        ("load_data(1-bit BMP)", lambda: load_data(f["bmp1_folder"], 8, 4, on_bad_files="error"), ["one.bmp"]),
        ("load_data(text in a .png)", lambda: load_data(f["text_folder"], 8, 4, on_bad_files="error"),
         ["notes.png"]),
        ("load_data(an empty class folder)", lambda: load_data(f["empty_class"], 8, 4), ["empty_class/b"]),
        ("load_data(a directory named x.npz)", lambda: load_data(f["dir_npz"], 8, 4), ["x.npz"]),
        ("load_data(a truncated .npz)", lambda: load_data(f["truncated_npz"], 8, 4), ["t.npz"]),
        ("load_data(.npz with other keys)", lambda: load_data(f["wrong_keys_npz"], 8, 4), ["keys.npz"]),
        ("load_data(one image per class)", lambda: load_data((x[:2], y[:2]), 8, 4), ["validation_split"]),
        ("load_data(empty arrays)", lambda: load_data((x[:0], y[:0]), 8, 4), ["empty"]),
        ("load_data(cache in a missing folder)", lambda: load_data((x, y), 8, 4, cache=str(root / "no" / "c")),
         ["cache"]),
        ("load_data(cache under a file)", lambda: load_data((x, y), 8, 4, cache=f["file"] + "/c"), ["cache"]),
        ("load_data(one class)", lambda: load_data((x, np.zeros(24, int)), 8, 4), ["2 classes"]),
        ("load_data(NaN pixels)", lambda: load_data((np.where(x > 250, np.nan, x), y), 8, 4), ["NaN"]),
        ("load_data(labels out of range)", lambda: load_data((x, y + 5), 8, 4, num_classes=2), ["Labels"]),
        ("load_data(float labels)", lambda: load_data((x, y + 0.5), 8, 4), ["labels"]),
        ("load_data(string pixels)", lambda: load_data((x.astype(str), y), 8, 4), ["images"]),
        ("load_data(5-D images)", lambda: load_data((x[:, None, None], y), 8, 4), ["shape"]),
        ("load_data(labels of another length)", lambda: load_data((x, y[:-1]), 8, 4), ["lengths"]),
        ("load_data(source=123)", lambda: load_data(123, 8, 4), ["source"]),
        ("load_data(missing folder)", lambda: load_data(str(root / "nowhere"), 8, 4), ["nowhere"]),
        ("load_data(unknown TFDS name)", lambda: load_data("tfds:no_such_dataset_xyz", 8, 4), ["no_such_dataset_xyz"]),
        ("load_data(2-D images)", lambda: load_data((x[:, 0], y), 8, 4), ["shape"]),
    ]
    cases += [(f"load_data({k}={v!r})", (lambda k=k, v=v: load_data((x, y), 8, 4, **{k: v})), [k]) for k, v in [
        ("validation_split", 1.0), ("test_split", -0.1), ("channels", 2), ("label_mode", "onehot"),
        ("resize", "crop"), ("interpolation", "lanczos9"), ("on_bad_files", "ignore"), ("augment", "stronger"),
        ("shuffle_buffer", 0), ("seed", "a"), ("num_classes", 1), ("antialias", "yes"),
    ]] + [("load_data(image_size=-1)", lambda: load_data((x, y), -1, 4), ["image_size"]),
          ("load_data(batch_size=0)", lambda: load_data((x, y), 8, 0), ["batch_size"])]
    cases += [
        ("train(monitor='val_f1')", lambda: fit(monitor="val_f1"), ["monitor"]),
        ("train(epochs=0)", lambda: fit(epochs=0), ["epochs"]),
        ("train(epochs=2.5)", lambda: fit(epochs=2.5), ["epochs"]),
        ("train(precision='fp8')", lambda: fit(precision="fp8"), ["precision"]),
        ("train(resume='yes')", lambda: fit(resume="yes"), ["resume"]),
        ("train(warmup_epochs=5, epochs=1)", lambda: fit(warmup_epochs=5), ["warmup_epochs"]),
        ("train(steps_per_epoch=0)", lambda: fit(steps_per_epoch=0), ["steps_per_epoch"]),
        ("train(run_dir=a file)", lambda: fit(run_dir=f["file"]), ["run_dir"]),
        ("train(learning_rate=-1)", lambda: fit(learning_rate=-1.0), ["learning_rate"]),
        ("train(label_smoothing=2)", lambda: fit(label_smoothing=2.0), ["label_smoothing"]),
        ("train(clipnorm=-1)", lambda: fit(clipnorm=-1.0), ["clipnorm"]),
        ("train(weight_decay=-1)", lambda: fit(weight_decay=-1.0), ["weight_decay"]),
        ("train(jit_compile='maybe')", lambda: fit(jit_compile="maybe"), ["jit_compile"]),
        ("train(time_budget='soon')", lambda: fit(time_budget="soon"), ["time_budget"]),
        ("train(model with 3 classes)", lambda: fit(model=model(num_classes=3)), ["classes"]),
        ("train(a wider model in a finished run dir)", wider_in_finished_run, ["hidden_dim"]),
        ("train(model=5)", lambda: fit(model=5), ["model"]),
        ("train(data=None)", lambda: train(model(), None, epochs=1, run_dir=tempfile.mkdtemp(dir=root)), ["data"]),
        ("train(gradient_accumulation_steps=0)", lambda: fit(gradient_accumulation_steps=0),
         ["gradient_accumulation_steps"]),
        ("train(ema_momentum=1.5)", lambda: fit(ema_momentum=1.5), ["ema_momentum"]),
        ("train(steps_per_execution=0)", lambda: fit(steps_per_execution=0), ["steps_per_execution"]),
        ("train(min_learning_rate > learning_rate)", lambda: fit(min_learning_rate=1.0, learning_rate=1e-3),
         ["min_learning_rate"]),
        ("train(strategy='tpu-please')", lambda: fit(strategy="tpu-please"), ["strategy"]),
        ("train(seed='a')", lambda: fit(seed="a"), ["seed"]),
        ("tune(tuner='grid')", lambda: tune((data()), tuner="grid", directory=root / "t1"), ["tuner"]),
        ("tune(max_trials=0)", lambda: tune(data(), max_trials=0, directory=root / "t2"), ["max_trials"]),
        ("tune(objective='val_f1')", lambda: tune(data(), objective="val_f1", directory=root / "t3"), ["objective"]),
        ("tune(space={'foo': [1]})", lambda: tune(data(), space={"foo": [1]}, directory=root / "t4"), ["foo"]),
        ("tune(fixed hidden_dim='abc')", lambda: tune(data(), fixed={"hidden_dim": "abc"}, directory=root / "t5"),
         ["hidden_dim"]),
        ("export_tflite(quantization='int4')", lambda: export_tflite(build_vit(**tiny), root / "m.tflite", "int4"),
         ["quantization"]),
        ("export_tflite(int8, no data)", lambda: export_tflite(build_vit(**tiny), root / "m8.tflite", "int8"),
         ["representative_data"]),
        ("export_saved_model(top_k=0)", lambda: export_saved_model(build_vit(**tiny), root / "sm", top_k=0),
         ["top_k"]),
        ("export_saved_model(3 names, 2 classes)", lambda: export_saved_model(
            build_vit(**tiny), root / "sm", class_names=["a", "b", "c"]), ["class_names"]),
        ("export_saved_model(into a missing folder)", lambda: export_saved_model(
            build_vit(**tiny), root / "no" / "sm"), ["path"]),
        ("export_saved_model(onto a file)", lambda: export_saved_model(build_vit(**tiny), f["file"]), ["path"]),
        ("export_tflite(onto a folder)", lambda: export_tflite(build_vit(**tiny), root), ["path"]),
        ("load_keras_file(malformed config.json)", lambda: load_keras_file(f["bad_keras"]), ["bad.keras"]),
        ("load_keras_file(truncated)", lambda: load_keras_file(f["cut_keras"]), ["cut.keras"]),
        ("load_predictor(text .tflite)", lambda: load_predictor(f["text_tflite"]), ["notes.tflite"]),
        ("load_predictor(malformed .keras)", lambda: load_predictor(f["bad_keras"]), ["bad.keras"]),
        ("load_predictor(a folder)", lambda: load_predictor(root), [str(root)]),
        ("load_predictor(missing file)", lambda: load_predictor(root / "none.keras"), ["none.keras"]),
        ("export_tflite(image_size=0)", lambda: export_tflite(build_vit(**{**tiny, "image_size": None}),
                                                              root / "d.tflite", image_size=0), ["image_size"]),
    ]
    return cases


def cli_cases(f):
    """(name, argv, words stderr must hold) for the `keras-vit` command."""
    root = f["root"]
    train = ["train", "--run-dir", str(root / "cli_run"), "--image-size", "8", "--patch-size", "4", "--epochs", "1"]
    return [
        ("train --epochs 0", train + ["--epochs", "0"], ["epochs"]),
        ("train --epochs many", train + ["--epochs", "many"], ["--epochs"]),
        ("train --precision fp8", train + ["--precision", "fp8"], ["--precision"]),
        ("train --run-dir FILE", ["train", "--run-dir", f["file"], "--epochs", "1"], ["run_dir"]),
        ("train --dataset missing folder", train + ["--dataset", str(root / "nowhere")], ["nowhere"]),
        ("train --dataset x.npz (a dir)", train + ["--dataset", f["dir_npz"]], ["x.npz"]),
        ("train --dataset truncated .npz", train + ["--dataset", f["truncated_npz"]], ["t.npz"]),
        ("train --image-size 0", train + ["--image-size", "0"], ["image"]),
        ("train --learning-rate -1", train + ["--learning-rate", "-1"], ["learning_rate"]),
        ("train --validation-split 1.5", train + ["--validation-split", "1.5"], ["validation_split"]),
        ("train --hidden-dim 10 --num-heads 3", train + ["--hidden-dim", "10", "--num-heads", "3"], ["num_heads"]),
        ("train --config missing.yaml", train + ["--config", str(root / "missing.yaml")], ["config"]),
        ("train --time-budget soon", train + ["--time-budget", "soon"], ["time_budget"]),
        ("train --batch-size 0", train + ["--batch-size", "0"], ["batch"]),
        ("predict --top-k 0", ["predict", f["good_keras"], f["image"], "--top-k", "0"], ["--top-k"]),
        ("predict missing model", ["predict", str(root / "none.keras"), f["image"]], ["none.keras"]),
        ("predict malformed .keras", ["predict", f["bad_keras"], f["image"]], ["bad.keras"]),
        ("predict text as image", ["predict", f["good_keras"], f["text_tflite"]], ["notes.tflite"]),
        ("export --quantization int4", ["export", f["good_keras"], "--quantization", "int4"], ["--quantization"]),
        ("export savedmodel --quantization int8", ["export", f["good_keras"], "--quantization", "int8",
                                                   "-o", str(root / "x_sm")], ["quantization"]),
        ("export missing model", ["export", str(root / "none.keras")], ["none.keras"]),
        ("export malformed .keras", ["export", f["bad_keras"], "-o", str(root / "y_sm")], ["bad.keras"]),
        ("export --image-size 1 2 3", ["export", f["good_keras"], "--image-size", "1", "2", "3"], ["--image-size"]),
        ("tune --epochs 0", ["tune", "--epochs", "0", "--directory", str(root / "ct")], ["--epochs"]),
        ("tune --fix hidden_dim=abc", ["tune", "--fix", "hidden_dim=abc", "--directory", str(root / "ct")],
         ["hidden_dim"]),
        ("tune --space foo=1,2", ["tune", "--space", "foo=1,2", "--directory", str(root / "ct")], ["foo"]),
        ("tune --tuner grid", ["tune", "--tuner", "grid", "--directory", str(root / "ct")], ["--tuner"]),
        ("tune --fix novalue", ["tune", "--fix", "depth", "--directory", str(root / "ct")], ["--fix"]),
        ("benchmark missing file", ["benchmark", str(root / "none.tflite")], ["none.tflite"]),
        ("benchmark --batch-size 0", ["benchmark", f["good_keras"], "--batch-size", "0"], ["--batch-size"]),
        ("predict missing image", ["predict", f["good_keras"], str(root / "none.png")], ["none.png"]),
        ("train --dataset tfds:unknown", train + ["--dataset", "tfds:no_such_dataset_xyz"], ["no_such_dataset_xyz"]),
        ("train --steps-per-execution 0", train + ["--steps-per-execution", "0"], ["steps_per_execution"]),
        ("train --augment 2.0", train + ["--augment", "2.0"], ["augment"]),
        ("train --channels 2", train + ["--channels", "2"], ["channels"]),
        ("train --time-budget -5", train + ["--time-budget", "-5"], ["time_budget"]),
        ("train --warmup-epochs -1", train + ["--warmup-epochs", "-1"], ["warmup_epochs"]),
        ("export --image-size 0", ["export", f["good_keras"], "--image-size", "0"], ["--image-size"]),
        ("tune --space learning_rate=0.1:abc", ["tune", "--space", "learning_rate=0.1:abc", "--directory",
                                                str(root / "ct")], ["learning_rate"]),
        ("explain missing image", ["explain", str(root / "none.png"), "--model", f["good_keras"]], ["none.png"]),
        ("explain --alpha 5", ["explain", f["image"], "--model", f["good_keras"], "--alpha", "5"], ["alpha"]),
    ]


def classify_api(function, words):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function()
    except ValueError as err:
        message = str(err)
        return ("clear" if all(w.lower() in message.lower() for w in words) else "unclear"), message
    except Exception as err:  # noqa: BLE001 - any other type is what we count
        return "unclear", f"{type(err).__name__}: {err}"
    return "silent", "accepted"


def classify_cli(argv, words, subprocess_mode, expected_code=2, environment=None):
    """`expected_code`: 2 for an input error, 1 for a full disk; a case with
    an `environment` always runs in a fresh process."""
    if subprocess_mode or environment:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(environment or {}))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        proc = subprocess.run([sys.executable, "-m", "keras_vit.cli", *argv], env=env, capture_output=True,
                              text=True, timeout=600)
        code, err = proc.returncode, proc.stderr
    else:
        from keras_vit.cli.main import main

        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code
            except Exception:  # noqa: BLE001
                traceback.print_exc()
                code = 1
        err = stderr.getvalue()
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    message = lines[-1] if lines else err.strip()[-300:]
    if code == 0:
        return "silent", "exit 0"
    if code == expected_code and "Traceback" not in err and all(w.lower() in err.lower() for w in words):
        return "clear", message
    return "unclear", f"exit {code}: {message}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli-subprocess", action="store_true", help="run each CLI case as a new process")
    parser.add_argument("--only", choices=("api", "cli", "edges"), help="run one half, or only issue 26's cases")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    counts = {"tried": 0, "clear": 0, "unclear": 0, "silent": 0}
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(Path(tmp))
        files.update(edge_files(files))
        rows = []
        if args.only in (None, "api"):
            rows += [("api", name, *classify_api(fn, words)) for name, fn, words in api_cases(files)]
        if args.only in (None, "api", "edges"):
            rows += [("api", name, *classify_api(fn, words)) for name, fn, words in edge_api_cases(files)]
        if args.only in (None, "cli"):
            rows += [("cli", name, *classify_cli(argv_, words, args.cli_subprocess))
                     for name, argv_, words in cli_cases(files)]
        if args.only in (None, "cli", "edges"):
            rows += [("cli", name, *classify_cli(argv_, words, args.cli_subprocess, code, env))
                     for name, argv_, words, code, env in edge_cli_cases(files)]
    for kind, name, verdict, message in rows:
        counts["tried"] += 1
        counts[verdict] += 1
        print(f"{verdict:8s} {kind}  {name:45s} {message.splitlines()[0][:150] if message else ''}")
    print("\n" + "  ".join(f"{k}: {v}" for k, v in counts.items()))
    return counts


if __name__ == "__main__":
    main()
