"""Original ViT / big_vision `.npz` names -> canonical variable paths.

Handles google-research/vision_transformer's names
(`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`)
and big_vision's (`params/` prefix, top-level `pos_embedding`, a scanned
`Transformer/encoderblock/` with a leading depth axis, `MAPHead_0`). flax
keeps query, key and value apart, per head; they are fused into keras_vit's
[q | k | v] `qkv` projection. `load_npz` loads a file into a model.
"""

import os

import numpy as np

from keras_vit.convert.assign import assign_weights
from keras_vit.convert.readers import CheckpointError, read_checkpoint
from keras_vit.convert.rules import apply_rules, flatten_heads, heads_out_kernel, same

_BLOCK = r"encoder_block_\1"
_NPZ_BLOCK = r"Transformer/encoderblock_(\d+)/"
_NPZ_MHA = _NPZ_BLOCK + r"MultiHeadDotProductAttention_[01]/"
_MAP = "MAPHead_0/"
NPZ_RULES = (
    (r"embedding/kernel", "patch_encoder/projection/kernel", same),
    (r"embedding/bias", "patch_encoder/projection/bias", same),
    (r"cls", "patch_encoder/cls_token", same),
    (r"(?:Transformer/posembed_input/)?pos_embedding", "patch_encoder/position_embedding", same),
    (_NPZ_BLOCK + r"LayerNorm_0/scale", _BLOCK + "/norm1/gamma", same),
    (_NPZ_BLOCK + r"LayerNorm_0/bias", _BLOCK + "/norm1/beta", same),
    (_NPZ_BLOCK + r"LayerNorm_[12]/scale", _BLOCK + "/norm2/gamma", same),
    (_NPZ_BLOCK + r"LayerNorm_[12]/bias", _BLOCK + "/norm2/beta", same),
    # query, key and value go to "<qkv path>:<part>" until `_fuse_qkv` joins them
    (_NPZ_MHA + r"(query|key|value)/(kernel|bias)", _BLOCK + r"/attention/qkv/\3:\2", flatten_heads),
    (_NPZ_MHA + r"out/kernel", _BLOCK + "/attention/proj/kernel", heads_out_kernel),
    (_NPZ_MHA + r"out/bias", _BLOCK + "/attention/proj/bias", same),
    (_NPZ_BLOCK + r"MlpBlock_[03]/Dense_0/(kernel|bias)", _BLOCK + r"/mlp_dense1/\2", same),
    (_NPZ_BLOCK + r"MlpBlock_[03]/Dense_1/(kernel|bias)", _BLOCK + r"/mlp_dense2/\2", same),
    (r"Transformer/encoder_norm/scale", "encoder_norm/gamma", same),
    (r"Transformer/encoder_norm/bias", "encoder_norm/beta", same),
    (_MAP + "probe", "map_pooling/probe", same),
    (_MAP + r"MultiHeadDotProductAttention_0/(query|key|value)/(kernel|bias)", r"map_pooling/attention/\1/\2", same),
    (_MAP + r"MultiHeadDotProductAttention_0/out/(kernel|bias)", r"map_pooling/attention/attention_output/\1", same),
    (_MAP + r"LayerNorm_0/scale", "map_pooling/norm/gamma", same),
    (_MAP + r"LayerNorm_0/bias", "map_pooling/norm/beta", same),
    (_MAP + r"MlpBlock_0/Dense_0/(kernel|bias)", r"map_pooling/mlp_dense1/\1", same),
    (_MAP + r"MlpBlock_0/Dense_1/(kernel|bias)", r"map_pooling/mlp_dense2/\1", same),
    (r"pre_logits/(kernel|bias)", r"pre_logits/\1", same),
    (r"head/(kernel|bias)", r"head/\1", same),
)
_NPZ_PREFIXES = ("opt/target/", "params/img/", "params/")


def convert_npz(arrays):
    """Converts arrays named as in the original ViT / big_vision `.npz` files.

    Args:
        arrays: dict of name -> numpy array, as in the `.npz` file.

    Returns:
        A `Converted`; its `num_heads` is read from the query kernel.

    Example:
    >>> conv = convert_npz({"head/kernel": np.zeros((8, 10), "float32")})
    >>> conv.tensors["head/kernel"].shape
    (8, 10)
    """
    arrays = _unscan_blocks(_strip_npz_prefix(arrays))
    converted = apply_rules(arrays, NPZ_RULES)
    query = arrays.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
    if query is None:
        query = arrays.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel")
    converted.num_heads = None if query is None else int(query.shape[1])
    _fuse_qkv(converted)
    return converted


def _strip_npz_prefix(arrays):
    for prefix in _NPZ_PREFIXES:
        if any(name.startswith(prefix + "embedding/") for name in arrays):
            return {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}
    return arrays


def _unscan_blocks(arrays):
    """big_vision's scanned encoder stores every block in one array with a
    leading depth axis; split it into `encoderblock_i` entries."""
    scanned = "Transformer/encoderblock/"
    out = {}
    for name, value in arrays.items():
        if name.startswith(scanned):
            for i, block_value in enumerate(value):
                out[f"Transformer/encoderblock_{i}/{name[len(scanned):]}"] = block_value
        else:
            out[name] = value
    return out


def _fuse_qkv(converted):
    """Concatenates the separate query, key and value projections into the
    fused `qkv` Dense layer, laid out [q | k | v]."""
    tensors, sources = converted.tensors, converted.sources
    for path in [p for p in tensors if p.endswith(":query")]:
        base = path[: -len(":query")]
        parts = [base + ":" + part for part in ("query", "key", "value")]
        missing = [p for p in parts if p not in tensors]
        if missing:
            raise CheckpointError(f"The checkpoint lacks {', '.join(missing)} beside {sources[path]!r}.")
        tensors[base] = np.concatenate([tensors.pop(p) for p in parts], axis=-1)
        sources[base] = " + ".join(sources.pop(p) for p in parts)


def load_npz(model, path, replace_head=False):
    """Loads an original ViT / big_vision `.npz` checkpoint into `model`.

    Args:
        model: a `ViTClassifier` (or `ViTBackbone`) with the checkpoint's
            architecture (its image size may differ: positions are resampled).
        path: the `.npz` file (read with `allow_pickle=False`).
        replace_head: bool, keep the model's classifier instead of loading
            (or warning about) the checkpoint's.

    Returns:
        The model.

    Example:
    >>> model = build_vit("B/16", image_size=384, num_classes=10)  # doctest: +SKIP
    >>> load_npz(model, "ViT-B_16.npz", replace_head=True)  # doctest: +SKIP
    """
    fmt, arrays = read_checkpoint(path)
    if fmt != "npz":
        raise CheckpointError(f"`load_npz` expects a .npz file; {os.fspath(path)!r} is a {fmt} file. Use `load_timm`.")
    assign_weights(model, convert_npz(arrays), replace_head)
    return model
