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

import tensorflow as tf

from keras_vit import preprocessing
from keras_vit.augment import AUGMENTATIONS, augment_batches, augmentation_options, build_augmentation  # noqa: F401 (public here too)
from keras_vit.preprocessing import INTERPOLATIONS, RESIZE_MODES, ImageSettings
from keras_vit.sources import SPLIT_FOLDERS, array_splits, digits, folder_splits, read_npz, tfds_splits
from keras_vit.utils.validation import (check_choice, check_class_names, check_positive_int, check_seed, pair,
                                       strict_keywords)

AUTOTUNE = tf.data.AUTOTUNE
# Images of one size are converted and resized this many at a time, the same
# numbers as one by one: the first pass over MNIST's training split (49,500
# images to 32 px, batches of 128) took 1.27 s instead of 4.35 s, time that a
# first epoch otherwise takes from the training steps on the same cores.
PREPARE_BATCH = 1024
# tf.data's autotuning thread is off: with TensorFlow 2.21, deleting an
# autotuned iterator waits for that thread's current sleep, which grows with
# the iterator's age (a 25 s old one took 15.9 s to delete here). Keras deletes
# its iterators at the end of `fit` and `evaluate`, and at exit: budgeted runs
# stalled 20-46 s after their last epoch. Without it, AUTOTUNE parallelism is
# the number of cores.
PIPELINE_OPTIONS = tf.data.Options()
PIPELINE_OPTIONS.autotune.enabled = False
LABEL_MODES = ("categorical", "int")
BAD_FILE_POLICIES = ("warn", "error")



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


def _check_cache(cache):
    """`cache` is a bool or a file prefix in a folder that exists and can be written."""
    if isinstance(cache, bool):
        return
    if not isinstance(cache, (str, os.PathLike)) or not os.fspath(cache):
        raise ValueError(f"`cache` must be True, False or a file path prefix. Received: cache={cache!r}")
    folder = os.path.dirname(os.path.abspath(cache))
    if not os.path.isdir(folder):
        raise ValueError(f"The folder of `cache` does not exist: {folder} (cache={os.fspath(cache)!r}).")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"The folder of `cache` cannot be written: {folder} (cache={os.fspath(cache)!r}).")
    if os.path.isdir(cache):
        raise ValueError(f"`cache` is a file prefix, not a directory: {os.fspath(cache)!r} (try {os.path.join(os.fspath(cache), 'cache')!r}).")


# --------------------------------------------------------------------------
# load_data
# --------------------------------------------------------------------------


@strict_keywords()
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
    remap_labels=False,
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
        seed: int seed of the splits, the shuffles and the augmentation's
            per-batch seeds (`augment_batches`).
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
        remap_labels: bool; array and ``.npz`` labels must be the class
            indices 0..K-1 (a label set with gaps is refused) unless True,
            which numbers the distinct labels 0..K-1 in sorted order and
            makes their values the class names. Float images whose pixels
            all lie in [0, 1] are scaled to [0, 255], with a warning.

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
    _check_load_args(batch_size, validation_split, test_split, seed, channels, label_mode, resize,
                     interpolation, shuffle_buffer, on_bad_files, cache)
    check_choice(remap_labels, "remap_labels", (True, False))
    datasets, class_names, source_channels, description = _read_source(
        source, channels, num_classes, data_dir, download, splits, validation_split, test_split, seed,
        on_bad_files, remap_labels)
    num_classes = len(class_names)
    try:
        check_class_names(class_names, num_classes)
    except ValueError as err:
        raise ValueError(f"The classes of {description}: {err}") from None
    if num_classes < 2:
        raise ValueError(
            f"The data has {num_classes} class ({', '.join(map(str, class_names))}); a classifier needs at "
            "least 2 classes (every prediction would be right and nothing learned).")
    channels = channels or source_channels
    settings = ImageSettings(size, channels, interpolation, antialias, resize)
    augment_fn = augment if callable(augment) else None
    if augment_fn is None:
        options = augmentation_options(augment)
        if options:
            augment_fn = build_augmentation(size, num_classes, seed=seed, **options)
    out, sizes = {}, {}
    for split in SPLIT_FOLDERS:
        out[split], sizes[split] = _pipeline(
            datasets.get(split), split, settings, num_classes, label_mode, batch_size, cache,
            shuffle_buffer, seed, augment_fn)
    info = DataInfo(
        class_names=class_names, num_classes=num_classes, image_size=size, channels=channels,
        split_sizes=sizes, source=description, label_mode=label_mode, preprocessing=settings.to_dict(),
    )
    return out["train"], out["validation"], out["test"], info


def _check_load_args(batch_size, validation_split, test_split, seed, channels, label_mode, resize,
                     interpolation, shuffle_buffer, on_bad_files, cache):
    """Checks `load_data`'s settings before any source is read."""
    check_choice(label_mode, "label_mode", LABEL_MODES)
    check_choice(resize, "resize", RESIZE_MODES)
    check_choice(interpolation, "interpolation", INTERPOLATIONS)
    check_choice(on_bad_files, "on_bad_files", BAD_FILE_POLICIES)
    if channels is not None:
        check_choice(channels, "channels", (1, 3))
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    check_positive_int(shuffle_buffer, "shuffle_buffer")
    check_seed(seed)
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")
    _check_cache(cache)


def _read_source(source, channels, num_classes, data_dir, download, splits, validation_split, test_split,
                 seed, on_bad_files, remap_labels=False):
    """(unbatched datasets by split, class names, the source's channels, a description) of a source."""
    if isinstance(source, (tuple, list)) and len(source) == 2:
        x, y = source
        datasets, class_names, source_channels, _ = array_splits(
            {"train": (x, y)}, num_classes, test_split, validation_split, seed, remap_labels)
        return datasets, class_names, source_channels, "arrays"
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "`source` must be 'digits', a TFDS name, a folder or .npz path, or a pair of "
            f"arrays (x, y). Received: source of type {type(source).__name__}")
    if str(source) == "digits":
        x, y, names = digits()
        datasets, _, source_channels, _ = array_splits({"train": (x, y)}, 10, test_split, validation_split, seed)
        return datasets, names, source_channels, "digits (scikit-learn, 8x8)"
    if str(source).endswith(".npz"):
        arrays, names = read_npz(source)
        if names is not None and num_classes is None:
            num_classes = len(names)
        datasets, class_names, source_channels, _ = array_splits(
            arrays, num_classes, test_split, validation_split, seed, remap_labels and names is None)
        return datasets, names or class_names, source_channels, f"npz:{source}"
    if not str(source).startswith("tfds:") and (
            os.sep in str(source) or os.path.isdir(source) or str(source).startswith(".")):
        source_channels = channels or 3
        datasets, class_names, _ = folder_splits(
            source, source_channels, on_bad_files, test_split, validation_split, seed)
        return datasets, class_names, source_channels, f"folder:{source}"
    name = str(source).removeprefix("tfds:")
    datasets, class_names, source_channels = tfds_splits(
        name, data_dir, download, splits, validation_split, test_split)
    return datasets, class_names, source_channels, f"tfds:{name}"


def _pipeline(ds, split, settings, num_classes, label_mode, batch_size, cache, shuffle_buffer, seed, augment_fn):
    """(the batched dataset, its example count) of one split; (None, 0) for a missing split."""
    if ds is None:
        return None, 0
    shape = (*settings.image_size, settings.channels)

    # tf.data would run AutoGraph over this and all it calls, rewriting their
    # Python source each time a pipeline is built (about half a CPU-second
    # here); they branch on tensors with tf.cond only, so it changes nothing
    @tf.autograph.experimental.do_not_convert
    def prepare(image, label):  # one image, or a batch (`image.shape` then has a leading axis)
        image = tf.ensure_shape(preprocessing.prepare(image, settings), (*image.shape[:-3], *shape))
        label = tf.cast(label, "int32")
        if label_mode == "categorical":
            label = tf.one_hot(label, num_classes, dtype="float32")
        return image, label

    count = int(ds.cardinality())
    if ds.element_spec[0].shape.is_fully_defined():  # images of one size (arrays, most TFDS sets): in batches
        ds = ds.batch(PREPARE_BATCH).map(prepare, num_parallel_calls=AUTOTUNE).unbatch()
        if count >= 0:  # unbatch forgets it
            ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    else:
        ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache(f"{cache}_{split}" if isinstance(cache, (str, os.PathLike)) else "")
    if split == "train":
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if split == "train" and augment_fn is not None:
        ds = augment_batches(ds, augment_fn, seed)
    return ds.prefetch(AUTOTUNE).with_options(PIPELINE_OPTIONS), count if count >= 0 else None
