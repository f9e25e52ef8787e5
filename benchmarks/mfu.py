"""Model FLOP utilisation on this machine: training and inference matmul
FLOP/s of each contender as a fraction of the fp32 GEMM peak measured in the
same process.

    python -m benchmarks.mfu                      # Ti-like, jit off and on, both contenders
    python -m benchmarks.mfu --configs ti --repeats 5 --contenders keras_vit
    KERAS_BACKEND=jax python -m benchmarks.mfu     # the backend axis: results/mfu-<backend>-cpu.*
    KERAS_BACKEND=torch python -m benchmarks.mfu

The backend is Keras' (`KERAS_BACKEND`); `--jit auto` measures what the
backend runs by default: TensorFlow with XLA off and on, JAX compiled, torch
eagerly. The GEMM peak and the "matmuls alone" ceiling use the same
backend's kernels.

Matmul FLOPs are counted per image (multiply-adds x 2): the patch
projection, the QKV, output and MLP projections, the two attention
products (scores and the weighted sum) and the head; a training step counts
3x the forward pass (the backward pass computes two products per forward
product). Element-wise work (norms, softmax, GELU, the optimizer) is not
counted, as is usual for MFU. The GEMM peak is the best of three
2048 x 2048 x 2048 float32 matmuls (`--peak-size`; TensorFlow's own kernel, oneDNN where
TensorFlow has it on, and XLA's; the faster), on the thread pool the models
run on, sampled again between every two measurements (`Interleaved`): each
measurement is divided by the mean of the peaks sampled right before and
right after it, and a row's MFU is the median of these ratios over the
rounds, so that a shared machine that speeds up and slows down moves a
figure and its peak alike. The same ratio per CPU-second ("cpu" MFU) is
reported beside it: other processes disturb it less. The JSON keeps every
sample and the load average. A "matmuls alone" row per
jit mode runs the model's matmuls with nothing else (`matmul_ceiling`): the
ceiling the shapes themselves allow on this machine.

keras_vit's inference is measured through `keras_vit.export.inference_model`
(the explicit inference rewrites: LayerNorm folds, heads-first attention),
as its SavedModel export and Keras predictor run it; the plain model's
`predict_on_batch` is measured too ("plain infer" columns). The layers
themselves compute the plain ViT in every mode.
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np

from benchmarks.contenders import CONFIGS, CONTENDERS, build_contender
from benchmarks.measure import Runner, make_batch
from benchmarks.run import write_atomic
from keras_vit.export.inference import inference_model

RESULTS = Path(__file__).parent / "results"


def compiled(fn, jit):
    """`fn` as this backend runs a model's step: TensorFlow `tf.function`
    (XLA with `jit`), JAX `jax.jit` with `jit` (else op by op), torch
    eagerly (`jit` is not used: the torch rows run eagerly)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit)
    if backend == "jax" and jit:
        import jax

        return jax.jit(fn)
    return fn


def matmul_fn():
    """This backend's batched matmul with transpose flags:
    (a, b, transpose_a, transpose_b) -> a' @ b'."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return lambda a, b, ta=False, tb=False: tf.linalg.matmul(a, b, transpose_a=ta, transpose_b=tb)
    swap = (lambda t: t.swapaxes(-1, -2)) if backend == "jax" else (lambda t: t.transpose(-1, -2))
    matmul = keras.ops.matmul
    return lambda a, b, ta=False, tb=False: matmul(swap(a) if ta else a, swap(b) if tb else b)


def _normal(shape, seed=0):
    # drawn by numpy: keras.random on JAX compiles its generator for each shape (13 s of a tiny run)
    return keras.ops.convert_to_tensor(np.random.default_rng(seed).standard_normal(shape, dtype="float32"))


def _sync(values):
    """Waits for `values` (on JAX until they are computed; elsewhere by
    reading one element of each, so that nothing big is copied)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.block_until_ready(values)
    return [float(keras.ops.convert_to_numpy(keras.ops.reshape(v, (-1,))[0])) for v in values]


def _kept(product):
    """What `matmul_ceiling`'s functions return of a product: one element on
    TensorFlow (as measured so far), the whole product elsewhere: XLA on JAX
    computes only the elements a jitted function returns, so one element
    would time almost nothing."""
    return product[0, 0, 0] if keras.backend.backend() == "tensorflow" else product


@functools.lru_cache(maxsize=None)
def _matmul(jit):
    """One compiled 2-D matmul (on TensorFlow: XLA with `jit`, else
    TensorFlow's own kernel, oneDNN where it is on), reused by every
    `gemm_peak` sample."""
    matmul = matmul_fn()
    return compiled(lambda x, y: matmul(x, y), jit)


def peak_jit_modes():
    """The kernels `gemm_peak` takes the best of: TensorFlow's own and XLA's
    on TensorFlow, XLA's on JAX, torch's eager kernel on torch."""
    return {"tensorflow": (False, True), "jax": (True,)}.get(keras.backend.backend(), (False,))


# n of the n x n x n matmuls that sample the GEMM peak (`--peak-size`)
PEAK_SIZE = 2048


def gemm_peak(n=PEAK_SIZE, repeats=3):
    """One sample of the GEMM peak: (wall FLOP/s, FLOP per CPU-second) of
    the best of `repeats` n x n x n float32 matmuls with each of this
    backend's kernels (`peak_jit_modes`), on the thread pool the models run
    on (the same thread count)."""
    a, b = _normal((n, n), 1), _normal((n, n), 2)
    best_wall, best_cpu = float("inf"), float("inf")
    for jit in peak_jit_modes():
        matmul = _matmul(jit)
        _sync([matmul(a, b)])
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            _sync([matmul(a, b)])
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
    return 2 * n**3 / best_wall, 2 * n**3 / max(best_cpu, 1e-9)


def forward_flops(cfg):
    """Matmul FLOPs of one image's forward pass through `cfg`'s classifier
    (class token, linear head).

    Example:
    >>> round(forward_flops(CONFIGS["ti"]) / 1e6)
    366
    """
    grid = (cfg.image_size // cfg.patch_size) ** 2
    tokens, width = grid + 1, cfg.hidden_dim
    patches = 2 * grid * cfg.patch_size**2 * 3 * width
    projections = 2 * tokens * width * (3 * width + width + 2 * cfg.mlp_dim)
    attention = 2 * 2 * tokens * tokens * width
    return patches + cfg.depth * (projections + attention) + 2 * width * cfg.num_classes


def matmul_shapes(cfg):
    """The forward pass's matmuls as (batch, m, k, n) for one batch of
    `cfg`: the patch projection, per block QKV, scores, weighted sum,
    output projection and the two MLP layers, then the head."""
    grid = (cfg.image_size // cfg.patch_size) ** 2
    rows, width, heads = cfg.batch_size * (grid + 1), cfg.hidden_dim, cfg.num_heads
    per_block = [(1, rows, width, 3 * width),
                 (cfg.batch_size * heads, grid + 1, width // heads, grid + 1),
                 (cfg.batch_size * heads, grid + 1, grid + 1, width // heads),
                 (1, rows, width, width), (1, rows, width, cfg.mlp_dim), (1, rows, cfg.mlp_dim, width)]
    return ([(1, cfg.batch_size * grid, cfg.patch_size**2 * 3, width)] + per_block * cfg.depth
            + [(1, cfg.batch_size, width, cfg.num_classes)])


def matmul_ceiling(cfg, jit, repeats=5):
    """FLOP/s of the model's matmuls alone (same shapes, nothing else):
    (forward, training), the most any implementation of `cfg` could reach
    here. Training adds each product's two gradient products (dA = dC Bᵀ,
    dB = Aᵀ dC)."""
    shapes = matmul_shapes(cfg)
    operands = [(_normal((b, m, k), 1), _normal((b, k, n), 2), _normal((b, m, n), 3)) for b, m, k, n in shapes]
    matmul = matmul_fn()

    # The operands are arguments, not captured constants: XLA on JAX would
    # fold products of constants at compile time.
    def forward(operands):
        return [_kept(matmul(a, w)) for a, w, _ in operands]

    def training(operands):
        out = forward(operands)
        for a, w, grad in operands:
            out.append(_kept(matmul(grad, w, tb=True)))
            out.append(_kept(matmul(a, grad, ta=True)))
        return out

    flops = sum(2 * b * m * k * n for b, m, k, n in shapes)
    rates = []
    for fn, total in ((forward, flops), (training, 3 * flops)):
        fn = compiled(fn, jit)
        _sync(fn(operands))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            _sync(fn(operands))
            times.append(time.perf_counter() - start)
        rates.append(total / min(times))
    return tuple(rates)


class Interleaved:
    """Samples of a figure, each divided by the GEMM peak measured right
    before and right after it (their mean), so that a machine whose speed
    drifts under other jobs' load moves both alike. Keeps every sample."""

    def __init__(self, peak_size=PEAK_SIZE):
        self.peak_size = peak_size
        self.peaks = [gemm_peak(peak_size)]  # (wall, cpu) FLOP/s samples, interleaved with the figures
        self.samples = {}  # key: list of (wall FLOP/s, cpu FLOP/s, index of the peak before)

    def add(self, key, wall, cpu=None):
        self.samples.setdefault(key, []).append((wall, cpu, len(self.peaks) - 1))
        self.peaks.append(gemm_peak(self.peak_size))

    def summary(self, key):
        """{wall, cpu}: median FLOP/s and median fraction of the adjacent
        peaks (cpu: FLOP per CPU-second over the peak's, None if untimed)."""
        got = self.samples[key]
        out = {"flops": statistics.median(w for w, _, _ in got),
               "mfu": statistics.median(w / (self.peaks[i][0] + self.peaks[i + 1][0]) * 2 for w, _, i in got),
               "flops_per_round": [round(w) for w, _, _ in got]}
        if all(c is not None for _, c, _ in got):
            out["cpu_mfu"] = statistics.median(c / (self.peaks[i][1] + self.peaks[i + 1][1]) * 2 for _, c, i in got)
        return out


MODES = ("train", "infer", "plain_infer")


def measure(cfg, contenders, jit_modes, repeats, peak_size=PEAK_SIZE):
    """Rows of images/s and MFU per contender and jit mode, and the GEMM
    peak samples. Each round runs every contender's training, inference
    (keras_vit: through `inference_model`) and plain inference, then the
    matmuls alone, with a GEMM peak sample between every two measurements
    (`Interleaved`); a row's MFU is the median over the rounds of each
    measurement against its adjacent peaks."""
    flops = forward_flops(cfg)
    per_image = {"train": 3 * flops, "infer": flops, "plain_infer": flops}
    samples, keys = Interleaved(peak_size), []
    for jit in jit_modes:
        runners = {name: Runner(build_contender(name, cfg, jit), make_batch(cfg)) for name in contenders}
        fast = {name: Runner(inference_model(runner.model), (runner.x, runner.y))
                for name, runner in runners.items() if name == "keras_vit"}
        for runner in runners.values():
            runner.first_steps()
        for runner in fast.values():
            runner.model.predict_on_batch(runner.x)
            runner.model.predict_on_batch(runner.x)
        keys += [(name, jit) for name in runners] + [("matmuls alone", jit)]
        for _ in range(repeats):
            for name, runner in runners.items():
                steps = {"train": runner.train_throughput, "plain_infer": runner.infer_throughput,
                         "infer": (fast[name] if name in fast else runner).infer_throughput}
                for mode in MODES:
                    wall, cpu = steps[mode](cfg.steps)
                    samples.add((name, jit, mode), wall * per_image[mode], cpu * per_image[mode])
            forward, training = matmul_ceiling(cfg, jit, repeats=2)
            samples.add(("matmuls alone", jit, "train"), training)
            samples.add(("matmuls alone", jit, "infer"), forward)
    rows = []
    for name, jit in keys:
        row = dict(config=cfg.name, contender=name, jit_compile=jit,
                   infer_through="inference_model" if name == "keras_vit" else "predict_on_batch")
        for mode in MODES:
            if (name, jit, mode) not in samples.samples:
                continue
            got = samples.summary((name, jit, mode))
            row[f"{mode}_images_per_s"] = None if name == "matmuls alone" else round(got["flops"] / per_image[mode], 1)
            # three significant digits: a tiny model's MFU is well below 0.001 on a busy machine
            row[f"{mode}_mfu"] = float(f"{got['mfu']:.3g}")
            row[f"{mode}_cpu_mfu"] = float(f"{got['cpu_mfu']:.3g}") if "cpu_mfu" in got else None
            row[f"{mode}_flops_per_round"] = got["flops_per_round"]
        rows.append(row)
    return samples.peaks, rows


def _cell(row, mode, key):
    value = row.get(f"{mode}_{key}")
    if value is None:
        return "-"
    return f"{100 * value:.0f}%" if "mfu" in key else f"{value}"


def markdown(peaks, rows, environment):
    walls = [w / 1e9 for w, _ in peaks]
    kernel = {"tensorflow": "best of TensorFlow's kernel and XLA", "jax": "jax.jit",
              "torch": "torch eager"}.get(environment["backend"], environment["backend"])
    lines = [f"Keras backend: {environment['backend']}. "
             f"GEMM peak ({environment['gemm_peak_size']}^3 float32, {kernel}, on the models' thread pool), "
             f"sampled {len(peaks)} times between the measurements: median {statistics.median(walls):.0f} "
             f"GFLOP/s (range {min(walls):.0f}-{max(walls):.0f}) on {environment['cpu_count']} cores, "
             f"TF_ENABLE_ONEDNN_OPTS={environment['tf_enable_onednn_opts']}, load average "
             f"{environment['load_average_start'][0]:.1f} at the start, {environment['load_average_end'][0]:.1f} "
             "at the end. MFU: the median over the rounds of each measurement's FLOP/s over the mean of the "
             "peaks sampled right before and after it; 'cpu' MFU divides FLOP per CPU-second by the peak's "
             "(less disturbed by other processes).", "",
             "| config | contender | jit | train img/s | train MFU (cpu) | infer img/s | infer MFU (cpu) "
             "| plain infer img/s | plain infer MFU (cpu) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{_cell(r, m, 'images_per_s')} | {_cell(r, m, 'mfu')} ({_cell(r, m, 'cpu_mfu')})" for m in MODES]
        lines.append(f"| {r['config']} | {r['contender']} | {'on' if r['jit_compile'] else 'off'} | "
                     + " | ".join(cells) + " |")
    lines += ["", "'matmuls alone' runs only the model's matmuls, same shapes, back to back (and, for training, "
              "their gradient products): the most any implementation of the configuration reaches here.",
              "keras_vit's 'infer' runs `keras_vit.export.inference_model(model)` (LayerNorm folds, heads-first "
              "attention); 'plain infer' is the plain model's `predict_on_batch` (the same for keras_hub)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mfu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="ti", help="comma-separated names from benchmarks.contenders")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--jit", choices=("auto", "both", "on", "off"), default="auto",
                        help="auto: both on TensorFlow, on (XLA) on JAX, off (eager) on torch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-size", type=int, default=PEAK_SIZE,
                        help="n of the n x n x n matmuls that sample the GEMM peak (smaller: a quicker, lower peak)")
    parser.add_argument("--out", default=str(RESULTS / f"mfu-{keras.backend.backend()}-cpu"))
    args = parser.parse_args(argv)
    if args.peak_size < 1:
        parser.error(f"--peak-size must be a positive int, got {args.peak_size}")
    auto = {"tensorflow": "both", "jax": "on"}.get(keras.backend.backend(), "off")
    jit_modes = {"both": (False, True), "on": (True,), "off": (False,)}[auto if args.jit == "auto" else args.jit]
    all_rows, peaks = [], []
    load_start = os.getloadavg()
    for name in args.configs.split(","):
        config_peaks, rows = measure(CONFIGS[name], args.contenders.split(","), jit_modes, args.repeats,
                                     args.peak_size)
        all_rows += rows
        peaks += config_peaks
    environment = dict(backend=keras.backend.backend(), gemm_peak_size=args.peak_size, cpu_count=os.cpu_count(),
                       load_average_start=load_start, load_average_end=os.getloadavg(),
                       tf_enable_onednn_opts=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
                       date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       command="python -m benchmarks.mfu " + " ".join(argv if argv is not None else sys.argv[1:]))
    text = markdown(peaks, all_rows, environment)
    print(text)
    write_atomic(args.out + ".md", text)
    write_atomic(args.out + ".json", json.dumps(
        dict(gemm_peak_flops=statistics.median(w for w, _ in peaks), gemm_peak_samples=peaks,
             environment=environment, rows=all_rows), indent=1))


if __name__ == "__main__":
    main()
