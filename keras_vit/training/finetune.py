"""`fine_tune`: a pretrained checkpoint, a new head, a new data set.

Loads the checkpoint with a new head (`keras_vit.convert.from_checkpoint`),
trains the head alone with what the checkpoint provides frozen, then the
whole network, both with `keras_vit.training.train`; the data come from
`load_data`. `keras_vit.convert` is imported when called: conversion sits
after training in the package's layering.
"""

import os

from keras_vit.training.run import TrainResult, train
from keras_vit.utils.validation import check_positive_int, pair


def set_backbone_trainable(model, trainable):
    """Freezes (or unfreezes) what a checkpoint provides — the backbone, the
    pooling, `fc_norm` and the pre-logits layer — leaving the head (and any
    hidden head layers) trainable.

    Args:
        model: a `ViTClassifier`.
        trainable: bool.

    Example:
    >>> set_backbone_trainable(model, False)  # train the head only  # doctest: +SKIP
    """
    for part in (model.backbone, model.pooler, model.fc_norm, model.pre_logits):
        if part is not None:
            part.trainable = trainable


def _load_splits(data, size, channels, *, batch_size, validation_split, test_split, seed, augment,
                 data_dir, label_smoothing):
    from keras_vit.data import DataInfo, load_data

    if isinstance(data, (tuple, list)) and len(data) == 4 and isinstance(data[3], DataInfo):
        return tuple(data)
    return load_data(
        data, size, batch_size, validation_split=validation_split, test_split=test_split, seed=seed,
        augment=augment, channels=channels, data_dir=data_dir,
        label_mode="categorical" if label_smoothing else "int")


def fine_tune(checkpoint, data, *, run_dir, num_classes=None, image_size=None, epochs=3,
              frozen_epochs=1, batch_size=32, learning_rate=1e-4, head_learning_rate=1e-3,
              weight_decay=0.05, warmup_epochs=0, label_smoothing=0.1, augment=None,
              validation_split=0.1, test_split=0.2, data_dir=None, num_heads=None,
              keep_pre_logits=True, seed=0, resume="auto", verbose="auto", **build_kwargs):
    """Fine-tunes a pretrained checkpoint on a new data set.

    Loads the checkpoint with a new head (`keras_vit.convert.from_checkpoint`;
    positions are resampled when `image_size` differs), trains the head alone
    for `frozen_epochs` with the backbone frozen (`set_backbone_trainable`),
    then the whole network for `epochs`, both with `keras_vit.training.train`
    (AdamW, warmup + cosine, label smoothing, gradient clipping, resumable
    run directories). Data come from `keras_vit.data.load_data`; the model
    records the data's class names and preprocessing.

    Args:
        checkpoint: `.npz`, `.safetensors` or PyTorch checkpoint file.
        data: an image folder (`root/<class>/*.png`, or with train/val/test
            sub-folders), a TFDS name read from `data_dir` (nothing is
            downloaded), "digits", or `load_data`'s tuple.
        run_dir: run directory; the head-only stage runs in `run_dir/head`.
            The final model is `run_dir/model.keras`.
        num_classes: classes of the new head; None takes the data's.
        image_size: int or (h, w); None keeps the checkpoint's.
        epochs: int >= 0, epochs of full fine-tuning.
        frozen_epochs: int >= 0, head-only epochs first (0: none).
        batch_size: int.
        learning_rate: peak learning rate of the full fine-tuning.
        head_learning_rate: learning rate of the head-only stage.
        weight_decay, warmup_epochs, label_smoothing: the recipe, see
            `keras_vit.training.train` (warmup_epochs is learning-rate warmup
            of the full stage).
        augment, validation_split, test_split, data_dir: see `load_data`.
        num_heads: heads, for timm files of non-standard width.
        keep_pre_logits: bool, keep the checkpoint's pre-logits layer.
        seed: int.
        resume: "auto", True or False, as in `train`.
        verbose: `fit` verbosity.
        **build_kwargs: other `build_vit` arguments (dropout, drop_path_rate, ...).

    Returns:
        A `keras_vit.training.TrainResult` of the last stage whose
        `history` lists the head-only epochs first (each row has a "stage").

    Example:
    >>> result = fine_tune("ViT-B_16.npz", "flowers", run_dir="runs/flowers", image_size=384)  # doctest: +SKIP
    >>> result.test_metrics["accuracy"]  # doctest: +SKIP
    """
    import keras

    from keras_vit.convert import convert_file, from_checkpoint, infer_config

    check_positive_int(epochs, "epochs", minimum=0)
    check_positive_int(frozen_epochs, "frozen_epochs", minimum=0)
    if epochs + frozen_epochs == 0:
        raise ValueError("Nothing to train: `epochs` and `frozen_epochs` are both 0.")
    converted = convert_file(checkpoint)
    ckpt_config = infer_config(converted, num_heads)
    size = ckpt_config["image_size"] if image_size is None else pair(image_size, "image_size")
    splits = _load_splits(data, size, ckpt_config["channels"], batch_size=batch_size,
                          validation_split=validation_split, test_split=test_split, seed=seed,
                          augment=augment, data_dir=data_dir, label_smoothing=label_smoothing)
    info = splits[3]
    num_classes = num_classes or info.num_classes
    if num_classes == info.num_classes and info.class_names:
        build_kwargs.setdefault("class_names", list(info.class_names))
    keras.utils.set_random_seed(seed)
    model = from_checkpoint(converted, num_classes=num_classes, image_size=size, num_heads=num_heads,
                            keep_pre_logits=keep_pre_logits, **build_kwargs)
    common = dict(weight_decay=weight_decay, label_smoothing=label_smoothing, seed=seed, resume=resume,
                  verbose=verbose, config=dict(checkpoint=os.path.abspath(os.fspath(checkpoint)),
                                               num_classes=num_classes, image_size=list(size)))
    history, result = [], None
    if frozen_epochs:
        set_backbone_trainable(model, False)
        result = train(model, splits, epochs=frozen_epochs, run_dir=os.path.join(run_dir, "head"),
                       learning_rate=head_learning_rate, **common)
        history += [dict(row, stage="head") for row in result.history]
        set_backbone_trainable(model, True)
    if epochs:
        result = train(model, splits, epochs=epochs, run_dir=run_dir, learning_rate=learning_rate,
                       warmup_epochs=warmup_epochs, **common)
        history += [dict(row, stage="full") for row in result.history]
    return TrainResult(model=result.model, history=history, test_metrics=result.test_metrics,
                       run_dir=result.run_dir, initial_epoch=result.initial_epoch)
