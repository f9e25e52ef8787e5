"""The edge cases of issue 26 ("Hardening II") for `benchmarks.adversarial`:
unknown keyword arguments, silently wrong data, archives and run
directories that are odd, corrupt resume state, config files, `tune`'s
search-space flags, a full disk and the Keras backend. Each is a case of
the same three verdicts (clear, unclear, silent)."""

import json
import os
import zipfile
from pathlib import Path

import numpy as np

TINY = ["--image-size", "8", "--patch-size", "4", "--hidden-dim", "8", "--depth", "1", "--num-heads", "2",
        "--mlp-dim", "8", "--epochs", "1", "--verbose", "0", "--warmup-epochs", "0"]


def edge_files(f):
    """More bad files beside those of `adversarial._files` (`f`)."""
    import keras
    from PIL import Image

    root = Path(f["root"]) / "edges"
    root.mkdir()
    out = {}
    with zipfile.ZipFile(f["good_keras"]) as source, zipfile.ZipFile(root / "bomb.keras", "w",
                                                                     zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if item.filename != "config.json":
                target.writestr(item, source.read(item))
        with target.open("config.json", "w") as config:  # 1 GiB once inflated, 1 MB on disk
            for _ in range(1024):
                config.write(b" " * 2**20)
    out["bomb_keras"] = str(root / "bomb.keras")
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs)).save(root / "lambda.keras")
    out["lambda_keras"] = str(root / "lambda.keras")
    with zipfile.ZipFile(f["good_keras"]) as source, zipfile.ZipFile(root / "os.keras", "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                data = json.dumps({"module": "os", "class_name": "system", "config": {"command": "true"},
                                   "registered_name": "system"}).encode()
            target.writestr(item, data)
    out["os_keras"] = str(root / "os.keras")
    rng = np.random.default_rng(0)
    for split, labels in (("train", "ab"), ("val", "ac")):
        for label in labels:
            (root / "mismatch" / split / label).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype="uint8")).save(
                    root / "mismatch" / split / label / f"{i}.png")
    out["mismatch"] = str(root / "mismatch")
    np.savez(root / "empty.npz", x=np.zeros((0, 8, 8), "uint8"), y=np.zeros((0,), "int64"))
    np.savez(root / "strings.npz", x=np.zeros((12, 8, 8), "uint8"), y=np.array(["cat", "dog"] * 6))
    np.savez(root / "x1000.npz", x=np.zeros((12, 8, 8), "uint8"), y=(np.arange(12) % 4) * 1000)
    out.update(empty_npz=str(root / "empty.npz"), strings_npz=str(root / "strings.npz"),
               x1000_npz=str(root / "x1000.npz"))
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "nested.yaml").write_text("a: " + "[" * 100000 + "]" * 100000 + "\n")
    out.update(binary_yaml=str(root / "binary.yaml"), nested_yaml=str(root / "nested.yaml"))
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(Path(f["root"]) / "users.png")
    os.symlink(root / "nowhere", root / "dangling")
    out["dangling"] = str(root / "dangling")
    return out


def edge_api_cases(f):
    """(name, function, words) for the Python API."""
    from keras_vit import build_vit
    from keras_vit.data import load_data
    from keras_vit.models import ViTClassifier
    from keras_vit.training import train
    from keras_vit.utils.io import load_keras_file

    tiny = dict(image_size=8, patch_size=4, num_classes=4, hidden_dim=8, depth=1, num_heads=2, mlp_dim=16, channels=1)
    x = np.random.default_rng(0).integers(0, 256, (24, 8, 8)).astype("uint8")
    y = np.arange(24) % 4
    root = Path(f["root"])
    return [
        ('build_vit("Mu/4", num_clases=5)', lambda: build_vit("Mu/4", num_clases=5), ["num_clases", "num_classes"]),
        ('ViTClassifier.from_preset("Mu/4", bogus=1)', lambda: ViTClassifier.from_preset("Mu/4", bogus=1),
         ["bogus"]),
        ("train(epoch=1)", lambda: train(build_vit(**tiny), (x, y), epoch=1, run_dir=root / "e1"), ["epochs"]),
        ("load_data(labels x1000)", lambda: load_data((x, y * 1000), 8, 4), ["remap_labels"]),
        ("load_data(string labels)", lambda: load_data((x, np.array(list("abcd"))[y]), 8, 4), ["remap_labels"]),
        ("load_data(one image per class, no validation)", lambda: load_data((x[:4], y[:4]), 8, 4,
                                                                            validation_split=0), ["training split"]),
        ("train(gradient_accumulation_steps=1e9)", lambda: train(
            build_vit(**tiny), load_data((x, y), 8, 4, validation_split=0, test_split=0), epochs=1,
            run_dir=root / "e2", gradient_accumulation_steps=10**9), ["gradient_accumulation_steps=6"]),
        ("build_vit(blank class name)", lambda: build_vit(**tiny, class_names=["a", "", "c", "d"]), ["blank"]),
        ("build_vit(duplicate class names)", lambda: build_vit(**tiny, class_names=["a", "b", "a", "d"]),
         ["twice"]),
        ("load_keras_file(config.json of 1 GiB)", lambda: load_keras_file(f["bomb_keras"]),
         ["bomb.keras", "too large"]),
        ("load_keras_file(a Lambda, safe mode)", lambda: load_keras_file(f["lambda_keras"], safe_mode=True),
         ["lambda.keras", "safe mode"]),
        ("load_keras_file(module 'os')", lambda: load_keras_file(f["os_keras"], safe_mode=True), ["os.keras"]),
    ]


def edge_cli_cases(f):
    """(name, argv, words, exit code, environment) for the `keras-vit` command."""
    root = Path(f["root"])
    train = ["train", *TINY]

    def run_dir(name):
        return ["--run-dir", str(root / "edge_runs" / name)]

    tune = ["tune", "--max-trials", "1", "--epochs", "1", "--image-size", "8"]
    long_name = str(root / ("x" * 300))
    cases = [
        ("predict a .keras of 1 GiB config", ["predict", f["bomb_keras"], f["image"]], ["bomb.keras", "too large"]),
        ("predict a Lambda .keras", ["predict", f["lambda_keras"], f["image"]], ["lambda.keras", "safe mode"]),
        ("export a module-'os' .keras", ["export", f["os_keras"], "-o", str(root / "os_sm")], ["os.keras"]),
        ("train --run-dir under a file", train + ["--run-dir", f["file"] + "/run"], ["run_dir"]),
        ("train --run-dir of 300 characters", train + ["--run-dir", long_name], ["run_dir"]),
        ("train --run-dir a dangling symlink", train + ["--run-dir", f["dangling"]], ["run_dir"]),
        ("train --run-dir /proc/self/x", train + ["--run-dir", "/proc/self/x"], ["/proc/self/x"]),
        ("train --dataset val/ class not in train/", train + ["--dataset", f["mismatch"], "--recipe", "auto"]
         + run_dir("mm"), ["val"]),
        ("train --dataset empty.npz", train + ["--dataset", f["empty_npz"], "--recipe", "auto"] + run_dir("en"),
         ["empty"]),
        ("train --dataset strings.npz", train + ["--dataset", f["strings_npz"]] + run_dir("sn"), ["--remap-labels"]),
        ("train --dataset x1000.npz", train + ["--dataset", f["x1000_npz"]] + run_dir("xn"), ["--remap-labels"]),
        ("train --dataset mnist --data-dir /missing", train + ["--dataset", "mnist", "--data-dir",
                                                               str(root / "missing")] + run_dir("mn"), ["mnist"]),
        ("train --gradient-accumulation-steps 1e9", train + ["--gradient-accumulation-steps", "1000000000"]
         + run_dir("ga"), ["gradient_accumulation_steps"]),
        ("train --config binary.yaml", train + ["--config", f["binary_yaml"]] + run_dir("by"), ["binary.yaml"]),
        ("train --config nested.yaml", train + ["--config", f["nested_yaml"]] + run_dir("ny"), ["nested.yaml"]),
        ("train --seed 2**70", train + ["--seed", str(2**70)] + run_dir("sd"), ["seed"]),
        ("train with a malformed TF_CONFIG", train + run_dir("tc"), ["TF_CONFIG"], 2, {"TF_CONFIG": "{not json"}),
        ("tune --space hidden_dim=", tune + ["--space", "hidden_dim=", "--directory", str(root / "t1")],
         ["hidden_dim"]),
        ("tune --space depth=3:1", tune + ["--space", "depth=3:1", "--directory", str(root / "t2")], ["depth"]),
        ("tune --fix pooling=bogus", tune + ["--fix", "pooling=bogus", "--directory", str(root / "t3")],
         ["pooling"]),
        ("tune --space learning_rate=-1:1", tune + ["--space", "learning_rate=-1:1", "--directory",
                                                    str(root / "t4")], ["learning_rate"]),
        ("tune --space batch_size=0,1", tune + ["--space", "batch_size=0,1", "--directory", str(root / "t5")],
         ["batch_size"]),
        ("tune --directory FILE", tune + ["--directory", f["file"]], ["directory", f["file"]]),
        ("export -o onto a file of the user's", ["export", f["good_keras"], "--format", "tflite", "-o",
                                                 f["text_tflite"]], ["notes.tflite", "refusing"]),
        ("explain -o onto a PNG of the user's", ["explain", f["image"], "--model", f["good_keras"], "-o",
                                                 str(Path(f["root"]) / "users.png")], ["users.png", "refusing"]),
        ("train with KERAS_BACKEND=bogus", train + run_dir("kb"), ["KERAS_BACKEND"], 2, {"KERAS_BACKEND": "bogus"}),
    ]
    return [case if len(case) == 5 else (*case, 2, None) for case in cases]
