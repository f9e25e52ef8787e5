"""Models that fit a checkpoint: `from_checkpoint` builds a `ViTClassifier`
that fits a checkpoint file and loads it; `from_timm_preset` builds one (or
a backbone) from a resolved timm preset. Reading the architecture from the
tensors (`infer_config`) and the timm config are `keras_vit.presets`' job;
the tensors are read and converted by `keras_vit.convert`.
"""

from keras_vit.convert.checkpoint import convert_file
from keras_vit.convert.rules import Converted
from keras_vit.models.classifier import ViTClassifier
from keras_vit.presets.loaders import CheckpointLoader, load_checkpoint
from keras_vit.utils.validation import strict_keywords


@strict_keywords("keras_vit.models.classifier:build_vit", exclude=("variant",))
def from_checkpoint(path, num_classes=None, image_size=None, *, num_heads=None, pooling=None,
                    keep_pre_logits=True, checkpoint_image_size=None, **build_kwargs):
    """Builds a `ViTClassifier` that fits a checkpoint file and loads it.

    The width, depth, MLP size, patch size, class token, norms, pooling,
    pre-logits and head are read from the file (heads too for `.npz`).

    Args:
        path: `.npz`, `.safetensors` or PyTorch checkpoint file, or a
            `Converted` from `convert_file`.
        num_classes: None keeps the checkpoint's head; another number gets a
            new, freshly initialised head (0: no head, pooled features).
        image_size: None keeps the checkpoint's resolution; another size
            resamples the position embeddings (bicubic, class row kept).
        num_heads: attention heads; needed for timm files whose width is
            not a standard one.
        pooling: override "cls"/"gap"/"map"; timm state dicts do not say
            whether a model with a class token pooled it or averaged
            (timm's global_pool="avg" with fc_norm=False).
        keep_pre_logits: bool, keep the checkpoint's tanh pre-logits layer
            (also when the head is replaced); False drops it.
        checkpoint_image_size: the image size the checkpoint was trained at
            (from its metadata); it fixes the checkpoint's patch grid.
        **build_kwargs: other `build_vit` arguments (dropout,
            drop_path_rate, include_rescaling, pixel_mean, name, ...).

    Returns:
        A `ViTClassifier` with the checkpoint's weights.

    Example:
    >>> model = from_checkpoint("ViT-B_16.npz", num_classes=10, image_size=384)  # doctest: +SKIP
    """
    converted = path if isinstance(path, Converted) else convert_file(path)
    return load_checkpoint(ViTClassifier, converted, num_classes, image_size, num_heads=num_heads, pooling=pooling,
                           keep_pre_logits=keep_pre_logits, checkpoint_image_size=checkpoint_image_size,
                           **build_kwargs)


def from_timm_preset(files, cls, **overrides):
    """Builds `cls` (`ViTClassifier` or `ViTBackbone`) from a resolved
    pretrained preset (a `keras_vit.presets.PresetFiles`: a timm hub
    repository or a lone checkpoint file); `keras_vit.presets.CheckpointLoader`
    does the work.

    Example:
    >>> model = ViTClassifier.from_preset("vit_small_patch16_224.augreg_in21k_ft_in1k")  # doctest: +SKIP
    """
    return CheckpointLoader(files).load(cls, **overrides)
