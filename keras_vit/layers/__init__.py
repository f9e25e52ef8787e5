"""Serializable Keras 3 layers of the Vision Transformer, following the data:

- `patching`: images to tokens (`Patches`, `PatchEncoder`, patch grids);
- `stem`: `ConvStem`, strided convolutions in place of the patchify one;
- `positions`: pure functions on position tables (sincos, resampling);
- `norm`: `LayerNorm`;
- `attention`: `MultiHeadSelfAttention`;
- `block`: `TransformerBlock` with `DropPath` and `LayerScale`;
- `patch_dropout`: `PatchDropout`, training on a random subset of patch tokens;
- `pooling`: `TokenPooling` ("cls", "gap") and `AttentionPooling` ("map").

Every layer uses `keras.ops` only and is registered under the package name
``keras_vit``, so `.keras` files reload with ``safe_mode=True`` and no
``custom_objects`` once `keras_vit` is imported. Each layer computes the
plain ViT in every mode and on every backend: a faster kernel (TensorFlow's
XLA training kernels, `keras_vit.kernels`, imported only where used; the
fused attention) is chosen when the layer is constructed and stored in its
config, and the inference rewrites are an explicit transform,
`keras_vit.export.inference_model`.
"""

from keras_vit.layers.attention import MultiHeadSelfAttention, use_fused_attention
from keras_vit.layers.block import ACTIVATIONS, DropPath, LayerScale, TransformerBlock
from keras_vit.layers.patching import (
    PATCH_EMBEDDINGS,
    POS_EMBEDDINGS,
    PatchEncoder,
    Patches,
    check_images,
    grid_size,
    patch_stride,
)
from keras_vit.layers.positions import POS_INTERPOLATIONS, resample_position_table, resample_posemb, sincos_posemb_2d
from keras_vit.layers.patch_dropout import PatchDropout
from keras_vit.layers.norm import LayerNorm, layer_norm
from keras_vit.layers.stem import ConvStem
from keras_vit.layers.pooling import POOLINGS, AttentionPooling, TokenPooling
from keras_vit.utils.validation import check_choice, check_rate, pair

__all__ = [
    "ACTIVATIONS", "PATCH_EMBEDDINGS", "POS_INTERPOLATIONS", "POOLINGS", "POS_EMBEDDINGS",
    "AttentionPooling", "ConvStem", "DropPath", "LayerNorm", "LayerScale", "MultiHeadSelfAttention", "PatchDropout", "PatchEncoder",
    "Patches", "TokenPooling", "TransformerBlock", "check_choice", "check_images", "check_rate",
    "grid_size", "layer_norm", "pair", "patch_stride", "resample_position_table", "resample_posemb", "sincos_posemb_2d", "use_fused_attention",
]


def __getattr__(name):
    if name == "INTERPOLATIONS":  # keras_vit 0.2's name, which preprocessing uses for image resizing
        import warnings

        warnings.warn("keras_vit.layers.INTERPOLATIONS is now POS_INTERPOLATIONS (position resampling); "
                      "INTERPOLATIONS will be removed in 0.4.", DeprecationWarning, stacklevel=2)
        return POS_INTERPOLATIONS
    raise AttributeError(f"module 'keras_vit.layers' has no attribute {name!r}")
