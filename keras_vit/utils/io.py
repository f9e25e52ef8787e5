"""Files and directories written atomically, and the small formats built on
that: JSON, CSV and PNG figures; and `load_keras_file`, which checks a
``.keras`` archive before Keras reads it.

`atomic_path` is the package's one writer: whatever the block writes at the
temporary path (a file or a directory) replaces the target only when the
block finishes without an exception, so a crash never leaves half an
artifact where a good one was. Temporary names start with a dot and carry
``.tmp-``, so `remove_stale_temporaries` can clean up after a killed write;
`destination_lock` holds a destination's lock (`keras_vit.utils.locks`)
and cleans what killed writes of it left.
"""

import contextlib
import csv
import io
import json
import os
import shutil
import uuid
from pathlib import Path

from keras_vit.utils.disk import is_disk_full, make_directory  # noqa: F401 - public here too
from keras_vit.utils.locks import destination_lock_file, destination_locked, exclusive_lock

TMP_TAG = ".tmp-"
OLD_TAG = ".old-"


def _sibling(path, tag):
    """A hidden name beside `path`, unique to this call, that keeps the
    file's suffixes (Keras checks ".keras" and ".weights.h5")."""
    suffix = "".join(path.suffixes) if path.suffix else ""
    return path.with_name(f".{path.name}{tag}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary `Path` beside `path`; moves it onto `path` on success.

    A file is swapped in with one `os.replace`; a directory by renaming the
    old one away, renaming the new one in, then deleting the old one (a
    crash between those two renames leaves the old one at ``.NAME.old-*``).
    On an exception the temporary path is removed and `path` is untouched.
    The parent folder is created when missing.

    Example:
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, TMP_TAG)
    try:
        yield tmp
        if tmp.is_dir():
            old = None
            if path.exists():
                old = _sibling(path, OLD_TAG)
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        elif tmp.exists():
            os.replace(tmp, path)
        else:
            raise FileNotFoundError(f"Nothing was written at the temporary path for {path}.")
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def scratch_dir(path):
    """A temporary folder beside `path`, named as `atomic_path`'s
    temporaries are (so a killed process's one is removed by
    `remove_stale_temporaries` at the next start), deleted after the block.

    Example:
    >>> import tempfile
    >>> with scratch_dir(Path(tempfile.mkdtemp()) / "m.tflite") as work:
    ...     work.is_dir()
    True
    """
    work = _sibling(Path(path), TMP_TAG).with_suffix(".work")
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove_stale_temporaries(folder, name=None, skip_locked=True):
    """Cleans up after killed atomic writes in `folder` (not recursively):
    temporaries (``.NAME.tmp-*``) are deleted; a replaced directory left at
    ``.NAME.old-*`` is moved back to NAME when the kill came between the two
    renames (NAME missing), else deleted. With `name`, only the leftovers
    of writes to that name are touched; those of a destination whose lock
    another process holds (an export in progress) never are, unless
    `skip_locked=False` (for the holder of that lock). Returns the names
    handled.

    Example:
    >>> remove_stale_temporaries("/nonexistent")
    []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if not entry.name.startswith("."):
            continue
        tag = TMP_TAG if TMP_TAG in entry.name else OLD_TAG if OLD_TAG in entry.name else None
        if tag is None:
            continue
        target = folder / entry.name[1:entry.name.index(tag)]
        if (name is not None and target.name != name) or (skip_locked and destination_locked(target)):
            continue
        if tag == OLD_TAG and not target.exists():
            os.replace(entry, target)  # the only copy: the new one never arrived
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return sorted(removed)


class DiskFullError(OSError):
    """A write failed because the disk (or the quota) is full."""


@contextlib.contextmanager
def destination_lock(path, what="export destination"):
    """Holds an exclusive lock on the artifact `path` (a file or a directory
    written atomically) through a hidden lock file beside it, removed on
    release; at the start it cleans the temporaries that killed writes of
    `path` left (`remove_stale_temporaries`).

    Example:
    >>> import tempfile
    >>> with destination_lock(Path(tempfile.mkdtemp()) / "model.tflite"):
    ...     pass
    """
    path = Path(path)
    lock_file = destination_lock_file(path)
    with exclusive_lock(path.parent, what, lock_name=lock_file.name, target=path, remove=True) as record:
        remove_stale_temporaries(path.parent, name=path.name, skip_locked=False)  # ours
        yield record



def write_bytes(path, data):
    """Writes bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text):
    """Writes text atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, data):
    """Writes `data` as indented JSON atomically.

    Example:
    >>> import tempfile
    >>> p = write_json(Path(tempfile.mkdtemp()) / "m.json", {"a": 1})
    >>> json.loads(p.read_text())
    {'a': 1}
    """
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path, rows):
    """Writes dict rows as CSV atomically; columns in order of appearance."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def new_figure(*args, **kwargs):
    """A matplotlib `Figure` on the Agg canvas; the global backend is left
    alone (no `matplotlib.use`)."""
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def save_figure(fig, path):
    """Saves a figure as PNG atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())


PNG_SOFTWARE = "keras_vit"


def write_png(path, pixels):
    """Writes a uint8 image array (H, W[, C]) as PNG atomically with Pillow,
    marked as ours (its "Software" text is `PNG_SOFTWARE`): an existing file
    at `path` is replaced only when it carries that mark."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    path = Path(path)
    if os.path.lexists(path) and not _png_is_ours(path):
        raise ValueError(f"{str(path)!r} exists and is not a PNG that keras_vit wrote; refusing to replace it. "
                         "Remove it, or choose another path.")
    buffer = io.BytesIO()
    array = np.asarray(pixels, dtype="uint8")
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", PNG_SOFTWARE)
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(
        buffer, "PNG", pnginfo=info)
    return write_bytes(path, buffer.getvalue())


def _png_is_ours(path):
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == PNG_SOFTWARE
    except (OSError, ValueError):
        return False


MAX_CONFIG_BYTES = 64 * 2**20


def load_keras_file(path, **kwargs):
    """Loads a ``.keras`` model file with `keras.saving.load_model`, after
    checking the archive, so that a truncated file, a malformed or
    oversized ``config.json`` inside, or a file that safe mode refuses is a
    `ValueError` naming the file.

    Example: `load_keras_file("model.keras")`.
    """
    import zipfile

    import keras

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No .keras model file at {str(path)!r}" + (" (a directory)" if path.is_dir() else "") + ".")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            size = archive.getinfo("config.json").file_size if "config.json" in names else 0
            if size > MAX_CONFIG_BYTES:  # checked before reading: a small archive can inflate to gigabytes
                raise ValueError(f"The config.json inside the model file {path} is too large ({size:,} bytes once "
                                 f"inflated; a model's config is a few kB, at most {MAX_CONFIG_BYTES:,} bytes "
                                 "are read); the file is corrupt or not a model.")
            config = archive.read("config.json") if "config.json" in names else None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"The model file {path} is not a readable .keras archive ({err}); it may be "
                         "truncated or not a Keras 3 model file.") from None
    if config is None:
        raise ValueError(f"The model file {path} holds no config.json; it is not a Keras 3 .keras file.")
    try:
        json.loads(config)
    except ValueError as err:
        raise ValueError(f"The config.json inside the model file {path} is not valid JSON ({err}); the file "
                         "is corrupt. Save the model again.") from None
    try:
        return keras.saving.load_model(path, **kwargs)
    except (TypeError, ValueError) as err:
        text = " ".join(str(err).split())
        if "safe_mode" in text or "Could not locate" in text:  # Keras' safe mode, or a class of no library
            raise ValueError(f"The model file {path} was refused by Keras' safe mode, which builds only Keras' "
                             f"and keras_vit's own classes and no Python code: {text[:500]}") from None
        raise
