"""Issue 26, item 2: no input file crashes the interpreter
(`keras_vit.preprocessing`, the one image reader).

Each image format is decoded in its own forked child of one Python process
(importing TensorFlow once): a crash fails that format's test, not pytest."""

import io
import json
import os
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_python


def frames(n=3, size=8):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype="uint8")) for _ in range(n)]


def save_animation(path, kind, **kwargs):
    first, *rest = frames()
    first.save(path, kind, save_all=True, append_images=rest, duration=100, loop=0, **kwargs)


def cmyk_jpeg(path):
    frames(1)[0].convert("CMYK").save(path, "JPEG")


def png16(path):
    Image.fromarray(np.random.default_rng(2).integers(0, 65535, (8, 8)).astype("uint16")).save(path, "PNG")


def truncated(path):
    buffer = io.BytesIO()
    frames(1)[0].save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:30])


# name -> (writer, what happens: "ok" = decoded everywhere; else the reason the file is skipped in training)
FORMATS = {
    "animated.webp": (lambda p: save_animation(p, "WEBP", lossless=True), "ok"),
    "animated_webp_named.png": (lambda p: save_animation(p, "WEBP"), "ok"),  # the bytes decide, not the name
    "animated.gif": (lambda p: save_animation(p, "GIF"), "ok"),
    "apng.png": (lambda p: save_animation(p, "PNG"), "ok"),
    "sixteen_bit.png": (png16, "ok"),
    "cmyk.jpg": (cmyk_jpeg, "ok"),
    "multi_frame_tiff.png": (lambda p: save_animation(p, "TIFF"), "TIFF data that TensorFlow's image decoder"),
    "truncated.png": (truncated, "cannot be decoded"),
    "zero_bytes.png": (lambda p: p.write_bytes(b""), "zero bytes"),
    "text.png": (lambda p: p.write_text("not an image"), "cannot be decoded"),
}

CHILD = textwrap.dedent("""
    import json, os, sys, warnings
    import numpy as np
    import tensorflow as tf  # imported once (no op run yet); each file is decoded in a forked child
    from keras_vit import preprocessing
    from keras_vit.data import load_data

    root, out = sys.argv[1], sys.argv[2]
    results = {}
    for name in sorted(os.listdir(os.path.join(root, "files"))):
        path = os.path.join(root, "files", name)
        pid = os.fork()
        if pid == 0:
            report = {"check": preprocessing.check_image_file(path)}
            folder = os.path.join(root, "folders", name)  # two classes of 3 PNGs, and this file in class a
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                train = load_data(folder, 16, 4, validation_split=0, test_split=0, seed=0)[0]
                report["trained_on"] = int(sum(len(y) for _, y in train))  # the training (tf.data) path
            try:  # predict and explain read with load_image
                report["load"] = list(preprocessing.load_image(path, preprocessing.ImageSettings((16, 16), 3)).shape)
            except ValueError as err:
                report["load"] = str(err)
            try:  # the SavedModel serving path: no Python there, so a clean refusal at worst
                settings = preprocessing.ImageSettings((16, 16), 3)
                report["serving"] = list(preprocessing.prepare_bytes(tf.constant(open(path, "rb").read()),
                                                                     settings).shape)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as err:
                report["serving"] = "refused: " + err.message[-200:]
            with open(os.path.join(out, name + ".json"), "w") as f:
                json.dump(report, f)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        results[name] = status
    with open(os.path.join(out, "status.json"), "w") as f:
        json.dump(results, f)
""")


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    (root / "files").mkdir()
    rng = np.random.default_rng(0)
    for name, (write, _) in FORMATS.items():
        write(root / "files" / name)
        folder = root / "folders" / name
        for label in ("a", "b"):
            (folder / label).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype="uint8")).save(folder / label / f"{i}.png")
        (folder / "a" / name).write_bytes((root / "files" / name).read_bytes())
    out = root / "out"
    out.mkdir()
    proc = run_python(["-c", CHILD, str(root), str(out)], check=False, timeout=300, lean=True)
    status = json.loads((out / "status.json").read_text()) if (out / "status.json").exists() else {}
    return root, out, status, proc


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_no_image_file_crashes_the_process(decoded, name):
    root, out, status, proc = decoded
    assert name in status, f"the decoding process died: rc={proc.returncode}\n{proc.stderr[-3000:]}"
    assert os.WIFEXITED(status[name]) and os.WEXITSTATUS(status[name]) == 0, (
        f"{name}: the decoding child ended with status {status[name]} (a signal: a crash)")
    report = json.loads((out / f"{name}.json").read_text())
    expected = FORMATS[name][1]
    if expected == "ok":
        assert report["check"] is None and report["trained_on"] == 7 and report["load"] == [16, 16, 3]
        assert report["serving"] == [16, 16, 3] or "animated WebP" in report["serving"]
    else:
        assert expected in report["check"] and report["trained_on"] == 6  # skipped with a warning
        assert report["load"].startswith(f"Cannot decode {str(root / 'files' / name)!r} as an image")


def test_animated_webp_gives_its_first_frame():
    from keras_vit.preprocessing import ImageSettings, is_animated_webp, load_image

    buffer = io.BytesIO()
    first, *rest = frames()
    first.save(buffer, "WEBP", save_all=True, append_images=rest, duration=100, loop=0, lossless=True)
    assert is_animated_webp(buffer.getvalue())
    np.testing.assert_array_equal(load_image(buffer.getvalue(), ImageSettings(None, 3)), np.asarray(first))


def test_train_predict_and_explain_commands_on_animated_images(tmp_path):
    """The crashes seen on main, end to end: train on a folder mixing
    animated GIF and WebP, then predict and explain one WebP."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype="uint8")).save(tmp_path / "data" / label / f"{i}.png")
        save_animation(tmp_path / "data" / label / "anim.webp", "WEBP")
        save_animation(tmp_path / "data" / label / "anim.gif", "GIF")
    code = textwrap.dedent(f"""
        import sys
        from keras_vit.cli.main import main
        data, run = {str(tmp_path / 'data')!r}, {str(tmp_path / 'run')!r}
        webp = data + "/a/anim.webp"
        assert main(["train", "--dataset", data, "--recipe", "digits", "--warmup-epochs", "0", "--augment", "0", "--image-size", "16", "--epochs", "1",
                     "--batch-size", "4", "--patch-size", "8", "--conv-stem", "none", "--hidden-dim", "16", "--depth", "1",
                     "--num-heads", "2", "--mlp-dim", "16", "--validation-split", "0", "--test-split", "0",
                     "--verbose", "0", "--run-dir", run]) == 0
        assert main(["predict", run + "/model.keras", webp, "--resize"]) == 0
        assert main(["explain", webp, "--model", run + "/model.keras", "-o", run + "/attention.png"]) == 0
    """)
    proc = run_python(code, cwd=tmp_path, check=False, timeout=300, lean=True)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "anim.webp" in proc.stdout and (tmp_path / "run" / "attention.png").is_file()
