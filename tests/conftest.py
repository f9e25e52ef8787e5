"""Shared fixtures. Tests run on the backend named by KERAS_BACKEND
(TensorFlow by default); models and images are tiny so the suite stays fast."""

import contextlib
import fcntl
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path


def _share_jax_compilations():
    """One persistent JAX compilation cache for this test run: the process
    that starts pytest makes it; the xdist workers and every process a test
    starts inherit it, so a fresh process reloading a model does not compile
    again what the test compiled (test_model's fresh-process reload on JAX:
    31 s with it, 75 s without). Tiny models compile in milliseconds, hence
    no minimum compile time. A cache the user set is left alone. Returns
    the directory this process made (None: inherited or the user's)."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return None
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="keras_vit-tests-jax-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


_JAX_CACHE_MADE = _share_jax_compilations()  # before Keras imports JAX


def _cheap_xla_compiles():
    """XLA compiles the tests' tiny models without LLVM's costly
    optimisation passes, in pytest's processes and every process a test
    starts: the numbers are the same to the tests' tolerances, the compiles
    take less time. XLA_FLAGS the user set are left alone."""
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")


_cheap_xla_compiles()  # before TensorFlow or JAX loads XLA

from keras_vit.cli.startup import without_optional_imports  # noqa: E402 - imports neither Keras nor TensorFlow

with without_optional_imports():  # 3 s less per process (see `run_python`'s `lean`)
    import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()


def _cpu_lock(name):
    """A lock file shared by the pytest-xdist workers of this run (one per
    run: the workers share PYTEST_XDIST_TESTRUNUID; without xdist, one per
    process and never contended)."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"pid{os.getpid()}")
    return os.open(os.path.join(tempfile.gettempdir(), f"keras_vit-tests-{run_id}.{name}"),
                   os.O_RDWR | os.O_CREAT, 0o600)


def pytest_unconfigure(config):
    if _JAX_CACHE_MADE:
        import shutil

        shutil.rmtree(_JAX_CACHE_MADE, ignore_errors=True)


# Seconds each test file took in one `python -m pytest -q -n 3 --durations=0`
# run on TensorFlow (2026-12-06, 2-vCPU Xeon; setup, call and teardown summed),
# rounded. pytest-xdist hands out whole files (`--dist loadfile`), by default
# the files with the most tests first, which left the few-test, slow files
# (kills, searches, example scripts) to run at the end with the other
# workers idle. Handing out the slowest first (a file not listed comes after
# them) keeps the three workers busy to the end. Only the order changes.
FILE_SECONDS = {
    "test_keras_paths.py": 210, "test_tuning.py": 200, "test_export.py": 200, "test_faults.py": 200,
    "test_budget.py": 190, "test_benchmarks.py": 180, "test_hub.py": 170, "test_cli_train.py": 160,
    "test_finetune.py": 160, "test_backends.py": 150, "test_examples.py": 120, "test_training.py": 100,
    "test_hardening.py": 100, "test_model.py": 100, "test_examples_train.py": 80, "test_cli.py": 70,
    "test_fast_paths.py": 70, "test_budget_tools.py": 60, "test_convert.py": 60, "test_cli_output.py": 50,
    "test_image_files.py": 50, "test_imports.py": 40, "test_onnx.py": 40, "test_explain.py": 30,
    "test_data.py": 30, "test_locks.py": 30, "test_bad_inputs.py": 30,
}


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """The slowest test files first (`FILE_SECONDS`), each file's tests in
    their order; the same in every worker, as pytest-xdist requires."""
    count = {}
    for item in items:
        count[item.path.name] = count.get(item.path.name, 0) + 1
    items.sort(key=lambda item: (-FILE_SECONDS.get(item.path.name, 0), -count[item.path.name], item.path.name))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Tests run three at a time (`pytest -n 3`), except those marked `quiet`
    (real time budgets, processes that heartbeat each other), which have the
    machine to themselves: every test holds a shared lock from the setup of
    its fixtures (module-scoped ones included) to their teardown; a quiet
    test takes it exclusively, so the other workers wait before their next
    test. The turnstile lets a waiting quiet test in ahead of later tests,
    so that it is not starved."""
    quiet = item.get_closest_marker("quiet") is not None
    turnstile, share = _cpu_lock("turnstile"), _cpu_lock("share")
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if quiet:
            fcntl.flock(share, fcntl.LOCK_EX)  # waits for the running test of the other worker
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(share, fcntl.LOCK_SH)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        os.close(share)  # closing the descriptor releases its lock
        os.close(turnstile)


def import_timm():
    """Imports timm (a test reference; the `dev` extra installs it).

    PyPI's x86-64 torchvision wheel (which timm imports) is linked against
    CUDA torch; beside the CPU build its compiled ops do not load and its
    `import` fails registering fake kernels for the two ops `nms` and
    `qnms` that extension would have declared. Declaring those two schemas
    lets the real (pure-Python) torchvision package import; timm's ViT
    never calls them.
    """
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        global _TORCHVISION_OPS  # keep the library object alive
        _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _TORCHVISION_OPS.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import timm

    return timm


def tiny_vit_kwargs(**overrides):
    """Arguments of a tiny ViT that builds and runs in well under a second."""
    kwargs = dict(
        image_size=16, num_classes=4, patch_size=4, hidden_dim=16, depth=2,
        num_heads=2, mlp_dim=32,
    )
    kwargs.update(overrides)
    return kwargs


def tiny_train_flags(*extra, hidden_dim=16):
    """`keras-vit train` flags of a tiny model (8 px images, one block, no
    XLA) that trains in seconds, then `extra`.

    Example: ``tiny_train_flags("--verbose", "2")``.
    """
    return ["--image-size", "8", "--patch-size", "4", "--conv-stem", "none", "--hidden-dim", str(hidden_dim),
            "--depth", "1", "--num-heads", "2", "--mlp-dim", str(2 * hidden_dim), "--jit-compile", "false", *extra]


@pytest.fixture
def tiny_vit():
    from keras_vit import build_vit

    def make(**overrides):
        keras.utils.set_random_seed(0)
        return build_vit(**tiny_vit_kwargs(**overrides))

    return make


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 16, 16, 3)).astype("float32")


# Prepended to a `-c` script by `run_python(..., lean=True)`: Keras loads as
# `keras-vit` loads it, without the optional imports no test uses (scikit-
# learn, matplotlib.pyplot, IPython and, on TensorFlow, JAX; each imports as
# usual afterwards): `import keras` 6.6 s instead of 9.4 s on 2 vCPUs. Then
# our classes register, as ``import keras, keras_vit`` registers them (the
# script's own `import keras_vit` finds the package imported already).
LEAN_KERAS = ("from keras_vit.cli.startup import without_optional_imports as _lean\n"
              "with _lean():\n    import keras\nimport keras_vit.models\ndel _lean\n")


def example(name):
    """The `main(argv)` of the script ``examples/<name>``, loaded as a module
    (not run as ``__main__``), to run in the test's process: the scripts are
    tested as users run them by `tests/test_examples_train.py`'s
    `train_folder.py` in a fresh process; the others skip that process's
    Keras import."""
    return runpy.run_path(str(REPO / "examples" / name), run_name="example")["main"]


def run_python(code_or_args, *, env=None, timeout=600, check=True, cwd=None, lean=False):
    """Runs a fresh Python process that imports this checkout of keras_vit;
    `lean=True` loads Keras first for a `-c` script (`LEAN_KERAS`)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else [])
    )
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    full_env.update(env or {})
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    if lean:
        assert args[0] == "-c", "lean=True is for a -c script"
        args[1] = LEAN_KERAS + args[1]
    proc = subprocess.run(
        [sys.executable, *args], env=full_env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}\n"
            f"STDERR:\n{proc.stderr[-4000:]}"
        )
    return proc
