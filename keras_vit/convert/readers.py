"""Reading checkpoint files: format detection and readers that run no code.

`.npz` files are opened by `numpy.load(..., allow_pickle=False)`,
`.safetensors` by the safetensors library and PyTorch files (`.pth`, `.pt`,
`.bin`) by `torch.load(..., weights_only=True)`. The format is found from
the file's bytes, never from its name.
"""

import json
import os
import zipfile

import numpy as np

FORMATS = ("npz", "safetensors", "torch")
INSTALL_HINT = "pip install 'keras-vision-transformer[weights]'"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why."""


def detect_format(path):
    """Returns "npz", "safetensors" or "torch" from the file's first bytes.

    Args:
        path: path of a checkpoint file.

    Returns:
        One of `FORMATS`.

    Example:
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/w.npz"
    >>> np.savez(path, cls=np.zeros((1, 1, 8), "float32"))
    >>> detect_format(path)
    'npz'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path!r}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return _zip_format(path)
    if head[:1] == b"\x80":  # a pickle protocol header: PyTorch's legacy format
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    raise CheckpointError(
        f"Unknown checkpoint format for {path!r}. Accepted formats: {', '.join(FORMATS)} "
        f"(the original ViT .npz files, .safetensors, and PyTorch .pth/.pt/.bin state dicts).")


def _zip_format(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"The checkpoint {path!r} looks like a zip archive (.npz or PyTorch) but cannot be "
            f"read; it is probably truncated or corrupt ({err}).") from err
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    raise CheckpointError(
        f"Unknown checkpoint format for {path!r}: a zip archive that is neither a .npz file nor "
        f"a PyTorch checkpoint. Accepted formats: {', '.join(FORMATS)}.")


def read_checkpoint(path):
    """Reads every array of a checkpoint without running code from it.

    Args:
        path: a `.npz`, `.safetensors` or PyTorch (`.pth`, `.pt`, `.bin`)
            file; the format is found from the file's bytes.

    Returns:
        (format, dict of name -> numpy array).

    Example:
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/w.npz"
    >>> np.savez(path, cls=np.zeros((1, 1, 8), "float32"))
    >>> fmt, arrays = read_checkpoint(path)
    >>> fmt, arrays["cls"].shape
    ('npz', (1, 1, 8))
    """
    fmt = detect_format(path)
    path = os.fspath(path)
    reader = {"npz": _read_npz, "safetensors": _read_safetensors, "torch": _read_torch}[fmt]
    try:
        return fmt, reader(path)
    except (CheckpointError, FileNotFoundError):
        raise
    except Exception as err:  # each library raises its own error types
        raise CheckpointError(
            f"Could not read the {fmt} checkpoint {path!r}: it is truncated, corrupt or not a "
            f"checkpoint ({type(err).__name__}: {err}).") from err


def _read_npz(path):
    with np.load(path, allow_pickle=False) as archive:
        try:
            return {name: np.asarray(archive[name]) for name in archive.files}
        except ValueError as err:
            if "allow_pickle" not in str(err):
                raise
            raise CheckpointError(
                f"Refused to load {path!r}: it holds Python object arrays, and unpickling them "
                f"could run code ({err}).") from err


def _check_safetensors_length(path):
    """A file cut short fails here with a clear message, before the library
    reports it in its own words."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = f.read(length)
    try:
        entries = json.loads(header)
        end = max((e["data_offsets"][1] for k, e in entries.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        raise CheckpointError(
            f"The .safetensors file {path!r} is truncated or corrupt: its header does not "
            f"parse.") from None
    if 8 + length + end > size:
        raise CheckpointError(
            f"The .safetensors file {path!r} is truncated: its header describes "
            f"{8 + length + end} bytes, the file has {size}.")


def _read_safetensors(path):
    from safetensors import safe_open

    _check_safetensors_length(path)
    try:
        with safe_open(path, framework="np") as f:
            arrays = {name: f.get_tensor(name) for name in f.keys()}
        # float32 like the torch path (numpy knows bfloat16 once TF or JAX registered it)
        return {k: v.astype("float32") if v.dtype.name in ("bfloat16", "float16") else v for k, v in arrays.items()}
    except TypeError:  # bfloat16 without TF or JAX loaded: numpy lacks it, read through torch
        _import_torch(f"{path!r} holds bfloat16 tensors, which are read through PyTorch")
        with safe_open(path, framework="pt") as f:
            return state_dict_to_numpy({name: f.get_tensor(name) for name in f.keys()}, path)


def _import_torch(why):
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{why}, and PyTorch is not installed. Install it with `{INSTALL_HINT}` (or convert "
            f"the file to .safetensors elsewhere).") from None
    return torch


def _read_torch(path):
    import pickle

    torch = _import_torch(f"{path!r} is a PyTorch checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refused to load {path!r}: it holds Python objects other than tensors, and "
            f"unpickling them could run code. Save a plain state dict (or a .safetensors file) "
            f"instead. ({err})") from err
    return state_dict_to_numpy(state, path)


def state_dict_to_numpy(state, where):
    """Unwraps {"state_dict": ...} / {"model": ...} / {"module": ...},
    drops a "module." prefix and turns tensors into numpy arrays
    (bfloat16 and float16 become float32).

    Args:
        state: a dict of name -> torch tensor or numpy array.
        where: what to call it in error messages (a path or "state_dict").

    Returns:
        dict of name -> numpy array.

    Example:
    >>> state_dict_to_numpy({"model": {"module.w": np.ones(2)}}, "ckpt")
    {'w': array([1., 1.])}
    """
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
            raise CheckpointError(f"{where!r}: entry {name!r} is a {type(value).__name__}, not a tensor.")
        arrays[name[len("module."):] if name.startswith("module.") else name] = value
    return arrays
