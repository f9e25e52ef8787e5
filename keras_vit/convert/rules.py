"""Renaming checkpoint arrays to canonical variable paths.

A rule is ``(pattern, target, transform)``: an array whose name matches the
regular expression `pattern` is stored under `target` (with the pattern's
groups substituted) after `transform` puts it in Keras layout. Canonical
paths name a classifier's variables by its parts:
``"patch_encoder/projection/kernel"``, ``"encoder_block_3/attention/qkv/kernel"``,
``"encoder_norm/gamma"``, ``"map_pooling/probe"``, ``"head/bias"``
(`keras_vit.convert.variable_table` lists a model's).
"""

import dataclasses
import re

import numpy as np

from keras_vit.convert.readers import CheckpointError


@dataclasses.dataclass
class Converted:
    """Arrays renamed to canonical variable paths, in Keras layout.

    Attributes:
        tensors: dict, canonical path -> numpy array.
        sources: dict, canonical path -> name(s) in the checkpoint, used in
            error messages.
        num_heads: attention heads when the file records them (`.npz`
            files do, timm state dicts do not), else None.
        grid: the checkpoint's (h, w) patch grid when its metadata says
            (a timm ``config.json``), else None.

    Example:
    >>> Converted({"head/bias": np.zeros(3)}, {"head/bias": "head.bias"}).num_heads is None
    True
    """

    tensors: dict
    sources: dict
    num_heads: int = None
    grid: tuple = None


def same(w):
    """The array as it is."""
    return w


def dense_kernel(w):
    """torch Linear (out, in) -> Keras Dense (in, out)."""
    return w.T


def conv_kernel(w):
    """torch Conv2d (out, in, h, w) -> Keras Conv2D (h, w, in, out)."""
    return w.transpose(2, 3, 1, 0)


def heads_out_kernel(w):
    """flax attention output (heads, head_dim, D) -> Dense (heads * head_dim, D)."""
    return w.reshape(-1, w.shape[-1])


def flatten_heads(w):
    """flax (D, heads, head_dim) or (heads, head_dim) -> (D, heads * head_dim) or (heads * head_dim,)."""
    return w.reshape(*w.shape[:-2], -1)


def apply_rules(arrays, rules, unsupported=()):
    """Renames every array by the first rule whose pattern matches its name.

    Args:
        arrays: dict of checkpoint name -> numpy array.
        rules: sequence of (pattern, target, transform).
        unsupported: sequence of (pattern, hint): names that raise a
            `CheckpointError` saying why they cannot load.

    Returns:
        A `Converted`. Names that no rule takes raise a `CheckpointError`.

    Example:
    >>> rules = ((r"head\\.weight", "head/kernel", dense_kernel),)
    >>> apply_rules({"head.weight": np.zeros((10, 8))}, rules).tensors["head/kernel"].shape
    (8, 10)
    """
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
            f"{', '.join(sorted(unknown)[:10])}{' ...' if len(unknown) > 10 else ''}")
    return out
