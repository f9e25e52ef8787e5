"""Forwarding for the public modules of keras_vit 0.1 that have moved.

`keras_vit.weights`, `keras_vit.model` and `keras_vit.visualize` were
documented in 0.1. Each is now a thin module whose names are looked up, on
first use, in the module that owns them today, with a `DeprecationWarning`
that names the new home (see CHANGELOG.md).
"""

import importlib
import warnings


def forwarder(old, new):
    """A module-level ``__getattr__`` for module `old` that takes every
    public name from module `new` and warns once per name.

    Example:
    >>> getattr_ = forwarder("keras_vit.model", "keras_vit.models")
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     getattr_("PRESETS") is importlib.import_module("keras_vit.models").PRESETS
    True
    >>> "keras_vit.models" in str(caught[0].message)
    True
    """

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        module = importlib.import_module(new)
        if not hasattr(module, name):
            raise AttributeError(
                f"module {old!r} has no attribute {name!r}: {old} moved to {new}, which has no {name!r} either "
                "(see CHANGELOG.md)")
        warnings.warn(f"{old}.{name} moved to {new}.{name}; import it from {new}. {old} will be removed in 0.4.",
                      DeprecationWarning, stacklevel=2)
        return getattr(module, name)

    return __getattr__
