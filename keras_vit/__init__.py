"""keras_vit: Vision Transformers as serializable Keras 3 layers and models.

Installed as the distribution ``keras-vision-transformer`` (the name
``keras-vit`` on PyPI is another project, which also installs a
``keras_vit`` module); imported as ``keras_vit``.
"""

__version__ = "0.2.0"

from keras_vit.cli import startup as _startup  # noqa: E402 - cheap: no Keras

DISTRIBUTION = _startup.DISTRIBUTION  # "keras-vision-transformer"
_startup.refuse_the_other_keras_vit()  # the other project named keras-vit: a clear ImportError

if _startup.cli_is_starting():
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
