"""Models with an identity: `ViTBackbone` (images to tokens), `ViTClassifier`
(backbone, pooling, head), `build_vit`, the `PRESETS` table, and
`from_checkpoint` (a classifier that fits a checkpoint file)."""

from keras_vit.models.backbone import ViTBackbone
from keras_vit.models.classifier import POOLINGS, ViTClassifier, build_vit
from keras_vit.models.presets import DEFAULT_PRESET, PRESETS, SIZES, preset_config
from keras_vit.models.pretrained import from_checkpoint

__all__ = ["DEFAULT_PRESET", "POOLINGS", "PRESETS", "SIZES", "ViTBackbone", "ViTClassifier",
           "build_vit", "from_checkpoint", "preset_config"]
