"""keras_vit: Vision Transformers as serializable Keras 3 layers and models."""

__version__ = "0.2.0"

from keras_vit.cli.startup import cli_is_starting  # noqa: E402 - cheap: no Keras

if cli_is_starting():
    # The keras-vit command imports Keras and TensorFlow itself, after its
    # quiet start-up (keras_vit.cli.main.main); the names below load on use.
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(f"module 'keras_vit' has no attribute {name!r}")
        from keras_vit import layers, models

        for module in (layers, models):
            if hasattr(module, name):
                globals()[name] = value = getattr(module, name)
                return value
        raise AttributeError(f"module 'keras_vit' has no attribute {name!r}")
else:
    from keras_vit.layers import (  # noqa: F401
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
    from keras_vit.models import PRESETS, ViTBackbone, ViTClassifier, build_vit  # noqa: F401
