"""Pretrained weights: the original ViT `.npz` files and timm state dicts.

Reading a checkpoint runs no code from the file: `.npz` files are opened by
`numpy.load(..., allow_pickle=False)`, `.safetensors` by the safetensors
library and PyTorch files (`.pth`, `.pt`, `.bin`) by
`torch.load(..., weights_only=True)`. Nothing is downloaded: you pass a file.

Loading goes in three steps, each a small function:

1. `read_checkpoint` finds the format from the file's bytes and returns the
   arrays it holds;
2. `convert_npz` / `convert_timm` rename every array to the path of the
   Keras variable it fills (``"encoder_block_0/attention/qkv/kernel"``) and
   put it in Keras layout (transposed kernels, fused query/key/value);
3. `assign_weights` checks every name and shape against the model first and
   only then assigns, so a model is never left partly loaded.

`from_checkpoint` infers the architecture from the file and builds the model;
`fine_tune` trains a new head (and then the whole network) on a new data set
with `keras_vit.data.load_data` and the recipe of `keras_vit.training`.
"""

import dataclasses
import math
import os
import re
import warnings
import zipfile

import numpy as np

from keras_vit import layers as L

FORMATS = ("npz", "safetensors", "torch")
HEAD_PARTS = ("pre_logits", "head")  # layers that belong to the classifier


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why."""


@dataclasses.dataclass
class Converted:
    """Arrays renamed to Keras variable paths, in Keras layout.

    Attributes:
        tensors: dict, Keras variable path -> numpy array.
        sources: dict, Keras variable path -> name(s) in the checkpoint,
            used in error messages.
        num_heads: attention heads when the file records them (`.npz`
            files do, timm state dicts do not), else None.
    """

    tensors: dict
    sources: dict
    num_heads: int = None


# --------------------------------------------------------------------------
# 1. Reading files: format detection and safe loaders.
# --------------------------------------------------------------------------


def detect_format(path):
    """Returns "npz", "safetensors" or "torch" from the file's first bytes.

    Args:
        path: path of a checkpoint file.

    Returns:
        One of `FORMATS`.

    Example:
    >>> np.savez("/tmp/w.npz", cls=np.zeros((1, 1, 8), "float32"))
    >>> detect_format("/tmp/w.npz")
    'npz'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path!r}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(
                f"The checkpoint {path!r} looks like a zip archive (.npz or "
                f"PyTorch) but cannot be read; it is probably truncated or "
                f"corrupt ({err})."
            ) from err
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
    elif head[:1] == b"\x80":  # a pickle protocol header: PyTorch's legacy format
        return "torch"
    elif len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    raise CheckpointError(
        f"Unknown checkpoint format for {path!r}. Accepted formats: "
        f"{', '.join(FORMATS)} (the original ViT .npz files, .safetensors, "
        f"and PyTorch .pth/.pt/.bin state dicts)."
    )


def read_checkpoint(path):
    """Reads every array of a checkpoint without running code from it.

    Args:
        path: a `.npz`, `.safetensors` or PyTorch (`.pth`, `.pt`, `.bin`)
            file; the format is found from the file's bytes.

    Returns:
        (format, dict of name -> numpy array).

    Example:
    >>> np.savez("/tmp/w.npz", cls=np.zeros((1, 1, 8), "float32"))
    >>> fmt, arrays = read_checkpoint("/tmp/w.npz")
    >>> fmt, arrays["cls"].shape
    ('npz', (1, 1, 8))
    """
    fmt = detect_format(path)
    reader = {"npz": _read_npz, "safetensors": _read_safetensors, "torch": _read_torch}[fmt]
    try:
        return fmt, reader(os.fspath(path))
    except (CheckpointError, FileNotFoundError):
        raise
    except Exception as err:  # each library raises its own error types
        raise CheckpointError(
            f"Could not read the {fmt} checkpoint {os.fspath(path)!r}: it is "
            f"truncated, corrupt or not a checkpoint ({type(err).__name__}: {err})."
        ) from err


def _read_npz(path):
    with np.load(path, allow_pickle=False) as archive:
        try:
            return {name: np.asarray(archive[name]) for name in archive.files}
        except ValueError as err:
            if "allow_pickle" not in str(err):
                raise
            raise CheckpointError(
                f"Refused to load {path!r}: it holds Python object arrays, and "
                f"unpickling them could run code ({err})."
            ) from err


def _read_safetensors(path):
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except TypeError:  # bfloat16, which numpy lacks: read through torch
        with safe_open(path, framework="pt") as f:
            return _state_dict_to_numpy({name: f.get_tensor(name) for name in f.keys()}, path)


def _read_torch(path):
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refused to load {path!r}: it holds Python objects other than "
            f"tensors, and unpickling them could run code. Save a plain state "
            f"dict (or a .safetensors file) instead. ({err})"
        ) from err
    return _state_dict_to_numpy(state, path)


def _state_dict_to_numpy(state, where):
    """Unwraps {"state_dict": ...} / {"model": ...} and turns tensors into arrays."""
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and len(state) <= 3:
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{where!r} does not hold a state dict (a dict of tensors).")
    arrays = {}
    for name, value in state.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu()
            value = value.float() if value.is_floating_point() else value
            value = value.numpy()
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{where!r}: entry {name!r} is a {type(value).__name__}, not a tensor."
            )
        arrays[name[len("module."):] if name.startswith("module.") else name] = value
    return arrays


# --------------------------------------------------------------------------
# 2. Conversion: checkpoint names and layouts -> Keras variable paths.
# --------------------------------------------------------------------------


def _same(w):
    return w


def _dense_kernel(w):
    """torch Linear (out, in) -> Keras Dense (in, out)."""
    return w.T


def _conv_kernel(w):
    """torch Conv2d (out, in, h, w) -> Keras Conv2D (h, w, in, out)."""
    return w.transpose(2, 3, 1, 0)


def _heads_out_kernel(w):
    """flax attention output (heads, head_dim, D) -> Dense (heads * head_dim, D)."""
    return w.reshape(-1, w.shape[-1])


def _flatten_heads(w):
    """flax (D, heads, head_dim) or (heads, head_dim) -> (D, heads * head_dim) or (heads * head_dim,)."""
    return w.reshape(*w.shape[:-2], -1)


def _apply_rules(arrays, rules, unsupported):
    """Renames arrays by the first matching (pattern, target, transform) rule."""
    out = Converted({}, {})
    unknown = []
    for name, value in arrays.items():
        for pattern, hint in unsupported:
            if re.fullmatch(pattern, name):
                raise CheckpointError(f"Checkpoint tensor {name!r} is not supported: {hint}")
        for pattern, target, transform in rules:
            match = re.fullmatch(pattern, name)
            if match:
                path = match.expand(target)
                out.tensors[path] = np.asarray(transform(value), dtype=value.dtype)
                out.sources[path] = name
                break
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointError(
            f"The checkpoint has tensors that no build_vit layer takes: "
            f"{', '.join(sorted(unknown)[:10])}{' ...' if len(unknown) > 10 else ''}"
        )
    return out


_BLOCK = r"encoder_block_\1"
TIMM_RULES = (
    (r"patch_embed\.proj\.weight", "patch_encoder/projection/kernel", _conv_kernel),
    (r"patch_embed\.proj\.bias", "patch_encoder/projection/bias", _same),
    (r"cls_token", "patch_encoder/cls_token", _same),
    (r"reg_token", "patch_encoder/registers", _same),
    (r"pos_embed", "patch_encoder/position_embedding", _same),
    (r"blocks\.(\d+)\.norm([12])\.weight", _BLOCK + r"/norm\2/gamma", _same),
    (r"blocks\.(\d+)\.norm([12])\.bias", _BLOCK + r"/norm\2/beta", _same),
    (r"blocks\.(\d+)\.attn\.qkv\.weight", _BLOCK + "/attention/qkv/kernel", _dense_kernel),
    (r"blocks\.(\d+)\.attn\.qkv\.bias", _BLOCK + "/attention/qkv/bias", _same),
    (r"blocks\.(\d+)\.attn\.([qk])_norm\.weight", _BLOCK + r"/attention/\2_norm/gamma", _same),
    (r"blocks\.(\d+)\.attn\.([qk])_norm\.bias", _BLOCK + r"/attention/\2_norm/beta", _same),
    (r"blocks\.(\d+)\.attn\.proj\.weight", _BLOCK + "/attention/proj/kernel", _dense_kernel),
    (r"blocks\.(\d+)\.attn\.proj\.bias", _BLOCK + "/attention/proj/bias", _same),
    (r"blocks\.(\d+)\.mlp\.fc([12])\.weight", _BLOCK + r"/mlp_dense\2/kernel", _dense_kernel),
    (r"blocks\.(\d+)\.mlp\.fc([12])\.bias", _BLOCK + r"/mlp_dense\2/bias", _same),
    (r"blocks\.(\d+)\.ls([12])\.gamma", _BLOCK + r"/layer_scale\2/gamma", _same),
    (r"norm\.weight", "encoder_norm/gamma", _same),
    (r"norm\.bias", "encoder_norm/beta", _same),
    (r"pre_logits\.fc\.weight", "pre_logits/kernel", _dense_kernel),
    (r"pre_logits\.fc\.bias", "pre_logits/bias", _same),
    (r"head\.weight", "head/kernel", _dense_kernel),
    (r"head\.bias", "head/bias", _same),
    # attention pooling ("map"); heads are split to the model's in `assign_weights`
    (r"attn_pool\.latent", "map_pooling/probe", _same),
    (r"attn_pool\.(q|kv|proj)\.weight", r"map_pooling/attention/\1/kernel", _dense_kernel),
    (r"attn_pool\.(q|kv|proj)\.bias", r"map_pooling/attention/\1/bias", _same),
    (r"attn_pool\.norm\.weight", "map_pooling/norm/gamma", _same),
    (r"attn_pool\.norm\.bias", "map_pooling/norm/beta", _same),
    (r"attn_pool\.mlp\.fc([12])\.weight", r"map_pooling/mlp_dense\1/kernel", _dense_kernel),
    (r"attn_pool\.mlp\.fc([12])\.bias", r"map_pooling/mlp_dense\1/bias", _same),
)
TIMM_UNSUPPORTED = (
    (r"fc_norm\..*", "timm's fc_norm (a LayerNorm after average pooling) has no "
     "counterpart in build_vit, which normalises before pooling (timm's fc_norm=False)."),
    (r"norm_pre\..*", "a LayerNorm before the blocks (CLIP-style) has no counterpart in build_vit."),
    (r"attn_pool\.(q_norm|k_norm)\..*", "query/key norms in timm's attention pooling have no "
     "counterpart in build_vit's map pooling."),
)


def convert_timm(state_dict):
    """Converts a timm `VisionTransformer` state dict to Keras variable paths.

    Args:
        state_dict: dict of name -> torch tensor or numpy array, with timm's
            names (`patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`, ...).

    Returns:
        A `Converted`.

    Example:
    >>> conv = convert_timm({"head.weight": np.zeros((10, 8), "float32")})
    >>> conv.tensors["head/kernel"].shape
    (8, 10)
    """
    converted = _apply_rules(_state_dict_to_numpy(state_dict, "state_dict"), TIMM_RULES, TIMM_UNSUPPORTED)
    _embed_class_position(converted)
    _rename_map_attention(converted)
    return converted


def _rename_map_attention(converted):
    """timm's attention pooling has a query Linear, a fused key/value Linear
    and `proj`; Keras' MultiHeadAttention has query, key, value and
    attention_output. The kernels stay (in, out) here; `assign_weights`
    splits them into the model's heads."""
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


def _embed_class_position(converted):
    """timm models with `no_embed_class=True` have no position row for the
    class token; build_vit always has one, so a zero row is prepended."""
    tensors = converted.tensors
    pos = tensors.get("patch_encoder/position_embedding")
    if pos is None or "patch_encoder/cls_token" not in tensors:
        return
    rows = pos.shape[1]
    if math.isqrt(rows) ** 2 == rows and math.isqrt(rows - 1) ** 2 != rows - 1:
        tensors["patch_encoder/position_embedding"] = np.concatenate(
            [np.zeros_like(pos[:, :1]), pos], axis=1
        )
    elif "patch_encoder/registers" in tensors:
        raise CheckpointError(
            "Register tokens with their own position embeddings (timm's "
            "no_embed_class=False) are not supported: build_vit gives "
            "registers no position."
        )


_NPZ_BLOCK = r"Transformer/encoderblock_(\d+)/"
_NPZ_MHA = _NPZ_BLOCK + r"MultiHeadDotProductAttention_[01]/"
_MAP = "MAPHead_0/"
NPZ_RULES = (
    (r"embedding/kernel", "patch_encoder/projection/kernel", _same),
    (r"embedding/bias", "patch_encoder/projection/bias", _same),
    (r"cls", "patch_encoder/cls_token", _same),
    (r"(?:Transformer/posembed_input/)?pos_embedding", "patch_encoder/position_embedding", _same),
    (_NPZ_BLOCK + r"LayerNorm_0/scale", _BLOCK + "/norm1/gamma", _same),
    (_NPZ_BLOCK + r"LayerNorm_0/bias", _BLOCK + "/norm1/beta", _same),
    (_NPZ_BLOCK + r"LayerNorm_[12]/scale", _BLOCK + "/norm2/gamma", _same),
    (_NPZ_BLOCK + r"LayerNorm_[12]/bias", _BLOCK + "/norm2/beta", _same),
    (_NPZ_MHA + r"(query|key|value)/(kernel|bias)", _BLOCK + r"/attention/qkv/\3:\2", _flatten_heads),
    (_NPZ_MHA + r"out/kernel", _BLOCK + "/attention/proj/kernel", _heads_out_kernel),
    (_NPZ_MHA + r"out/bias", _BLOCK + "/attention/proj/bias", _same),
    (_NPZ_BLOCK + r"MlpBlock_[03]/Dense_0/(kernel|bias)", _BLOCK + r"/mlp_dense1/\2", _same),
    (_NPZ_BLOCK + r"MlpBlock_[03]/Dense_1/(kernel|bias)", _BLOCK + r"/mlp_dense2/\2", _same),
    (r"Transformer/encoder_norm/scale", "encoder_norm/gamma", _same),
    (r"Transformer/encoder_norm/bias", "encoder_norm/beta", _same),
    (_MAP + "probe", "map_pooling/probe", _same),
    (_MAP + r"MultiHeadDotProductAttention_0/(query|key|value)/(kernel|bias)", r"map_pooling/attention/\1/\2", _same),
    (_MAP + r"MultiHeadDotProductAttention_0/out/(kernel|bias)", r"map_pooling/attention/attention_output/\1", _same),
    (_MAP + r"LayerNorm_0/scale", "map_pooling/norm/gamma", _same),
    (_MAP + r"LayerNorm_0/bias", "map_pooling/norm/beta", _same),
    (_MAP + r"MlpBlock_0/Dense_0/(kernel|bias)", r"map_pooling/mlp_dense1/\1", _same),
    (_MAP + r"MlpBlock_0/Dense_1/(kernel|bias)", r"map_pooling/mlp_dense2/\1", _same),
    (r"pre_logits/(kernel|bias)", r"pre_logits/\1", _same),
    (r"head/(kernel|bias)", r"head/\1", _same),
)
_NPZ_PREFIXES = ("opt/target/", "params/img/", "params/")


def convert_npz(arrays):
    """Converts arrays named as in the original ViT / big_vision `.npz` files.

    Handles the google-research/vision_transformer names
    (`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`)
    and big_vision's (`params/` prefix, top-level `pos_embedding`, scanned
    `Transformer/encoderblock/` with a leading depth axis, `MAPHead_0`).

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
    converted = _apply_rules(arrays, NPZ_RULES, ())
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


# --------------------------------------------------------------------------
# 3. Assignment: check everything against the model, then assign.
# --------------------------------------------------------------------------


def _grid_of(rows, name):
    side = math.isqrt(rows)
    if side * side != rows:
        raise CheckpointError(
            f"Cannot infer the patch grid of {name!r}: {rows} position rows "
            f"are not a square grid. Pass the checkpoint's `image_size`."
        )
    return side, side


def fit_position_embedding(table, new_grid, has_cls_token):
    """Resamples learned positions (1, [cls] + h*w, D) to a new patch grid.

    The patch rows are resampled bicubically on their 2-D grid by
    `keras_vit.layers.resample_posemb`; the class-token row is kept as is.

    Args:
        table: numpy array (1, rows, D) from a checkpoint (square grid).
        new_grid: (h, w) patch grid of the target model.
        has_cls_token: whether the first row belongs to the class token.

    Returns:
        numpy array (1, [1] + h * w, D).

    Example:
    >>> table = np.zeros((1, 1 + 14 * 14, 8), "float32")
    >>> fit_position_embedding(table, (24, 24), True).shape
    (1, 577, 8)
    """
    prefix = int(has_cls_token)
    patches = table[:, prefix:]
    if patches.shape[1] == new_grid[0] * new_grid[1]:
        return table
    old_grid = _grid_of(patches.shape[1], "position_embedding")
    resampled = np.asarray(L.resample_posemb(patches.astype("float32"), tuple(new_grid), old_grid))
    return np.concatenate([table[:, :prefix].astype("float32"), resampled], axis=1)


def _split_heads(variables, converted):
    """Reshapes flat attention-pooling projections, e.g. (D, D) from timm, to
    the model's per-head layout, e.g. (D, heads, head_dim)."""
    for path, value in converted.tensors.items():
        if path.startswith("map_pooling/attention/") and path in variables:
            shape = tuple(variables[path].shape)
            if value.shape != shape and value.size == math.prod(shape):
                converted.tensors[path] = value.reshape(shape)


def _head_part(path):
    return path.split("/", 1)[0] in HEAD_PARTS


def _check_shapes(variables, converted, paths):
    for path in paths:
        want, got = tuple(variables[path].shape), tuple(converted.tensors[path].shape)
        if want != got:
            raise CheckpointError(
                f"Shape mismatch for tensor {converted.sources[path]!r} (model "
                f"variable {path!r}): the checkpoint has shape {got}, the "
                f"model expects {want}."
            )


def _fits(variables, converted, paths):
    return all(
        p in variables and p in converted.tensors
        and tuple(variables[p].shape) == tuple(converted.tensors[p].shape)
        for p in paths
    )


def _head_plan(variables, converted, replace_head):
    """Decides which classifier tensors load. Returns (paths, reason or None).

    With `replace_head`, the new head stays as initialised and only the
    pre-logits layer loads (when model and checkpoint both have it).
    Otherwise the whole classifier loads when it fits, or none of it."""
    model_head = sorted(p for p in variables if _head_part(p))
    ckpt_head = sorted(p for p in converted.tensors if _head_part(p))
    if replace_head:
        pre_logits = [p for p in model_head if p.startswith("pre_logits/")]
        return (pre_logits if pre_logits and _fits(variables, converted, pre_logits) else []), None
    if model_head == ckpt_head and _fits(variables, converted, model_head):
        return model_head, None
    if not ckpt_head and not model_head:
        return [], None

    def describe(names, table):
        return ", ".join(f"{p} {tuple(table[p].shape)}" for p in names) or "none"

    return [], (
        f"the classifier does not fit (checkpoint: {describe(ckpt_head, converted.tensors)}; "
        f"model: {describe(model_head, variables)})"
    )


def assign_weights(model, converted, replace_head=False):
    """Loads converted tensors into a `build_vit` model, all or nothing.

    Every backbone variable must be in the checkpoint with the right shape
    (learned positions are resampled to the model's patch grid first); any
    mismatch raises before a single variable changes. The classifier
    (`pre_logits` and `head`) loads when it fits; otherwise it is kept as
    initialised and a warning says so. `replace_head=True` keeps the new
    head silently and still loads a pre-logits layer the model has.

    Args:
        model: a model from `build_vit`.
        converted: a `Converted` from `convert_npz` or `convert_timm`.
        replace_head: bool, keep the model's own head silently.

    Returns:
        The list of variable paths that were loaded.

    Example:
    >>> loaded = assign_weights(model, convert_timm(state_dict))
    """
    converted = dataclasses.replace(converted, tensors=dict(converted.tensors))  # left unchanged
    variables = {v.path: v for v in model.weights}
    backbone = sorted(p for p in variables if not _head_part(p))
    missing = [p for p in backbone if p not in converted.tensors]
    extra = sorted(p for p in converted.tensors if not _head_part(p) and p not in variables)
    if missing or extra:
        raise CheckpointError(
            "The checkpoint does not match the model's architecture. "
            + (f"Missing from the checkpoint ({len(missing)}): {', '.join(missing[:8])}. " if missing else "")
            + (
                f"In the checkpoint but not in the model ({len(extra)}): "
                + ", ".join(f"{converted.sources[p]!r} ({p})" for p in extra[:8])
                + ". "
                if extra
                else ""
            )
            + "Use `from_checkpoint` to build a model that fits the file."
        )
    pos_path = "patch_encoder/position_embedding"
    if pos_path in variables:
        encoder = model.backbone.patch_encoder
        converted.tensors[pos_path] = fit_position_embedding(
            converted.tensors[pos_path], encoder.grid_size, encoder.use_cls_token
        )
    _split_heads(variables, converted)
    _check_shapes(variables, converted, backbone)
    head, reason = _head_plan(variables, converted, replace_head)
    if reason:
        warnings.warn(
            f"The classifier was not loaded: {reason}. It keeps its fresh "
            f"initialisation; pass replace_head=True to silence this.",
            stacklevel=3,
        )
    for path in backbone + head:
        variable = variables[path]
        variable.assign(converted.tensors[path].astype(variable.dtype))
    return backbone + head


def load_npz(model, path, replace_head=False):
    """Loads an original ViT / big_vision `.npz` checkpoint into `model`.

    Args:
        model: a `build_vit` model with the checkpoint's architecture (its
            image size may differ: positions are resampled).
        path: the `.npz` file (read with `allow_pickle=False`).
        replace_head: bool, keep the model's classifier instead of loading
            (or warning about) the checkpoint's.

    Returns:
        The model.

    Example:
    >>> model = build_vit("B/16", image_size=384, num_classes=10)
    >>> load_npz(model, "ViT-B_16.npz", replace_head=True)
    """
    fmt, arrays = read_checkpoint(path)
    if fmt != "npz":
        raise CheckpointError(f"`load_npz` expects a .npz file; {os.fspath(path)!r} is a {fmt} file. Use `load_timm`.")
    assign_weights(model, convert_npz(arrays), replace_head)
    return model


def load_timm(model, path_or_state_dict, replace_head=False):
    """Loads a timm `VisionTransformer` state dict into `model`.

    Args:
        model: a `build_vit` model with the checkpoint's architecture.
        path_or_state_dict: a `.safetensors` or PyTorch (`.pth`, `.pt`,
            `.bin`, read with `weights_only=True`) file, or a dict of
            tensors/arrays.
        replace_head: bool, keep the model's classifier instead of loading
            (or warning about) the checkpoint's.

    Returns:
        The model.

    Example:
    >>> model = build_vit("S/16", num_classes=1000)
    >>> load_timm(model, "vit_small_patch16_224.safetensors")
    """
    state = path_or_state_dict
    if not isinstance(state, dict):
        fmt, state = read_checkpoint(state)
        if fmt == "npz":
            raise CheckpointError(f"{os.fspath(path_or_state_dict)!r} is a .npz file; use `load_npz`.")
    assign_weights(model, convert_timm(state), replace_head)
    return model


# --------------------------------------------------------------------------
# Building a model that fits a checkpoint.
# --------------------------------------------------------------------------


def default_num_heads(hidden_dim):
    """Heads of the standard ViT of this width (64 per head otherwise).

    Example:
    >>> default_num_heads(768)
    12
    """
    from keras_vit.models import SIZES as _SIZES

    for dim, _, heads, _ in _SIZES.values():
        if dim == hidden_dim:
            return heads
    if hidden_dim % 64:
        raise ValueError(
            f"Cannot guess the number of heads for width {hidden_dim}: timm "
            f"state dicts do not record it. Pass `num_heads`."
        )
    return hidden_dim // 64


def infer_config(converted, num_heads=None, image_size=None):
    """The `build_vit` arguments that fit a converted checkpoint.

    Args:
        converted: a `Converted`.
        num_heads: heads, needed for timm state dicts of non-standard width
            (`.npz` files record them).
        image_size: optional image size whose patch grid has as many cells
            as the checkpoint's positions: needed for non-square grids.

    Returns:
        dict of `build_vit` keyword arguments, including the checkpoint's
        `image_size` and `num_classes`.

    Example:
    >>> infer_config(convert_npz(np.load("ViT-B_16.npz")))["hidden_dim"]
    768
    """
    t = converted.tensors

    def shape(path):
        if path not in t:
            raise CheckpointError(f"The checkpoint lacks {path!r}; it is not a ViT checkpoint.")
        return t[path].shape

    ph, pw, channels, dim = shape("patch_encoder/projection/kernel")
    depth = sum(1 for p in t if re.fullmatch(r"encoder_block_\d+/norm1/gamma", p))
    has_cls = "patch_encoder/cls_token" in t
    rows = shape("patch_encoder/position_embedding")[1] - int(has_cls)
    if image_size is not None and math.prod(L.grid_size(L.pair(image_size, "image_size"), (ph, pw))) == rows:
        grid = L.grid_size(L.pair(image_size, "image_size"), (ph, pw))  # e.g. a non-square grid
    else:
        grid = _grid_of(rows, "position_embedding")
    if num_heads is None:
        num_heads = converted.num_heads or default_num_heads(dim)
    config = dict(
        image_size=(grid[0] * ph, grid[1] * pw),
        patch_size=(ph, pw),
        channels=channels,
        hidden_dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=shape("encoder_block_0/mlp_dense1/kernel")[1],
        use_qkv_bias="encoder_block_0/attention/qkv/bias" in t,
        qk_norm="encoder_block_0/attention/q_norm/gamma" in t,
        layer_scale=1.0 if "encoder_block_0/layer_scale1/gamma" in t else None,
        num_registers=t["patch_encoder/registers"].shape[1] if "patch_encoder/registers" in t else 0,
        class_token=has_cls,
        pooling="map" if "map_pooling/probe" in t else ("cls" if has_cls else "gap"),
        representation_size=t["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in t else None,
        num_classes=t["head/kernel"].shape[1] if "head/kernel" in t else 0,
    )
    return config


def convert_file(path):
    """Reads and converts a checkpoint file (any of `FORMATS`).

    Example:
    >>> convert_file("ViT-B_16.npz").num_heads
    12
    """
    fmt, arrays = read_checkpoint(path)
    return convert_npz(arrays) if fmt == "npz" else convert_timm(arrays)


def from_checkpoint(path, num_classes=None, image_size=None, *, num_heads=None, pooling=None,
                    keep_pre_logits=True, **build_kwargs):
    """Builds a `build_vit` model that fits a checkpoint file and loads it.

    The width, depth, MLP size, patch size, class token, pooling,
    pre-logits and head are read from the file (heads too for `.npz`).

    Args:
        path: `.npz`, `.safetensors` or PyTorch checkpoint file, or a
            `Converted` from `convert_file`.
        num_classes: None keeps the checkpoint's head; another number gets a
            new, freshly initialised head (0: no head, pooled features).
        image_size: None keeps the checkpoint's resolution; another size
            resamples the position embeddings (bicubic, class row kept).
        num_heads: attention heads; needed for timm files whose width is
            not a standard one.
        pooling: override "cls"/"gap"; timm state dicts do not say whether
            a model with a class token pooled it or averaged (timm's
            global_pool="avg" with fc_norm=False).
        keep_pre_logits: bool, keep the checkpoint's tanh pre-logits layer
            (also when the head is replaced); False drops it.
        **build_kwargs: other `build_vit` arguments (dropout,
            drop_path_rate, include_rescaling, name, ...).

    Returns:
        A `keras.Model` with the checkpoint's weights.

    Example:
    >>> model = from_checkpoint("ViT-B_16.npz", num_classes=10, image_size=384)
    """
    from keras_vit.models import build_vit

    converted = path if isinstance(path, Converted) else convert_file(path)
    config = infer_config(converted, num_heads, image_size)
    if pooling is not None:
        L.check_choice(pooling, "pooling", ("cls", "gap", "map"))
        config["pooling"] = pooling
    ckpt_classes = config.pop("num_classes")
    if not keep_pre_logits:
        config["representation_size"] = None
    if num_classes is None:
        num_classes = ckpt_classes
    if image_size is not None:
        config["image_size"] = image_size
    config.update(build_kwargs)
    model = build_vit(num_classes=num_classes, **config)
    replace = num_classes != ckpt_classes or (
        not keep_pre_logits and "pre_logits/kernel" in converted.tensors
    )
    assign_weights(model, converted, replace_head=replace)
    return model


# --------------------------------------------------------------------------
# Fine-tuning: new head, optional frozen-backbone stage, then everything,
# with the data pipeline of `keras_vit.data` and the recipe of
# `keras_vit.training`.
# --------------------------------------------------------------------------


def set_backbone_trainable(model, trainable):
    """Freezes (or unfreezes) every layer but the classification head.

    Example:
    >>> set_backbone_trainable(model, False)  # train the head only
    """
    for layer in (model.backbone, model.pooler, model.pre_logits, *model.head_hidden):
        if layer is not None:
            layer.trainable = trainable


def _check_epochs(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0. Received: {name}={value!r}")


def fine_tune(checkpoint, data, *, run_dir, num_classes=None, image_size=None, epochs=3,
              frozen_epochs=1, batch_size=32, learning_rate=1e-4, head_learning_rate=1e-3,
              weight_decay=0.05, warmup_epochs=0, label_smoothing=0.1, augment=None,
              validation_split=0.1, test_split=0.2, data_dir=None, num_heads=None,
              keep_pre_logits=True, seed=0, resume="auto", verbose="auto", **build_kwargs):
    """Fine-tunes a pretrained checkpoint on a new data set.

    Loads the checkpoint with a new head (`from_checkpoint`; positions are
    resampled when `image_size` differs), trains the head alone for
    `frozen_epochs` with the backbone frozen, then the whole network for
    `epochs`, both with `keras_vit.training.train` (AdamW, warmup + cosine,
    label smoothing, gradient clipping, resumable run directories). Data
    come from `keras_vit.data.load_data`.

    Args:
        checkpoint: `.npz`, `.safetensors` or PyTorch checkpoint file.
        data: an image folder (`root/<class>/*.png`, or with train/val/test
            sub-folders), a TFDS name read from `data_dir` (nothing is
            downloaded), "digits", or `load_data`'s tuple.
        run_dir: run directory; the head-only stage runs in `run_dir/head`.
            The final model is `run_dir/model.keras`.
        num_classes: classes of the new head; None takes the data's.
        image_size: int or (h, w); None keeps the checkpoint's.
        epochs: int >= 0, epochs of full fine-tuning.
        frozen_epochs: int >= 0, head-only epochs first (0: none).
        batch_size: int.
        learning_rate: peak learning rate of the full fine-tuning.
        head_learning_rate: learning rate of the head-only stage.
        weight_decay, warmup_epochs, label_smoothing: the recipe, see
            `keras_vit.training.train` (warmup_epochs is learning-rate warmup
            of the full stage).
        augment, validation_split, test_split, data_dir: see `load_data`.
        num_heads: heads, for timm files of non-standard width.
        keep_pre_logits: bool, keep the checkpoint's pre-logits layer.
        seed: int.
        resume: "auto", True or False, as in `train`.
        verbose: `fit` verbosity.
        **build_kwargs: other `build_vit` arguments (dropout, drop_path_rate, ...).

    Returns:
        A `keras_vit.training.TrainResult` of the last stage whose
        `history` lists the head-only epochs first (each row has a "stage").

    Example:
    >>> result = fine_tune("ViT-B_16.npz", "flowers", run_dir="runs/flowers", image_size=384)
    >>> result.test_metrics["accuracy"]
    """
    from keras_vit.data import DataInfo, load_data
    from keras_vit.training import TrainResult, train

    _check_epochs(epochs, "epochs")
    _check_epochs(frozen_epochs, "frozen_epochs")
    if epochs + frozen_epochs == 0:
        raise ValueError("Nothing to train: `epochs` and `frozen_epochs` are both 0.")
    converted = convert_file(checkpoint)
    ckpt_config = infer_config(converted, num_heads)
    size = ckpt_config["image_size"] if image_size is None else L.pair(image_size, "image_size")
    if isinstance(data, (tuple, list)) and len(data) == 4 and isinstance(data[3], DataInfo):
        splits = tuple(data)
    else:
        splits = load_data(
            data, size, batch_size, validation_split=validation_split, test_split=test_split,
            seed=seed, augment=augment, channels=ckpt_config["channels"], data_dir=data_dir,
            label_mode="categorical" if label_smoothing else "int",
        )
    num_classes = num_classes or splits[3].num_classes
    import keras

    keras.utils.set_random_seed(seed)
    model = from_checkpoint(converted, num_classes=num_classes, image_size=size, num_heads=num_heads,
                            keep_pre_logits=keep_pre_logits, **build_kwargs)
    common = dict(weight_decay=weight_decay, label_smoothing=label_smoothing, seed=seed,
                  resume=resume, verbose=verbose,
                  config=dict(checkpoint=os.path.abspath(os.fspath(checkpoint)), num_classes=num_classes,
                              image_size=list(size)))
    history = []
    result = None
    if frozen_epochs:
        set_backbone_trainable(model, False)
        result = train(model, splits, epochs=frozen_epochs, run_dir=os.path.join(run_dir, "head"),
                       learning_rate=head_learning_rate, **common)
        history += [dict(row, stage="head") for row in result.history]
        set_backbone_trainable(model, True)
    if epochs:
        result = train(model, splits, epochs=epochs, run_dir=run_dir, learning_rate=learning_rate,
                       warmup_epochs=warmup_epochs, **common)
        history += [dict(row, stage="full") for row in result.history]
    return TrainResult(model=result.model, history=history, test_metrics=result.test_metrics,
                       run_dir=result.run_dir, initial_epoch=result.initial_epoch)


def cli_errors(command):
    """Decorates a CLI handler: a ValueError raised by keras_vit's own checks
    (or a missing file) prints ``keras-vit COMMAND: error: ...`` and returns
    2; errors from deeper down keep their traceback.

    Example:
    >>> handler = cli_errors("explain")(lambda args: 0)
    """
    import functools
    import sys
    import traceback

    package = os.path.dirname(os.path.abspath(__file__))

    def decorate(handler):
        @functools.wraps(handler)
        def wrapped(args):
            try:
                return handler(args)
            except (ValueError, FileNotFoundError) as err:
                origin = os.path.abspath(traceback.extract_tb(err.__traceback__)[-1].filename)
                if not origin.startswith(package):
                    raise
                print(f"keras-vit {command}: error: {err}", file=sys.stderr)
                return 2

        return wrapped

    return decorate


@cli_errors("finetune")
def _finetune_command(args):
    result = fine_tune(
        args.checkpoint, args.data, run_dir=args.run_dir, num_classes=args.num_classes,
        image_size=args.image_size, epochs=args.epochs, frozen_epochs=args.frozen_epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        augment=args.augment, validation_split=args.validation_split, test_split=args.test_split,
        data_dir=args.data_dir, num_heads=args.num_heads, seed=args.seed, verbose=2,
    )
    metrics = result.test_metrics or {}
    summary = ", ".join(f"test {k}={v:.4f}" for k, v in metrics.items())
    print(f"Saved {os.path.join(result.run_dir, 'model.keras')} "
          f"({result.model.output_shape[-1]} classes, {len(result.history)} epochs{'; ' + summary if summary else ''})")
    return 0


def _augment_arg(value):
    try:
        return float(value)
    except ValueError:
        return value


def add_cli(subparsers):
    """Registers `keras-vit finetune`.

    Example:
    >>> add_cli(parser.add_subparsers())
    """
    parser = subparsers.add_parser(
        "finetune",
        help="Fine-tune a pretrained checkpoint (.npz, .safetensors, .pth) on an image folder or TFDS name.",
        description="Loads CHECKPOINT with a new head, trains the head with the backbone frozen, "
        "then fine-tunes everything with the training recipe; the model is RUN_DIR/model.keras. "
        "Re-running the same command resumes.",
    )
    parser.add_argument("checkpoint", help="a .npz, .safetensors or .pth/.bin checkpoint file")
    parser.add_argument("data", help="an image folder (one sub-folder per class), a local TFDS name or 'digits'")
    parser.add_argument("--run-dir", required=True, help="run directory (the model is RUN_DIR/model.keras)")
    parser.add_argument("--num-classes", type=int, help="default: from the data")
    parser.add_argument("--image-size", type=int, help="default: the checkpoint's (positions are resampled)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of full fine-tuning")
    parser.add_argument("--frozen-epochs", type=int, default=1, help="head-only epochs first (0: none)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--head-learning-rate", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=float, default=0, help="learning-rate warmup of the full stage")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--augment", type=_augment_arg, help="augmentation name or strength (see keras-vit train)")
    parser.add_argument("--validation-split", type=float, default=0.1)
    parser.add_argument("--test-split", type=float, default=0.2)
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--num-heads", type=int, help="heads, for timm files of non-standard width")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_finetune_command)
