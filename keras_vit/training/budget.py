"""Training to a time budget: parse a budget, measure the real step time,
plan the steps, and stop in time with a learning rate that ends where the
run ends.

`keras_vit.training.speed.measure_speed` times a few real training and
evaluation steps after compilation; `plan_budget` turns those times into a
`BudgetPlan`: how many steps fit once one validation pass per epoch, the
final evaluation and saving are set aside.
`TimeBudget`, a Keras callback, then drives the learning rate (linear warmup, then a
cosine) over the *progress* of the run: the larger of the fraction of planned steps done
and the fraction of the training time spent since the last re-plan. When the machine
slows down, time leads, the cosine still ends when the time is up, and training stops.

What a resumed budget means: the budget counts the training seconds of
every session, as committed at each epoch end (`train_seconds` in the
history), plus the current session from its start. The work of an epoch
that a crash interrupted, and the time between the crash and the re-run,
are not counted. The plan of the first session is kept; a resumed session
plans fewer steps only when the steps left no longer fit in the time left.
"""

import dataclasses
import math
import os
import re
import time

import keras

from keras_vit.training.speed import Speed, measure_speed  # noqa: F401 (Speed: the plan's input)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Set aside for the unexpected (a slower last epoch, file-system stalls).
SAFETY_FRACTION, SAFETY_SECONDS = 0.03, 3.0  # the latter also covers the process exit
# What an epoch end costs besides validation (the backup, the best
# checkpoint, the history plot) before it is measured: about this here for
# small models; the plan is corrected from the first epoch's wall time.
EPOCH_END_SECONDS = 0.3


def parse_duration(value, name="time_budget"):
    """Seconds from a number of seconds or a string such as "90s", "10m",
    "2h" or "1h30m".

    Example:
    >>> parse_duration("10m"), parse_duration("1h30m"), parse_duration(45)
    (600.0, 5400.0, 45.0)
    """
    text = value.strip().lower() if isinstance(value, str) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif text and re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    elif text and re.fullmatch(r"(\d+(\.\d+)?[smhd])+", text):
        seconds = sum(float(n) * UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([smhd])", text))
    else:
        raise ValueError(
            f"`{name}` must be seconds (a number) or a duration such as '90s', '10m', '2h' or "
            f"'1h30m'. Received: {name}={value!r}")
    if not 0 < seconds < math.inf:
        raise ValueError(f"`{name}` must be positive and finite. Received: {name}={value!r}")
    return seconds


def process_start_time():
    """`time.time()` at which this process started (from /proc on Linux;
    elsewhere: now), so that a command's budget includes its imports.

    Example:
    >>> process_start_time() <= time.time()
    True
    """
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclasses.dataclass
class BudgetPlan:
    """A budgeted run's plan, recorded in the run directory's `plan.json`.

    Args:
        budget: seconds for the whole run (start-up to the saved model).
        planned_steps: training steps of the run, resumed ones included.
        epochs: epochs `fit` runs (the last may stop early).
        steps_per_epoch: batches per epoch.
        warmup_steps: steps of linear learning-rate warmup.
        train_seconds: planned seconds from the first step of this session
            to the last (validation passes included).
        reserve_seconds: set aside for the final evaluation and saving.
        step_seconds, eval_step_seconds: the measured step times.
        spent_before: training seconds committed by earlier sessions.
        tools: the budget tools of the run (progressive resizing, patch
            dropout, EMA, ...): for each, its setting and why.
    """

    budget: float
    planned_steps: int
    epochs: int
    steps_per_epoch: int
    warmup_steps: int
    train_seconds: float
    reserve_seconds: float
    step_seconds: float
    eval_step_seconds: float
    spent_before: float = 0.0
    tools: dict = dataclasses.field(default_factory=dict)

    def describe(self):
        return (f"Time budget {self.budget:.0f} s: {self.planned_steps} steps ({self.epochs} epochs of "
                f"{self.steps_per_epoch}) at {1000 * self.step_seconds:.1f} ms a step, about "
                f"{self.train_seconds:.0f} s of training in this session, {self.reserve_seconds:.0f} s set "
                "aside for the final evaluation and saving.")


def plan_budget(budget, seconds_left, speed, *, steps_per_epoch, val_steps, test_steps, done_steps=0,
                max_steps=None, warmup_steps=0, planned_steps=None, spent_before=0.0):
    """Plans how many steps fit in `seconds_left`.

    Args:
        budget: the whole budget in seconds.
        seconds_left: seconds from now to the end of the budget.
        speed: a `Speed`.
        steps_per_epoch, val_steps, test_steps: batches of each split.
        done_steps: steps already done (a resumed run).
        max_steps: the most steps to plan (epochs x steps per epoch).
        warmup_steps: wished warmup steps; at most a tenth of the plan.
        planned_steps: the earlier session's plan, kept when it still fits.
        spent_before: training seconds of earlier sessions.

    Returns:
        A `BudgetPlan`.

    Example:
    >>> plan = plan_budget(60, 55, Speed(0.1, 0.03), steps_per_epoch=50, val_steps=5, test_steps=5)
    >>> plan.epochs, plan.planned_steps
    (9, 449)
    """
    epoch_end = val_steps * speed.eval_step + EPOCH_END_SECONDS  # validation and saving at each epoch end
    reserve = (val_steps + test_steps) * speed.eval_step + 2 * epoch_end + SAFETY_SECONDS + SAFETY_FRACTION * budget
    available = seconds_left - reserve

    def seconds(n):  # training seconds of n more steps, validation passes included
        ends = math.ceil((done_steps + n) / steps_per_epoch) - done_steps // steps_per_epoch
        return n * speed.train_step + ends * epoch_end

    limit = max_steps if max_steps is not None else 10**9
    if planned_steps is not None:
        limit = min(limit, planned_steps)
    low, high = 0, max(0, limit - done_steps)
    while low < high:  # the most steps that fit
        mid = (low + high + 1) // 2
        low, high = (mid, high) if seconds(mid) <= available else (low, mid - 1)
    if low < 1 and done_steps < limit:
        need = seconds(1) + reserve - seconds_left + budget
        raise ValueError(
            f"`time_budget={budget:g}` s leaves no time to train: start-up took {budget - seconds_left:.0f} s, "
            f"a step takes {speed.train_step:.2f} s and the final evaluation and saving need about "
            f"{reserve:.0f} s. Give a time_budget of at least {math.ceil(need * 1.5)} s, or a smaller "
            "model or batch.")
    total = done_steps + low
    return BudgetPlan(
        budget=budget, planned_steps=total, epochs=max(1, math.ceil(total / steps_per_epoch)),
        steps_per_epoch=steps_per_epoch, warmup_steps=min(warmup_steps, total // 10),
        train_seconds=round(seconds(low), 2), reserve_seconds=round(reserve, 2),
        step_seconds=speed.train_step, eval_step_seconds=speed.eval_step, spent_before=spent_before)


def learning_rate_at(progress_step, plan, peak, floor):
    """Linear warmup to `peak`, then a cosine to `floor` at the planned
    end; `progress_step` may be fractional.

    Example:
    >>> plan = BudgetPlan(60, 100, 2, 50, 10, 50.0, 5.0, 0.1, 0.03)
    >>> learning_rate_at(5, plan, 1e-3, 0.0), learning_rate_at(100, plan, 1e-3, 0.0)
    (0.0005, 0.0)
    """
    if progress_step < plan.warmup_steps:
        return peak * progress_step / plan.warmup_steps
    span = max(1, plan.planned_steps - plan.warmup_steps)
    fraction = min(1.0, (progress_step - plan.warmup_steps) / span)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * fraction))


class TimeBudget(keras.callbacks.Callback):
    """Sets the learning rate each step from the run's progress, re-plans at
    each epoch from the measured pace, and stops training in time.

    Progress is the larger of the steps done and the step the run should
    have reached by now at the planned pace (the steps left at the last
    plan spread over the time from then to `deadline`), so a slower machine
    shortens the cosine instead of overrunning the budget. At the start of
    each epoch the planned steps are set again from the pace and the time
    outside the steps of the last epochs (`_last_epoch_pace`; the lower
    median of five), and progress restarts from the step reached, so a
    first epoch slowed by compiling does not age the schedule. At each
    epoch end it adds `train_seconds` (all sessions) to the logs, which the
    run directory's history keeps, and prints one line when `verbose`.

    Args:
        plan: a `BudgetPlan`.
        peak: peak learning rate; floor: the rate at the end.
        budget_end: `time.time()` by which the run must be done; training
            ends earlier by the plan's reserve (the final evaluation and
            saving).
        done_steps: steps already done (a resumed run).
        max_steps: the most steps the plan may grow to.
        verbose: print a line per epoch.

    Example: ``model.fit(ds, epochs=n, callbacks=[TimeBudget(plan, 1e-3, budget_end=time.time() + 60)])``.
    """

    def __init__(self, plan, peak, floor=0.0, *, budget_end, done_steps=0, max_steps=None, verbose=False):
        super().__init__()
        self.plan, self.peak, self.floor = plan, peak, floor
        self.budget_end, self.max_steps, self.verbose = budget_end, max_steps, verbose
        self.deadline = budget_end - plan.reserve_seconds
        self.done_steps = self.step = done_steps
        self.start = self.epoch_start = self.anchor = None
        self.epoch_first_step = done_steps
        self.paces = []  # (seconds per step, seconds outside the steps) of each epoch
        self.calls = []  # see on_epoch_begin
        self.stopped_by_time = False

    def progress_step(self):
        # the steps left at the last (re)plan, spread over the time left then
        now = time.time()
        since, from_step = self.anchor
        fraction = (now - since) / max(self.deadline - since, 1e-9)
        return max(self.step, from_step + (self.plan.planned_steps - from_step) * fraction)

    def _set_learning_rate(self, value):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()  # the next step then reads the new rate
        self.model.optimizer.learning_rate = value

    def on_train_begin(self, logs=None):
        self.start = time.time()
        self.anchor = (self.start, self.done_steps)  # (time, step) of the last (re)plan

    def on_epoch_begin(self, epoch, logs=None):
        now = time.time()
        steps = self.step - self.epoch_first_step
        if self.epoch_start is not None and steps > 0:
            self.paces.append(self._last_epoch_pace(now, steps))
            # the lower median of the last five epochs: a first epoch's compilations do not outvote a second
            pace, overhead = (sorted(p[i] for p in self.paces[-5:])[(len(self.paces[-5:]) - 1) // 2] for i in (0, 1))
            # the reserve keeps the final evaluation and saving; each epoch until then also validates and saves
            fits = self.step + int((self.deadline - now) / (pace + overhead / self.plan.steps_per_epoch))
            self.plan.planned_steps = max(self.step + 1, min(fits, self.max_steps or fits))
            self.plan.epochs = math.ceil(self.plan.planned_steps / self.plan.steps_per_epoch)
            self.anchor = (now, self.step)
        self.epoch_start, self.epoch_first_step = now, self.step
        self.calls = []  # (end time, step) of the epoch's first and last two train calls

    def _last_epoch_pace(self, now, steps):
        """(seconds per step, seconds outside the steps) of the epoch just
        ended. The pace runs between the ends of its first and last-but-one
        train calls: compiling the step (the first call, and on JAX the short
        last batch: seconds each) is not every step's pace. Outside the steps:
        validation and saving, and after the session's first epoch (whose
        first and last calls compile) what those calls took beyond the pace
        (making the iterator, filling the shuffle buffer)."""
        (first_end, first_step), (last_end, last_step) = self.calls[0], self.calls[-1]
        middle = self.calls[-2] if len(self.calls) > 2 else self.calls[-1]
        if middle[1] > first_step:
            pace = (middle[0] - first_end) / (middle[1] - first_step)
        else:  # one call made the whole epoch
            pace = (last_end - self.epoch_start) / steps
        outside = now - last_end
        if self.paces:  # not the session's first epoch
            outside += max(0.0, first_end - self.epoch_start - pace * (first_step - self.epoch_first_step))
            outside += max(0.0, last_end - middle[0] - pace * (last_step - middle[1]))
        return pace, max(0.0, outside)

    def on_train_batch_begin(self, batch, logs=None):
        self._set_learning_rate(learning_rate_at(self.progress_step(), self.plan, self.peak, self.floor))

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the call's last step (steps_per_execution), past the epoch's end in its last call
        self.step = self.epoch_first_step + min(batch + 1, self.plan.steps_per_epoch)
        self.calls = self.calls[:1] + self.calls[1:][-1:] + [(time.time(), self.step)]
        if self.progress_step() >= self.plan.planned_steps:
            self.stopped_by_time = self.step < self.plan.planned_steps
            self.model.stop_training = True

    def session_seconds(self):
        return time.time() - self.start if self.start is not None else 0.0

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["train_seconds"] = round(self.plan.spent_before + self.session_seconds(), 3)
        if self.verbose:
            metrics = "  ".join(f"{k} {float(v):.4f}" for k, v in logs.items() if k != "train_seconds")
            print(f"epoch {epoch + 1}/{self.plan.epochs}  step {self.step}/{self.plan.planned_steps}  "
                  f"{metrics}  {logs['train_seconds']:.0f} s trained", flush=True)


def _cardinality(dataset):
    return max(0, int(dataset.cardinality())) if dataset is not None else 0


def start_budget(model, run_dir, budget, budget_start, datasets, *, steps_per_epoch, max_epochs, warmup_epochs,
                 learning_rate, min_learning_rate, resume, verbose=True, progressive_resize=0.0):
    """Measures the speed and plans a budgeted session; reads the run
    directory but writes nothing, so a budget too small is refused before
    anything is touched.

    Args:
        model: the compiled model (constant learning rate).
        run_dir: the run directory (its `plan.json` and backup are read
            when the run resumes).
        budget: seconds; budget_start: `time.time()` when the budget began.
        datasets: (train, validation, test); validation and test may be
            None.
        progressive_resize: the fraction of the run trained at a lower
            resolution (`keras_vit.training.progressive`); 0 for none. The
            step time of each resolution is measured and the plan uses
            their mix.

    Returns:
        (plan, callbacks, epochs, previous): the `BudgetPlan`, its
        callbacks (the `TimeBudget` first, then a `ProgressiveResize` when
        the run resizes), the epochs to give `fit` (an upper bound: the
        `TimeBudget` stops the run) and the earlier session's plan record
        (None for a new run).
    """
    import json
    from pathlib import Path

    from keras_vit.training.rundir import RunBackup

    train_ds, val_ds, test_ds = datasets
    state = RunBackup.read_state(run_dir) if resume is not False else None
    plan_file = Path(run_dir) / "plan.json"
    previous = json.loads(plan_file.read_text()) if state and plan_file.exists() else None
    done = state["epoch"] * steps_per_epoch if state else 0
    spent = float((state["history"] or [{}])[-1].get("train_seconds", 0.0)) if state else 0.0
    if previous is not None:
        budget = previous["plan"]["budget"]  # a resumed run keeps its budget
        if previous.get("finished"):  # nothing left to train: `fit` resumes past the last epoch
            plan = BudgetPlan(**{**previous["plan"], "epochs": state["epoch"], "spent_before": spent})
            timer = TimeBudget(plan, learning_rate, min_learning_rate, budget_end=time.time(), done_steps=done)
            return plan, [timer], state["epoch"], previous
    speed = measure_speed(model, train_ds, val_ds)
    low_size, low_speed = None, None
    if progressive_resize:
        from keras_vit.training.progressive import low_size_for, set_training_size

        low_size = low_size_for(model)
    full_step = speed.train_step
    if low_size is not None:
        set_training_size(model, low_size)
        low_speed = measure_speed(model, train_ds, None, min_seconds=1.0)
        speed = Speed((1 - progressive_resize) * speed.train_step + progressive_resize * low_speed.train_step,
                      speed.eval_step, speed.measure_seconds + low_speed.measure_seconds)
    seconds_left = budget - spent - (time.time() - budget_start)
    max_steps = max_epochs * steps_per_epoch if max_epochs else None
    plan = plan_budget(
        budget, seconds_left, speed, steps_per_epoch=steps_per_epoch, val_steps=_cardinality(val_ds),
        test_steps=_cardinality(test_ds), done_steps=done, max_steps=max_steps,
        warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
        planned_steps=previous["plan"]["planned_steps"] if previous else None, spent_before=spent)
    if verbose:
        resumed = f" Resuming at step {done}, {spent:.0f} s spent before." if done else ""
        print(plan.describe() + resumed, flush=True)
    timer = TimeBudget(plan, learning_rate, min_learning_rate, budget_end=time.time() + seconds_left,
                       done_steps=done, max_steps=max_steps, verbose=verbose)
    callbacks = [timer]
    if low_size is not None:
        from keras_vit.training.progressive import ProgressiveResize

        callbacks.append(ProgressiveResize(low_size, progressive_resize, timer=timer))
        plan.tools["progressive_resize"] = dict(
            low_size=low_size, fraction=progressive_resize, low_step_seconds=round(low_speed.train_step, 4),
            full_step_seconds=round(full_step, 4))
    # the plan may grow when the first epochs run faster than measured
    epochs = max_epochs or 2 * plan.epochs + 2
    return plan, callbacks, epochs, previous


def plan_record(plan, callbacks, budget_start, finished, previous=None):
    """The `plan.json` record: the plan and, once finished, what happened."""
    callback = callbacks[0]
    record = {"plan": dataclasses.asdict(plan), "finished": finished,
              "sessions": list((previous or {}).get("sessions", []))}
    resize = next((c for c in callbacks[1:] if hasattr(c, "switched_at")), None)
    if finished and resize is not None:
        record["plan"]["tools"].setdefault("progressive_resize", {})["switched_at_step"] = resize.switched_at
    if finished:
        record["sessions"].append(dict(
            steps=callback.step - callback.done_steps, last_step=callback.step,
            stopped_by_time=callback.stopped_by_time, train_seconds=round(callback.session_seconds(), 2),
            total_seconds=round(time.time() - budget_start, 2)))
    return record
