"""Timing and memory measurements shared by the suite's sections.

Throughput is timed around whole `train_on_batch` / `predict_on_batch` calls,
which return host values, so every timed step has finished (also on JAX,
whose dispatch is asynchronous). Inputs are converted to backend tensors once,
outside the timed region. Each throughput is reported twice: per wall-clock
second, and per second of this process's CPU time (all its threads), which
other processes on a shared machine disturb far less (on a GPU only the
wall-clock figure means anything).

Peak memory is measured in a fresh subprocess per contender
(`python -m benchmarks.measure ...`), so the contenders cannot inherit each
other's allocator caches: on CPU it is the growth of the process's resident
set while it compiles and runs a few training steps (the kernel's high-water
mark, reset through ``/proc/self/clear_refs`` after the model and the batch
exist); on a GPU it is the device allocator's ``peak_bytes_in_use``.
"""

import argparse
import json
import sys
import time

import keras
import numpy as np


def make_batch(cfg, seed=0):
    """A random batch for `cfg`: float32 pixels in [0, 255] and int labels,
    as backend tensors.

    Example:
    >>> x, y = make_batch(CONFIGS["tiny"])
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (cfg.batch_size, cfg.image_size, cfg.image_size, 3)).astype("float32")
    y = rng.integers(0, cfg.num_classes, (cfg.batch_size,)).astype("int32")
    return keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)


class Runner:
    """Times one compiled model on one batch.

    Args:
        model: a compiled `keras.Model`.
        batch: (images, labels) backend tensors.

    Example:
    >>> runner = Runner(build_contender("keras_vit", CONFIGS["tiny"], False),
    ...                 make_batch(CONFIGS["tiny"]))
    >>> first = runner.first_steps()
    >>> wall, cpu = runner.train_throughput(2)
    """

    def __init__(self, model, batch):
        self.model = model
        self.x, self.y = batch
        self.batch_size = int(self.x.shape[0])

    def first_steps(self):
        """Seconds of the first train step and the first predict call (tracing
        and, with `jit_compile`, XLA compilation), then one more warm-up step
        of each."""
        start = time.perf_counter()
        self.model.train_on_batch(self.x, self.y)
        train = time.perf_counter() - start
        start = time.perf_counter()
        self.model.predict_on_batch(self.x)
        predict = time.perf_counter() - start
        self.model.train_on_batch(self.x, self.y)
        self.model.predict_on_batch(self.x)
        return {"train_first_step_s": train, "predict_first_step_s": predict}

    def train_throughput(self, steps):
        """Training images per second over `steps` steps: (wall-clock,
        per second of this process's CPU time)."""
        return self._throughput(self.model.train_on_batch, (self.x, self.y), steps)

    def infer_throughput(self, steps):
        """Inference images per second over `steps` predict calls: (wall-clock,
        per second of this process's CPU time)."""
        return self._throughput(self.model.predict_on_batch, (self.x,), steps)

    def _throughput(self, step, args, steps):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step(*args)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        images = steps * self.batch_size
        return images / wall, images / max(cpu, 1e-9)


def _proc_status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _gpu_peak_bytes():
    if keras.backend.backend() != "jax":
        return None
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    return (device.memory_stats() or {}).get("peak_bytes_in_use")


def peak_memory_here(contender, cfg, jit_compile, steps=2):
    """Peak memory of compiling and training `contender` for `steps` steps,
    measured in this process (meant to be a fresh one).

    Returns:
        dict with "peak_mb" and "method".
    """
    from benchmarks.contenders import build_contender

    model = build_contender(contender, cfg, jit_compile)
    x, y = make_batch(cfg)
    gpu_before = _gpu_peak_bytes()
    if gpu_before is None:
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset the high-water mark to the current RSS
            method = "RSS high-water mark growth (VmHWM - VmRSS before the first step)"
        except OSError:
            method = "ru_maxrss growth (high-water mark not resettable: may under-count)"
        before = _proc_status_kb("VmRSS")
    for _ in range(steps):
        model.train_on_batch(x, y)
    if gpu_before is not None:
        return {"peak_mb": _gpu_peak_bytes() / 2**20, "method": "device peak_bytes_in_use"}
    if method.startswith("ru_maxrss"):
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    else:
        peak_kb = _proc_status_kb("VmHWM")
    return {"peak_mb": max(peak_kb - before, 0) / 1024, "method": method}


def peak_memory(contender, cfg, jit_compile, steps=2, timeout=900):
    """Runs `peak_memory_here` in a fresh Python process and returns its dict
    (with "error" instead of "peak_mb" when the child fails).

    Example:
    >>> peak_memory("keras_vit", CONFIGS["tiny"], jit_compile=False)["peak_mb"] > 0
    True
    """
    import os
    import subprocess
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([repo] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = [
        sys.executable, "-m", "benchmarks.measure", contender,
        "--config", json.dumps(cfg.__dict__), "--steps", str(steps),
    ] + (["--jit"] if jit_compile else [])
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    return json.loads(lines[-1])


def _main(argv=None):
    from benchmarks.contenders import BenchConfig

    parser = argparse.ArgumentParser(description="Peak memory of one contender (fresh process).")
    parser.add_argument("contender")
    parser.add_argument("--config", required=True, help="BenchConfig fields as JSON")
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = BenchConfig(**json.loads(args.config))
    print(json.dumps(peak_memory_here(args.contender, cfg, args.jit, args.steps)))


if __name__ == "__main__":
    _main()
