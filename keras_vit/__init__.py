"""keras_vit: Vision Transformers as serializable Keras 3 layers and models."""

__version__ = "0.2.0"

from keras_vit.cli.startup import quiet_startup

quiet_startup()  # only in the keras-vit command: TensorFlow's native start-up lines

from keras_vit.layers import (  # noqa: E402,F401
    AttentionPooling,
    ConvStem,
    DropPath,
    LayerScale,
    MultiHeadSelfAttention,
    Patches,
    PatchEncoder,
    TokenPooling,
    TransformerBlock,
    resample_posemb,
    sincos_posemb_2d,
)
from keras_vit.models import PRESETS, ViTBackbone, ViTClassifier, build_vit  # noqa: E402,F401
