"""Pretrained weights: the original ViT / big_vision `.npz` files and timm
state dicts, loaded into keras_vit models.

Reading a checkpoint runs no code from the file (`readers`). Loading goes
in three steps, each a small function:

1. `read_checkpoint` finds the format from the file's bytes and returns the
   arrays it holds (`readers`);
2. `convert_npz` / `convert_timm` rename every array to the canonical path
   of the variable it fills (``"encoder_block_0/attention/qkv/kernel"``)
   and put it in Keras layout (`big_vision`, `timm`);
3. `assign_weights` checks every name and shape against the model's
   `variable_table` first and only then assigns (`assign`).

`load_npz` / `load_timm` load a file into a model you built;
`from_checkpoint` infers the architecture from the file and builds a
`ViTClassifier` that fits it (`build`). Fine-tuning lives in `keras_vit.training.finetune`.
"""

from keras_vit.convert.assign import assign_weights, fit_position_embedding, variable_table
from keras_vit.convert.big_vision import convert_npz
from keras_vit.convert.build import (
    convert_file,
    default_num_heads,
    from_checkpoint,
    from_timm_preset,
    infer_config,
    load_npz,
    load_timm,
)
from keras_vit.convert.readers import FORMATS, CheckpointError, detect_format, read_checkpoint
from keras_vit.convert.rules import Converted
from keras_vit.convert.timm import convert_timm, timm_config_args

__all__ = [
    "FORMATS", "CheckpointError", "Converted", "assign_weights", "convert_file", "convert_npz",
    "convert_timm", "default_num_heads", "detect_format", "fit_position_embedding", "from_checkpoint",
    "from_timm_preset", "infer_config", "load_npz", "load_timm", "read_checkpoint", "timm_config_args",
    "variable_table",
]
