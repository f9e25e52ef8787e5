"""Model FLOP utilisation on this machine: training and inference matmul
FLOP/s of each contender as a fraction of the fp32 GEMM peak measured in the
same process.

    python -m benchmarks.mfu                      # Ti-like, jit off and on, both contenders
    python -m benchmarks.mfu --configs ti --repeats 5 --contenders keras_vit

Matmul FLOPs are counted per image (multiply-adds x 2): the patch
projection, the QKV, output and MLP projections, the two attention
products (scores and the weighted sum) and the head; a training step counts
3x the forward pass (the backward pass computes two products per forward
product). Element-wise work (norms, softmax, GELU, the optimizer) is not
counted, as is usual for MFU. The GEMM peak is the best of several
2048 x 2048 x 2048 float32 matmuls under XLA, measured again in every round
beside the contenders, so that the peak is sampled across the same minutes
as the models on a machine that speeds up and slows down (by ±5 % on this
one); MFU is the median FLOP/s over the median peak. A "matmuls alone" row per
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
import time
from pathlib import Path

import keras

from benchmarks.contenders import CONFIGS, CONTENDERS, build_contender
from benchmarks.measure import Runner, make_batch
from benchmarks.run import write_atomic
from keras_vit.export.inference import inference_model

RESULTS = Path(__file__).parent / "results"


@functools.lru_cache(maxsize=None)
def _xla_matmul():
    """One XLA-compiled matmul, so that each round's `gemm_peak` reuses it."""
    import tensorflow as tf

    return tf.function(lambda x, y: tf.linalg.matmul(x, y), jit_compile=True)


def gemm_peak(n=2048, repeats=10):
    """FLOP/s of the best of `repeats` n x n x n float32 matmuls (XLA)."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = _xla_matmul()
    matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


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
    import tensorflow as tf

    shapes = matmul_shapes(cfg)
    operands = [(tf.random.normal((b, m, k)), tf.random.normal((b, k, n)), tf.random.normal((b, m, n)))
                for b, m, k, n in shapes]

    def forward():
        return [tf.linalg.matmul(a, w)[0, 0, 0] for a, w, _ in operands]

    def training():
        out = forward()
        for a, w, grad in operands:
            out.append(tf.linalg.matmul(grad, w, transpose_b=True)[0, 0, 0])
            out.append(tf.linalg.matmul(a, grad, transpose_a=True)[0, 0, 0])
        return out

    flops = sum(2 * b * m * k * n for b, m, k, n in shapes)
    rates = []
    for fn, total in ((forward, flops), (training, 3 * flops)):
        fn = tf.function(fn, jit_compile=jit)
        [x.numpy() for x in fn()]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            [x.numpy() for x in fn()]
            times.append(time.perf_counter() - start)
        rates.append(total / min(times))
    return tuple(rates)


def measure(cfg, contenders, jit_modes, repeats):
    """Rows of images/s and MFU per contender and jit mode, and the GEMM
    peaks measured. Each round measures the peak, then every contender
    (alternating), then the matmuls alone; rows keep every round's figures
    and their MFU is the median FLOP/s over the median peak of all rounds
    of `cfg` (kept in each row)."""
    rounds, peaks = [], []
    flops = forward_flops(cfg)
    for jit in jit_modes:
        runners = {name: Runner(build_contender(name, cfg, jit), make_batch(cfg)) for name in contenders}
        fast = {name: Runner(inference_model(runner.model), (runner.x, runner.y))
                for name, runner in runners.items() if name == "keras_vit"}
        for runner in runners.values():
            runner.first_steps()
        for runner in fast.values():
            runner.model.predict_on_batch(runner.x)
            runner.model.predict_on_batch(runner.x)
        speed = {name: dict(train=[], infer=[], plain_infer=[]) for name in runners}
        ceiling = dict(train=[], infer=[], plain_infer=[])
        for _ in range(repeats):
            peaks.append(gemm_peak(repeats=5))
            for name, runner in runners.items():
                speed[name]["train"].append(runner.train_throughput(cfg.steps)[0] * 3 * flops)
                speed[name]["plain_infer"].append(runner.infer_throughput(cfg.steps)[0] * flops)
                infer = fast.get(name)
                speed[name]["infer"].append(
                    infer.infer_throughput(cfg.steps)[0] * flops if infer else speed[name]["plain_infer"][-1])
            forward, training = matmul_ceiling(cfg, jit, repeats=2)
            ceiling["train"].append(training)
            ceiling["infer"].append(forward)
            ceiling["plain_infer"].append(forward)
        rounds += [(name, jit, got) for name, got in speed.items()] + [("matmuls alone", jit, ceiling)]
    peak = statistics.median(peaks)
    rows = []
    for name, jit, got in rounds:
        row = dict(config=cfg.name, contender=name, jit_compile=jit, gemm_peak_flops=round(peak),
                   infer_through="inference_model" if name == "keras_vit" else "predict_on_batch")
        for mode, per_image in (("train", 3 * flops), ("infer", flops), ("plain_infer", flops)):
            rate = statistics.median(got[mode])
            row[f"{mode}_images_per_s"] = None if name == "matmuls alone" else round(rate / per_image, 1)
            row[f"{mode}_mfu"] = round(rate / peak, 3)
            row[f"{mode}_flops_per_round"] = [round(r) for r in got[mode]]
        rows.append(row)
    return peaks, rows


def markdown(peaks, rows):
    low, mid, high = (p / 1e9 for p in (min(peaks), statistics.median(peaks), max(peaks)))
    lines = [f"GEMM peak (2048^3 float32, XLA), measured in each of {len(peaks)} rounds: median {mid:.0f} "
             f"GFLOP/s (range {low:.0f}-{high:.0f}) on {os.cpu_count()} cores; MFU is the median FLOP/s "
             "over the median peak", "",
             "| config | contender | jit | train img/s | train MFU | infer img/s | infer MFU "
             "| plain infer img/s | plain infer MFU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['contender']} | {'on' if r['jit_compile'] else 'off'} | "
                     f"{r['train_images_per_s'] or '-'} | {100 * r['train_mfu']:.0f}% | "
                     f"{r['infer_images_per_s'] or '-'} | {100 * r['infer_mfu']:.0f}% | "
                     f"{r['plain_infer_images_per_s'] or '-'} | {100 * r['plain_infer_mfu']:.0f}% |")
    lines += ["", "'matmuls alone' runs only the model's matmuls, same shapes, back to back (and, for training, "
              "their gradient products): the most any implementation of the configuration reaches here.",
              "keras_vit's 'infer' runs `keras_vit.export.inference_model(model)` (LayerNorm folds, heads-first "
              "attention); 'plain infer' is the plain model's `predict_on_batch` (the same for keras_hub)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mfu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="ti", help="comma-separated names from benchmarks.contenders")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--jit", choices=("both", "on", "off"), default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / f"mfu-{keras.backend.backend()}-cpu"))
    args = parser.parse_args(argv)
    jit_modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.jit]
    all_rows, peaks = [], []
    for name in args.configs.split(","):
        config_peaks, rows = measure(CONFIGS[name], args.contenders.split(","), jit_modes, args.repeats)
        all_rows += rows
        peaks += config_peaks
    text = markdown(peaks, all_rows)
    print(text)
    write_atomic(args.out + ".md", text)
    write_atomic(args.out + ".json", json.dumps(
        dict(gemm_peak_flops=statistics.median(peaks), gemm_peaks_per_round=peaks, rows=all_rows), indent=1))


if __name__ == "__main__":
    main()
