"""Models with an identity: `ViTBackbone` (images to tokens), `ViTClassifier`
(backbone, pooling, head), `build_vit`, and `from_checkpoint` (a classifier
that fits a checkpoint file). `PRESETS` and `preset_config` are
`keras_vit.presets`' (the one home of presets), also importable here."""

from keras_vit.models.backbone import ViTBackbone
from keras_vit.models.classifier import POOLINGS, ViTClassifier, build_vit
from keras_vit.presets.architectures import DEFAULT_PRESET, PRESETS, SIZES, preset_config
from keras_vit.models.pretrained import from_checkpoint

__all__ = ["DEFAULT_PRESET", "POOLINGS", "PRESETS", "SIZES", "ViTBackbone", "ViTClassifier",
           "build_vit", "from_checkpoint", "preset_config"]
