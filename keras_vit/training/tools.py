"""The budget tools the auto recipe can turn on for a time budget, when
each pays, and what `plan.json` records of them.

* progressive resizing (`keras_vit.training.progressive`): the first part
  of a run trains at about half the image side; `budget_tools` turns it on
  for budgets that see the data few times, where the low grid keeps enough
  patches (`progressive_low_size`), and `progressive_cost` tells the
  planner what a run with it costs.
* patch dropout and an EMA of the weights: never chosen by the auto
  recipe; `TOOL_RULES` says what was measured.

`tool_record` writes the "tools" of `plan.json`: each tool's setting and
why.
"""

# Budget tools pay when a budget sees the data fewer times than this at full size.
PROGRESSIVE_MAX_PASSES = 30
# The fraction of a run that progressive resizing trains at the low size.
PROGRESSIVE_FRACTION = 0.5
# Progressive resizing only where the low size keeps at least this many patches a side.
PROGRESSIVE_MIN_GRID = 4


def progressive_low_size(image_size, patch_size, stride):
    """The low size progressive resizing would train at, or None where it
    does not pay: the low grid must keep at least `PROGRESSIVE_MIN_GRID`
    patches a side. (On MNIST's 4x4 stem grid, 300 steps at a 2x2 grid then
    300 at 4x4 reached 94.8 % test, 465 steps at 4x4 alone, the same work,
    97.3 %.)

    Example:
    >>> progressive_low_size(64, 8, None), progressive_low_size(32, 8, None)
    (32, None)
    """
    from keras_vit.training.progressive import low_resolution

    low = low_resolution(image_size, patch_size, stride)
    if low is None or (low - patch_size) // (stride or patch_size) + 1 < PROGRESSIVE_MIN_GRID:
        return None
    return low


def progressive_cost(image_size, patch_size, stride):
    """The cost of a budgeted run with progressive resizing, as a fraction of
    the same steps at full size: half the steps at the low size, whose work
    scales with the pixels (1.0 where the grid is too small to resize).

    Example:
    >>> progressive_cost(64, 8, None), progressive_cost(32, 8, None)
    (0.625, 1.0)
    """

    low = progressive_low_size(image_size, patch_size, stride)
    if low is None:
        return 1.0
    return 1 - PROGRESSIVE_FRACTION + PROGRESSIVE_FRACTION * (low / image_size) ** 2


def budget_tools(image_size, patch_size, stride, passes):
    """The budget tools for data of this image and patch size and the passes
    over the training data its budget pays for at full size (None: no
    budget), as `Recipe` fields. Patch dropout is never chosen: nothing
    measured here showed it paying (see `TOOL_RULES`).

    Example:
    >>> budget_tools(64, 8, None, passes=12), budget_tools(32, 8, None, passes=12)   # 8x8 and 4x4 grids
    ({'progressive_resize': 0.5, 'patch_dropout': 0.0}, {'progressive_resize': 0.0, 'patch_dropout': 0.0})
    """
    short = passes is not None and passes < PROGRESSIVE_MAX_PASSES
    low = progressive_low_size(image_size, patch_size, stride)
    return dict(progressive_resize=PROGRESSIVE_FRACTION if short and low is not None else 0.0, patch_dropout=0.0)


# The budget tools the auto recipe can turn on, and the rule each follows.
TOOL_RULES = {
    "progressive_resize": "the first part of a budgeted run trains at about half the image side (a quarter of the "
                          "tokens and stem work), then at the full size; on when the budget pays for fewer than "
                          "{passes} passes over the data at full size and the low grid keeps at least {grid} "
                          "patches a side",
    "patch_dropout": "a random subset of the patch tokens in each training step; not chosen by the auto recipe: "
                     "on the earlier digits recipe (64 tokens) a quarter dropped cost 0.8 points of test accuracy at equal "
                     "epochs (98.06 % against 98.89 %), and a 16-token stem grid has too few tokens to drop",
    "ema_momentum": "an average of the weights; pays only when the run has many steps after the learning rate "
                    "has decayed, which a cosine to zero over the budget does not leave; on MNIST in 10 minutes, "
                    "momentum 0.998 reached 99.32 % test in 2,949 steps (a slower spell) against 99.40 % in 3,657 "
                    "without",
}


def tool_record(config, measured=None):
    """`plan.json`'s "tools": for each budget tool, the setting the run used
    and why (the auto recipe's rule, or the recipe or flag that set it),
    merged with what the budget measured (`measured`, e.g. the step times
    of each resolution).

    Example:
    >>> tool_record({"recipe": "digits", "patch_dropout": None})["patch_dropout"]["value"]
    0.0
    """
    record = {}
    auto = config.get("recipe") == "auto"
    for name, rule in TOOL_RULES.items():
        value = config.get(name) or 0.0
        why = rule.format(passes=PROGRESSIVE_MAX_PASSES, grid=PROGRESSIVE_MIN_GRID) if auto else f"set by the recipe {config.get('recipe')!r} or a flag"
        record[name] = {**(measured or {}).get(name, {}), "value": value, "why": why}
    return record
