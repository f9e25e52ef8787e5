"""`python -m benchmarks.onnx_latency`: ONNX Runtime latency of our
`export_onnx` file against timm's own ONNX export of the same architecture.

The Ti-like configuration (`CONFIGS["ti"]`: 32 px, patch 4, width 192, depth
6, 3 heads, MLP 768, 10 classes), float32. Ours: `build_vit` through
`keras_vit.export.export_onnx` (raw NHWC pixels in, probabilities out, the
rescaling and softmax inside). timm's: `VisionTransformer` of the same size
(the parameter counts are checked equal) through `timm.utils.onnx.onnx_export`
(its `torch.onnx.export` wrapper, TorchScript exporter; NCHW normalised
pixels in, logits out). Both files run in ONNX Runtime's CPU provider with
all graph optimisations, `intra_op_num_threads` 1 and all cores, at batch 1
and batch 32, in one process: every round times each file in turn
(`--iterations` calls each, after warm-up), so that the load of a shared
machine hits both alike; a row gives the median over the rounds of each
round's median latency. The ops ONNX Runtime runs after its optimisations
are counted per file (which fusions happened). Needs the TensorFlow backend,
torch and timm (the `dev` extra).

Results go to ``<out>/onnx-latency-cpu.json`` and ``.md``.

Example:
    python -m benchmarks.onnx_latency
    python -m benchmarks.onnx_latency --repeats 7 --iterations 20
"""

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BATCHES = (1, 32)


def export_both(cfg, folder):
    """Writes ``ours.onnx`` and ``timm.onnx`` for `cfg` into `folder`;
    returns their paths and the parameter count."""
    import keras

    from benchmarks.contenders import build_keras_vit
    from keras_vit.export import export_onnx
    from tests.conftest import import_timm

    keras.utils.set_random_seed(0)
    model = build_keras_vit(cfg)
    ours = export_onnx(model, os.path.join(folder, "ours.onnx"))
    timm = import_timm()
    import torch
    from timm.utils.onnx import onnx_export

    torch.manual_seed(0)
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.hidden_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_dim / cfg.hidden_dim, num_classes=cfg.num_classes,
        global_pool="token", class_token=True).eval()
    params = model.count_params()
    if params != sum(p.numel() for p in reference.parameters()):
        raise ValueError("keras_vit and timm models differ in size")
    theirs = os.path.join(folder, "timm.onnx")
    onnx_export(reference, theirs, input_size=(3, cfg.image_size, cfg.image_size), batch_size=1,
                opset=17, use_dynamo=False, check=True)
    return {"keras_vit": str(ours), "timm": theirs}, params


def session(path, threads, optimized=None):
    """An ONNX Runtime CPU session of `path` with `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized:
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def runtime_ops(path, folder):
    """{op type: count} of the graph ONNX Runtime runs for `path`."""
    import onnx

    optimized = os.path.join(folder, Path(path).stem + ".optimized.onnx")
    session(path, 1, optimized)
    graph = onnx.load(optimized).graph
    return dict(collections.Counter(node.op_type for node in graph.node).most_common())


def inputs_for(name, cfg, batch):
    rng = np.random.default_rng(batch)
    images = rng.uniform(0, 255, (batch, cfg.image_size, cfg.image_size, 3)).astype("float32")
    if name == "timm":  # NCHW in [-1, 1], as our model rescales inside
        return {"input0": np.ascontiguousarray(images.transpose(0, 3, 1, 2) / 127.5 - 1.0, dtype="float32")}
    return {"images": images}


def time_calls(sess, feed, iterations):
    """The median milliseconds of `iterations` calls."""
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(paths, cfg, threads_list, repeats, iterations):
    """Rows: per threads and batch, each file's median latency (ms)."""
    rows = []
    for threads in threads_list:
        sessions = {name: session(path, threads) for name, path in paths.items()}
        for batch in BATCHES:
            feeds = {name: {sess.get_inputs()[0].name: next(iter(inputs_for(name, cfg, batch).values()))}
                     for name, sess in sessions.items()}
            for name, sess in sessions.items():  # warm-up
                for _ in range(3):
                    sess.run(None, feeds[name])
            got = {name: [] for name in sessions}
            for _ in range(repeats):
                for name, sess in sessions.items():
                    got[name].append(time_calls(sess, feeds[name], iterations))
            for name, per_round in got.items():
                rows.append(dict(contender=name, threads=threads, batch_size=batch,
                                 p50_ms=round(statistics.median(per_round), 3),
                                 per_round_ms=[round(v, 3) for v in per_round]))
            print(f"threads {threads} batch {batch}: " + ", ".join(
                f"{r['contender']} {r['p50_ms']:.2f} ms" for r in rows[-len(sessions):]), flush=True)
    return rows


def table(rows):
    lines = ["| threads | batch | keras_vit ms | timm ms | keras_vit / timm |", "|---|---|---|---|---|"]
    keyed = {(r["contender"], r["threads"], r["batch_size"]): r["p50_ms"] for r in rows}
    for threads, batch in sorted({(r["threads"], r["batch_size"]) for r in rows}):
        ours, theirs = keyed[("keras_vit", threads, batch)], keyed[("timm", threads, batch)]
        lines.append(f"| {threads} | {batch} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (the median is reported)")
    parser.add_argument("--iterations", type=int, default=20, help="calls per file per round")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    import onnxruntime as ort

    from benchmarks.contenders import CONFIGS
    from benchmarks.run import write_atomic

    cfg = CONFIGS["ti"]
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        paths, params = export_both(cfg, folder)
        ops = {name: runtime_ops(path, folder) for name, path in paths.items()}
        rows = measure(paths, cfg, sorted({1, os.cpu_count()}), args.repeats, args.iterations)
    environment = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
                   "load_average_start": load_start, "load_average_end": os.getloadavg(),
                   "onnxruntime": ort.__version__, "params": params,
                   "command": f"python -m benchmarks.onnx_latency --repeats {args.repeats} "
                              f"--iterations {args.iterations}"}
    text = table(rows)
    write_atomic(args.out / "onnx-latency-cpu.json", json.dumps(
        {"environment": environment, "rows": rows, "runtime_ops": ops}, indent=1))
    write_atomic(args.out / "onnx-latency-cpu.md", (
        "# ONNX Runtime latency: our export_onnx file against timm's own ONNX export (Ti-like, CPU)\n\n"
        f"`{environment['command']}`; median over the rounds of each round's median latency; "
        f"{os.cpu_count()} cores, load average {load_start[0]:.1f} at the start, "
        f"{environment['load_average_end'][0]:.1f} at the end (a shared machine: compare rows of one run).\n\n"
        + text + "\nOps ONNX Runtime runs after its graph optimisations:\n\n"
        + "\n".join(f"- {name}: {json.dumps(counts)}" for name, counts in ops.items()) + "\n"))
    print(text)


if __name__ == "__main__":
    main()
