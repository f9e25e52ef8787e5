"""Reading checkpoint files without running code from them.

`.npz` files are opened by `numpy.load(..., allow_pickle=False)`,
`.safetensors` by the safetensors library and PyTorch files (`.pth`, `.pt`,
`.bin`) by `torch.load(..., weights_only=True)`. The format is found from
the file's bytes, not its name.
"""

import os
import zipfile

import numpy as np

FORMATS = ("npz", "safetensors", "torch")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why."""


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
            return state_dict_to_numpy({name: f.get_tensor(name) for name in f.keys()}, path)


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
    return state_dict_to_numpy(state, path)


def state_dict_to_numpy(state, where):
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
