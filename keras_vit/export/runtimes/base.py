"""`Predictor`: the interface every runtime's predictor has, and its checks of the images it is given."""

from pathlib import Path

import numpy as np

from keras_vit.layers import grid_size
from keras_vit.preprocessing import ImageSettings


class Predictor:
    """Runs an exported classifier on raw images.

    Attributes:
        path: the artifact.
        kind: "keras", "savedmodel", "tflite" or "onnx".
        class_names: list of class names.
        image_size: the fixed (h, w) the artifact takes, or None if any size
            tiled by its patches works.
        size: a size that works: `image_size`, else the size the model's
            positions were built for.
        channels: int.
        settings: the `ImageSettings` image files are prepared with (the
            ones the model was trained and exported with).

    Example:
    >>> predictor = load_predictor("vit_int8.tflite")
    >>> predictor.predict(np.zeros((2, 16, 16, 1), "uint8")).shape
    (2, 10)
    """

    kind = None

    def __init__(self, path, class_names, image_size, size, channels, patch_size=None, stride=None,
                 settings=None):
        self.path = Path(path)
        self.class_names = list(class_names)
        as_pair = lambda v: tuple(int(i) for i in v) if v is not None and len(v) and all(v) else None
        self.image_size = as_pair(image_size)
        self.size = as_pair(size) or self.image_size
        self.channels = int(channels)
        self.patch_size = as_pair(patch_size)
        self.stride = as_pair(stride)
        self.settings = ImageSettings.from_dict({**(settings or {}), "image_size": None, "channels": self.channels})

    def check_images(self, images, source="images"):
        """Raises a `ValueError` unless `images` (B, H, W, C) fit this artifact.

        Args:
            images: array-like (B, H, W, C).
            source: how to name the images in the error message.
        """
        shape = tuple(np.shape(images))
        if len(shape) != 4 or shape[-1] != self.channels:
            raise ValueError(
                f"Expected {source} of shape (batch, height, width, {self.channels}). Received shape {shape}."
            )
        if self.image_size and shape[1:3] != self.image_size:
            raise ValueError(
                f"{source} has size {shape[1:3]} (height, width), which does not fit {self.path.name}: "
                f"it takes images of size {self.image_size}. Resize the images (keras-vit predict "
                f"--resize) or export the model at this size."
            )
        if self.patch_size:
            grid_size(shape[1:3], self.patch_size, self.stride, source)

    def predict(self, images):
        """Class probabilities of a batch of raw images.

        Args:
            images: uint8 or float array (B, H, W, C) of pixels in [0, 255].

        Returns:
            float32 array (B, num_classes).
        """
        images = np.asarray(images)
        self.check_images(images)
        return np.asarray(self._run(images), dtype="float32")

    def _run(self, images):
        raise NotImplementedError
