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
2048 x 2048 x 2048 float32 matmuls under XLA.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import keras

from benchmarks.contenders import CONFIGS, CONTENDERS, build_contender
from benchmarks.measure import Runner, make_batch

RESULTS = Path(__file__).parent / "results"


def gemm_peak(n=2048, repeats=10):
    """FLOP/s of the best of `repeats` n x n x n float32 matmuls (XLA)."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y), jit_compile=True)
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


def measure(cfg, contenders, jit_modes, repeats):
    """Rows of images/s and MFU per contender and jit mode, alternating the
    contenders within each round."""
    peak = gemm_peak()
    rows = []
    for jit in jit_modes:
        runners = {name: Runner(build_contender(name, cfg, jit), make_batch(cfg)) for name in contenders}
        for runner in runners.values():
            runner.first_steps()
        train, infer = {n: [] for n in runners}, {n: [] for n in runners}
        for _ in range(repeats):
            for name, runner in runners.items():
                train[name].append(runner.train_throughput(cfg.steps)[0])
                infer[name].append(runner.infer_throughput(cfg.steps)[0])
        for name in runners:
            train_ips, infer_ips = statistics.median(train[name]), statistics.median(infer[name])
            rows.append(dict(
                config=cfg.name, contender=name, jit_compile=jit, train_images_per_s=round(train_ips, 1),
                infer_images_per_s=round(infer_ips, 1),
                train_mfu=round(train_ips * 3 * forward_flops(cfg) / peak, 3),
                infer_mfu=round(infer_ips * forward_flops(cfg) / peak, 3)))
    return peak, rows


def markdown(peak, rows):
    lines = [f"GEMM peak (2048^3 float32, XLA): {peak / 1e9:.0f} GFLOP/s on {os.cpu_count()} cores", "",
             "| config | contender | jit | train img/s | train MFU | infer img/s | infer MFU |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['contender']} | {'on' if r['jit_compile'] else 'off'} | "
                     f"{r['train_images_per_s']} | {100 * r['train_mfu']:.0f}% | {r['infer_images_per_s']} | "
                     f"{100 * r['infer_mfu']:.0f}% |")
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
    all_rows, peak = [], None
    for name in args.configs.split(","):
        peak, rows = measure(CONFIGS[name], args.contenders.split(","), jit_modes, args.repeats)
        all_rows += rows
    text = markdown(peak, all_rows)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(dict(gemm_peak_flops=peak, rows=all_rows), indent=1))


if __name__ == "__main__":
    main()
