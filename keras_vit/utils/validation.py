"""Argument checks shared by every module.

Each check returns the normalised value or raises a `ValueError` that names
the parameter, the value received and what is accepted.
"""

import difflib
import functools
import importlib
import inspect

import numpy as np

# What `keras.Model.__init__` takes besides our own arguments (and what
# `get_config` adds to them).
MODEL_KEYWORDS = ("name", "dtype", "trainable")


class UnknownArgumentError(TypeError, ValueError):
    """A keyword argument that the function does not take: a `TypeError`, as
    Python's own, and a `ValueError`, as keras_vit's other argument errors."""


class SearchFailedError(RuntimeError):
    """Every trial of a hyperparameter search failed; the message names the
    first failure. Not a usage error and not a bug: the data or the search
    space made each model fail (NaN losses, memory, a shape the data cannot
    fill). `results.csv` beside the search lists each trial and its status.
    `keras_vit.tuning.tune` raises it; the CLI reports it in one line, exit 1."""


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


_BOOLS = (bool, np.bool_)


def check_choice(value, name, choices):
    """Returns `value` if it is one of `choices`, else raises.

    Example:
    >>> check_choice("gap", "pooling", ("cls", "gap", "map"))
    'gap'
    """
    # a choice matches only a value of its own kind: True is not 1 and 0.0 is
    # not False, though Python compares them equal (numpy's bool is a bool)
    try:
        valid = any(value == c and isinstance(value, _BOOLS) == isinstance(c, _BOOLS) for c in choices)
    except (TypeError, ValueError):  # values that do not compare to one truth (arrays)
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


def check_seed(value, allow_none=False):
    """Returns `value` if it is a seed the data pipelines take: an int from
    0 to 2**32 - 2 (bools refused), or None where `allow_none`; else raises.

    Example:
    >>> check_seed(0), check_seed(None, allow_none=True)
    (0, None)
    """
    if value is None and allow_none:
        return None
    if not _is_int(value) or not 0 <= value < 2**32 - 1:
        what, accepted = ("None or an int", "None, or 0") if allow_none else ("an int", "0")
        raise ValueError(f"`seed` must be {what}. Received: seed={value!r} (accepted: {accepted} to {2**32 - 2})")
    return value


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



def check_class_names(class_names, num_classes):
    """Returns `class_names` as a list of `num_classes` distinct, non-blank
    strings (None gives "0", "1", ...), else raises.

    Example:
    >>> check_class_names(("cat", "dog"), 2)
    ['cat', 'dog']
    >>> check_class_names(None, 2)
    ['0', '1']
    """
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = list(class_names)
    if len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"`class_names` must be a list of {num_classes} strings (one per class). "
            f"Received {len(names)} entries: {names[:5]}{'...' if len(names) > 5 else ''}")
    blank = [i for i, n in enumerate(names) if not n.strip()]
    if blank:
        raise ValueError(f"`class_names` holds a blank name at index {blank[0]} ({names[blank[0]]!r}); "
                         "every class needs a name that predictions can report.")
    seen = {}
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(f"`class_names` names {n!r} twice (indices {seen[n]} and {i}); class names must "
                             "be distinct, or predictions of two classes cannot be told apart.")
        seen[n] = i
    return names

def parameter_names(*functions):
    """The keyword names that `functions` accept (their `accepted_keywords`
    when `strict_keywords` made them, else their signature's named
    parameters); a ``"module:attribute"`` string is imported first."""
    names = set()
    for function in functions:
        if isinstance(function, str):
            module, _, attribute = function.partition(":")
            function = importlib.import_module(module)
            for part in attribute.split("."):
                function = getattr(function, part)
        if hasattr(function, "forwards_to"):
            accepted = accepted_keywords(function)
        else:
            kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            accepted = [p.name for p in inspect.signature(function).parameters.values() if p.kind not in kinds]
        names.update(n for n in accepted if n not in ("self", "cls"))
    return names


def check_keywords(given, accepted, where):
    """Raises `UnknownArgumentError` naming the first keyword of `given` that
    is not `accepted` and the closest accepted name.

    Example:
    >>> check_keywords({"num_clases": 5}, ["num_classes", "depth"], "build_vit()")
    Traceback (most recent call last):
    ...
    keras_vit.utils.validation.UnknownArgumentError: build_vit() got an unknown keyword argument `num_clases`. Did you mean `num_classes`?
    """
    accepted = sorted(set(accepted))
    unknown = sorted(set(given) - set(accepted))
    if not unknown:
        return
    word = unknown[0]
    close = difflib.get_close_matches(word, accepted, n=1, cutoff=0.6)
    hint = f"Did you mean `{close[0]}`?" if close else "Accepted: " + ", ".join(accepted) + "."
    raise UnknownArgumentError(f"{where} got an unknown keyword argument `{word}`. {hint}")


def strict_keywords(*forwards_to, extra=(), exclude=()):
    """Decorates a function so that a keyword it does not take (nor the
    functions its ``**kwargs`` go to, `forwards_to`: functions or
    ``"module:attribute"`` strings, resolved at the first call) raises
    `UnknownArgumentError` with the closest valid name. `extra` names are
    accepted too; `exclude` names (the positional ones of `forwards_to`) not.

    Example:
    >>> @strict_keywords()
    ... def resize(image, *, size=8):
    ...     return size
    >>> resize(None, sise=4)
    Traceback (most recent call last):
    ...
    keras_vit.utils.validation.UnknownArgumentError: resize() got an unknown keyword argument `sise`. Did you mean `size`?
    """

    def decorate(function):
        @functools.wraps(function)
        def checked(*args, **kwargs):
            if kwargs:
                check_keywords(kwargs, accepted_keywords(checked), f"{function.__qualname__}()")
            return function(*args, **kwargs)

        checked.forwards_to = (function, *forwards_to)
        checked.extra_keywords = tuple(extra)
        checked.excluded_keywords = tuple(exclude)
        return checked

    return decorate


def accepted_keywords(checked):
    """The names a `strict_keywords` function takes, worked out once."""
    if "accepted_keywords" not in checked.__dict__:
        names = parameter_names(*checked.forwards_to) | set(checked.extra_keywords)
        checked.accepted_keywords = frozenset(names - set(checked.excluded_keywords))
    return checked.accepted_keywords
