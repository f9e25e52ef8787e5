"""keras_vit: Vision Transformers as serializable Keras 3 layers and models.

Installed as the distribution ``keras-vision-transformer`` (the name
``keras-vit`` on PyPI is another project, which also installs a
``keras_vit`` module); imported as ``keras_vit``.

Importing this package is cheap and does not depend on how the program
was started: it never imports Keras or TensorFlow itself. The names below
(`build_vit`, `ViTClassifier`, the layers, `PRESETS`) load on first use
(PEP 562). When Keras is already imported, importing keras_vit also
registers its classes with Keras (it imports `keras_vit.models`, which
costs nothing more then), so ``import keras, keras_vit`` is enough for
`keras.saving.load_model` to reload our ``.keras`` files; otherwise any use
of a keras_vit model or layer, or ``import keras_vit.models``, registers
them. The one check made at import refuses the other project named
keras-vit with a clear ImportError.
"""

from keras_vit._install import DISTRIBUTION, __version__, refuse_the_other_keras_vit  # standard library only

refuse_the_other_keras_vit()

import sys  # noqa: E402

if "keras" in sys.modules:  # Keras is loaded already: register our classes for load_model
    import keras_vit.models  # noqa: E402, F401

# name -> the subpackage that owns it
_LAYERS = ("AttentionPooling", "ConvStem", "DropPath", "LayerScale", "MultiHeadSelfAttention", "Patches",
           "PatchEncoder", "TokenPooling", "TransformerBlock", "resample_posemb", "sincos_posemb_2d")
_MODELS = ("ViTBackbone", "ViTClassifier", "build_vit")
_PRESETS = ("PRESETS",)

__all__ = ["DISTRIBUTION", "__version__", *_LAYERS, *_MODELS, *_PRESETS]


def __getattr__(name):
    if name in _LAYERS:
        from keras_vit import layers as owner
    elif name in _MODELS:
        from keras_vit import models as owner
    elif name in _PRESETS:
        from keras_vit import presets as owner
    else:
        raise AttributeError(f"module 'keras_vit' has no attribute {name!r}")
    value = globals()[name] = getattr(owner, name)
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
