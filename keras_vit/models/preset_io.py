"""`load_model`: the one loader of a model from any handle.

The preset folders (`save_to_preset`, ``preprocessing.json``) moved to
`keras_vit.presets.folder`, and loading presets to `keras_vit.presets`
(`get_preset_loader`); their old names here still work until 0.4, with a
`DeprecationWarning`.
"""

import os

from keras_vit._moved import forwarder
from keras_vit.models.classifier import ViTClassifier
from keras_vit.utils.io import load_keras_file

__getattr__ = forwarder("keras_vit.models.preset_io", "keras_vit.presets.folder")


def load_model(handle):
    """A model from any handle: a ``.keras`` file (loaded in safe mode), or
    what `ViTClassifier.from_preset` loads (an architecture preset, a preset
    directory, a known pretrained name, ``hf://owner/repo`` or a checkpoint
    file).

    Example:
    >>> model = load_model("vit.keras")  # doctest: +SKIP
    """
    if os.fspath(handle).endswith(".keras"):
        return load_keras_file(handle, safe_mode=True)
    return ViTClassifier.from_preset(handle)
