"""Section "pipeline": `keras_vit.data.load_data` throughput against the
model's consumption.

The source is an in-memory CIFAR-shaped array set (random uint8 images,
32x32x3, 10 classes), so nothing is downloaded. Each pipeline is iterated
for one untimed epoch (it fills the cache) and then timed over whole epochs;
the model's consumption is the Ti-like keras_vit's training throughput
(`train_on_batch`, jit_compile off) measured in the same process. Both run
alone, one after the other, so the ratio says how much headroom the input
pipeline leaves when both share the machine.
"""

import time

import numpy as np

from benchmarks.contenders import CONFIGS, build_contender
from benchmarks.measure import Runner, make_batch

AUGMENT_SETTINGS = ("none", "light", "medium")


def pipeline_throughput(dataset, epochs=2):
    """Images per second of iterating `dataset` for `epochs` epochs, after
    one untimed epoch.

    Example:
    >>> train, _, _, _ = load_data("digits", 16, 32)
    >>> pipeline_throughput(train, epochs=1) > 0
    True
    """
    for _ in dataset:
        pass
    images, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch_images, _ in dataset:
            images += int(batch_images.shape[0])
    return images / (time.perf_counter() - start)


def run_section(args, out, tag):
    """Measures the pipelines and the model, writes ``pipeline-<tag>.json/.md``."""
    import json

    from benchmarks.run import log, write_atomic
    from keras_vit.data import load_data

    cfg = CONFIGS["ti"].replace(batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4096, cfg.image_size, cfg.image_size, 3), dtype="uint8")
    y = rng.integers(0, cfg.num_classes, (4096,))
    rows = []
    for augment in AUGMENT_SETTINGS:
        train, _, _, _ = load_data(
            (x, y), image_size=cfg.image_size, batch_size=cfg.batch_size, label_mode="categorical",
            augment=None if augment == "none" else augment, validation_split=0.0, test_split=0.0,
        )
        rate = pipeline_throughput(train)
        rows.append({"pipeline": f"load_data(arrays, augment={augment!r})", "img_s": rate})
        log(f"   pipeline augment={augment}: {rate:,.0f} img/s")
    runner = Runner(build_contender("keras_vit", cfg, jit_compile=False), make_batch(cfg))
    runner.first_steps()
    model_rate = float(np.median([runner.train_throughput(cfg.steps)[0] for _ in range(args.repeats)]))
    log(f"   model (ti, keras_vit, train): {model_rate:,.1f} img/s")
    for row in rows:
        row["ratio_to_model"] = row["img_s"] / model_rate
    lines = [
        f"Model consumption (ti, keras_vit, training, jit off): {model_rate:,.1f} img/s.", "",
        "| pipeline | img/s | × model consumption |", "|---|---|---|",
    ] + [f"| {r['pipeline']} | {r['img_s']:,.0f} | {r['ratio_to_model']:,.1f}× |" for r in rows]
    table = "\n".join(lines) + "\n"
    write_atomic(out / f"pipeline-{tag}.json", json.dumps(
        {"model_train_img_s": model_rate, "batch_size": cfg.batch_size, "rows": rows}, indent=1))
    write_atomic(out / f"pipeline-{tag}.md", f"# tf.data pipeline vs model ({tag})\n\n{table}")
    print(table)
