"""Foreign checkpoints to keras_vit models, in three steps:

1. `readers`: find the format from the file's bytes and read its arrays
   without running code from it (npz, safetensors, PyTorch);
2. `timm` / `big_vision`: rename every array to the canonical path of the
   variable it fills (``"encoder_block_0/attention/qkv/kernel"``) and put
   it in Keras layout (`rules`);
3. `assign`: check every name and shape against the model's
   `variable_table` (built from its attributes), then assign (positions
   resampled to the model's grid), so a model is never left partly loaded.

`checkpoint` ties them together: `infer_config` reads the architecture from
the tensors, `from_checkpoint(path)` builds a `ViTClassifier` that fits the
file, and `from_timm_preset` serves `ViTClassifier.from_preset` for
pretrained handles. `load_npz` / `load_timm` load a file into a model you
built. This package builds on `keras_vit.models`; fine-tuning lives in
`keras_vit.training.finetune`, which imports it, not the other way round.
"""

from keras_vit.convert.assign import assign_weights, checkpoint_grid, fit_position_embedding, variable_table
from keras_vit.convert.big_vision import convert_npz, load_npz
from keras_vit.convert.checkpoint import (
    convert_file, default_num_heads, from_checkpoint, from_timm_preset, infer_config, timm_preset_settings)
from keras_vit.convert.readers import FORMATS, CheckpointError, detect_format, read_checkpoint
from keras_vit.convert.rules import Converted
from keras_vit.convert.timm import convert_timm, load_timm

__all__ = [
    "FORMATS", "CheckpointError", "Converted", "assign_weights", "checkpoint_grid", "convert_file",
    "convert_npz", "convert_timm", "default_num_heads", "detect_format", "fit_position_embedding",
    "from_checkpoint", "from_timm_preset", "infer_config", "load_npz", "load_timm", "read_checkpoint",
    "timm_preset_settings", "variable_table",
]
