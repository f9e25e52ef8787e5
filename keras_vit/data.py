"""Input pipelines: `load_data` turns a data source into batched `tf.data`
datasets of (images, labels), and `build_augmentation` makes the training
augmentation out of Keras preprocessing layers.

Sources, in the order `load_data` recognises them:

* ``"digits"``: scikit-learn's bundled 8x8 handwritten digits (offline).
* a numpy pair ``(x, y)`` or an ``.npz`` file with ``x``/``y`` or
  ``x_train``/``y_train``/``x_test``/``y_test`` arrays.
* an image folder: ``root/<class>/*.png`` or
  ``root/{train,val,test}/<class>/*.png``.
* a TFDS name such as ``"cifar10"`` (optionally ``"tfds:cifar10"``), read
  from ``data_dir``; nothing is downloaded unless ``download=True``.

Images come out as float32 pixels in [0, 255] of the requested size and
channel count (the models rescale them themselves). Labels are one-hot
float32 vectors (``label_mode="categorical"``, needed by label smoothing,
MixUp and CutMix) or int32 class indices (``label_mode="int"``).

The test split is set aside first, before the validation split is carved
from what is left, so test images never reach training or model selection.
"""

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vit import preprocessing
from keras_vit.preprocessing import IMAGE_EXTENSIONS, INTERPOLATIONS, RESIZE_MODES, ImageSettings
from keras_vit.utils.validation import check_choice, check_rate, pair

AUTOTUNE = tf.data.AUTOTUNE
LABEL_MODES = ("categorical", "int")
BAD_FILE_POLICIES = ("warn", "error")
SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation", "valid"), "test": ("test",)}

# Named augmentation strengths: keyword arguments of `build_augmentation`.
AUGMENTATIONS = {
    "none": {},
    # shapes that must not be mirrored (digits, letters)
    "digits": dict(translate=0.1, rotate=0.04),
    "light": dict(flip=True, translate=0.1),
    "medium": dict(flip=True, crop_padding=0.125, rand_augment=0.3, mixup=0.2),
    "strong": dict(flip=True, crop_padding=0.125, rand_augment=0.5, mixup=0.8, cutmix=1.0),
}


@dataclasses.dataclass
class DataInfo:
    """What `load_data` knows about the data it loaded.

    Args:
        class_names: list of class names, index = label.
        num_classes: number of classes.
        image_size: (height, width) of the images in the datasets.
        channels: channels of the images in the datasets.
        split_sizes: dict with the number of examples in "train",
            "validation" and "test" (None where unknown).
        source: a short description of where the data came from.
        label_mode: "categorical" (one-hot) or "int".
        preprocessing: the `keras_vit.preprocessing.ImageSettings` the
            images were prepared with, as a dict.

    Example:
    >>> train, val, test, info = load_data("digits", 16, 32)
    >>> info.num_classes, info.channels
    (10, 1)
    """

    class_names: list
    num_classes: int
    image_size: tuple
    channels: int
    split_sizes: dict
    source: str
    label_mode: str = "categorical"
    preprocessing: dict = None

    def to_dict(self):
        """Returns the info as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# Augmentation: Keras preprocessing layers only.
# --------------------------------------------------------------------------


def augmentation_options(augment):
    """Resolves `augment` (a name from `AUGMENTATIONS`, a strength in
    [0, 1], a dict of `build_augmentation` options or None) to a dict.

    A float strength `s` scales a "strong" recipe: flips, padding-and-crop,
    RandAugment of magnitude `s`, MixUp alpha `0.8 s` and CutMix at `s`.

    Args:
        augment: None, str, float or dict.

    Returns:
        dict of keyword arguments for `build_augmentation`.

    Example:
    >>> augmentation_options("light")
    {'flip': True, 'translate': 0.1}
    """
    if augment is None:
        return {}
    if isinstance(augment, str):
        check_choice(augment, "augment", tuple(AUGMENTATIONS))
        return dict(AUGMENTATIONS[augment])
    if isinstance(augment, dict):
        return dict(augment)
    if isinstance(augment, (int, float)) and not isinstance(augment, bool) and 0 <= augment <= 1:
        if augment == 0:
            return {}
        return dict(
            flip=True, crop_padding=0.125, rand_augment=float(augment),
            mixup=round(0.8 * augment, 4), cutmix=float(augment),
        )
    raise ValueError(
        f"`augment` must be None, a strength in [0, 1], a dict of options or one of "
        f"{', '.join(repr(a) for a in AUGMENTATIONS)}. Received: augment={augment!r}"
    )


def build_augmentation(
    image_size,
    num_classes,
    *,
    flip=False,
    crop_padding=0.0,
    translate=0.0,
    rotate=0.0,
    zoom=0.0,
    rand_augment=0.0,
    rand_augment_ops=2,
    mixup=0.0,
    cutmix=0.0,
    seed=None,
):
    """Builds the training augmentation, a function on batches.

    Every step is a Keras preprocessing layer; a step whose option is 0 or
    False is left out. Image steps run first, then MixUp and CutMix, which
    mix the one-hot labels too (each is applied to a random half of the
    batches when both are on).

    Args:
        image_size: int or (h, w), the size of the images.
        num_classes: number of classes (for checks of the label shape).
        flip: bool, random horizontal flips.
        crop_padding: fraction of the size to zero-pad on each side before
            a random crop back to `image_size` (CIFAR-style crops).
        translate: fraction of the size for random translations.
        rotate: fraction of a full turn for random rotations.
        zoom: fraction for random zoom in and out.
        rand_augment: RandAugment magnitude in [0, 1]; 0 turns it off.
        rand_augment_ops: number of RandAugment operations per image.
        mixup: MixUp alpha; 0 turns it off.
        cutmix: CutMix factor; 0 turns it off.
        seed: optional int for the layers' random generators.

    Returns:
        A function `(images, labels) -> (images, labels)` on batches of
        float pixels in [0, 255]; labels must be one-hot when MixUp or
        CutMix is on.

    Example:
    >>> augment = build_augmentation(16, 10, flip=True, mixup=0.2)
    >>> x, y = augment(tf.zeros((4, 16, 16, 3)), tf.one_hot([1, 2, 3, 4], 10))
    """
    import keras

    height, width = pair(image_size, "image_size")
    for name, value in (("crop_padding", crop_padding), ("translate", translate),
                        ("rotate", rotate), ("zoom", zoom)):
        check_rate(value, name)
    if not 0 <= rand_augment <= 1:
        raise ValueError(f"`rand_augment` must be in [0, 1]. Received: rand_augment={rand_augment!r}")
    if mixup < 0 or cutmix < 0:
        raise ValueError(f"`mixup` and `cutmix` must be >= 0. Received: mixup={mixup!r}, cutmix={cutmix!r}")

    steps = []
    if flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if crop_padding:
        pad_h, pad_w = max(1, round(crop_padding * height)), max(1, round(crop_padding * width))
        steps.append(keras.layers.ZeroPadding2D((pad_h, pad_w)))
        steps.append(keras.layers.RandomCrop(height, width, seed=seed))
    if translate:
        steps.append(keras.layers.RandomTranslation(translate, translate, fill_mode="constant", seed=seed))
    if rotate:
        steps.append(keras.layers.RandomRotation(rotate, fill_mode="constant", seed=seed))
    if zoom:
        steps.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed))
    if rand_augment:
        steps.append(keras.layers.RandAugment(
            value_range=(0, 255), num_ops=rand_augment_ops, factor=rand_augment, seed=seed))
    mixers = []
    if mixup:
        mixers.append(keras.layers.MixUp(alpha=mixup, seed=seed))
    if cutmix:
        mixers.append(keras.layers.CutMix(factor=cutmix, seed=seed))
    rng = tf.random.Generator.from_seed(seed or 0) if len(mixers) == 2 else None

    def augment(images, labels):
        images = tf.cast(images, "float32")
        for layer in steps:
            images = layer(images, training=True)
        if mixers and (labels.shape.rank != 2 or labels.shape[-1] != num_classes):
            raise ValueError(
                "MixUp and CutMix need one-hot labels of shape (batch, num_classes); use "
                f"label_mode='categorical'. Received labels of shape {labels.shape}."
            )

        def mix(layer):
            out = layer({"images": images, "labels": labels}, training=True)
            return tf.cast(out["images"], "float32"), tf.cast(out["labels"], "float32")

        if len(mixers) == 2:
            images, labels = tf.cond(
                rng.uniform(()) < 0.5, lambda: mix(mixers[0]), lambda: mix(mixers[1]))
        elif mixers:
            images, labels = mix(mixers[0])
        return tf.clip_by_value(images, 0.0, 255.0), labels

    augment.options = dict(
        flip=flip, crop_padding=crop_padding, translate=translate, rotate=rotate, zoom=zoom,
        rand_augment=rand_augment, rand_augment_ops=rand_augment_ops, mixup=mixup, cutmix=cutmix,
    )
    return augment


# --------------------------------------------------------------------------
# Sources. Each returns (splits, class_names, channels, description) where
# splits maps "train"/"validation"/"test" to an unbatched dataset of
# (image, int label) or to None, and images are not yet resized.
# --------------------------------------------------------------------------


def _split_indices(n, fraction, seed, labels=None):
    """Seeded split of range(n) into (rest, held_out), stratified by label."""
    if not fraction:
        return np.arange(n), np.arange(0)
    from sklearn.model_selection import train_test_split

    held_count = int(np.ceil(fraction * n))
    stratify = None
    if labels is not None:
        counts = np.bincount(labels)
        classes = np.count_nonzero(counts)
        # stratify where every class can appear on both sides
        if counts[counts > 0].min() >= 2 and classes <= held_count <= n - classes:
            stratify = labels
    rest, held = train_test_split(
        np.arange(n), test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(held)


def _carve_splits(splits, test_split, validation_split, seed):
    """Carves the missing "test", then "validation" split out of
    ``splits["train"]`` (an (x, y) pair), in place; the test split first,
    so it never depends on the validation fraction."""
    x, y = splits["train"]
    for name, fraction, split_seed in (("test", test_split, seed), ("validation", validation_split, seed + 1)):
        if name not in splits:
            rest, held = _split_indices(len(x), fraction, split_seed, y)
            splits[name] = (x[held], y[held])
            x, y = x[rest], y[rest]
    splits["train"] = (x, y)


def _check_arrays(x, y, num_classes, name="arrays"):
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


def _array_splits(arrays, num_classes, test_split, validation_split, seed):
    """Splits in-memory arrays; `arrays` maps split name to (x, y)."""
    for name, (_, y) in arrays.items():
        if len(np.asarray(y)) == 0:
            raise ValueError(f"The {name} arrays are empty (0 images).")
    if num_classes is None:
        num_classes = int(max(np.max(np.asarray(y)) for _, y in arrays.values())) + 1
    checked = {name: _check_arrays(x, y, num_classes, f"{name} arrays") for name, (x, y) in arrays.items()}
    _carve_splits(checked, test_split, validation_split, seed)
    splits = {
        name: tf.data.Dataset.from_tensor_slices(pair_) if len(pair_[0]) else None
        for name, pair_ in checked.items()
    }
    channels = checked["train"][0].shape[-1]
    return splits, [str(i) for i in range(num_classes)], channels, num_classes


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype("float32")
    return images, digits.target.astype("int32"), [str(n) for n in digits.target_names]


def _npz(path):
    with np.load(path) as data:
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


def _check_image_file(path):
    """Returns None for a readable image, else the reason it is not one."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file"
    if path.stat().st_size == 0:
        return "zero bytes"
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # PIL raises many kinds of errors for bad files
        return f"cannot be decoded ({type(err).__name__})"
    return None


def _list_class_folder(root, bad):
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
            reason = _check_image_file(path)
            if reason:
                bad.append(f"{path} ({reason})")
            else:
                good.append(path)
        if not good:
            raise ValueError(f"The class folder {class_dir} holds no readable images.")
        paths += [str(p) for p in good]
        labels += [label] * len(good)
    return paths, labels, [d.name for d in class_dirs]


def _folder_splits(root, channels, on_bad_files, test_split, validation_split, seed):
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
        listed = {s: _list_class_folder(d, bad) for s, d in found.items() if d is not None}
        class_names = listed["train"][2]
        for split, (_, _, names) in listed.items():
            if names != class_names:
                raise ValueError(
                    f"The class folders of {found[split]} ({names}) differ from those of "
                    f"{found['train']} ({class_names}).")
        arrays = {s: (np.array(p), np.array(l, "int32")) for s, (p, l, _) in listed.items()}
    else:
        paths, labels, class_names = _list_class_folder(root, bad)
        arrays = {"train": (np.array(paths), np.array(labels, "int32"))}
    if bad:
        message = f"{len(bad)} unreadable file(s) in {root}: " + "; ".join(bad[:20]) + (
            " ..." if len(bad) > 20 else "")
        if on_bad_files == "error":
            raise ValueError(message + " (on_bad_files='error'; use 'warn' to skip them)")
        warnings.warn("Skipped " + message, stacklevel=3)
    _carve_splits(arrays, test_split, validation_split, seed)

    def decode(path, label):
        return preprocessing.decode_image(tf.io.read_file(path), channels), label

    splits = {
        s: tf.data.Dataset.from_tensor_slices(a).map(decode, num_parallel_calls=AUTOTUNE) if len(a[0]) else None
        for s, a in arrays.items()
    }
    return splits, class_names, channels


def _carve_tfds(train, test_split, validation_split):
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


def _tfds_splits(name, data_dir, download, splits, validation_split, test_split):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}: it is neither 'digits', an existing folder or "
            f".npz file, nor a TFDS dataset name (see tfds.list_builders()).") from None
    if download:
        builder.download_and_prepare()
    elif not builder.is_prepared():
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
            splits = _carve_tfds("train", test_split, 0 if validation else validation_split)
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


# --------------------------------------------------------------------------
# load_data
# --------------------------------------------------------------------------


def load_data(
    source="digits",
    image_size=32,
    batch_size=64,
    *,
    validation_split=0.1,
    test_split=0.2,
    seed=0,
    augment=None,
    channels=None,
    label_mode="categorical",
    resize="resize",
    interpolation="bilinear",
    antialias=True,
    num_classes=None,
    data_dir=None,
    download=False,
    splits=None,
    cache=True,
    shuffle_buffer=10000,
    on_bad_files="warn",
):
    """Loads a data source as train, validation and test `tf.data` datasets.

    Args:
        source: "digits", a TFDS name ("cifar10" or "tfds:cifar10"), an image
            folder path, an ``.npz`` path, or a pair of arrays ``(x, y)``.
        image_size: int or (h, w), the size images are resized (or padded)
            to.
        batch_size: int, batch size of all three datasets.
        validation_split: fraction of the training data held out for
            validation where the source has no validation split.
        test_split: fraction held out for testing where the source has no
            test split (taken first, so it never overlaps the others).
        seed: int seed of the splits and shuffles.
        augment: None, a name from `AUGMENTATIONS`, a strength in [0, 1],
            a dict of `build_augmentation` options, or a function
            `(images, labels) -> (images, labels)` on batches. Applied to
            the training dataset only.
        channels: 1 or 3; defaults to the source's channels (3 for folders).
        label_mode: "categorical" (one-hot float32) or "int".
        resize: "resize" (stretch) or "pad" (keep the aspect ratio and pad).
        interpolation: "bilinear", "bicubic", "nearest" or "area".
        antialias: bool, low-pass filter when shrinking. Images go through
            `keras_vit.preprocessing`, the same path as serving.
        num_classes: classes of array sources; inferred when None.
        data_dir: TFDS data directory.
        download: bool, let TFDS download and prepare a missing dataset.
        splits: optional dict mapping "train", "validation", "test" to TFDS
            split names such as "train[:90%]".
        cache: True to cache decoded images in memory, a file path to cache
            on disk, or False.
        shuffle_buffer: int, shuffle buffer size of the training dataset.
        on_bad_files: image folders are checked file by file with Pillow
            when listed; "warn" skips zero-byte, corrupt and
            non-image files with one warning listing them; "error" raises a
            ValueError listing them.

    Returns:
        (train, validation, test, info): batched datasets of (images,
        labels) and a `DataInfo`. `validation` is None when
        `validation_split=0` and the source has no validation split.

    Example:
    >>> train, val, test, info = load_data("digits", image_size=16, batch_size=32)
    >>> images, labels = next(iter(train))
    >>> images.shape, labels.shape
    (TensorShape([32, 16, 16, 1]), TensorShape([32, 10]))
    """
    size = pair(image_size, "image_size")
    check_choice(label_mode, "label_mode", LABEL_MODES)
    check_choice(resize, "resize", RESIZE_MODES)
    check_choice(interpolation, "interpolation", INTERPOLATIONS)
    check_choice(on_bad_files, "on_bad_files", BAD_FILE_POLICIES)
    if channels is not None:
        check_choice(channels, "channels", (1, 3))
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")

    if isinstance(source, (tuple, list)) and len(source) == 2:
        x, y = source
        datasets, class_names, source_channels, num_classes = _array_splits(
            {"train": (x, y)}, num_classes, test_split, validation_split, seed)
        description = "arrays"
    elif not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "`source` must be 'digits', a TFDS name, a folder or .npz path, or a pair of "
            f"arrays (x, y). Received: source of type {type(source).__name__}")
    elif str(source) == "digits":
        x, y, names = _digits()
        datasets, _, source_channels, num_classes = _array_splits(
            {"train": (x, y)}, 10, test_split, validation_split, seed)
        class_names, description = names, "digits (scikit-learn, 8x8)"
    elif str(source).endswith(".npz"):
        if not os.path.isfile(source):
            raise ValueError(f"The .npz file does not exist: {source}")
        arrays, names = _npz(source)
        if names is not None and num_classes is None:
            num_classes = len(names)
        datasets, class_names, source_channels, num_classes = _array_splits(
            arrays, num_classes, test_split, validation_split, seed)
        class_names = names or class_names
        description = f"npz:{source}"
    elif not str(source).startswith("tfds:") and (
            os.sep in str(source) or os.path.isdir(source) or str(source).startswith(".")):
        source_channels = channels or 3
        datasets, class_names, _ = _folder_splits(
            source, source_channels, on_bad_files, test_split, validation_split, seed)
        description = f"folder:{source}"
    else:
        name = str(source).removeprefix("tfds:")
        datasets, class_names, source_channels = _tfds_splits(
            name, data_dir, download, splits, validation_split, test_split)
        description = f"tfds:{name}"
    num_classes = len(class_names)
    if num_classes < 2:
        raise ValueError(
            f"The data has {num_classes} class ({', '.join(map(str, class_names))}); a classifier needs at "
            "least 2 classes (every prediction would be right and nothing learned).")
    channels = channels or source_channels

    settings = ImageSettings(size, channels, interpolation, antialias, resize)

    def prepare(image, label):
        image = tf.ensure_shape(preprocessing.prepare(image, settings), (*size, channels))
        label = tf.cast(label, "int32")
        if label_mode == "categorical":
            label = tf.one_hot(label, num_classes, dtype="float32")
        return image, label

    augment_fn = augment if callable(augment) else None
    if augment_fn is None:
        options = augmentation_options(augment)
        if options:
            augment_fn = build_augmentation(size, num_classes, seed=seed, **options)

    out, sizes = {}, {}
    for split in SPLIT_FOLDERS:
        ds = datasets.get(split)
        if ds is None:
            out[split], sizes[split] = None, 0
            continue
        ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
        if cache:
            ds = ds.cache(f"{cache}_{split}" if isinstance(cache, (str, os.PathLike)) else "")
        count = int(ds.cardinality())
        sizes[split] = count if count >= 0 else None
        if split == "train":
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        if split == "train" and augment_fn is not None:
            ds = ds.map(augment_fn, num_parallel_calls=AUTOTUNE)
        out[split] = ds.prefetch(AUTOTUNE)
    info = DataInfo(
        class_names=class_names, num_classes=num_classes, image_size=size, channels=channels,
        split_sizes=sizes, source=description, label_mode=label_mode, preprocessing=settings.to_dict(),
    )
    return out["train"], out["validation"], out["test"], info
