"""The one table of architecture presets: a name such as ``"B/16"`` is a size and a patch.

`SIZES` gives each size's width, depth, heads and MLP width; `PRESETS`
combines a size with a patch size, the image size the preset is meant for
and its class count. `preset_config` merges a preset with overrides, and
`vit_arguments` resolves `build_vit`'s arguments against a preset. Pure
Python: nothing here builds a model. An architecture preset has no weights:
a model made from one starts from random weights.
"""

from keras_vit.layers.pooling import POOLINGS
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


# The `build_vit` arguments that belong to the classifier, not the backbone.
HEAD_ARGS = ("num_classes", "pooling", "fc_norm", "representation_size", "head_units",
             "classifier_activation", "class_names", "preprocessing")


class _FromPreset:
    def __repr__(self):
        return "<the preset's>"


FROM_PRESET = _FromPreset()


def vit_arguments(variant=None, *, image_size=FROM_PRESET, num_classes=FROM_PRESET, patch_size=None,
                  hidden_dim=None, depth=None, num_heads=None, mlp_dim=None, pooling="cls",
                  class_token=None, dropout=0.0, name=None, **kwargs):
    """`build_vit`'s arguments resolved against a preset and split into the
    backbone's and the classifier's: ``(backbone kwargs, classifier kwargs)``.

    The preset (default "B/16") gives what is left out; `image_size=None`
    builds positions for the preset's size; `class_token=None` means a class
    token exactly when `pooling="cls"`.

    Example:
    >>> backbone, head = vit_arguments("Mu/4", depth=1, pooling="gap")
    >>> backbone["depth"], backbone["class_token"], head["num_classes"], head["pooling"]
    (1, False, 10, 'gap')
    """
    config = preset_config(variant, patch_size=patch_size, hidden_dim=hidden_dim, depth=depth,
                           num_heads=num_heads, mlp_dim=mlp_dim)
    if image_size is not FROM_PRESET:
        config["image_size"] = image_size
    if image_size is None and kwargs.get("reference_image_size") is None:
        kwargs["reference_image_size"] = preset_config(variant)["image_size"]
    if num_classes is not FROM_PRESET:
        config["num_classes"] = num_classes
    check_choice(pooling, "pooling", POOLINGS)
    if class_token is not None:
        check_choice(class_token, "class_token", (True, False))
    head = {k: kwargs.pop(k) for k in HEAD_ARGS if k in kwargs}
    head.update(num_classes=config.pop("num_classes"), pooling=pooling, dropout=dropout, name=name or "vit")
    backbone = dict(config, dropout=dropout, class_token=pooling == "cls" if class_token is None else class_token,
                    **kwargs)
    return backbone, head
