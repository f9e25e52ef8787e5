"""Models with an identity: `ViTBackbone` (images to tokens), `ViTClassifier`
(backbone, pooling, head), `build_vit` and the `PRESETS` table."""

from keras_vit.models.backbone import ViTBackbone
from keras_vit.models.classifier import POOLINGS, ViTClassifier, build_vit
from keras_vit.models.presets import DEFAULT_PRESET, PRESETS, SIZES, preset_config

__all__ = ["DEFAULT_PRESET", "POOLINGS", "PRESETS", "SIZES", "ViTBackbone", "ViTClassifier",
           "build_vit", "preset_config"]
