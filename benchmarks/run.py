"""`python -m benchmarks.run`: keras_vit against keras-hub's ViTBackbone.

One process and one run: for every configuration and `jit_compile` mode both
contenders are built, their first steps timed (tracing and compilation), and
then their training and inference throughput are timed in turns (A B A B ...)
for `--repeats` rounds, so that the noise of a shared machine hits them alike;
the tables report medians. Peak memory is measured afterwards in a fresh
subprocess per contender (see `benchmarks.measure`). Extra sections
(`--sections`) measure cost against image size, the tf.data pipeline against
the model's consumption, TFLite latency, and the latency of the SavedModel,
TFLite and ONNX (ONNX Runtime) artifacts side by side.

Results go to ``<out>/suite-<backend>-<device>[-<tag>].json`` and ``.md``.

Example:
    python -m benchmarks.run                       # Ti-like and S/16, jit on/off
    python -m benchmarks.run --configs ti --repeats 5 --jit on
    KERAS_BACKEND=jax python -m benchmarks.run --configs b16-gpu   # on a GPU
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import keras

from benchmarks.contenders import CONFIGS, CONTENDERS, build_contender
from benchmarks.measure import Runner, make_batch, peak_memory

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("suite", "scaling", "pipeline", "tflite", "latency")
JIT_MODES = {"both": (False, True), "on": (True,), "off": (False,)}


def log(message):
    """Prints a progress line (flushed, so it shows while a step runs)."""
    print(message, flush=True)


def device_name():
    """"cpu" or the accelerator platform of the current backend, without
    importing a framework the backend does not need."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def cpu_name():
    """The CPU's model name (Linux's /proc/cpuinfo, else `platform.processor()`),
    so that results from different machines can be told apart."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def environment():
    """Versions and machine facts stored with every result."""
    info = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": keras.backend.backend(),
        "device": device_name(),
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_name(),
        "load_average_start": os.getloadavg(),
        "python": sys.version.split()[0],
    }
    for module in ("tensorflow", "jax", "torch", "keras_hub"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    return info


def run_suite(configs, contenders, jit_modes, repeats, memory=True):
    """Measures every contender on every configuration and jit mode.

    Args:
        configs: list of `BenchConfig`.
        contenders: names from `CONTENDERS`.
        jit_modes: iterable of bools for `jit_compile`.
        repeats: rounds of alternating timed runs; medians are reported.
        memory: whether to measure peak training memory (subprocesses).

    Returns:
        A list of result rows (dicts), one per (config, jit, contender).

    Example:
    >>> rows = run_suite([CONFIGS["tiny"]], ["keras_vit"], [False], repeats=1, memory=False)
    >>> rows[0]["train_img_s"] > 0
    True
    """
    rows = []
    for cfg in configs:
        for jit in jit_modes:
            log(f"== {cfg.name}: {cfg.image_size}px patch {cfg.patch_size} width {cfg.hidden_dim} "
                f"depth {cfg.depth} batch {cfg.batch_size} {cfg.dtype_policy} jit_compile={jit}")
            batch = make_batch(cfg)
            # Build every contender before running any: seeding the builds
            # (`set_random_seed`) would make TensorFlow retrace earlier models.
            runners = {name: Runner(build_contender(name, cfg, jit), batch) for name in contenders}
            group = []
            for name in contenders:
                row = {
                    "config": cfg.name, "jit_compile": jit, "contender": name,
                    "params": runners[name].model.count_params(), "batch_size": cfg.batch_size,
                    "image_size": cfg.image_size, "tokens": cfg.tokens,
                    "dtype_policy": cfg.dtype_policy, "steps": cfg.steps,
                    "train_samples": [], "infer_samples": [], "train_cpu_samples": [], "infer_cpu_samples": [],
                }
                row.update(runners[name].first_steps())
                log(f"   {name}: {row['params']:,} params, first train step "
                    f"{row['train_first_step_s']:.1f} s, first predict {row['predict_first_step_s']:.1f} s")
                group.append(row)
            counts = {row["params"] for row in group}
            if len(counts) != 1:
                raise RuntimeError(f"The contenders' parameter counts differ: {group}")
            for row in group:  # an untimed round: the first calls after a switch
                runners[row["contender"]].train_throughput(1)
                runners[row["contender"]].infer_throughput(1)
            for repeat in range(repeats):
                for row in group:
                    runner = runners[row["contender"]]
                    for kind, measure in (("train", runner.train_throughput), ("infer", runner.infer_throughput)):
                        wall, cpu = measure(cfg.steps)
                        row[f"{kind}_samples"].append(wall)
                        row[f"{kind}_cpu_samples"].append(cpu)
                log(f"   repeat {repeat + 1}/{repeats}: " + ", ".join(
                    f"{r['contender']} train {r['train_samples'][-1]:.1f} ({r['train_cpu_samples'][-1]:.1f}/CPU-s) "
                    f"infer {r['infer_samples'][-1]:.1f} ({r['infer_cpu_samples'][-1]:.1f}/CPU-s) img/s"
                    for r in group))
            del runners, batch
            keras.backend.clear_session()
            gc.collect()
            for row in group:
                for kind in ("train", "infer"):
                    row[f"{kind}_img_s"] = statistics.median(row[f"{kind}_samples"])
                    row[f"{kind}_img_cpu_s"] = statistics.median(row[f"{kind}_cpu_samples"])
                if memory:
                    row.update(peak_memory(row["contender"], cfg, jit))
                    log(f"   {row['contender']}: peak training memory "
                        f"{row.get('peak_mb', float('nan')):.0f} MB {row.get('error', '')}")
            rows.extend(group)
    return rows


def ratio_rows(rows, numerator="keras_vit", denominator="keras_hub"):
    """keras_vit / keras_hub ratios of every measured quantity, per group."""
    out = []
    keys = ("train_img_s", "infer_img_s", "train_img_cpu_s", "infer_img_cpu_s",
            "train_first_step_s", "predict_first_step_s", "peak_mb")
    by_group = {}
    for row in rows:
        by_group.setdefault((row["config"], row["jit_compile"]), {})[row["contender"]] = row
    for (config, jit), group in by_group.items():
        if numerator in group and denominator in group:
            a, b = group[numerator], group[denominator]
            out.append({
                "config": config, "jit_compile": jit,
                **{k: a[k] / b[k] for k in keys if a.get(k) and b.get(k)},
            })
    return out


def _fmt(value, digits=1, suffix=""):
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


def suite_markdown(rows, ratios, env):
    """The suite's results as a Markdown table with a ratio line per group."""
    lines = [
        f"Measured {env['date_utc']} on {env['backend']}/{env['device']} "
        f"({env['cpu_count']} CPUs, load average at start {env['load_average_start'][0]:.1f}); "
        f"medians of {len(rows[0]['train_samples']) if rows else 0} alternating repeats.",
        "",
        "Throughput per wall-clock second, and per second of process CPU time (steadier on a shared machine).",
        "",
        "| config | jit | contender | params | train img/s | infer img/s | train img/CPU-s | infer img/CPU-s "
        "| first train step s | first predict s | peak train MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratio_of = {(r["config"], r["jit_compile"]): r for r in ratios}
    for i, row in enumerate(rows):
        lines.append(
            f"| {row['config']} | {row['jit_compile']} | {row['contender']} | {row['params']:,} "
            f"| {_fmt(row['train_img_s'])} | {_fmt(row['infer_img_s'])} "
            f"| {_fmt(row['train_img_cpu_s'])} | {_fmt(row['infer_img_cpu_s'])} "
            f"| {_fmt(row['train_first_step_s'])} | {_fmt(row['predict_first_step_s'])} "
            f"| {_fmt(row.get('peak_mb'), 0)} |"
        )
        last_of_group = i + 1 == len(rows) or (rows[i + 1]["config"], rows[i + 1]["jit_compile"]) != (
            row["config"], row["jit_compile"])
        ratio = ratio_of.get((row["config"], row["jit_compile"]))
        if last_of_group and ratio:
            lines.append(
                f"| {row['config']} | {row['jit_compile']} | **ratio keras_vit/keras_hub** | "
                f"| **{_fmt(ratio.get('train_img_s'), 2, '×')}** | **{_fmt(ratio.get('infer_img_s'), 2, '×')}** "
                f"| **{_fmt(ratio.get('train_img_cpu_s'), 2, '×')}** | **{_fmt(ratio.get('infer_img_cpu_s'), 2, '×')}** "
                f"| {_fmt(ratio.get('train_first_step_s'), 2, '×')} "
                f"| {_fmt(ratio.get('predict_first_step_s'), 2, '×')} | {_fmt(ratio.get('peak_mb'), 2, '×')} |"
            )
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    """Writes `text` to `path` through a temporary file and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_args(argv=None):
    """The command line of the suite."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="ti,s16",
                        help=f"comma-separated configurations: {', '.join(CONFIGS)} (default ti,s16)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated contenders: {', '.join(CONTENDERS)}")
    parser.add_argument("--jit", choices=tuple(JIT_MODES), default="both", help="jit_compile modes")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed rounds (default 3)")
    parser.add_argument("--steps", type=int, help="timed steps per round (default: per configuration)")
    parser.add_argument("--batch-size", type=int, help="override every configuration's batch size")
    parser.add_argument("--dtype-policy", choices=("float32", "mixed_bfloat16", "mixed_float16"),
                        help="override every configuration's dtype policy")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--sections", default="suite",
                        help=f"comma-separated sections: {', '.join(SECTIONS)}, or 'all' (default suite)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    parser.add_argument("--tag", help="suffix of the result file names (default none)")
    args = parser.parse_args(argv)
    args.configs = _split(args.configs, "configs", tuple(CONFIGS))
    args.contenders = _split(args.contenders, "contenders", CONTENDERS)
    args.sections = list(SECTIONS) if args.sections == "all" else _split(args.sections, "sections", SECTIONS)
    for name in ("repeats", "steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive int, got {value}")
    return args


def _split(text, name, accepted):
    items = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in items if item not in accepted]
    if bad or not items:
        raise SystemExit(f"--{name}: unknown value(s) {bad or text!r}. Accepted values: {', '.join(accepted)}")
    return items


def main(argv=None):
    """Runs the selected sections and writes their results; returns 0.

    Args:
        argv: command-line arguments (see `--help`); None reads `sys.argv`.

    Example:
    >>> main(["--configs", "tiny", "--contenders", "keras_vit", "--repeats", "1",
    ...       "--jit", "off", "--no-memory", "--out", "/tmp/bench"])
    0
    """
    args = parse_args(argv)
    env = environment()
    tag = f"{env['backend']}-{env['device']}" + (f"-{args.tag}" if args.tag else "")
    out = Path(args.out)
    log(f"keras_vit benchmark suite on {tag}; sections: {', '.join(args.sections)}")
    if "suite" in args.sections:
        configs = [CONFIGS[name].replace(
            steps=args.steps, batch_size=args.batch_size, dtype_policy=args.dtype_policy) for name in args.configs]
        rows = run_suite(configs, args.contenders, JIT_MODES[args.jit], args.repeats, not args.no_memory)
        ratios = ratio_rows(rows)
        env = {**environment(), "date_utc": env["date_utc"], "load_average_start": env["load_average_start"],
               "load_average_end": os.getloadavg()}
        table = suite_markdown(rows, ratios, env)
        command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
        payload = {"command": command.strip(), "environment": env, "rows": rows, "ratios": ratios}
        write_atomic(out / f"suite-{tag}.json", json.dumps(payload, indent=1))
        write_atomic(out / f"suite-{tag}.md", f"# Suite ({tag})\n\n`{command.strip()}`\n\n{table}")
        print(table)
    for section in args.sections:
        if section != "suite":
            from importlib import import_module

            import_module(f"benchmarks.{section}").run_section(args, out, tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
