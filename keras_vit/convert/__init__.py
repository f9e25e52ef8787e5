"""Foreign checkpoints to keras_vit tensors, in three steps:

1. `readers`: find the format from the file's bytes and read its arrays
   without running code from it (npz, safetensors, PyTorch);
2. `timm` / `big_vision`: rename every array to the canonical path of the
   variable it fills (``"encoder_block_0/attention/qkv/kernel"``) and put
   it in Keras layout (`rules`);
3. `assign`: check every name and shape against the model's
   `variable_table` (built from its attributes), then assign (positions
   resampled to the model's grid), so a model is never left partly loaded.

`checkpoint` reads a whole file (`convert_file`). `load_npz` / `load_timm`
load a file into a model you built. This package knows no model class and
no preset: `keras_vit.presets` reads what a checkpoint and its timm
``config.json`` imply (`infer_config`, `timm_preset_settings`), and
`keras_vit.models.pretrained` builds the model that fits a checkpoint
(`from_checkpoint`) on top of it.
"""

import importlib
import warnings

from keras_vit.convert.assign import assign_weights, checkpoint_grid, fit_position_embedding, variable_table
from keras_vit.convert.big_vision import convert_npz, load_npz
from keras_vit.convert.checkpoint import convert_file
from keras_vit.convert.readers import FORMATS, CheckpointError, detect_format, read_checkpoint
from keras_vit.convert.rules import Converted
from keras_vit.convert.timm import convert_timm, load_timm

__all__ = [
    "FORMATS", "CheckpointError", "Converted", "assign_weights", "checkpoint_grid", "convert_file",
    "convert_npz", "convert_timm", "detect_format", "fit_position_embedding", "load_npz", "load_timm",
    "read_checkpoint", "variable_table",
]

# Building the model that fits a checkpoint moved to keras_vit.models.pretrained,
# reading what a checkpoint and a timm config imply to keras_vit.presets (see
# CHANGELOG.md). Until 0.4 these names still work here, with a warning; this
# forwarding is the one reference from this package to the models and presets.
MOVED = {"from_checkpoint": "keras_vit.models.pretrained", "from_timm_preset": "keras_vit.models.pretrained",
         "default_num_heads": "keras_vit.presets", "infer_config": "keras_vit.presets",
         "timm_preset_settings": "keras_vit.presets"}


def __getattr__(name):
    if name not in MOVED:
        raise AttributeError(f"module 'keras_vit.convert' has no attribute {name!r}")
    home = MOVED[name]
    warnings.warn(f"keras_vit.convert.{name} moved to {home}.{name}; import it from there "
                  f"(keras_vit.convert.{name} will be removed in 0.4).", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(home), name)
