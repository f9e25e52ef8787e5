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
TIMM_RULES = (
    (r"patch_embed\.proj\.weight", "patch_encoder/projection/kernel", conv_kernel),
    (r"patch_embed\.proj\.bias", "patch_encoder/projection/bias", same),
    (r"cls_token", "patch_encoder/cls_token", same),
    (r"reg_token", "patch_encoder/registers", same),
    (r"pos_embed", "patch_encoder/position_embedding", same),
    (r"norm_pre\.weight", "norm_pre/gamma", same),
    (r"norm_pre\.bias", "norm_pre/beta", same),
    (r"blocks\.(\d+)\.norm([12])\.weight", _BLOCK + r"/norm\2/gamma", same),
    (r"blocks\.(\d+)\.norm([12])\.bias", _BLOCK + r"/norm\2/beta", same),
    (r"blocks\.(\d+)\.attn\.qkv\.weight", _BLOCK + "/attention/qkv/kernel", dense_kernel),
    (r"blocks\.(\d+)\.attn\.qkv\.bias", _BLOCK + "/attention/qkv/bias", same),
    (r"blocks\.(\d+)\.attn\.([qk])_norm\.weight", _BLOCK + r"/attention/\2_norm/gamma", same),
    (r"blocks\.(\d+)\.attn\.([qk])_norm\.bias", _BLOCK + r"/attention/\2_norm/beta", same),
    (r"blocks\.(\d+)\.attn\.proj\.weight", _BLOCK + "/attention/proj/kernel", dense_kernel),
    (r"blocks\.(\d+)\.attn\.proj\.bias", _BLOCK + "/attention/proj/bias", same),
    (r"blocks\.(\d+)\.mlp\.fc([12])\.weight", _BLOCK + r"/mlp_dense\2/kernel", dense_kernel),
    (r"blocks\.(\d+)\.mlp\.fc([12])\.bias", _BLOCK + r"/mlp_dense\2/bias", same),
    (r"blocks\.(\d+)\.ls([12])\.gamma", _BLOCK + r"/layer_scale\2/gamma", same),
    (r"norm\.weight", "encoder_norm/gamma", same),
    (r"norm\.bias", "encoder_norm/beta", same),
    (r"fc_norm\.weight", "fc_norm/gamma", same),
    (r"fc_norm\.bias", "fc_norm/beta", same),
    (r"pre_logits\.fc\.weight", "pre_logits/kernel", dense_kernel),
    (r"pre_logits\.fc\.bias", "pre_logits/bias", same),
    (r"head\.weight", "head/kernel", dense_kernel),
    (r"head\.bias", "head/bias", same),
    # attention pooling ("map"); heads are split to the model's in `assign_weights`
    (r"attn_pool\.latent", "map_pooling/probe", same),
    (r"attn_pool\.(q|kv|proj)\.weight", r"map_pooling/attention/\1/kernel", dense_kernel),
    (r"attn_pool\.(q|kv|proj)\.bias", r"map_pooling/attention/\1/bias", same),
    (r"attn_pool\.norm\.weight", "map_pooling/norm/gamma", same),
    (r"attn_pool\.norm\.bias", "map_pooling/norm/beta", same),
    (r"attn_pool\.mlp\.fc([12])\.weight", r"map_pooling/mlp_dense\1/kernel", dense_kernel),
    (r"attn_pool\.mlp\.fc([12])\.bias", r"map_pooling/mlp_dense\1/bias", same),
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
