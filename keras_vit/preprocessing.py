"""The one image path: decode, convert channels, resize.

Training (`keras_vit.data.load_data`), the SavedModel ``serving_bytes``
signature, `keras-vit predict` and `keras-vit explain` all prepare images
with these functions, so a model is served exactly as it was trained. They
are TensorFlow ops: they run inside `tf.data`, inside a SavedModel and
eagerly (`load_image` returns numpy). Pixels come out as float32 in
[0, 255]; the models rescale them themselves.

The settings that matter — size, channels, interpolation, antialias and
resize mode — travel together as an `ImageSettings`, recorded in
`DataInfo`, in exported artifacts and in a model's ``preprocessing``.
"""

import dataclasses
import os

import numpy as np

from keras_vit.utils.validation import check_choice, pair

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
RESIZE_MODES = ("resize", "pad")


@dataclasses.dataclass
class ImageSettings:
    """How images are prepared for a model.

    Args:
        image_size: (h, w) to resize to, or None to keep each image's size.
        channels: 1 (grayscale) or 3 (RGB).
        interpolation: "bilinear", "bicubic", "nearest" or "area".
        antialias: bool, low-pass filter when shrinking.
        resize_mode: "resize" (stretch) or "pad" (keep the aspect ratio and
            pad with black).

    Example:
    >>> ImageSettings((16, 16), 1).to_dict()["interpolation"]
    'bilinear'
    """

    image_size: tuple = None
    channels: int = 3
    interpolation: str = "bilinear"
    antialias: bool = True
    resize_mode: str = "resize"

    def __post_init__(self):
        if self.image_size is not None:
            self.image_size = pair(self.image_size, "image_size")
        check_choice(self.channels, "channels", (1, 3))
        check_choice(self.interpolation, "interpolation", INTERPOLATIONS)
        check_choice(self.antialias, "antialias", (True, False))
        check_choice(self.resize_mode, "resize", RESIZE_MODES)

    def to_dict(self):
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size) if self.image_size else None
        return out

    @classmethod
    def from_dict(cls, data):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in fields})


def convert_channels(image, channels):
    """Converts a (H, W, C) or (B, H, W, C) float tensor with 1, 2 (gray +
    alpha), 3 or 4 (RGBA) channels to `channels` (1 or 3); alpha is dropped."""
    import tensorflow as tf

    source = image.shape[-1]
    if source in (2, 4):
        image, source = image[..., : source - 1], source - 1
    if source == channels:
        return image
    if source == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if source == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(
        f"Cannot convert images with {source} channels to `channels={channels}`; accepted "
        f"sources have 1, 2, 3 or 4 channels.")


def decode_image(data, channels):
    """Decodes encoded image bytes (PNG, JPEG, BMP, GIF; 16-bit PNGs are
    scaled to 8 bits) to a float32 (H, W, channels) tensor in [0, 255].
    Alpha is dropped; gray and RGB are converted as `convert_channels` does."""
    import tensorflow as tf

    image = tf.cast(tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False), tf.float32)
    native = tf.shape(image)[-1]
    image = image[..., : tf.where(native % 2 == 0, native - 1, native)]  # drop alpha
    native = tf.shape(image)[-1]
    if channels == 3:
        image = tf.cond(native == 1, lambda: tf.image.grayscale_to_rgb(tf.ensure_shape(image, (None, None, 1))),
                        lambda: image)
    else:
        image = tf.cond(native == 3, lambda: tf.image.rgb_to_grayscale(tf.ensure_shape(image, (None, None, 3))),
                        lambda: image)
    return tf.ensure_shape(image, (None, None, channels))


def resize_image(image, settings):
    """Resizes a float (H, W, C) or (B, H, W, C) tensor as `settings` says
    (nothing when `settings.image_size` is None); clipped to [0, 255]."""
    import tensorflow as tf

    if settings.image_size is None:
        return image
    if settings.resize_mode == "pad":
        image = tf.image.resize_with_pad(image, *settings.image_size, method=settings.interpolation,
                                         antialias=settings.antialias)
    else:
        image = tf.image.resize(image, settings.image_size, method=settings.interpolation,
                                antialias=settings.antialias)
    return tf.clip_by_value(image, 0.0, 255.0)


def prepare(image, settings):
    """Converts channels and resizes an already decoded float image tensor."""
    import tensorflow as tf

    return resize_image(convert_channels(tf.cast(image, tf.float32), settings.channels), settings)


def prepare_bytes(data, settings):
    """Decodes and prepares encoded bytes: the serving path."""
    return resize_image(decode_image(data, settings.channels), settings)


def read_bytes(path):
    """The bytes of an image file; a `ValueError` names a missing file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No such image file: {path!r}")
    with open(path, "rb") as f:
        return f.read()


def load_image(source, settings):
    """One image as a float32 numpy array (H, W, channels) in [0, 255].

    Args:
        source: a file path, encoded bytes, or an array (H, W[, C]).
        settings: an `ImageSettings`.

    Example:
    >>> load_image(np.zeros((8, 6, 3), "uint8"), ImageSettings((4, 4), 1)).shape
    (4, 4, 1)
    """
    import tensorflow as tf

    if isinstance(source, np.ndarray):
        array = source if source.ndim == 3 else source[..., None]
        if array.ndim != 3 or array.dtype.kind not in "uif":
            raise ValueError(f"An image array must be (H, W) or (H, W, C) of numbers. Received "
                             f"{array.dtype} {source.shape}.")
        return prepare(tf.constant(array.astype("float32")), settings).numpy()
    data = source if isinstance(source, bytes) else read_bytes(source)
    try:
        return prepare_bytes(tf.constant(data), settings).numpy()
    except tf.errors.InvalidArgumentError as err:
        name = "the image bytes" if isinstance(source, bytes) else repr(os.fspath(source))
        reason = err.message.split("}} ")[-1].split(" [Op:")[0]
        raise ValueError(f"Cannot decode {name} as an image: {reason}") from None
