"""Renaming checkpoint arrays to the paths of the Keras variables they fill.

A converter is a table of (pattern, target, transform) rules: each array
whose name matches a pattern is renamed to the target path (for example
``"encoder_block_0/attention/qkv/kernel"``) and put in Keras layout by the
transform.
"""

import dataclasses
import re

import numpy as np

from keras_vit.convert.readers import CheckpointError


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
    grid: tuple = None  # the checkpoint's patch grid, when its metadata says


def same(w):
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


def apply_rules(arrays, rules, unsupported):
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
