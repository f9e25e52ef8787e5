"""`python -m benchmarks.backends`: Keras' own steps against the bare
framework, on JAX and on PyTorch.

The Ti-like configuration (`CONFIGS["ti"]`: 32 px, patch 4, width 192, depth
6, 3 heads, MLP 768, 10 classes, batch 128), float32, random pixels. Each
backend runs in its own fresh process (``--child jax`` / ``--child torch``);
in it every contender is built and warmed up, then timed in turns (A B C ...)
for `--repeats` rounds of `--steps` calls each, so that the noise of a shared
machine hits them alike: the inference rows first, then the training rows,
the order turning by one each round (a call right after a training step runs
slower); the table gives the median images per second.

JAX (every step `jax.jit`-compiled):
  * `predict_on_batch` of `build_vit` (compiled with `jit_compile=True`)
    against `jax.jit(model.stateless_call)` on the same weights, with the
    output copied to the host in both;
  * `train_on_batch` against a hand-written jitted step: `stateless_call`,
    `jax.value_and_grad` of the same loss, and the same AdamW's
    `stateless_apply`, the state donated as Keras does;
  * keras-hub's `ViTBackbone` of the same size (`benchmarks.contenders`),
    its `predict_on_batch` and `train_on_batch`.
PyTorch (eager, as Keras' "auto" runs it):
  * `predict_on_batch` / `train_on_batch` of `build_vit` against timm's
    `VisionTransformer` of the same size in plain PyTorch (`eval()` under
    `torch.no_grad()`; a training step of AdamW on cross-entropy).

Results go to ``<out>/backends-cpu.json`` and ``.md``.

Example:
    python -m benchmarks.backends
    python -m benchmarks.backends --backends jax --repeats 7 --steps 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BACKENDS = ("jax", "torch")


def _timed(step, steps, batch_size):
    """Images per wall-clock second of `steps` calls of `step` (each call
    ends with its result on the host)."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def is_training(name):
    """Whether the row named `name` times a training step."""
    return "train" in name or name.endswith("step")


def _rounds(contenders, steps, repeats, batch_size, log):
    """Times every contender in turns; returns {name: median img/s}.

    Inference and training rows are timed as two groups, one after the
    other, and the order within a group turns by one each round: a call
    right after a training step runs slower (measured on JAX: a
    `predict_on_batch` timed after a train step, 284 img/s, the same
    after another prediction, 323), so no row may always follow one."""
    for step in contenders.values():  # compilation and a warm call
        step()
        step()
    rates = {name: [] for name in contenders}
    for group in ([n for n in contenders if not is_training(n)], [n for n in contenders if is_training(n)]):
        for round_ in range(repeats):
            turn = group[round_ % len(group):] + group[:round_ % len(group)]
            for name in turn:
                rates[name].append(_timed(contenders[name], steps, batch_size))
            log(f"   round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:,.0f}" for n in group))
    return {name: statistics.median(r) for name, r in rates.items()}


def jax_contenders(cfg):
    """The JAX rows: {name: a function that runs one timed call}."""
    import jax
    import keras
    import numpy as np

    from benchmarks.contenders import build_contender
    from benchmarks.measure import make_batch

    model = build_contender("keras_vit", cfg, jit_compile=True)
    x, y = make_batch(cfg)
    # copies: `train_on_batch` donates (deletes) the model's own buffers
    trainable = [jax.numpy.array(v.value, copy=True) for v in model.trainable_variables]
    non_trainable = [jax.numpy.array(v.value, copy=True) for v in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    # A second model for the hand-written train step, so that Keras' donated
    # buffers and ours never meet.
    direct = build_contender("keras_vit", cfg, jit_compile=True)
    optimizer, loss_fn = direct.optimizer, direct.loss
    optimizer.build(direct.trainable_variables)

    def loss_and_state(trainable, non_trainable, x, y):
        logits, non_trainable = direct.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, logits), non_trainable

    grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

    def train_step(state, x, y):
        trainable, non_trainable, optimizer_state = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_state)

    train_step = jax.jit(train_step, donate_argnums=0)
    state = [([v.value for v in direct.trainable_variables], [v.value for v in direct.non_trainable_variables],
              [v.value for v in optimizer.variables])]

    def direct_train():
        loss, state[0] = train_step(state[0], x, y)
        float(loss)

    hub = build_contender("keras_hub", cfg, jit_compile=True)
    return {
        "keras_vit predict_on_batch": lambda: model.predict_on_batch(x),
        "keras_vit jax.jit(stateless_call)": lambda: np.asarray(forward(trainable, non_trainable, x)),
        "keras_hub predict_on_batch": lambda: hub.predict_on_batch(x),
        "keras_vit train_on_batch": lambda: model.train_on_batch(x, y),
        "keras_vit hand-written jitted step": direct_train,
        "keras_hub train_on_batch": lambda: hub.train_on_batch(x, y),
    }, {"jax": jax.__version__, "keras": keras.__version__}


def torch_contenders(cfg):
    """The PyTorch rows: Keras (eager) against timm in plain PyTorch."""
    import keras
    import torch

    from benchmarks.contenders import build_contender
    from benchmarks.measure import make_batch
    from tests.conftest import import_timm

    timm = import_timm()
    model = build_contender("keras_vit", cfg, jit_compile=False)
    x, y = make_batch(cfg)
    torch.manual_seed(0)
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.hidden_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_dim / cfg.hidden_dim, num_classes=cfg.num_classes,
        global_pool="token", class_token=True)
    keras_params = model.count_params()
    timm_params = sum(p.numel() for p in reference.parameters())
    if keras_params != timm_params:
        raise ValueError(f"Parameter counts differ: keras_vit {keras_params:,}, timm {timm_params:,}")
    images = x.detach().permute(0, 3, 1, 2).contiguous() / 127.5 - 1.0  # NCHW in [-1, 1]
    labels = y.detach().long()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def timm_predict():
        reference.eval()
        with torch.no_grad():
            reference(images).numpy()

    def timm_train():
        reference.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(reference(images), labels)
        loss.backward()
        optimizer.step()
        loss.item()

    return {
        "keras_vit predict_on_batch": lambda: model.predict_on_batch(x),
        "timm eager (no_grad)": timm_predict,
        "keras_vit train_on_batch": lambda: model.train_on_batch(x, y),
        "timm eager train step": timm_train,
    }, {"torch": torch.__version__, "timm": timm.__version__, "keras": keras.__version__,
        "torch_threads": torch.get_num_threads(), "params": keras_params}


def run_child(backend, steps, repeats):
    """Runs in the backend's own process; prints one JSON line."""
    from benchmarks.contenders import CONFIGS

    cfg = CONFIGS["ti"]
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    contenders, versions = (jax_contenders if backend == "jax" else torch_contenders)(cfg)
    log(f"{backend}: built in {time.perf_counter() - start:.0f} s")
    rates = _rounds(contenders, steps, repeats, cfg.batch_size, log)
    print(json.dumps({"backend": backend, "img_s": rates, "versions": versions, "steps": steps,
                      "repeats": repeats, "batch_size": cfg.batch_size, "config": cfg.__dict__}))


def table(results):
    """Markdown table of every backend's rows, each against its baseline."""
    baselines = {"jax": ("keras_vit jax.jit(stateless_call)", "keras_vit hand-written jitted step"),
                 "torch": ("timm eager (no_grad)", "timm eager train step")}
    lines = ["| backend | contender | img/s | vs. bare framework |", "|---|---|---|---|"]
    for result in results:
        rates = result["img_s"]
        predict_base, train_base = (rates.get(b) for b in baselines[result["backend"]])
        for name, rate in rates.items():
            base = train_base if is_training(name) else predict_base
            lines.append(f"| {result['backend']} | {name} | {rate:,.0f} | {rate / base:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: jax,torch")
    parser.add_argument("--steps", type=int, default=3, help="calls per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, args.steps, args.repeats)
    from benchmarks.run import write_atomic

    repo = str(Path(__file__).resolve().parents[1])
    results = []
    for backend in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        env["PYTHONPATH"] = os.pathsep.join([repo] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        print(f"{backend}: running ...", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.backends", "--child", backend, "--steps", str(args.steps),
             "--repeats", str(args.repeats)], env=env, cwd=repo, stdout=subprocess.PIPE, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            raise SystemExit(f"{backend}: the benchmark process failed ({proc.returncode})")
        results.append(json.loads(lines[-1]))
    text = table(results)
    environment = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
                   "load_average_end": os.getloadavg()}
    write_atomic(args.out / "backends-cpu.json", json.dumps(
        {"environment": environment, "results": results}, indent=1))
    write_atomic(args.out / "backends-cpu.md", (
        "# Keras' steps against the bare framework (Ti-like, batch 128, CPU)\n\n"
        f"`python -m benchmarks.backends --steps {args.steps} --repeats {args.repeats}`; median images per "
        f"second over the rounds; {os.cpu_count()} cores, load average at the end "
        f"{environment['load_average_end'][0]:.1f}.\n\n" + text))
    print(text)


if __name__ == "__main__":
    main()
