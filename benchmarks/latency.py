"""Section "latency": p50 latency of the deployment artifacts of the Ti-like
model at batch 1 and batch 32 with 1 and 2 CPU threads: the SavedModel
(TensorFlow), the float32 .tflite file (LiteRT) and the .onnx file (ONNX
Runtime), all through `keras_vit.export.benchmark` (same random images,
same predictor interface).

The SavedModel rows run in a fresh subprocess per thread count
(``python -m benchmarks.latency SAVEDMODEL --threads N``), because
TensorFlow's thread pools are fixed once it has started. The ONNX row is
skipped when onnxruntime / tf2onnx are not installed (``pip install
-e ".[onnx]"``). Needs the TensorFlow backend.

Example:
    python -m benchmarks.run --sections latency
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 32)
THREADS = (1, 2)
ITERATIONS = 30
WARMUP = 3


def _savedmodel_rows(path, threads, iterations=ITERATIONS, warmup=WARMUP):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "benchmarks.latency", str(path), "--threads", str(threads),
               "--iterations", str(iterations), "--warmup", str(warmup)]
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_section(args, out, tag):
    """Exports the three artifacts, times them, writes ``latency-<tag>.json/.md``."""
    import keras

    from benchmarks.contenders import CONFIGS, build_keras_vit
    from benchmarks.run import log, write_atomic

    if keras.backend.backend() != "tensorflow":
        log("   latency: skipped (the exports need KERAS_BACKEND=tensorflow)")
        return
    from keras_vit.export import TFLitePredictor, benchmark, export_saved_model, export_tflite

    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401

        from keras_vit.export import ONNXPredictor, export_onnx
    except ImportError:
        export_onnx = None
        log("   latency: no ONNX row (pip install -e '.[onnx]')")
    load_start = [round(v, 2) for v in os.getloadavg()]
    cfg = CONFIGS["ti"]
    keras.utils.set_random_seed(0)
    model = build_keras_vit(cfg)
    rows = []

    def add(kind, path, threads, results):
        for r in results:
            rows.append({"artifact": kind, "num_threads": threads, "size_mb": os.path.getsize(path) / 2**20
                         if os.path.isfile(path) else None, **r})
            log(f"   latency {kind} threads={threads} batch={r['batch_size']}: p50 {r['p50_ms']:.2f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        saved = export_saved_model(model, os.path.join(tmp, "ti_savedmodel"))
        tflite = export_tflite(model, os.path.join(tmp, "ti_float32.tflite"), "float32")
        onnx_path = export_onnx(model, os.path.join(tmp, "ti.onnx")) if export_onnx else None
        for threads in THREADS:
            add("savedmodel", saved, threads, _savedmodel_rows(saved, threads))
            add("tflite float32", tflite, threads,
                benchmark(TFLitePredictor(tflite, num_threads=threads), BATCHES, iterations=ITERATIONS, warmup=WARMUP))
            if onnx_path:
                add("onnx (ORT)", onnx_path, threads,
                    benchmark(ONNXPredictor(onnx_path, num_threads=threads), BATCHES, iterations=ITERATIONS,
                              warmup=WARMUP))
    lines = ["| artifact | threads | batch | p50 ms | p95 ms | images/s |", "|---|---|---|---|---|---|"] + [
        f"| {r['artifact']} | {r['num_threads']} | {r['batch_size']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} "
        f"| {r['images_per_s']:.0f} |" for r in sorted(rows, key=lambda r: (r["batch_size"], r["num_threads"]))]
    table = "\n".join(lines) + "\n"
    load = [round(v, 2) for v in os.getloadavg()]
    payload = {"config": "ti", "load_average_start": load_start, "load_average_end": load, "rows": rows,
               "command": "python -m benchmarks.run --sections latency"}
    write_atomic(out / f"latency-{tag}.json", json.dumps(payload, indent=1))
    write_atomic(out / f"latency-{tag}.md", f"# Deployment latency, Ti-like, float32 ({tag})\n\n"
                 f"`python -m benchmarks.run --sections latency`; {os.cpu_count()} CPUs, load average "
                 f"{load_start[0]} at the start, {load[0]} at the end (other jobs share the machine: "
                 f"compare rows of one run, not runs).\n\n{table}")
    print(table)


def main(argv=None):
    """Times one SavedModel with `--threads` TensorFlow threads; prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("savedmodel")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from keras_vit.export import SavedModelPredictor, benchmark

    rows = benchmark(SavedModelPredictor(args.savedmodel), BATCHES, iterations=args.iterations, warmup=args.warmup)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
