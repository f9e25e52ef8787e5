"""timm `VisionTransformer` state dicts -> canonical variable paths.

timm's Linear and Conv2d weights are transposed to Keras layout; the fused
`qkv` projection keeps its [q | k | v] layout, which `MultiHeadSelfAttention`
shares. Class-token-less position tables (`no_embed_class=True`) get a zero
class row, and the attention pooling's fused key/value projection is split.
"""

import math

import numpy as np

from keras_vit.convert.readers import CheckpointError, state_dict_to_numpy
from keras_vit.convert.rules import apply_rules, conv_kernel, dense_kernel, same
from keras_vit.layers import ACTIVATIONS
from keras_vit.preprocessing import INTERPOLATIONS as IMAGE_INTERPOLATIONS

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
    _embed_class_position(converted)
    _rename_map_attention(converted)
    _zero_patch_bias(converted)
    return converted


def _zero_patch_bias(converted):
    """timm's CLIP towers (`pre_norm=True`) embed patches without a bias;
    keras_vit's patch projection always has one, and a zero bias computes
    the same function."""
    kernel = converted.tensors.get("patch_encoder/projection/kernel")
    if kernel is not None and "patch_encoder/projection/bias" not in converted.tensors:
        converted.tensors["patch_encoder/projection/bias"] = np.zeros(kernel.shape[-1], kernel.dtype)
        converted.sources["patch_encoder/projection/bias"] = "(no patch_embed.proj.bias: zeros)"


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


def _is_square(n):
    return n > 0 and math.isqrt(n) ** 2 == n


def _embed_class_position(converted):
    """timm models with `no_embed_class=True` have no position row for the
    class token; keras_vit always has one, so a zero row is prepended.
    Registers with position rows (`no_embed_class=False`) are refused."""
    tensors = converted.tensors
    pos = tensors.get("patch_encoder/position_embedding")
    if pos is None:
        return
    rows, cls = pos.shape[1], int("patch_encoder/cls_token" in tensors)
    registers = tensors["patch_encoder/registers"].shape[1] if "patch_encoder/registers" in tensors else 0
    if registers and _is_square(rows - cls - registers) and not _is_square(rows - cls):
        raise CheckpointError(
            "Register tokens with their own position embeddings (timm's no_embed_class=False) "
            "are not supported: keras_vit gives registers no position.")
    if cls and _is_square(rows) and not _is_square(rows - 1):
        tensors["patch_encoder/position_embedding"] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)

# timm's global_pool -> keras_vit's pooling
TIMM_POOLS = {"token": "cls", "avg": "gap", "map": "map"}


def timm_config_args(config):
    """The `build_vit` arguments a timm ``config.json`` records and the
    weights do not: heads, pooling, LayerNorm epsilon (1e-5 for timm's CLIP
    towers), activation, pixel mean/std, image size, interpolation and
    class names.

    Args:
        config: the parsed ``config.json`` of a timm checkpoint (may be
            empty).

    Returns:
        dict of `build_vit` keyword arguments.

    Example:
    >>> cfg = {"architecture": "vit_base_patch16_clip_224", "global_pool": "token",
    ...        "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5], "std": [0.5]}}
    >>> sorted(timm_config_args(cfg).items())
    [('image_size', (224, 224)), ('norm_epsilon', 1e-05), ('pixel_mean', [0.5]), ('pixel_std', [0.5]), ('pooling', 'cls')]
    """
    args = {}
    arch = str(config.get("architecture", ""))
    model_args = config.get("model_args") or {}
    pretrained = config.get("pretrained_cfg") or {}
    if model_args.get("num_heads"):
        args["num_heads"] = model_args["num_heads"]
    pool = config.get("global_pool", model_args.get("global_pool"))
    if pool:
        if pool not in TIMM_POOLS:
            raise CheckpointError(f"timm's global_pool={pool!r} is not supported; keras_vit pools with "
                                  f"{', '.join(map(repr, TIMM_POOLS))} (as {', '.join(TIMM_POOLS.values())}).")
        args["pooling"] = TIMM_POOLS[pool]
    if "_clip_" in arch or arch.endswith("_clip"):
        args["norm_epsilon"] = 1e-5  # timm builds its CLIP towers with LayerNorm(eps=1e-5)
    activation = "quick_gelu" if "quickgelu" in arch else model_args.get("act_layer")
    if activation in ACTIVATIONS:
        args["activation"] = activation
    if pretrained.get("mean") and pretrained.get("std"):
        args["pixel_mean"], args["pixel_std"] = list(pretrained["mean"]), list(pretrained["std"])
    if pretrained.get("input_size"):
        args["image_size"] = tuple(pretrained["input_size"][1:])
    if pretrained.get("interpolation") in IMAGE_INTERPOLATIONS:
        args["preprocessing"] = {"interpolation": pretrained["interpolation"]}
    names = config.get("label_names")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        args["class_names"] = names
    return args
