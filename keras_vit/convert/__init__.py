"""Foreign checkpoints to keras_vit tensors, in three steps:

1. `readers`: find the format from the file's bytes and read its arrays
   without running code from it (npz, safetensors, PyTorch);
2. `timm` / `big_vision`: rename every array to the canonical path of the
   variable it fills (``"encoder_block_0/attention/qkv/kernel"``) and put
   it in Keras layout (`rules`);
3. `assign`: check every name and shape against the model's
   `variable_table` (built from its attributes), then assign (positions
   resampled to the model's grid), so a model is never left partly loaded.

`checkpoint` reads a whole file (`convert_file`) and what a timm
``config.json`` adds (`timm_preset_settings`). `load_npz` / `load_timm`
load a file into a model you built. This package knows no model class:
`keras_vit.models.pretrained` builds the model that fits a checkpoint
(`from_checkpoint`, `infer_config`) on top of it.
"""

import importlib
import warnings

from keras_vit.convert.assign import assign_weights, checkpoint_grid, fit_position_embedding, variable_table
from keras_vit.convert.big_vision import convert_npz, load_npz
from keras_vit.convert.checkpoint import convert_file, timm_preset_settings
from keras_vit.convert.readers import FORMATS, CheckpointError, detect_format, read_checkpoint
from keras_vit.convert.rules import Converted
from keras_vit.convert.timm import convert_timm, load_timm

__all__ = [
    "FORMATS", "CheckpointError", "Converted", "assign_weights", "checkpoint_grid", "convert_file",
    "convert_npz", "convert_timm", "detect_format", "fit_position_embedding", "load_npz", "load_timm",
    "read_checkpoint", "timm_preset_settings", "variable_table",
]

# Building the model that fits a checkpoint moved to keras_vit.models.pretrained
# (see CHANGELOG.md). Until 0.4 these names still work here, with a warning;
# this forwarding is the one reference from this package to the models.
MOVED = ("default_num_heads", "from_checkpoint", "from_timm_preset", "infer_config")
NEW_HOME = "keras_vit.models.pretrained"


def __getattr__(name):
    if name not in MOVED:
        raise AttributeError(f"module 'keras_vit.convert' has no attribute {name!r}")
    warnings.warn(f"keras_vit.convert.{name} moved to {NEW_HOME}.{name}; import it from there "
                  f"(keras_vit.convert.{name} will be removed in 0.4).", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(NEW_HOME), name)
