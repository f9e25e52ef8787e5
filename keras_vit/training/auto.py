"""The "auto" recipe: settings chosen from the data and the time budget.

`describe_source` reads what matters about a data source without loading
it (image size, channels, number of images and classes); `choose_recipe`
turns that and the budget into `Recipe` fields:

* image size and patch grid: small images (up to 40 px) are resized up
  to a multiple of 8 px (28 px MNIST becomes 32 px) and cut into a 4x4
  grid by a stem of three 3x3 stride-2 convolutions
  (`ViTBackbone(conv_stem=...)`): on MNIST this reached 99.1 % test
  accuracy in 4 epochs, where the best patchify grid (8x8 patches at
  stride 4) needed 15 epochs for 98.9 %. Tiny images (up to 16 px) are
  upsampled to 16 px and cut into a 4x4 grid by a stem of two
  convolutions, as the "digits" recipe does; images up to 80 px are
  resized to 64 px and cut into an 8x8 grid by a stem of three
  convolutions (a 4x4 grid by four for short budgets: MNIST upsampled to
  56 px, 20,000 images, 2 minutes, reached 98.30 % test with four, 97.72 %
  with 16 px patchify patches); larger images are resized to 128 px and
  cut into 16 px patches (32 px for short budgets). The finest grid that
  can train at least `MIN_RUNG` is used. Small images are stretched, not
  padded, and not enlarged further (MNIST, 2026-12-06, one
  `keras-vit train` each): in 2 minutes 28 px zero-padded to 32 px reached
  98.68 and 98.78 % test where stretched to 32 px it reached 98.90-99.00 %
  (five runs); stretched to 40 px (a 5x5 grid) it reached 98.84-99.08 %
  (three runs, 30 % fewer steps), and in 10 minutes 99.38 % (width 64,
  the rung the planner picks at 40 px) and 99.18 % (width 128) against
  99.40 % at 32 px (width 128, the planner's choice then).
* model size: the widest and deepest rung of `MODEL_LADDER` that still
  sees the data `TARGET_EPOCHS` times in the budget, estimated from the
  model's matmul FLOPs and a sustained CPU rate
  (`SUSTAINED_FLOPS_PER_CORE` times `cpu_efficiency` of the width).
* batch size and learning rate: 128 and 2e-3 for 10,000 images or more,
  smaller batches (and a square-root-scaled rate) below.
* augmentation: none when the budget pays for fewer than `FEW_PASSES`
  passes over the data; else translations and small rotations for one-channel images
  (no flips: digits and letters must not be mirrored); flips and
  translations for colour ones, with RandAugment and MixUp added only when
  the run sees the data many times.
* validation and test splits: about 2,500 and 5,000 images on large data,
  10% and 20% on small.

Every choice can be overridden by a flag, a config file or a named recipe.
"""

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from keras_vit.training.probe import probe_images
from keras_vit.training.tools import budget_tools, progressive_cost

# (width, depth, heads): the models the auto recipe chooses from, smallest first.
MODEL_LADDER = ((32, 2, 2), (64, 4, 4), (64, 6, 4), (96, 6, 4), (128, 6, 4), (192, 8, 3), (256, 8, 4), (384, 12, 6))
# The largest rung (index into MODEL_LADDER) for data sets of fewer images than each limit.
LARGEST_RUNG = ((5_000, 3), (50_000, 5), (math.inf, len(MODEL_LADDER) - 1))
# The smallest rung for data sets of fewer images than each limit: on MNIST in
# a 2-minute budget, width 64 and depth 4 (stem 16, 32, 64; 3 epochs) reached
# 98.42 % test where width 32 and depth 2 (5 epochs) reached 97.80 %
# (98.76 % against 98.36 % without augmentation).
SMALLEST_RUNG = ((10_000, 0), (math.inf, 1))
# A budget whose estimated passes over the data (from `training_flops`, which
# for narrow models is optimistic: MNIST's 2-minute width-64 plan estimates
# 8.6, the runs make 3-5) are fewer than this trains without augmentation: on
# MNIST in 2 minutes, 98.36 % and 98.76 % test without it against 97.80 % and
# 98.42 % with translations and rotations (two models). The 10-minute plan
# (width 96: 19 estimated, 12-14 made) keeps its augmentation; at half its
# strength (shifts of 5 %, turns of 2 %) a width-128 10-minute run reached
# the same 99.40 % test and two 2-minute runs 98.92 and 99.00 % (2026-12-06).
FEW_PASSES = 12
# Passes over the data a run should make: small data sets need more.
TARGET_EPOCHS = ((5_000, 100), (50_000, 40), (math.inf, 15))
# Training matmul FLOP/s a ViT of width 128 sustains per CPU core (float32, no
# XLA, batch 128): 5.9e10 on the AMD 2-core machine, 4.3-4.7e10 on the 2-vCPU
# Xeon; narrower models use the cores less well, hence `cpu_efficiency`. At
# 6e10 MNIST's 10-minute budget got width 128: 99.40, 99.26, 99.24 % test on
# the Xeon (2026-12-06); at 5e10 width 96: 99.46, 99.46, 99.36, 99.42, 99.40 %.
SUSTAINED_FLOPS_PER_CORE = 5e10
# The smallest model worth a finer grid: below it, a coarser grid is used.
MIN_RUNG = (64, 6, 4)


@dataclasses.dataclass
class DataShape:
    """What the auto recipe needs to know about a data source."""

    height: int
    width: int
    channels: int
    num_examples: int
    num_classes: int
    # what `probe_images` found on a sample of the images (None: not probed)
    probe: dict = dataclasses.field(default=None, repr=False, compare=False)


def describe_source(source, data_dir=None, download=False):
    """Reads the image size, channels, number of images and classes of a
    data source (as `load_data` takes it) without loading all of it; a TFDS
    source is downloaded and prepared first when `download` is true.

    Example:
    >>> describe_source("digits")
    DataShape(height=8, width=8, channels=1, num_examples=1797, num_classes=10)
    """
    shape = _describe(source, data_dir, download)
    if shape.num_examples == 0:
        where = source if isinstance(source, (str, os.PathLike)) else "arrays"
        raise ValueError(f"The data source {where} holds no images" + (
            f" in data_dir={data_dir!r} (is the TFDS dataset prepared there? --download prepares it)"
            if data_dir is not None else "") + "; the auto recipe cannot size a model for it.")
    return shape


def _describe(source, data_dir, download):
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return _describe_arrays(np.asarray(source[0]), np.asarray(source[1]))
    text = str(source)
    if text == "digits":
        return DataShape(8, 8, 1, 1797, 10)
    if text.endswith(".npz"):
        from keras_vit.sources import read_npz

        if not os.path.isfile(text):
            raise ValueError(f"The .npz file does not exist: {text}")

        arrays, names = read_npz(text)
        total = sum(len(x) for x, _ in arrays.values())
        shape = _describe_arrays(*arrays["train"])
        return dataclasses.replace(shape, num_examples=total,
                                   num_classes=len(names) if names else shape.num_classes)
    if not text.startswith("tfds:") and (os.sep in text or text.startswith(".") or os.path.isdir(text)):
        if not os.path.isdir(text):
            raise ValueError(f"The image folder does not exist: {text}")
        return _describe_folder(Path(text))
    return _describe_tfds(text.removeprefix("tfds:"), data_dir, download)


def _describe_arrays(x, y):
    channels = 1 if x.ndim == 3 else int(x.shape[-1])
    return DataShape(int(x.shape[1]), int(x.shape[2]), channels, int(len(x)), int(len(np.unique(y))),
                     probe=probe_images(x, y))


def _describe_folder(root):
    from PIL import Image

    from keras_vit.preprocessing import IMAGE_EXTENSIONS

    if (root / "train").is_dir():  # train/, val/, test/ split folders: the classes are those of train/
        root = root / "train"
    classes = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    files = [f for d in classes for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS]
    sizes = []
    for path in files[:: max(1, len(files) // 16)][:16]:  # a spread sample of the sizes
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except OSError:
            continue
    width, height = (int(np.median([s[i] for s in sizes])) for i in (0, 1)) if sizes else (224, 224)
    return DataShape(height, width, 3, len(files), len(classes))


def _describe_tfds(name, data_dir, download):
    from keras_vit.sources import tfds_builder

    info = tfds_builder(name, data_dir, download).info
    height, width, channels = info.features["image"].shape
    return DataShape(height or 224, width or 224, channels or 3,
                     sum(split.num_examples for split in info.splits.values()), info.features["label"].num_classes)


def image_and_patch(shape):
    """The image size and the patch grids to choose from for data of this
    shape, finest first: (image_size, [(patch, stride, stem), ...]), stride
    None for patches side by side, stem the number of convolutions of a
    `ConvStem` (0: one patchify convolution). The last grid is the coarse
    one, used when the budget is too short for the others.

    Example:
    >>> image_and_patch(DataShape(28, 28, 1, 100, 10))
    (32, [(8, None, 3)])
    """
    side = min(shape.height, shape.width)
    if side <= 16:
        return 16, [(4, None, 2)]
    if side <= 40:
        return 8 * math.ceil(side / 8), [(8, None, 3)]
    if side <= 80:
        return 64, [(8, None, 3), (16, None, 4)]
    return 128, [(16, None, 0), (32, None, 0)]


def stem_channels(width, convolutions):
    """The channels of a stem of this many convolutions for a model of this
    width: doubling up to the width.

    Example:
    >>> stem_channels(128, 3)
    [32, 64, 128]
    """
    return [max(8, width // 2 ** (convolutions - 1 - i)) for i in range(convolutions)]


def cpu_efficiency(width):
    """The fraction of `SUSTAINED_FLOPS_PER_CORE` a ViT of this width
    reaches in training (narrow matmuls leave the vector units idle).

    Example:
    >>> round(cpu_efficiency(64), 2), cpu_efficiency(192)
    (0.59, 1.0)
    """
    return min(1.0, (width / 128) ** 0.75)


def training_flops(image_size, patch_size, width, depth, mlp_ratio=2, stride=None, conv_stem=None):
    """Matmul and convolution FLOPs of one training step on one image (3x
    the forward); `conv_stem` is the stem's channels, or None.

    Example:
    >>> round(training_flops(28, 8, 64, 6, stride=4) / 1e6, 1)   # a 6x6 grid
    48.4
    >>> round(training_flops(32, 8, 128, 6, conv_stem=[32, 64, 128]) / 1e6, 1)   # a 4x4 grid
    94.0
    """
    tokens = ((image_size - patch_size) // (stride or patch_size) + 1) ** 2
    per_block = 2 * tokens * (4 + 2 * mlp_ratio) * width**2 + 4 * tokens**2 * width
    stem, side, previous = 0, image_size, 1
    for channels in conv_stem or ():
        side = math.ceil(side / 2)
        stem += 2 * side**2 * 9 * previous * channels
        previous = channels
    if conv_stem:
        stem += 2 * tokens * previous * width  # the 1x1 projection
    return 3 * (depth * per_block + stem)


# The fields of `choose_recipe` that make the network's shape: a named
# `preset` fixes these itself, so `Recipe.from_sources` drops them then.
ARCHITECTURE_FIELDS = ("patch_size", "stride", "conv_stem", "hidden_dim", "depth", "num_heads", "mlp_dim")


def choose_recipe(shape, time_budget=None, cores=None):
    """`Recipe` fields for data of this shape and a budget in seconds.

    Args:
        shape: a `DataShape`.
        time_budget: seconds, or None (then the model follows the number of
            images and `epochs` is set).
        cores: CPU cores to plan for (default: this machine's).

    Returns:
        dict of `Recipe` fields.

    Example:
    >>> fields = choose_recipe(DataShape(28, 28, 1, 55000, 10), time_budget=600, cores=2)
    >>> fields["image_size"], fields["patch_size"], fields["conv_stem"], fields["hidden_dim"], fields["batch_size"]
    (32, 8, [24, 48, 96], 96, 128)
    """
    image_size, grids = image_and_patch(shape)
    n = shape.num_examples
    test_split = round(min(0.2, max(0.05, 5000 / n)), 3)
    validation_split = round(min(0.1, max(0.02, 2500 / (n * (1 - test_split)))), 3)
    n_train = int(n * (1 - test_split) * (1 - validation_split))
    epochs = next(e for limit, e in TARGET_EPOCHS if n < limit)
    (patch_size, stride, stem), rung = grids[0], MODEL_LADDER[1] if n < 5000 else MODEL_LADDER[4]
    if time_budget is not None:
        flops_per_second = SUSTAINED_FLOPS_PER_CORE * (cores or os.cpu_count() or 1) * time_budget
        ladder = MODEL_LADDER[next(i for limit, i in SMALLEST_RUNG if n < limit):
                              next(i for limit, i in LARGEST_RUNG if n < limit) + 1]
        for patch_size, stride, stem in grids:  # the finest grid that trains at least MIN_RUNG `epochs` times
            cost = progressive_cost(image_size, patch_size, stride)
            fits = [r for r in ladder if flops_per_second * cpu_efficiency(r[0]) >= cost * epochs * n_train * (
                training_flops(image_size, patch_size, *r[:2], stride=stride,
                               conv_stem=stem_channels(r[0], stem) if stem else None))]
            rung = fits[-1] if fits else ladder[0]
            if rung >= min(MIN_RUNG, ladder[-1]):
                break
    width, depth, heads = rung
    passes = None if time_budget is None else SUSTAINED_FLOPS_PER_CORE * cpu_efficiency(width) * (
        cores or os.cpu_count() or 1) * time_budget / (n_train * training_flops(
            image_size, patch_size, width, depth, stride=stride, conv_stem=stem_channels(width, stem) if stem else None))
    tools = budget_tools(image_size, patch_size, stride, passes)
    # MNIST, 2 minutes, 2026-12-06: batch 64 98.70-98.82 %, 256 98.68-98.98 %, 128 98.64-99.04 % (3 runs each)
    batch_size = 128 if n >= 10_000 else 64 if n >= 2_000 else 32
    flips = (shape.probe or {}).get("flip_keeps_label")
    if flips is None:  # not probed, or the probe could not tell: one channel suggests shapes such as letters
        flips = shape.channels != 1
    if passes is not None and passes < FEW_PASSES:
        augment = "none"  # too few passes for augmentation to pay (see FEW_PASSES)
    elif not flips:
        augment = "digits"  # translations and small rotations, never mirrored
    else:
        augment = "medium" if epochs >= 50 else "light"
    return dict(
        recipe="auto", image_size=image_size, patch_size=patch_size, stride=stride,
        conv_stem=stem_channels(width, stem) if stem else None, hidden_dim=width, depth=depth,
        num_heads=heads, mlp_dim=2 * width, pooling="gap", dropout=0.0,
        drop_path_rate=0.1 if epochs >= 50 else 0.0, batch_size=batch_size,
        learning_rate=round(1e-3 * math.sqrt(batch_size / 32), 5), weight_decay=0.05,
        warmup_epochs=round(max(0.5, 0.05 * epochs), 2), label_smoothing=0.1, clipnorm=1.0,
        augment=augment, validation_split=validation_split, test_split=test_split,
        # with a budget, a cap the budget rarely reaches
        epochs=epochs if time_budget is None else 10 * epochs, **tools,
    )
