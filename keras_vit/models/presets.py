"""The one preset table: a name such as ``"B/16"`` is a size and a patch.

`SIZES` gives each size's width, depth, heads and MLP width; `PRESETS`
combines a size with a patch size, the image size the preset is meant for
and its class count. `preset_config` merges a preset with overrides. Pure
Python: nothing here builds a model.
"""

from keras_vit.utils.validation import check_choice

# width, depth, heads, mlp width
SIZES = {
    "Mu": (64, 6, 4, 128),  # micro: small images, small data
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "M": (512, 12, 8, 2048),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}
SIZE_FIELDS = ("hidden_dim", "depth", "num_heads", "mlp_dim")

# name -> (image size, classes): small images (28 to 64 px, 10 classes) and
# the standard family at 224 px (ImageNet's 1000 classes).
_NATURAL = {
    "Mu/4": (32, 10), "Mu/8": (64, 10), "Ti/4": (32, 10), "Ti/8": (64, 10),
    "S/4": (32, 10), "S/8": (64, 10),
    "Ti/16": (224, 1000), "Ti/32": (224, 1000), "S/16": (224, 1000), "S/32": (224, 1000),
    "M/16": (224, 1000), "M/32": (224, 1000), "B/8": (224, 1000), "B/16": (224, 1000),
    "B/32": (224, 1000), "L/16": (224, 1000), "L/32": (224, 1000), "H/14": (224, 1000),
}


def _preset(name, image_size, num_classes):
    size, patch = name.split("/")
    return dict(zip(SIZE_FIELDS, SIZES[size]), patch_size=int(patch),
                image_size=image_size, num_classes=num_classes)


PRESETS = {name: _preset(name, *natural) for name, natural in _NATURAL.items()}
DEFAULT_PRESET = "B/16"


def preset_config(name=None, **overrides):
    """A preset's settings merged with `overrides` (None values are ignored).

    Args:
        name: a key of `PRESETS`; None means `DEFAULT_PRESET` ("B/16").
        **overrides: settings that replace the preset's.

    Returns:
        dict with hidden_dim, depth, num_heads, mlp_dim, patch_size,
        image_size, num_classes and the overrides.

    Example:
    >>> preset_config("Mu/4")["image_size"]
    32
    >>> preset_config("Mu/4", depth=2)["depth"]
    2
    """
    check_choice(DEFAULT_PRESET if name is None else name, "preset", tuple(PRESETS))
    config = dict(PRESETS[name or DEFAULT_PRESET])
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def heads_for_width(hidden_dim):
    """Heads of the standard ViT size of this width, or None.

    Example:
    >>> heads_for_width(768)
    12
    """
    return next((heads for dim, _, heads, _ in SIZES.values() if dim == hidden_dim), None)
