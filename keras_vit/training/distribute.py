"""Precision and distribution: mixed-precision policies, `tf.distribute`
strategies (or Keras' JAX `DataParallel`), `TF_CONFIG` workers, and the
preparation `fit` needs under `MultiWorkerMirroredStrategy`.

Mixed precision works on every backend; `tf.distribute` strategies and
`TF_CONFIG` multi-worker training are TensorFlow-only (`get_strategy` says
so, with what to use instead, on JAX and PyTorch)."""

import json
import os

import keras

from keras_vit.utils.validation import check_choice

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "mirrored", "multi_worker", "tpu")


def set_precision(precision):
    """Sets Keras' global dtype policy; build models after calling it.

    Keras scales the loss itself under "mixed_float16".

    Args:
        precision: "float32", "mixed_float16" or "mixed_bfloat16".

    Example:
    >>> set_precision("mixed_bfloat16"); set_precision("float32")
    """
    check_choice(precision, "precision", PRECISIONS)
    keras.mixed_precision.set_global_policy(precision)


def _tf_config():
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError as err:
        raise ValueError(f"The environment variable TF_CONFIG is not valid JSON ({err}); unset it, or set it "
                         'as tf.distribute expects: {"cluster": {...}, "task": {"type": ..., "index": ...}}.') from None
    if not isinstance(config, dict):
        raise ValueError(f"The environment variable TF_CONFIG must hold a JSON object. Received: {config!r}")
    return config


def worker_info():
    """(task index, number of workers, is chief) from `TF_CONFIG`.

    Example:
    >>> worker_info()  # without TF_CONFIG
    (0, 1, True)
    """
    config = _tf_config()
    cluster, task = config.get("cluster", {}), config.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return index, max(workers, 1), is_chief


def get_strategy(strategy="auto"):
    """Returns the distribution strategy to build and train under.

    On TensorFlow: "auto" picks `MultiWorkerMirroredStrategy` when
    `TF_CONFIG` names several workers, `MirroredStrategy` with several
    GPUs, else the default strategy; "mirrored", "multi_worker" (reads
    `TF_CONFIG`) and "tpu" ask for one. A multi-worker strategy must be
    created before any other TensorFlow work in the process.

    On JAX: "auto" sets `keras.distribution.DataParallel` when there are
    several devices and returns None. On PyTorch: "auto" returns None (one
    device). `tf.distribute` strategies ("mirrored", "multi_worker", "tpu",
    a `tf.distribute.Strategy`, or several workers in `TF_CONFIG`) are
    TensorFlow-only and raise a ValueError on the other backends: use
    strategy="auto" on JAX (data parallel over the local devices; across
    hosts, call `jax.distributed.initialize()` first) or run with
    KERAS_BACKEND=tensorflow.

    Args:
        strategy: "auto", "mirrored", "multi_worker", "tpu", or a
            `tf.distribute.Strategy` (returned as is).

    Returns:
        A `tf.distribute.Strategy`, or None on JAX and PyTorch.

    Example:
    >>> strategy = get_strategy("auto")
    >>> with strategy.scope():
    ...     model = build_vit("Mu/4", image_size=32, num_classes=10)
    """
    backend = keras.backend.backend()
    if not isinstance(strategy, str):
        if backend != "tensorflow":
            raise ValueError(_tensorflow_only(f"A {type(strategy).__name__} (tf.distribute)", backend))
        return strategy
    check_choice(strategy, "strategy", STRATEGIES)
    if backend != "tensorflow":
        if strategy != "auto":
            raise ValueError(_tensorflow_only(f"`strategy={strategy!r}` (tf.distribute)", backend))
        if worker_info()[1] > 1:
            raise ValueError(_tensorflow_only(
                "Multi-worker training from TF_CONFIG (tf.distribute.MultiWorkerMirroredStrategy)", backend))
    if backend == "jax":
        devices = keras.distribution.list_devices()
        if len(devices) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return None
    if backend != "tensorflow":
        return None
    import tensorflow as tf

    if strategy == "auto":
        if worker_info()[1] > 1:
            strategy = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            strategy = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError) as err:
        raise ValueError(f"`strategy='tpu'` but no TPU was found: {err}") from None
    return tf.distribute.TPUStrategy(resolver)


def _tensorflow_only(feature, backend):
    """The message of a feature that only the TensorFlow backend has."""
    instead = {
        "jax": "On JAX use strategy='auto' (keras.distribution.DataParallel over the local devices; "
               "across hosts call jax.distributed.initialize() first)",
        "torch": "Keras' PyTorch backend trains on one device here (strategy='auto')",
    }.get(backend, "Use strategy='auto'")
    return (f"{feature} is TensorFlow-only and the Keras backend is {backend!r}. {instead}, "
            "or run with KERAS_BACKEND=tensorflow.")


def prepare_multi_worker(model, train_ds):
    """Lets Keras' `fit` run under `MultiWorkerMirroredStrategy`.

    Keras 3 reduces the per-replica step logs of that strategy with a mean
    along axis 0, which scalars do not have, and reduces a nested batch
    to build the model, which the strategy cannot do. So: give each step's
    logs a length-1 axis, build the model, loss, metrics and optimizer on
    one local batch, and let `fit` take the strategy from the enclosing
    scope.
    """
    def with_batch_axis(step):
        def wrapped(data):
            return {k: keras.ops.expand_dims(v, 0) for k, v in step(data).items()}
        return wrapped

    model.train_step = with_batch_axis(model.train_step)
    model.test_step = with_batch_axis(model.test_step)
    images, labels = next(iter(train_ds))
    model.test_on_batch(images, labels)
    model._distribute_strategy = None
