"""`convert_file`: reads and converts a checkpoint file of any of the
`FORMATS`. What a timm ``config.json`` adds (`timm_preset_settings`) is
`keras_vit.presets.timm`'s; building a model that fits a checkpoint is
`keras_vit.presets.loaders`' and `keras_vit.models.pretrained`'s."""

from keras_vit.convert.big_vision import convert_npz
from keras_vit.convert.readers import read_checkpoint
from keras_vit.convert.timm import convert_timm


def convert_file(path):
    """Reads and converts a checkpoint file (any of `FORMATS`).

    Example:
    >>> convert_file("ViT-B_16.npz").num_heads  # doctest: +SKIP
    12
    """
    fmt, arrays = read_checkpoint(path)
    return convert_npz(arrays) if fmt == "npz" else convert_timm(arrays)
