"""The one image path: decode, convert channels, resize.

Training (`keras_vit.data.load_data`), the SavedModel ``serving_bytes``
signature, `keras-vit predict` and `keras-vit explain` all prepare images
with these functions, so a model is served exactly as it was trained. They
are TensorFlow ops: they run inside `tf.data`, inside a SavedModel and
eagerly (`load_image` returns numpy). Pixels come out as float32 in
[0, 255]; the models rescale them themselves.

The settings that matter — size, channels, interpolation, antialias,
resize mode and crop — travel together as an `ImageSettings`, recorded in
`DataInfo`, in exported artifacts and in a model's ``preprocessing``. A
``crop_pct`` (timm's evaluation transform, recorded from a pretrained
preset) resizes so that a centred crop of the model's size keeps that
fraction of the image, then crops: what `predict`, `explain` and the
exported serving signatures do; training data are resized without it.

Files are read here too (`read_bytes`, `check_image_file`, `decode_file`,
`load_image`): the package's one image reader. TensorFlow's decoder
corrupts the heap on an animated WebP (a segfault or an abort, not an
error), so those bytes never reach it: from Python they are decoded with
Pillow (the first frame, as TensorFlow does for GIF and APNG); in a graph
with no Python (the SavedModel ``serving_bytes`` signature) they are
refused with an `InvalidArgumentError`.
"""

import dataclasses
import io
import math
import os
from pathlib import Path

import numpy as np

from keras_vit.utils.validation import check_choice, pair

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
RESIZE_MODES = ("resize", "pad")
CROP_MODES = ("center", "squash")


@dataclasses.dataclass
class ImageSettings:
    """How images are prepared for a model.

    Args:
        image_size: (h, w) to resize to, or None to keep each image's size.
        channels: 1 (grayscale) or 3 (RGB).
        interpolation: "bilinear", "bicubic", "nearest" or "area".
        antialias: bool, low-pass filter when shrinking.
        resize_mode: "resize" (stretch) or "pad" (keep the aspect ratio and
            pad with black); not used when `crop_pct` is set.
        crop_pct: None, or a float in (0, 1]: timm's evaluation crop. The
            image is resized so that the crop, of size `image_size`, is
            `crop_pct` of the resized image, then centre-cropped.
        crop_mode: how the image is resized before the crop, as timm's
            `crop_mode`: "center" (keep the aspect ratio: the shorter side
            becomes ``floor(size / crop_pct)``) or "squash" (each side
            becomes ``floor(size / crop_pct)``).

    Example:
    >>> ImageSettings((16, 16), 1).to_dict()["interpolation"]
    'bilinear'
    """

    image_size: tuple = None
    channels: int = 3
    interpolation: str = "bilinear"
    antialias: bool = True
    resize_mode: str = "resize"
    crop_pct: float = None
    crop_mode: str = "center"

    def __post_init__(self):
        if self.image_size is not None:
            self.image_size = pair(self.image_size, "image_size")
        check_choice(self.channels, "channels", (1, 3))
        check_choice(self.interpolation, "interpolation", INTERPOLATIONS)
        check_choice(self.antialias, "antialias", (True, False))
        check_choice(self.resize_mode, "resize", RESIZE_MODES)
        check_choice(self.crop_mode, "crop_mode", CROP_MODES)
        if self.crop_pct is not None:
            if isinstance(self.crop_pct, bool) or not isinstance(self.crop_pct, (int, float)) or not (
                    0 < self.crop_pct <= 1):
                raise ValueError(f"`crop_pct` must be None or a number in (0, 1]. Received: crop_pct={self.crop_pct!r}")
            self.crop_pct = float(self.crop_pct)

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


def is_animated_webp(data):
    """Whether encoded bytes are an animated WebP (a VP8X header with its
    animation flag), which TensorFlow's decoder must never see.

    Example:
    >>> is_animated_webp(b"RIFF\\0\\0\\0\\0WEBPVP8X\\0\\0\\0\\0\\x02")
    True
    """
    return (len(data) >= 21 and data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] == b"VP8X"
            and bool(data[20] & 0x02))


def _animated_webp_tensor(data):
    """`is_animated_webp` as TensorFlow ops on a scalar string tensor."""
    import tensorflow as tf

    head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 21), "\0" * 21]), 0, 21)
    head = tf.io.decode_raw(head, tf.uint8)
    return (tf.reduce_all(tf.equal(head[:4], tf.constant(list(b"RIFF"), tf.uint8)))
            & tf.reduce_all(tf.equal(head[8:16], tf.constant(list(b"WEBPVP8X"), tf.uint8)))
            & tf.not_equal(tf.bitwise.bitwise_and(head[20], 2), 0))


def first_frame(data):
    """Decodes encoded bytes with Pillow: the first frame as uint8 RGB
    (H, W, 3) (alpha dropped, as TensorFlow's path drops it)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        return np.asarray(image.convert("RGB"), dtype="uint8")


def decode_image(data, channels, python_fallback=False):
    """Decodes encoded image bytes (PNG, JPEG, BMP, GIF, WebP; 16-bit PNGs
    are scaled to 8 bits; animations give their first frame) to a float32
    (H, W, channels) tensor in [0, 255]. Alpha is dropped; gray and RGB are
    converted as `convert_channels` does.

    An animated WebP is decoded with Pillow where Python can run
    (`python_fallback=True`, e.g. inside `tf.data`); otherwise it is refused
    with an `InvalidArgumentError` (TensorFlow's decoder would crash)."""
    import tensorflow as tf

    def with_tensorflow():
        check = tf.debugging.Assert(tf.logical_not(_animated_webp_tensor(data)), [
            "Cannot decode an animated WebP here (TensorFlow's decoder crashes on it); send its first frame "
            "as PNG or JPEG."])
        with tf.control_dependencies([check]):
            return tf.io.decode_image(tf.identity(data), channels=0, dtype=tf.uint8, expand_animations=False)

    if python_fallback:
        image = tf.cond(_animated_webp_tensor(data),
                        lambda: tf.numpy_function(lambda d: first_frame(bytes(d)), [data], tf.uint8, stateful=False),
                        with_tensorflow)
        image = tf.ensure_shape(image, (None, None, None))
    else:
        image = with_tensorflow()
    image = tf.cast(image, tf.float32)
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


def decode_file(path, channels):
    """Reads and decodes an image file inside a graph (`tf.data`): the
    training path, with `decode_image`'s Pillow fallback."""
    import tensorflow as tf

    return decode_image(tf.io.read_file(path), channels, python_fallback=True)


def check_image_file(path):
    """Returns None for an image file that `decode_file` reads, else the
    reason it is not one (checked with Pillow, then with the decoder that
    will run). Never crashes the process, whatever the bytes.

    Example:
    >>> from pathlib import Path
    >>> check_image_file(Path("notes.txt"))
    'not an image file'
    """
    import tensorflow as tf

    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file"
    if path.stat().st_size == 0:
        return "zero bytes"
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            kind = image.format
    except Exception as err:  # PIL raises many kinds of errors for bad files
        return f"cannot be decoded ({type(err).__name__})"
    data = path.read_bytes()
    if is_animated_webp(data):
        return None  # decoded with Pillow, which just read it
    # Training and serving decode with TensorFlow, which reads fewer formats
    # than Pillow (no TIFF, no 1-bit BMP): check with the decoder that will run.
    try:
        tf.io.decode_image(data, channels=0, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as err:
        reason = err.message.split("}} ")[-1].split(" [Op:")[0].strip()
        return (f"{kind} data that TensorFlow's image decoder cannot read ({reason}); accepted: "
                f"PNG, JPEG, GIF, BMP of 8, 24 or 32 bits, WebP")
    return None


def resize_image(image, settings):
    """Resizes a float (H, W, C) or (B, H, W, C) tensor as `settings` says
    (nothing when `settings.image_size` is None; with `crop_pct`, resize
    then centre crop); clipped to [0, 255]."""
    import tensorflow as tf

    if settings.image_size is None:
        return image
    if settings.crop_pct is not None:
        image = _resize_and_crop(image, settings)
    elif settings.resize_mode == "pad":
        image = tf.image.resize_with_pad(image, *settings.image_size, method=settings.interpolation,
                                         antialias=settings.antialias)
    else:
        image = tf.image.resize(image, settings.image_size, method=settings.interpolation,
                                antialias=settings.antialias)
    return tf.clip_by_value(image, 0.0, 255.0)


def crop_scale_size(image_size, crop_pct):
    """The size timm resizes to before its centre crop: each side of
    `image_size` divided by `crop_pct`, rounded down.

    Example:
    >>> crop_scale_size((224, 224), 0.875)
    (256, 256)
    """
    return tuple(math.floor(side / crop_pct) for side in image_size)


def _resized_shape(height, width, settings):
    """The (h, w) an image of (height, width) is resized to before the
    crop, as timm's eval transform computes it (tensors, float64 math)."""
    import tensorflow as tf

    scale_h, scale_w = crop_scale_size(settings.image_size, settings.crop_pct)
    if settings.crop_mode == "squash":
        return tf.constant(scale_h), tf.constant(scale_w)
    h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    if scale_h == scale_w:  # torchvision's Resize(int): the shorter side, the longer one truncated
        short, long = tf.minimum(h, w), tf.maximum(h, w)
        new_long = tf.cast(tf.floor(scale_h * long / short), tf.int32)
        return tf.where(h <= w, scale_h, new_long), tf.where(h <= w, new_long, scale_w)
    ratio = tf.minimum(h / scale_h, w / scale_w)  # timm's ResizeKeepRatio: rounded to nearest
    return tf.cast(tf.round(h / ratio), tf.int32), tf.cast(tf.round(w / ratio), tf.int32)


def _resize_and_crop(image, settings):
    import tensorflow as tf

    shape = tf.shape(image)
    new_h, new_w = _resized_shape(shape[-3], shape[-2], settings)
    image = tf.image.resize(image, tf.stack([new_h, new_w]), method=settings.interpolation,
                            antialias=settings.antialias)
    crop_h, crop_w = settings.image_size
    # torchvision's CenterCrop: offsets rounded half to even, as tf.round does
    top = tf.cast(tf.round(tf.cast(new_h - crop_h, tf.float64) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - crop_w, tf.float64) / 2), tf.int32)
    return tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)


def prepare(image, settings):
    """Converts channels and resizes an already decoded float image tensor."""
    import tensorflow as tf

    return resize_image(convert_channels(tf.cast(image, tf.float32), settings.channels), settings)


def prepare_bytes(data, settings):
    """Decodes and prepares encoded bytes: the serving path."""
    return resize_image(decode_image(data, settings.channels), settings)


def read_bytes(path):
    """The bytes of an image file; a `ValueError` names a missing or empty
    file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No such image file: {path!r}")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"Cannot decode {path!r} as an image: the file is empty (zero bytes).")
    return data


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
    name = "the image bytes" if isinstance(source, bytes) else repr(os.fspath(source))
    if is_animated_webp(data):  # never given to TensorFlow's decoder, which crashes on it
        try:
            array = first_frame(data)
        except Exception as err:  # PIL raises many kinds of errors for bad files
            raise ValueError(f"Cannot decode {name} as an image: an animated WebP that Pillow cannot read "
                             f"({type(err).__name__}: {err})") from None
        return prepare(tf.constant(array.astype("float32")), settings).numpy()
    try:
        return prepare_bytes(tf.constant(data), settings).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as err:
        reason = err.message.split("}} ")[-1].split(" [Op:")[0]
        raise ValueError(f"Cannot decode {name} as an image: {reason}") from None
