"""Foreign checkpoints to keras_vit models, in three steps:

1. `readers`: find the format from the file's bytes and read its arrays
   without running code from it (npz, safetensors, PyTorch);
2. `timm` / `big_vision`: rename every array to the path of the Keras
   variable it fills and put it in Keras layout (`rules`);
3. `assign`: check every name and shape against the model, then assign
   (positions resampled to the model's grid), so a model is never left
   partly loaded; `infer_config` reads the architecture from the tensors.

`checkpoint` ties them together: `from_checkpoint(path)` and
`from_timm_preset`, which `ViTClassifier.from_preset` uses for pretrained
handles. This package builds on `keras_vit.models`; training does not
enter it.
"""

from keras_vit.convert.assign import (
    assign_weights, default_num_heads, fit_position_embedding, infer_config)
from keras_vit.convert.big_vision import convert_npz, load_npz
from keras_vit.convert.checkpoint import convert_file, from_checkpoint, from_timm_preset
from keras_vit.convert.readers import FORMATS, CheckpointError, detect_format, read_checkpoint
from keras_vit.convert.rules import Converted
from keras_vit.convert.timm import convert_timm, load_timm

__all__ = [
    "FORMATS", "CheckpointError", "Converted", "assign_weights", "convert_file", "convert_npz",
    "convert_timm", "default_num_heads", "detect_format", "fit_position_embedding", "from_checkpoint",
    "from_timm_preset", "infer_config", "load_npz", "load_timm", "read_checkpoint",
]
