"""timm `VisionTransformer` state dicts -> canonical variable paths.

timm's Linear and Conv2d weights are transposed to Keras layout; the fused
`qkv` projection keeps its [q | k | v] layout, which `MultiHeadSelfAttention`
shares, and the attention pooling's fused key/value projection is split.
Position tables without a class row (`no_embed_class=True`) are completed
when assigned (`keras_vit.convert.assign`). `load_timm` loads a state dict
into a model.
"""

import os

import numpy as np

from keras_vit.convert.assign import assign_weights
from keras_vit.convert.readers import CheckpointError, read_checkpoint, state_dict_to_numpy
from keras_vit.convert.rules import apply_rules, conv_kernel, dense_kernel, same

_BLOCK = r"encoder_block_\1"


def _norm(source, target):
    """The rules of a LayerNorm: weight -> gamma, bias -> beta."""
    return ((rf"{source}\.weight", f"{target}/gamma", same), (rf"{source}\.bias", f"{target}/beta", same))


def _linear(source, target, kernel=dense_kernel):
    """The rules of a Linear (or Conv2d) layer: weight -> kernel in Keras layout, bias -> bias."""
    return ((rf"{source}\.weight", f"{target}/kernel", kernel), (rf"{source}\.bias", f"{target}/bias", same))


TIMM_RULES = (
    *_linear(r"patch_embed\.proj", "patch_encoder/projection", conv_kernel),
    (r"cls_token", "patch_encoder/cls_token", same),
    (r"reg_token", "patch_encoder/registers", same),
    (r"pos_embed", "patch_encoder/position_embedding", same),
    *_norm(r"norm_pre", "norm_pre"),
    *_norm(r"blocks\.(\d+)\.norm([12])", _BLOCK + r"/norm\2"),
    *_linear(r"blocks\.(\d+)\.attn\.qkv", _BLOCK + "/attention/qkv"),
    *_norm(r"blocks\.(\d+)\.attn\.([qk])_norm", _BLOCK + r"/attention/\2_norm"),
    *_linear(r"blocks\.(\d+)\.attn\.proj", _BLOCK + "/attention/proj"),
    *_linear(r"blocks\.(\d+)\.mlp\.fc([12])", _BLOCK + r"/mlp_dense\2"),
    (r"blocks\.(\d+)\.ls([12])\.gamma", _BLOCK + r"/layer_scale\2/gamma", same),
    *_norm(r"norm", "encoder_norm"),
    *_norm(r"fc_norm", "fc_norm"),
    *_linear(r"pre_logits\.fc", "pre_logits"),
    *_linear(r"head", "head"),
    # attention pooling ("map"); heads are split to the model's in `assign_weights`
    (r"attn_pool\.latent", "map_pooling/probe", same),
    *_linear(r"attn_pool\.(q|kv|proj)", r"map_pooling/attention/\1"),
    *_norm(r"attn_pool\.norm", "map_pooling/norm"),
    *_linear(r"attn_pool\.mlp\.fc([12])", r"map_pooling/mlp_dense\1"),
)
TIMM_UNSUPPORTED = (
    (r"attn_pool\.(q_norm|k_norm)\..*", "query/key norms in timm's attention pooling have no "
     "counterpart in keras_vit's map pooling."),
    (r"patch_embed\.norm\..*", "a LayerNorm after the patch embedding has no counterpart in keras_vit."),
)


def convert_timm(state_dict):
    """Converts a timm `VisionTransformer` state dict to canonical paths.

    Args:
        state_dict: dict of name -> torch tensor or numpy array, with timm's
            names (`patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`, ...).

    Returns:
        A `Converted` (its `num_heads` is None: state dicts do not record it).

    Example:
    >>> conv = convert_timm({"head.weight": np.zeros((10, 8), "float32")})
    >>> conv.tensors["head/kernel"].shape
    (8, 10)
    """
    converted = apply_rules(state_dict_to_numpy(state_dict, "state_dict"), TIMM_RULES, TIMM_UNSUPPORTED)
    _rename_map_attention(converted)
    return converted


def _rename_map_attention(converted):
    """timm's attention pooling has a query Linear, a fused key/value Linear
    and `proj`; Keras' MultiHeadAttention has query, key, value and
    attention_output. The kernels stay (in, out) here; `assign_weights`
    reshapes them to the model's heads."""
    tensors, sources = converted.tensors, converted.sources
    base = "map_pooling/attention/"
    for kind in ("kernel", "bias"):
        renames = {f"{base}q/{kind}": f"{base}query/{kind}", f"{base}proj/{kind}": f"{base}attention_output/{kind}"}
        for old, new in renames.items():
            if old in tensors:
                tensors[new], sources[new] = tensors.pop(old), sources.pop(old)
        fused = f"{base}kv/{kind}"
        if fused in tensors:
            key, value = np.split(tensors.pop(fused), 2, axis=-1)
            source = sources.pop(fused)
            tensors[f"{base}key/{kind}"], tensors[f"{base}value/{kind}"] = key, value
            sources[f"{base}key/{kind}"] = sources[f"{base}value/{kind}"] = source


def load_timm(model, path_or_state_dict, replace_head=False):
    """Loads a timm `VisionTransformer` state dict into `model`.

    Args:
        model: a `ViTClassifier` (or `ViTBackbone`) with the checkpoint's
            architecture.
        path_or_state_dict: a `.safetensors` or PyTorch (`.pth`, `.pt`,
            `.bin`, read with `weights_only=True`) file, or a dict of
            tensors/arrays.
        replace_head: bool, keep the model's classifier instead of loading
            (or warning about) the checkpoint's.

    Returns:
        The model.

    Example:
    >>> model = build_vit("S/16", num_classes=1000)  # doctest: +SKIP
    >>> load_timm(model, "vit_small_patch16_224.safetensors")  # doctest: +SKIP
    """
    state = path_or_state_dict
    if not isinstance(state, dict):
        fmt, state = read_checkpoint(state)
        if fmt == "npz":
            raise CheckpointError(f"{os.fspath(path_or_state_dict)!r} is a .npz file; use `load_npz`.")
    assign_weights(model, convert_timm(state), replace_head)
    return model
