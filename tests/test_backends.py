"""Three backends, one model: TensorFlow, JAX and PyTorch.

Two kinds of tests:

* The matrix (`backend_independent`: it starts its own processes on every
  backend, whatever backend pytest runs on, so CI runs it once). Three
  processes at once, one per backend: each builds two tiny models, fits one
  for an epoch on numpy data (with `jit_compile=True` on TensorFlow and
  JAX; eagerly on PyTorch, see `JIT`), saves both as `.keras` and writes
  their predictions as `.npy`; then, once all three have written, it loads
  all six files and predicts (PyTorch without `torch.compile`: see
  `MATRIX`). A file read on its own backend must match to 1e-6, on another
  backend to 1e-5. (A fresh process reloading a file of its own backend is
  `tests/test_model.py`'s, on every backend.)
* The rest run on the backend pytest runs on (`KERAS_BACKEND=jax python -m
  pytest tests/test_backends.py`): `train` with tf.data augmentation and
  EMA, `keras-vit train` under mixed precision, both on numpy data in full
  batches (each short last batch costs JAX one more compilation), and the
  clear errors of what is TensorFlow-only.
"""

import concurrent.futures
import json
import os

import keras
import numpy as np
import pytest

from tests.conftest import BACKEND, run_python, tiny_vit_kwargs

BACKENDS = ("tensorflow", "jax", "torch")
# `jit_compile=True` per backend in the matrix's fit. PyTorch's is
# `torch.compile`: it works on CPU here, but a 1-depth 16-px ViT's fit and
# predict took over 300 s to compile against 15 s eagerly (2 shared cores,
# torch 2.13), so the matrix fits eagerly there.
JIT = {"tensorflow": True, "jax": True, "torch": False}
MODELS = {
    "fitted": tiny_vit_kwargs(drop_path_rate=0.1, dropout=0.1),
    "variants": tiny_vit_kwargs(pooling="map", num_registers=2, layer_scale=1e-2, qk_norm=True,
                                pos_embedding="sincos", num_classes=3),
}

MATRIX = """
import json, os, sys, time
import keras, numpy as np
import keras_vit  # registers the classes
from keras_vit import build_vit
from keras_vit.training import compile_model
out, models, jit, backends = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
backend = keras.backend.backend()
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (3, 16, 16, 3)).astype("float32")  # every backend draws the same input
try:
    for name, kwargs in models.items():
        keras.utils.set_random_seed(0)
        model = build_vit(**kwargs)
        if name == "fitted":
            compile_model(model, jit_compile=jit, label_smoothing=0.0, ema_momentum=None)
            train_x = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
            train_y = np.eye(kwargs["num_classes"], dtype="float32")[rng.integers(0, kwargs["num_classes"], 32)]
            history = model.fit(train_x, train_y, batch_size=8, epochs=1, verbose=0)
            assert np.isfinite(history.history["loss"][0])
        model.save(f"{out}/{name}-{backend}.keras")
        np.save(f"{out}/{name}-{backend}.npy", keras.ops.convert_to_numpy(model.predict_on_batch(x)))
except BaseException:
    open(f"{out}/{backend}.failed", "w").close()  # the other two stop waiting
    raise
open(f"{out}/{backend}.written", "w").close()
deadline = time.time() + 600
while not all(os.path.exists(f"{out}/{b}.written") for b in backends):
    failed = [b for b in backends if os.path.exists(f"{out}/{b}.failed")]
    if failed or time.time() > deadline:
        sys.exit(f"no files to read: {failed or 'timed out'}")
    time.sleep(0.2)
# PyTorch reads uncompiled: the files fitted with jit_compile=True would
# torch.compile there (33 s on CPU); test_fit_with_torch_compile is that path
compile = backend != "torch"
errors = {}
for name in models:
    for writer in backends:
        model = keras.saving.load_model(f"{out}/{name}-{writer}.keras", compile=compile)
        got = keras.ops.convert_to_numpy(model.predict_on_batch(x))
        errors[f"{name}/{writer}"] = float(np.max(np.abs(got - np.load(f"{out}/{name}-{writer}.npy"))))
print("ERRORS " + json.dumps(errors))
"""


def _in_parallel(calls):
    """Runs `run_python` calls at once (each its own process); returns their
    results in order."""
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(run_python, *args, **kwargs) for args, kwargs in calls]
        return [f.result() for f in futures]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """{reader backend: {"<model>/<writer backend>": max abs difference}}."""
    out = str(tmp_path_factory.mktemp("backends"))
    env = lambda b: {"KERAS_BACKEND": b, "TF_CPP_MIN_LOG_LEVEL": "3"}  # noqa: E731
    procs = _in_parallel([((["-c", MATRIX, out, json.dumps(MODELS), json.dumps(JIT[b]), json.dumps(BACKENDS)],),
                           dict(env=env(b), lean=True)) for b in BACKENDS])
    result = {}
    for reader, proc in zip(BACKENDS, procs):
        line = [line for line in proc.stdout.splitlines() if line.startswith("ERRORS ")][-1]
        result[reader] = json.loads(line[len("ERRORS "):])
    return result


@pytest.mark.backend_independent
@pytest.mark.parametrize("reader", BACKENDS)
@pytest.mark.parametrize("writer", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_a_keras_file_loads_on_every_backend_with_the_same_outputs(matrix, name, writer, reader):
    # `fitted` was fitted on `writer` (jit_compile where it compiles), so a
    # same-backend row is "fit, save, reload, predict"
    tolerance = 1e-6 if writer == reader else 1e-5
    assert matrix[reader][f"{name}/{writer}"] <= tolerance, matrix[reader]


# --------------------------------------------------------------------------
# On the backend pytest runs on
# --------------------------------------------------------------------------


def _tiny_model():
    from keras_vit import build_vit

    return build_vit(**tiny_vit_kwargs(image_size=8, num_classes=10, channels=1, depth=1,
                                       drop_path_rate=0.1))


def test_train_with_augmentation_and_ema(tmp_path):
    from keras_vit.training import train

    # "strong": flips, pad-and-crop, RandAugment, MixUp and CutMix in tf.data;
    # every batch full, so JAX compiles each step once
    data = _arrays(augment="strong")
    result = train(_tiny_model, data, epochs=1, run_dir=tmp_path / "run", ema_momentum=0.9, verbose=0, seed=0)
    assert np.isfinite(result.test_metrics["loss"])
    reloaded = keras.saving.load_model(tmp_path / "run" / "model.keras")
    x = next(iter(data[2]))[0].numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded.predict_on_batch(x)),
                               keras.ops.convert_to_numpy(result.model.predict_on_batch(x)), atol=1e-6)


def test_the_train_command_with_mixed_precision(tmp_path, capsys):
    from keras_vit.cli.main import main

    # an .npz of full batches (digits' short last batches cost JAX a compile each)
    np.savez(tmp_path / "data.npz", **dict(zip(("x", "y"), _images())))
    run_dir = tmp_path / "run"
    code = main(["train", "--dataset", str(tmp_path / "data.npz"), "--epochs", "1", "--image-size", "8",
                 "--patch-size", "4", "--hidden-dim", "16", "--depth", "1", "--num-heads", "2", "--mlp-dim", "32",
                 "--batch-size", "8", *SPLITS_FLAGS, "--warmup-epochs", "0", "--precision", "mixed_bfloat16",
                 "--run-dir", str(run_dir), "--verbose", "0"])
    assert code == 0, capsys.readouterr()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1
    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.dtype_policy.name == "mixed_bfloat16"


@pytest.mark.skipif(BACKEND == "tensorflow", reason="tf.distribute works on TensorFlow")
@pytest.mark.parametrize("strategy", ["mirrored", "multi_worker", "tpu"])
def test_tf_distribute_strategies_are_named_tensorflow_only(tmp_path, strategy):
    from keras_vit.training import train

    with pytest.raises(ValueError, match=f"strategy='{strategy}'.*TensorFlow-only.*KERAS_BACKEND=tensorflow"):
        train(_tiny_model, _arrays(), epochs=1, run_dir=tmp_path / "run", strategy=strategy)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF_CONFIG workers run on TensorFlow")
def test_tf_config_workers_are_named_tensorflow_only(monkeypatch):
    from keras_vit.training import get_strategy

    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match="TF_CONFIG.*TensorFlow-only"):
        get_strategy("auto")


@pytest.mark.skipif(BACKEND != "torch", reason="steps_per_execution works on TensorFlow and JAX")
def test_steps_per_execution_on_torch_is_a_clear_error():
    from keras_vit.training import compile_model

    with pytest.raises(ValueError, match="steps_per_execution=2.*TensorFlow and JAX"):
        compile_model(_tiny_model(), steps_per_execution=2)


SPLITS = dict(test_split=0.2, validation_split=0.125)
SPLITS_FLAGS = ["--test-split", "0.2", "--validation-split", "0.125"]


def _images():
    """80 random 8x8 grey images of 10 classes: in batches of 8 with
    `SPLITS`, 56 train, 8 validation and 16 test images, all full batches."""
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (80, 8, 8, 1)).astype("float32"), np.arange(80) % 10


def _arrays(**kwargs):
    from keras_vit.data import load_data

    return load_data(_images(), 8, 8, **SPLITS, **kwargs)


if os.environ.get("KERAS_VIT_TEST_TORCH_COMPILE"):  # minutes on CPU: opt in

    @pytest.mark.skipif(BACKEND != "torch", reason="torch.compile is the PyTorch backend's jit_compile")
    def test_fit_with_torch_compile(tiny_vit, images):
        model = tiny_vit()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
        model.fit(images, np.array([0, 1, 2]), epochs=1, verbose=0)
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(model.predict_on_batch(images))))
