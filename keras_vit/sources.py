"""The sources `load_data` reads, each turned into unbatched `tf.data`
splits of (image, int label): in-memory arrays and ``.npz`` files, the
bundled digits, image folders (checked file by file) and TFDS datasets;
and the seeded, stratified carving of test and validation splits (the test
split first, so it never depends on the validation fraction)."""

import os
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vit import preprocessing
from keras_vit.preprocessing import check_image_file

AUTOTUNE = tf.data.AUTOTUNE
SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation", "valid"), "test": ("test",)}


def split_indices(n, fraction, seed, labels=None):
    """Seeded split of range(n) into (rest, held_out), stratified by label.

    `ceil(fraction * n)` indices are held out. Each class gives its share
    of them (the largest remainders round up) where every class can then
    appear on both sides; otherwise the draw is not stratified. NumPy only:
    scikit-learn's splitter cost every run 2.2 s of importing.

    Example:
    >>> rest, held = split_indices(10, 0.3, seed=0, labels=np.array([0] * 5 + [1] * 5))
    >>> len(rest), len(held), sorted(np.bincount(np.array([0] * 5 + [1] * 5)[held]))
    (7, 3, [1, 2])
    """
    if not fraction:
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng(seed)
    held_count = int(np.ceil(fraction * n))
    counts = np.bincount(labels) if labels is not None else None
    classes = np.count_nonzero(counts) if counts is not None else 0
    # stratify where every class can appear on both sides
    if counts is None or counts[counts > 0].min() < 2 or not classes <= held_count <= n - classes:
        held = rng.permutation(n)[:held_count]
    else:
        share = counts * held_count / n
        quota = np.floor(share).astype(int)
        # the remaining places go to the largest remainders, ties in a seeded order
        order = np.lexsort((rng.random(len(counts)), -(share - quota)))
        quota[order[:held_count - quota.sum()]] += 1
        held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in enumerate(quota) if q])
    rest = np.setdiff1d(np.arange(n), held, assume_unique=True)
    return rest, np.sort(held)


def carve_splits(splits, test_split, validation_split, seed):
    """Carves the missing "test", then "validation" split out of
    ``splits["train"]`` (an (x, y) pair), in place; the test split first,
    so it never depends on the validation fraction."""
    x, y = splits["train"]
    for name, fraction, split_seed in (("test", test_split, seed), ("validation", validation_split, seed + 1)):
        if name not in splits:
            if fraction and (len(x) - int(np.ceil(fraction * len(x))) < 1 or fraction * len(x) < 1e-9):
                raise ValueError(
                    f"`{name}_split={fraction}` of the {len(x)} training image(s) left "
                    f"{'after the test split ' if name == 'validation' else ''}leaves no image for training; "
                    f"the data are too few ({len(x)} images). Give more images, or {name}_split=0.")
            rest, held = split_indices(len(x), fraction, split_seed, y)
            splits[name] = (x[held], y[held])
            x, y = x[rest], y[rest]
    splits["train"] = (x, y)
    classes = len(np.unique(np.concatenate([np.asarray(labels) for _, labels in splits.values()])))
    if len(x) < max(2, classes):
        raise ValueError(
            f"The training split holds {len(x)} image(s) for {classes} classes once test_split={test_split} and "
            f"validation_split={validation_split} took theirs: too few to learn every class. Give more images "
            "(several per class), or smaller splits.")


def check_arrays(x, y, num_classes, name="arrays"):
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0:
        raise ValueError(f"The {name} are empty (0 images).")
    if x.dtype.kind not in "uif":
        raise ValueError(f"The images of the {name} must be numbers (uint8, int or float). Received dtype {x.dtype}.")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        raise ValueError(
            f"The images of the {name} hold NaN or infinite pixels ({len(bad)} images, the first at "
            f"index {bad[0]}); training on them gives a NaN loss. Clean or drop them first.")
    if len(x) != len(y):
        raise ValueError(
            f"The images and labels of the {name} have different lengths: "
            f"{len(x)} images and {len(y)} labels.")
    if x.ndim not in (3, 4):
        raise ValueError(
            f"The images of the {name} must have shape (n, height, width) or "
            f"(n, height, width, channels). Received shape {x.shape}.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"The labels of the {name} must be a 1-D array of integer class indices. "
            f"Received dtype {y.dtype} and shape {y.shape}.")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if len(bad):
        raise ValueError(
            f"Labels out of range in the {name}: label {y[bad[0]]} at index {bad[0]} "
            f"({len(bad)} bad labels); labels must be in [0, {num_classes - 1}] "
            f"for num_classes={num_classes}.")
    if x.ndim == 3:
        x = x[..., None]
    return x, y.astype("int32")


def array_splits(arrays, num_classes, test_split, validation_split, seed, remap_labels=False):
    """Splits in-memory arrays; `arrays` maps split name to (x, y)."""
    for name, (_, y) in arrays.items():
        if len(np.asarray(y)) == 0:
            raise ValueError(f"The {name} arrays are empty (0 images).")
    arrays, class_names, num_classes = number_labels(arrays, num_classes, remap_labels)
    checked = {name: check_arrays(x, y, num_classes, f"{name} arrays") for name, (x, y) in arrays.items()}
    checked = scale_unit_floats(checked)
    carve_splits(checked, test_split, validation_split, seed)
    splits = {
        name: tf.data.Dataset.from_tensor_slices(pair_) if len(pair_[0]) else None
        for name, pair_ in checked.items()
    }
    channels = checked["train"][0].shape[-1]
    return splits, class_names or [str(i) for i in range(num_classes)], channels, num_classes


def number_labels(arrays, num_classes, remap_labels):
    """(arrays, class names or None, num_classes): with `remap_labels`, the
    distinct labels numbered 0..K-1 in sorted order (their values become the
    class names); else labels must be the class indices 0..K-1 already."""
    labels = {name: np.asarray(y) for name, (_, y) in arrays.items()}
    labels = {name: y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y for name, y in labels.items()}
    if remap_labels:
        values = np.unique(np.concatenate([y.ravel() for y in labels.values()]))
        arrays = {name: (x, np.searchsorted(values, labels[name]).astype("int32")) for name, (x, _) in arrays.items()}
        return arrays, [str(v) for v in values], len(values)
    kinds = {y.dtype.kind for y in labels.values()}
    if not kinds <= {"i", "u"}:
        raise ValueError(
            f"The labels must be integer class indices 0..K-1; received labels of dtype "
            f"{next(y.dtype for y in labels.values() if y.dtype.kind not in 'iu')}. Pass remap_labels=True "
            "(keras-vit train --remap-labels) to number the distinct labels 0..K-1 (their values become the "
            "class names).")
    if num_classes is None:
        present = np.unique(np.concatenate([y.ravel() for y in labels.values()]))
        num_classes = max(int(present.max()) + 1, 1)
        missing = np.setdiff1d(np.arange(num_classes), present)
        if present.min() >= 0 and missing.size:
            raise ValueError(
                f"The labels are not the class indices 0..{num_classes - 1}: {len(present)} distinct labels "
                f"(from {present.min()} to {present.max()}), and {missing.size} of the {num_classes} classes "
                f"they imply have no image (e.g. {', '.join(map(str, missing[:5]))}). Pass remap_labels=True "
                "(keras-vit train --remap-labels) to number the distinct labels 0..K-1, or num_classes="
                f"{num_classes} if those classes are meant to be empty.")
    return arrays, None, num_classes


def scale_unit_floats(checked):
    """Float images whose pixels all lie in [0, 1] are scaled to [0, 255]
    (the models take raw pixels and rescale them themselves), with one
    warning saying so."""
    images = [x for x, _ in checked.values()]
    if not all(x.dtype.kind == "f" for x in images) or max(float(x.max()) for x in images) > 1.0 \
            or min(float(x.min()) for x in images) < 0.0 or max(float(x.max()) for x in images) == 0.0:
        return checked
    warnings.warn("The images are floats in [0, 1]; keras_vit scaled them to [0, 255], the raw pixels its "
                  "models take (they rescale pixels themselves).", stacklevel=4)
    return {name: (x * np.float32(255.0), y) for name, (x, y) in checked.items()}


def digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype("float32")
    return images, digits.target.astype("int32"), [str(n) for n in digits.target_names]


def read_npz(path):
    import zipfile

    if os.path.isdir(path):
        raise ValueError(f"The .npz path {path} is a directory, not an .npz file.")
    if not os.path.isfile(path):
        raise ValueError(f"The .npz file does not exist: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"The .npz file {path} holds a single array, not named arrays; write it with "
                             "numpy.savez(path, x=images, y=labels).")
        with data:
            return _npz_arrays(path, data)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as err:
        if isinstance(err, ValueError) and str(err).startswith("The .npz file"):
            raise
        raise ValueError(
            f"The .npz file {path} cannot be read ({type(err).__name__}: {err}); it is truncated, corrupt "
            "or not an .npz file (write it with numpy.savez).") from None


def _npz_arrays(path, data):
    keys = set(data.files)
    if {"x", "y"} <= keys:
        arrays = {"train": (data["x"], data["y"])}
    elif {"x_train", "y_train"} <= keys:
        arrays = {"train": (data["x_train"], data["y_train"])}
        for split, suffix in (("validation", "val"), ("test", "test")):
            if {f"x_{suffix}", f"y_{suffix}"} <= keys:
                arrays[split] = (data[f"x_{suffix}"], data[f"y_{suffix}"])
    else:
        raise ValueError(
            f"The .npz file {path} must hold arrays 'x' and 'y', or 'x_train', "
            f"'y_train' (and optionally 'x_val', 'y_val', 'x_test', 'y_test'). "
            f"It holds: {sorted(keys)}.")
    class_names = [str(c) for c in data["class_names"]] if "class_names" in keys else None
    return arrays, class_names


def list_class_folder(root, bad):
    """Lists (paths, labels, class_names) of `root/<class>/*`."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"The image folder {root} has no class sub-folders; expected "
            f"{root}/<class>/<image>.png or {root}/train/<class>/<image>.png.")
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        good = []
        for path in files:
            reason = check_image_file(path)
            if reason:
                bad.append(f"{path} ({reason})")
            else:
                good.append(path)
        if not good:
            raise ValueError(f"The class folder {class_dir} holds no readable images.")
        paths += [str(p) for p in good]
        labels += [label] * len(good)
    return paths, labels, [d.name for d in class_dirs]


def folder_splits(root, channels, on_bad_files, test_split, validation_split, seed):
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"The image folder does not exist: {root} (for a TFDS dataset with a "
                         f"config, write 'tfds:{root}')")
    found = {
        split: next((root / n for n in names if (root / n).is_dir()), None)
        for split, names in SPLIT_FOLDERS.items()
    }
    bad = []
    if found["train"] is not None:
        listed = {s: list_class_folder(d, bad) for s, d in found.items() if d is not None}
        class_names = listed["train"][2]
        for split, (_, _, names) in listed.items():
            if names != class_names:
                raise ValueError(
                    f"The class folders of {found[split]} ({names}) differ from those of "
                    f"{found['train']} ({class_names}).")
        arrays = {s: (np.array(p), np.array(l, "int32")) for s, (p, l, _) in listed.items()}
    else:
        paths, labels, class_names = list_class_folder(root, bad)
        arrays = {"train": (np.array(paths), np.array(labels, "int32"))}
    if bad:
        message = f"{len(bad)} unreadable file(s) in {root}: " + "; ".join(bad[:20]) + (
            " ..." if len(bad) > 20 else "")
        if on_bad_files == "error":
            raise ValueError(message + " (on_bad_files='error'; use 'warn' to skip them)")
        warnings.warn("Skipped " + message, stacklevel=3)
    carve_splits(arrays, test_split, validation_split, seed)

    def decode(path, label):
        return preprocessing.decode_file(path, channels), label

    splits = {
        s: tf.data.Dataset.from_tensor_slices(a).map(decode, num_parallel_calls=AUTOTUNE) if len(a[0]) else None
        for s, a in arrays.items()
    }
    return splits, class_names, channels


def carve_tfds(train, test_split, validation_split):
    """Test, then validation, carved from one TFDS split by percentages."""
    test_start = round(100 * (1 - test_split))
    val_start = round(test_start * (1 - validation_split))
    if not 0 < val_start <= test_start:
        raise ValueError(
            f"test_split={test_split} and validation_split={validation_split} leave no training data.")
    return {
        "train": f"{train}[:{val_start}%]",
        "validation": f"{train}[{val_start}%:{test_start}%]" if val_start < test_start else None,
        "test": f"{train}[{test_start}%:]" if test_start < 100 else None,
    }


def tfds_builder(name, data_dir, download=False):
    """The TFDS builder of `name` in `data_dir`, downloaded and prepared first
    when `download` is true (a download that fails is a `ValueError` that
    says what to do, not the downloader's traceback)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}: it is neither 'digits', an existing folder or "
            f".npz file, nor a TFDS dataset name (see tfds.list_builders()).") from None
    if download:  # a no-op where it is prepared already
        try:
            builder.download_and_prepare()
        except Exception as err:  # noqa: BLE001 - the downloader raises many types for one cause
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"download=True could not download and prepare the TFDS dataset {name!r} into "
                f"{builder.data_dir} ({type(err).__name__}: {reason}). Run it where the network is "
                f"reachable (`tfds build {name}`), then point `data_dir` at that folder.") from None
    return builder


def tfds_splits(name, data_dir, download, splits, validation_split, test_split):
    builder = tfds_builder(name, data_dir, download)
    if not download and not builder.is_prepared():
        raise ValueError(
            f"The TFDS dataset {name!r} is not prepared in {builder.data_dir} "
            f"(data_dir={data_dir!r}). Download it first (`tfds build {name}` or "
            f"load_data(..., download=True) with network access), or point `data_dir` "
            f"at a folder that holds it.")
    if splits is None:
        # Without metadata (e.g. under tfds.testing.mock_data) assume the
        # usual "train" and "test" splits.
        available = set(builder.info.splits) or {"train", "test"}
        if "train" not in available:
            raise ValueError(
                f"Cannot tell the splits of TFDS dataset {name!r} (available: "
                f"{sorted(available)}); pass splits=dict(train=..., test=...).")
        validation = next((s for s in ("validation", "val") if s in available), None)
        if "test" not in available:
            splits = carve_tfds("train", test_split, 0 if validation else validation_split)
            splits["validation"] = validation or splits["validation"]
        else:
            splits = {"train": "train", "validation": validation, "test": "test"}
    else:
        unknown = set(splits) - set(SPLIT_FOLDERS)
        if unknown or "train" not in splits:
            raise ValueError(
                f"`splits` must map 'train' (and optionally 'validation', 'test') to TFDS "
                f"split names. Received: splits={splits!r}")
        splits = dict(splits)
    if not splits.get("validation") and validation_split:
        train = splits["train"]
        percent = round(100 * (1 - validation_split))
        base, sliced = (train.split("[")[0], True) if "[" in train else (train, False)
        if sliced:
            raise ValueError(
                f"Cannot carve a validation split from the sliced split {train!r}; "
                f"pass splits=dict(validation=...) or validation_split=0.")
        splits["train"], splits["validation"] = f"{base}[:{percent}%]", f"{base}[{percent}%:]"
    datasets = {
        s: builder.as_dataset(split=v, shuffle_files=False).map(lambda ex: (ex["image"], ex["label"]))
        if v else None
        for s, v in ((s, splits.get(s)) for s in SPLIT_FOLDERS)
    }
    label = builder.info.features["label"]
    channels = builder.info.features["image"].shape[-1]
    return datasets, list(label.names), channels
