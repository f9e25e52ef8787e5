"""Argument checks shared by every module.

Each check returns the normalised value or raises a `ValueError` that names
the parameter, the value received and what is accepted.
"""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def pair(value, name):
    """Returns `value` as an (h, w) pair of positive ints, or raises.

    Example:
    >>> pair(16, "patch_size")
    (16, 16)
    >>> pair([24, 32], "image_size")
    (24, 32)
    """
    if _is_int(value):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(_is_int(v) for v in value)
        or min(value) <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a pair (h, w) of positive "
            f"ints. Received: {name}={value!r}"
        )
    return tuple(int(v) for v in value)


def check_choice(value, name, choices):
    """Returns `value` if it is one of `choices`, else raises.

    Example:
    >>> check_choice("gap", "pooling", ("cls", "gap", "map"))
    'gap'
    """
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        valid = False
    else:
        try:
            valid = value in choices
        except TypeError:  # unhashable values
            valid = False
    if not valid:
        raise ValueError(
            f"Unknown `{name}`: {value!r}. Accepted values: "
            + ", ".join(repr(c) for c in choices)
        )
    return value


def check_rate(value, name):
    """Returns `value` as a float in [0, 1), else raises.

    Example:
    >>> check_rate(0.1, "dropout")
    0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")
    return float(value)


def check_positive_int(value, name, minimum=1):
    """Returns `value` if it is an int >= `minimum` (bools refused), else raises.

    Example:
    >>> check_positive_int(3, "depth")
    3
    """
    if not _is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def check_number(value, name, low=None, high=None, *, low_open=False, high_open=False):
    """Returns `value` as a float within [low, high] (open ends where asked).

    Example:
    >>> check_number(1e-3, "learning_rate", 0, low_open=True)
    0.001
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        bounds = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"`{name}` must be a number in {bounds}. Received: {name}={value!r}")
    return float(value)
