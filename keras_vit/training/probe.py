"""A cheap look at a data set's images for the auto recipe
(`keras_vit.training.auto`): pixel statistics, and whether mirrored images
keep their label, from a sample, in well under a second and with numpy
alone.
"""

import numpy as np


def _small(x, side=16):
    """Images as float32 (n, <=side, <=side, channels), each standardised;
    by block means, so no resampling library is needed."""
    x = np.asarray(x, "float32")
    x = x[..., None] if x.ndim == 3 else x
    n, h, w, c = x.shape
    fh, fw = max(1, h // side), max(1, w // side)
    x = x[:, : h - h % fh, : w - w % fw].reshape(n, h // fh, fh, w // fw, fw, c).mean((2, 4))
    x = x - x.mean((1, 2, 3), keepdims=True)
    return x / (x.std((1, 2, 3), keepdims=True) + 1e-6)


def probe_images(x, y, sample=2000, seed=0):
    """A cheap look at the images (well under a second): pixel statistics,
    and whether mirrored images keep their label.

    The mirror probe classifies half of a sample by the nearest class mean
    of the other half, as the images are and mirrored left to right: when
    mirroring costs more than a quarter of the accuracy above chance (digits,
    letters), random flips would teach wrong labels; when it costs little
    (photos of objects), flips are a free augmentation. Too few images or
    an accuracy within 0.1 of chance leave the answer open (None).

    Returns:
        dict: pixel_mean, pixel_std (of [0, 255] pixels), dark_background
        (the border is darker than the centre), flip_keeps_label (bool or
        None), nearest_mean_accuracy and its mirrored value.

    Example:
    >>> from sklearn.datasets import load_digits
    >>> digits = load_digits()
    >>> probe_images(digits.images * 16, digits.target)["flip_keeps_label"]   # a mirrored 3 is no 3
    False
    """
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(x))[:sample]
    raw = np.asarray(x[pick], "float32")
    raw = raw * 255.0 if raw.max(initial=0) <= 1.0 else raw
    gray = raw.mean(-1) if raw.ndim == 4 else raw
    border = np.concatenate([gray[:, 0], gray[:, -1], gray[:, :, 0], gray[:, :, -1]], axis=1).mean()
    h, w = gray.shape[1:3]
    centre = gray[:, h // 4: h - h // 4, w // 4: w - w // 4].mean()
    result = dict(pixel_mean=round(float(raw.mean()), 2), pixel_std=round(float(raw.std()), 2),
                  dark_background=bool(border < centre), flip_keeps_label=None)
    labels, small = y[pick], _small(raw)
    half = len(pick) // 2
    classes = np.unique(labels[:half])
    if half < 4 * len(classes) or len(classes) < 2:
        return result
    means = np.stack([small[:half][labels[:half] == c].mean(0) for c in classes]).reshape(len(classes), -1)

    def accuracy(images):
        distances = ((images.reshape(len(images), 1, -1) - means[None]) ** 2).sum(-1)
        return float((classes[distances.argmin(1)] == labels[half:]).mean())

    plain, mirrored = accuracy(small[half:]), accuracy(small[half:, :, ::-1])
    chance = 1.0 / len(classes)
    result.update(nearest_mean_accuracy=round(plain, 4), mirrored_accuracy=round(mirrored, 4))
    if plain - chance >= 0.1:
        result["flip_keeps_label"] = bool(plain - mirrored <= 0.25 * (plain - chance))
    return result
