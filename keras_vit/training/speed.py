"""Measured step times: `measure_speed` runs a few real training steps at
learning rate 0 (which changes no weight; the optimizer state is put back
afterwards) and a few evaluation steps, after compilation, and times them
with `_StepTimer`, a callback that takes the median gap between steps.
`keras_vit.training.budget` plans a time-budgeted run from the `Speed`.
"""

import dataclasses
import time

import keras

from keras_vit.models.portable import build_optimizer


@dataclasses.dataclass
class Speed:
    """Measured seconds of one training step and one evaluation step."""

    train_step: float
    eval_step: float
    measure_seconds: float = 0.0


class _StepTimer(keras.callbacks.Callback):
    def __init__(self, skip, min_steps, min_seconds):
        super().__init__()
        self.skip, self.min_steps, self.min_seconds = skip, min_steps, min_seconds
        self.ends = []

    def _end(self, batch, logs=None):  # `batch` is the last step of the call (steps_per_execution)
        self.ends.append((time.perf_counter(), batch))
        timed = len(self.ends) - 1 - self.skip
        if timed >= self.min_steps and self.ends[-1][0] - self.ends[self.skip][0] >= self.min_seconds:
            self.model.stop_training = self.model.stop_evaluating = True

    on_train_batch_end = on_test_batch_end = _end

    def seconds_per_step(self):
        timed = self.ends[self.skip:]
        if len(timed) < 2:
            return None
        gaps = sorted((t1 - t0) / max(1, b1 - b0) for (t0, b0), (t1, b1) in zip(timed, timed[1:]))
        return gaps[len(gaps) // 2]  # the median: robust to a stray slow step


def measure_speed(model, train_ds, val_ds=None, *, min_steps=4, min_seconds=2.0, max_steps=40):
    """Times training and evaluation steps of a compiled model.

    Runs `fit` at learning rate 0 (no weight changes; the optimizer's
    variables are restored afterwards), so the compiled functions are the
    ones the real run uses and compilation is done once.

    Returns:
        A `Speed`.
    """
    start = time.perf_counter()
    optimizer = build_optimizer(model)
    saved = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]
    peak = optimizer.learning_rate
    peak = float(keras.ops.convert_to_numpy(peak)) if not callable(peak) else None
    optimizer.learning_rate = 0.0
    timer = _StepTimer(skip=2, min_steps=min_steps, min_seconds=min_seconds)
    if hasattr(train_ds, "repeat"):  # a tf.data split of fewer than `max_steps` batches is measured, not run dry
        train_ds = train_ds.repeat()
    try:
        model.fit(train_ds, epochs=1, steps_per_epoch=max_steps, verbose=0, callbacks=[timer], shuffle=False)
    finally:
        for variable, value in zip(optimizer.variables, saved):
            variable.assign(value)
        if peak is not None:
            optimizer.learning_rate = peak
    train_step = timer.seconds_per_step()
    if train_step is None:
        raise ValueError(
            f"The training data gave fewer than {timer.skip + 2} batches; a time budget needs at least "
            "a few batches per epoch to measure the step time. Lower `batch_size`.")
    eval_step = train_step / 3  # a forward pass: about a third of a training step
    if val_ds is not None:
        evaluator = _StepTimer(skip=1, min_steps=min_steps, min_seconds=min_seconds / 2)
        # The first batch again and again, from memory: a short last batch has another shape,
        # which JAX compiles anew (seconds) and which would be timed as a step of a 3-batch
        # split; and each repeat of an uncached `take(1)` would prepare its images again
        # (`load_data` prepares 1,024 at a time), which on MNIST timed a 25 ms step as 99 ms.
        model.evaluate(val_ds.take(1).cache().repeat(min_steps + 2), verbose=0, callbacks=[evaluator])
        eval_step = evaluator.seconds_per_step() or eval_step
    return Speed(train_step, eval_step, time.perf_counter() - start)
