"""Section "pipeline": `keras_vit.data.load_data` throughput and CPU cost
against the model's.

The source is an in-memory CIFAR-shaped array set (random uint8 images,
32x32x3, 10 classes), so nothing is downloaded. Each pipeline is iterated
for one untimed epoch (it fills the cache) and then timed over whole epochs;
the model's consumption is the Ti-like keras_vit's training throughput
(`train_on_batch`, jit_compile off) measured in the same process. Both run
alone, one after the other. In `fit` they share the cores, so what a
pipeline costs a run is its CPU time: the last column gives a pipeline's
CPU seconds per image over the model's training CPU seconds per image.
"""

import time

import numpy as np

from benchmarks.contenders import CONFIGS, build_contender
from benchmarks.measure import Runner, make_batch

AUGMENT_SETTINGS = ("none", "light", "medium", "strong")


def pipeline_throughput(dataset, epochs=2):
    """(images per second, CPU seconds per image) of iterating `dataset`
    for `epochs` epochs, after one untimed epoch.

    Example:
    >>> train, _, _, _ = load_data("digits", 16, 32)
    >>> rate, cpu = pipeline_throughput(train, epochs=1)
    >>> rate > 0 and cpu > 0
    True
    """
    for _ in dataset:
        pass
    images, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for batch_images, _ in dataset:
            images += int(batch_images.shape[0])
    return images / (time.perf_counter() - start), (time.process_time() - cpu) / images


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
        rate, cpu = pipeline_throughput(train)
        rows.append({"pipeline": f"load_data(arrays, augment={augment!r})", "img_s": rate, "cpu_s_per_image": cpu})
        log(f"   pipeline augment={augment}: {rate:,.0f} img/s, {cpu * 1e3:.3f} CPU ms an image")
    runner = Runner(build_contender("keras_vit", cfg, jit_compile=False), make_batch(cfg))
    runner.first_steps()
    rounds = [runner.train_throughput(cfg.steps) for _ in range(args.repeats)]
    model_rate, model_cpu_rate = (float(np.median([r[i] for r in rounds])) for i in (0, 1))
    log(f"   model (ti, keras_vit, train): {model_rate:,.1f} img/s, {1e3 / model_cpu_rate:.2f} CPU ms an image")
    for row in rows:
        row["ratio_to_model"] = row["img_s"] / model_rate
        row["cpu_share_of_model"] = row["cpu_s_per_image"] * model_cpu_rate
    lines = [
        f"Model consumption (ti, keras_vit, training, jit off): {model_rate:,.1f} img/s, "
        f"{1e3 / model_cpu_rate:.2f} CPU ms an image.", "",
        "| pipeline | img/s | × model consumption | CPU ms an image | CPU / model's CPU |", "|---|---|---|---|---|",
    ] + [f"| {r['pipeline']} | {r['img_s']:,.0f} | {r['ratio_to_model']:,.1f}× | {r['cpu_s_per_image'] * 1e3:.3f} "
         f"| {r['cpu_share_of_model']:.1%} |" for r in rows]
    table = "\n".join(lines) + "\n"
    write_atomic(out / f"pipeline-{tag}.json", json.dumps(
        {"model_train_img_s": model_rate, "model_train_cpu_img_s": model_cpu_rate, "batch_size": cfg.batch_size,
         "rows": rows}, indent=1))
    write_atomic(out / f"pipeline-{tag}.md", f"# tf.data pipeline vs model ({tag})\n\n{table}")
    print(table)
