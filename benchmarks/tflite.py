"""Section "tflite": LiteRT latency of the Ti-like model at batch 1,
float32 against full-integer int8 (`keras_vit.export.export_tflite`).

The model has random weights (latency does not depend on them); int8 is
calibrated on random images. Needs the TensorFlow backend.
"""

import json
import os
import tempfile

import numpy as np


def run_section(args, out, tag):
    """Exports, times with `keras_vit.export.benchmark`, writes
    ``tflite-<tag>.json/.md``."""
    import keras

    from benchmarks.contenders import CONFIGS, build_keras_vit
    from benchmarks.run import log, write_atomic

    if keras.backend.backend() != "tensorflow":
        log("   tflite: skipped (TFLite export needs KERAS_BACKEND=tensorflow)")
        return
    from keras_vit.export import TFLitePredictor, benchmark, export_tflite

    cfg = CONFIGS["ti"]
    keras.utils.set_random_seed(0)
    model = build_keras_vit(cfg)
    calibration = np.random.default_rng(0).uniform(0, 255, (32, cfg.image_size, cfg.image_size, 3))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for quantization in ("float32", "int8"):
            path = os.path.join(tmp, f"ti_{quantization}.tflite")
            export_tflite(model, path, quantization,
                          representative_data=calibration if quantization == "int8" else None)
            for threads in (1, 2):
                result = benchmark(TFLitePredictor(path, num_threads=threads), (1,), iterations=100, warmup=10)[0]
                rows.append({"quantization": quantization, "num_threads": threads,
                             "size_mb": os.path.getsize(path) / 2**20, **result})
                log(f"   tflite {quantization} threads={threads}: p50 {result['p50_ms']:.2f} ms")
    base = {r["num_threads"]: r["p50_ms"] for r in rows if r["quantization"] == "float32"}
    lines = ["| quantization | threads | size MB | p50 ms | p95 ms | speed-up vs float32 |",
             "|---|---|---|---|---|---|"] + [
        f"| {r['quantization']} | {r['num_threads']} | {r['size_mb']:.1f} | {r['p50_ms']:.2f} "
        f"| {r['p95_ms']:.2f} | {base[r['num_threads']] / r['p50_ms']:.2f}× |" for r in rows]
    table = "\n".join(lines) + "\n"
    write_atomic(out / f"tflite-{tag}.json", json.dumps({"config": "ti", "batch_size": 1, "rows": rows}, indent=1))
    write_atomic(out / f"tflite-{tag}.md", f"# TFLite latency, Ti-like, batch 1 ({tag})\n\n{table}")
    print(table)
