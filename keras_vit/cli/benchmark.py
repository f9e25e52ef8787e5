"""`keras-vit benchmark`: latency and throughput of model artifacts.

The performance suite that compares keras_vit with keras-hub lives in the
source tree's `benchmarks/` (``python -m benchmarks.run``), which the
package never imports.
"""

from keras_vit.cli.common import format_table, non_negative_int, positive_int, size_of


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "benchmark", help="Latency (p50/p95) and throughput of artifacts at batch 1 and batch N.",
        description="Times .keras files, SavedModel directories, .tflite and .onnx files on random images. "
        "For the keras_vit vs keras-hub suite, run `python -m benchmarks.run` in a source checkout.")
    parser.add_argument("models", nargs="+", help=".keras files, SavedModel directories, .tflite or .onnx files")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="N, the second batch size (default 8)")
    parser.add_argument("--iterations", type=positive_int, default=50)
    parser.add_argument("--warmup", type=non_negative_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=None, help="LiteRT and ONNX Runtime CPU threads")
    parser.add_argument("--image-size", type=positive_int, nargs=2, metavar=("H", "W"), help="for dynamic-size models")
    parser.set_defaults(run=run)
    return parser


def run(args):
    from keras_vit.export import benchmark, load_predictor

    rows = []
    for path in args.models:
        predictor = load_predictor(path, num_threads=args.threads)
        for row in benchmark(predictor, (1, args.batch_size), iterations=args.iterations,
                             warmup=args.warmup, image_size=args.image_size):
            rows.append([path, predictor.kind, f"{size_of(path) / 1024:.1f}", row["batch_size"],
                         f"{row['p50_ms']:.3f}", f"{row['p95_ms']:.3f}", f"{row['images_per_s']:.1f}"])
    print(format_table(["artifact", "kind", "KiB", "batch", "p50 ms", "p95 ms", "images/s"], rows))
    return 0
