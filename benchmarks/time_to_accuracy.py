"""Time to accuracy: `keras-vit train --time-budget B` for a few budgets,
each in a fresh process, then test accuracy against wall seconds (a table
and a PNG plot).

    python -m benchmarks.time_to_accuracy --dataset digits --budgets 60,120,180
    python -m benchmarks.time_to_accuracy --dataset ../shared/data/mnist_train.npz --budgets 10m
    python -m benchmarks.time_to_accuracy --dataset digits --budgets none   # the default recipe, no budget
    python -m benchmarks.time_to_accuracy --targets    # issue 25's targets, one command: MNIST 2m and 10m, digits
    KERAS_BACKEND=jax python -m benchmarks.time_to_accuracy --dataset digits --budgets 30,none   # the backend axis

`--targets` runs the three target commands (MNIST `--time-budget 2m`, goal
99.0 %; MNIST `--time-budget 10m`, goal 99.5 %; digits with no flags, goal
99.0 % within 90 s), says of each whether it met its goal, and adds them to
the same table and plot. Every row records the machine's load average
(`uptime`) at its start and end: on a shared machine a budgeted run gets
fewer steps, so numbers taken under load are marked as such.

The backend is Keras' (`KERAS_BACKEND`, TensorFlow when unset): each row
records it, a run replaces only the row of the same data, budget and
backend, and the plot draws one curve per data set and backend.

Each run's wall time is measured around the whole command (start-up,
data loading, compilation, training, evaluation, saving). The accuracy is
on the test split `keras-vit train` carves from the data (it never trains
or validates on it). Extra arguments after `--` go to `keras-vit train`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import cpu_name, write_atomic
from keras_vit.training.budget import parse_duration

RESULTS = Path(__file__).parent / "results"
# ../shared/data/mnist_train.npz beside the checkout (KERAS_VIT_MNIST names another file)
MNIST = os.environ.get("KERAS_VIT_MNIST", str(Path(__file__).resolve().parents[1].parent / "shared" / "data" /
                                              "mnist_train.npz"))
# (data, budget, goal test accuracy, goal wall seconds or None): issue 25's targets
TARGETS = ((MNIST, "2m", 0.990, None), (MNIST, "10m", 0.995, None), ("digits", "none", 0.990, 90.0))


def backend():
    """The Keras backend the runs use: `KERAS_BACKEND`, else TensorFlow."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def run_budget(dataset, budget, run_dir, extra=()):
    """Runs one `keras-vit train` on this backend; returns a result row."""
    # --restart: a run directory kept from an earlier benchmark (--runs-dir) is measured again, not resumed
    args = [sys.executable, "-m", "keras_vit.cli", "train", "--dataset", dataset, "--run-dir", str(run_dir),
            "--verbose", "0", "--restart", *extra]
    if budget != "none":
        args += ["--time-budget", budget]
    load_before = round(os.getloadavg()[0], 2)
    start = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    wall = time.time() - start
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "console.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"keras-vit train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    config = json.loads((Path(run_dir) / "config.json").read_text())
    plan_file = Path(run_dir) / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else None
    return dict(
        dataset=dataset, budget=budget, backend=backend(), wall_seconds=round(wall, 1), test_accuracy=metrics["test"]["accuracy"],
        epochs=metrics["epochs"], recipe=config.get("recipe"),
        model=f"{config.get('image_size')}px p{config.get('patch_size')}"
              f"{'s' + str(config['stride']) if config.get('stride') else ''}"
              f"{' stem ' + ','.join(map(str, config['conv_stem'])) if config.get('conv_stem') else ''} "
              f"w{config.get('hidden_dim')} "
              f"d{config.get('depth')}",
        steps=plan["sessions"][-1]["last_step"] if plan else None,
        load=f"{load_before}-{round(os.getloadavg()[0], 2)}",  # 1-minute load average at the start and end
        machine=f"{cpu_name()}, {os.cpu_count()} CPUs",
        tools={k: v.get("value") for k, v in plan["plan"].get("tools", {}).items()} if plan else None,
        # from the process start to the saved model, as the run measured it (the rest of `wall` is the exit)
        run_seconds=plan["sessions"][-1]["total_seconds"] if plan else None)


def row_backend(row):
    """A row's backend (rows written before the backend axis ran on TensorFlow)."""
    return row.get("backend", "tensorflow")


def curve(row):
    """A row's curve in the plot and group in the table: (data file name, backend)."""
    return Path(row["dataset"]).name, row_backend(row)


def key(row):
    """The rows one run replaces: same data file name, budget and backend."""
    return curve(row) + (row["budget"],)


def tools_text(row):
    """The budget tools a row's run turned on, for a table cell."""
    return ", ".join(f"{k} {v}" for k, v in (row.get("tools") or {}).items() if v) or "-"


def plot(rows, path):
    """Test accuracy against wall seconds, a curve per data set (the
    time-to-accuracy curve over the budgets), with the targets' goals."""
    from keras_vit.utils.io import new_figure, save_figure

    fig = new_figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for dataset, name in sorted({curve(r) for r in rows}):
        points = sorted((r["wall_seconds"], r["test_accuracy"]) for r in rows if curve(r) == (dataset, name))
        ax.plot(*zip(*points), marker="o", linestyle="-" if name == "tensorflow" else "--",
                label=f"{dataset} ({name})")
    for dataset, budget, goal, wall in TARGETS:
        seconds = wall or (parse_duration(budget) if budget != "none" else None)
        if seconds:
            ax.plot([seconds], [goal], marker="*", markersize=12, linestyle="none", color="black")
            ax.annotate(f"goal {Path(dataset).stem} {budget}", (seconds, goal), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    ax.set_xlabel("wall seconds (whole command)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.time_to_accuracy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--budgets", default="60,120,180", help="comma-separated budgets, or 'none'")
    parser.add_argument("--targets", action="store_true", help="run issue 25's target commands instead")
    parser.add_argument("--out", default=str(RESULTS / "time-to-accuracy"))
    parser.add_argument("--runs-dir", help="keep each run directory (with its console.log) here (default: deleted)")
    parser.add_argument("extra", nargs="*", help="arguments for keras-vit train (after --)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    rows = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else []
    rows = list({key(r): r for r in rows}.values())  # the newest row of each key (rows are kept in run order)
    runs = ([(d, b) for d, b, _, _ in TARGETS] if args.targets
            else [(args.dataset, budget) for budget in args.budgets.split(",")])
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, budget in runs:
            name = f"{Path(dataset).stem}-{budget}"
            row = run_budget(dataset, budget, Path(args.runs_dir or tmp) / name, args.extra)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if key(r) != key(row)] + [row]
            verdicts += [verdict(row, goal, wall) for d, b, goal, wall in TARGETS
                         if args.targets and (d, b) == (dataset, budget)]
    lines = write_results(rows, out)
    print("\n".join(lines + verdicts))


def write_results(rows, out):
    """Writes the rows to `out`.json, a table to `out`.md and the plot to
    `out`.png; returns the table's lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.with_suffix(".json"), json.dumps(rows, indent=1))
    lines = ["| data | backend | budget | wall s | test accuracy | epochs | steps | recipe | model | tools | load | "
             "machine |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (*curve(r), r["wall_seconds"])):
        lines.append(f"| {Path(r['dataset']).name} | {row_backend(r)} | {r['budget']} | {r['wall_seconds']} | "
                     f"{r['test_accuracy']:.4f} | "
                     f"{r['epochs']} | {r['steps']} | {r['recipe']} | {r['model']} | {tools_text(r)} | "
                     f"{r.get('load', 'not recorded')} | {r.get('machine', 'not recorded')} |")
    write_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    plot(rows, out.with_suffix(".png"))
    return lines


def verdict(row, goal, wall):
    """One line: whether a target run met its goal."""
    met = row["test_accuracy"] >= goal and (wall is None or row["wall_seconds"] <= wall)
    limit = f" within {wall:.0f} s" if wall else ""
    return (f"{'MET' if met else 'MISSED'}: {Path(row['dataset']).stem} {row['budget']} ({row_backend(row)}): "
            f"{100 * row['test_accuracy']:.2f} % in {row['wall_seconds']} s (goal {100 * goal:.1f} %{limit}; "
            f"load {row['load']})")


if __name__ == "__main__":
    main()
