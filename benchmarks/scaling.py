"""Section "scaling": cost of the Ti-like keras_vit per image as the image
(and so the token sequence) grows, with a log-log plot.

Patch 4, width 192, depth 6; images 32 to 128 px give 65 to 1025 tokens.
Attention costs grow with the square of the sequence and the rest linearly,
so the slope of the plot rises from about 1 towards 2.
"""

import json
import statistics

IMAGE_SIZES = (32, 64, 96, 128)


def run_section(args, out, tag):
    """Times training and inference per image for every size, writes
    ``scaling-<tag>.json/.md/.png``."""
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.contenders import CONFIGS, build_contender
    from benchmarks.measure import Runner, make_batch
    from benchmarks.run import log, write_atomic

    rows = []
    for size in IMAGE_SIZES:
        cfg = CONFIGS["ti"].replace(image_size=size, batch_size=args.batch_size or 16, steps=args.steps or 2)
        runner = Runner(build_contender("keras_vit", cfg, jit_compile=False), make_batch(cfg))
        runner.first_steps()
        train = statistics.median(runner.train_throughput(cfg.steps)[0] for _ in range(args.repeats))
        infer = statistics.median(runner.infer_throughput(cfg.steps)[0] for _ in range(args.repeats))
        rows.append({"image_size": size, "tokens": cfg.tokens, "batch_size": cfg.batch_size,
                     "train_ms_per_image": 1000 / train, "infer_ms_per_image": 1000 / infer})
        log(f"   scaling {size}px ({cfg.tokens} tokens): train {1000 / train:.1f} ms/img, "
            f"infer {1000 / infer:.1f} ms/img")
        del runner
        keras.backend.clear_session()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    tokens = [r["tokens"] for r in rows]
    for key, label in (("train_ms_per_image", "training"), ("infer_ms_per_image", "inference")):
        ax.loglog(tokens, [r[key] for r in rows], "o-", label=label)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("ms per image")
    ax.set_title(f"keras_vit Ti-like (width 192, depth 6), {tag}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = out / f"scaling-{tag}.png"
    out.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png)
    lines = ["| image px | tokens | train ms/img | infer ms/img |", "|---|---|---|---|"] + [
        f"| {r['image_size']} | {r['tokens']} | {r['train_ms_per_image']:.1f} | {r['infer_ms_per_image']:.1f} |"
        for r in rows]
    table = "\n".join(lines) + "\n"
    write_atomic(out / f"scaling-{tag}.json", json.dumps({"rows": rows}, indent=1))
    write_atomic(out / f"scaling-{tag}.md", f"# Cost vs sequence length ({tag})\n\n{table}\n![plot]({png.name})\n")
    print(table)
