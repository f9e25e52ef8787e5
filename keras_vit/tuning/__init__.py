"""Hyperparameter search over the architecture and the training recipe with
KerasTuner: the space's names (`space`), the space and each trial's
training (`hypermodel`), and the resumable search with its results
(`search`). The names below load on first use (PEP 562), so importing
`keras_vit.tuning.space` does not import KerasTuner."""

_OWNERS = {
    "keras_vit.tuning.space": ("DEFAULT_SPACE", "LOG_SCALE", "OBJECTIVES", "TUNER_NAMES"),
    "keras_vit.tuning.hypermodel": ("TUNERS", "ViTHyperModel", "heads_name"),
    "keras_vit.tuning.search": ("make_tuner", "trial_rows", "tune", "write_results"),
}

__all__ = [name for names in _OWNERS.values() for name in names]


def __getattr__(name):
    import importlib

    for module, names in _OWNERS.items():
        if name in names:
            value = globals()[name] = getattr(importlib.import_module(module), name)
            return value
    raise AttributeError(f"module 'keras_vit.tuning' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
