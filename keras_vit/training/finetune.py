"""`fine_tune`: a pretrained checkpoint, a new head, a new data set.

Loads the checkpoint or preset with a new head
(`keras_vit.models.from_checkpoint`, `ViTClassifier.from_preset`), trains
the head alone with what the checkpoint provides frozen, then the whole
network, both with `keras_vit.training.train` (to a time budget if asked);
the data come from `load_data`. Models and conversion are imported when
called, so importing this module stays light.
"""

import os
import time

from keras_vit.training.budget import parse_duration
from keras_vit.training.recipe import DEFAULTS
from keras_vit.training.run import TrainResult, train
from keras_vit.utils.ownership import RUN_DIR, claim_directory
from keras_vit.utils.validation import check_positive_int, pair, strict_keywords

DEFAULT_EPOCHS = 3  # of full fine-tuning, without a time budget
# With a time budget, the head-only stage may use this share of what is
# left of the budget when it starts (and at most `frozen_epochs`).
HEAD_BUDGET_SHARE = 0.2


def set_backbone_trainable(model, trainable):
    """Freezes (or unfreezes) what a checkpoint provides — the backbone, the
    pooling, `fc_norm` and the pre-logits layer — leaving the head (and any
    hidden head layers) trainable.

    Args:
        model: a `ViTClassifier`.
        trainable: bool.

    With LoRA enabled on the backbone (`ViTClassifier.enable_lora`),
    unfreezing makes the LoRA matrices its only trainable weights again,
    not the whole backbone.

    Example:
    >>> set_backbone_trainable(model, False)  # train the head only  # doctest: +SKIP
    """
    for part in (model.backbone, model.pooler, model.fc_norm, model.pre_logits):
        if part is not None:
            part.trainable = trainable
    if trainable and getattr(model.backbone, "lora_enabled", False):
        model.backbone._freeze_for_lora()


def _load_splits(data, size, channels, *, batch_size, validation_split, test_split, seed, augment,
                 data_dir, label_smoothing):
    from keras_vit.data import DataInfo, load_data

    if isinstance(data, (tuple, list)) and len(data) == 4 and isinstance(data[3], DataInfo):
        return tuple(data)
    return load_data(
        data, size, batch_size, validation_split=validation_split, test_split=test_split, seed=seed,
        augment=augment, channels=channels, data_dir=data_dir,
        label_mode="categorical" if label_smoothing else "int")


class _Pretrained:
    """A checkpoint file or a preset handle: its native size and channels,
    and `build(num_classes, image_size, **kwargs)` for the model to train."""

    def __init__(self, checkpoint, num_heads, keep_pre_logits):
        from keras_vit.convert import convert_file
        from keras_vit.presets import get_preset_loader, infer_config

        self.checkpoint, self.num_heads, self.keep_pre_logits = checkpoint, num_heads, keep_pre_logits
        text = os.fspath(checkpoint)
        self.is_file = os.path.isfile(text) and not os.path.isdir(text)
        if self.is_file:
            self.converted = convert_file(checkpoint)
            config = infer_config(self.converted, num_heads)
            self.image_size, self.channels = config["image_size"], config["channels"]
            self.source = os.path.abspath(text)
        else:
            loader = get_preset_loader(text)  # what the preset's files say, without building it
            if not loader.pretrained:
                raise ValueError(
                    f"{text!r} is an architecture preset (random weights); fine-tuning starts from pretrained "
                    "weights: a known pretrained name, hf://owner/repo, a preset directory or a checkpoint "
                    "file. To train an architecture from scratch use keras_vit.training.train (keras-vit train).")
            geometry = loader.geometry()
            if geometry is None:  # nothing on file says it: build the preset once to ask it
                from keras_vit.models import ViTClassifier

                native = ViTClassifier.from_preset(text, **self._heads())
                geometry = native.image_size, native.channels
                del native
            self.image_size, self.channels = geometry
            self.source = os.path.abspath(text) if os.path.isdir(text) else text

    def _heads(self):
        return {} if self.num_heads is None else dict(num_heads=self.num_heads)

    def build(self, num_classes, image_size, **build_kwargs):
        if self.is_file:
            from keras_vit.models import from_checkpoint

            return from_checkpoint(self.converted, num_classes=num_classes, image_size=image_size,
                                   num_heads=self.num_heads, keep_pre_logits=self.keep_pre_logits, **build_kwargs)
        from keras_vit.models import ViTClassifier

        if not self.keep_pre_logits:
            build_kwargs["representation_size"] = None
        return ViTClassifier.from_preset(os.fspath(self.checkpoint), num_classes=num_classes, image_size=image_size,
                                         **self._heads(), **build_kwargs)


@strict_keywords("keras_vit.models.classifier:build_vit", "keras_vit.models.pretrained:from_checkpoint", exclude=("variant", "path"))
def fine_tune(checkpoint, data, *, run_dir, num_classes=None, image_size=None, epochs=None,
              frozen_epochs=1, time_budget=None, budget_start=None, batch_size=32, learning_rate=1e-4,
              head_learning_rate=DEFAULTS.learning_rate, weight_decay=DEFAULTS.weight_decay,
              warmup_epochs=DEFAULTS.warmup_epochs, label_smoothing=DEFAULTS.label_smoothing, augment=None,
              validation_split=0.1, test_split=0.2, data_dir=None, num_heads=None,
              keep_pre_logits=True, lora_rank=None, seed=0, resume="auto", verbose="auto", **build_kwargs):
    """Fine-tunes a pretrained checkpoint or preset on a new data set.

    Loads the checkpoint with a new head (`keras_vit.convert.from_checkpoint`
    for files, `ViTClassifier.from_preset` for presets; positions are
    resampled when `image_size` differs), trains the head alone for
    `frozen_epochs` with the backbone frozen (`set_backbone_trainable`),
    then the whole network for `epochs`, both with `keras_vit.training.train`
    (AdamW, warmup + cosine, label smoothing, gradient clipping, resumable
    run directories). Data come from `keras_vit.data.load_data`; the model
    records the data's class names and the preset's preprocessing.

    Args:
        checkpoint: a `.npz`, `.safetensors` or PyTorch checkpoint file, or
            a preset: a known pretrained name (`keras_vit.presets.PRETRAINED`),
            ``"hf://owner/repo[@revision]"`` or a preset directory
            (`save_to_preset`'s or timm's ``config.json`` + weights).
        data: an image folder (`root/<class>/*.png`, or with train/val/test
            sub-folders), a TFDS name read from `data_dir` (nothing is
            downloaded), "digits", or `load_data`'s tuple.
        run_dir: run directory; the head-only stage runs in `run_dir/head`.
            The final model is `run_dir/model.keras`.
        num_classes: classes of the new head; None takes the data's.
        image_size: int or (h, w); None keeps the checkpoint's.
        epochs: int >= 0, epochs of full fine-tuning; None means 3, or with
            a `time_budget` as many as fit (an int is then a cap).
        frozen_epochs: int >= 0, head-only epochs first (0: none).
        time_budget: None, seconds, or a duration such as "30m": the whole
            call (loading included, counted from `budget_start`) ends
            within it. The head-only stage gets at most
            `HEAD_BUDGET_SHARE` of what is left when it starts; the full
            stage plans its steps in the rest (see `train`).
        budget_start: `time.time()` at which the budget began (default: the
            call of `fine_tune`; the CLI passes its process start).
        batch_size: int.
        learning_rate: peak learning rate of the full fine-tuning.
        head_learning_rate: learning rate of the head-only stage.
        weight_decay, warmup_epochs, label_smoothing: the recipe, see
            `keras_vit.training.train` (warmup_epochs is learning-rate warmup
            of the full stage).
        augment, validation_split, test_split, data_dir: see `load_data`.
        num_heads: heads, for timm files of non-standard width.
        keep_pre_logits: bool, keep the checkpoint's pre-logits layer.
        lora_rank: None, or an int > 0: LoRA of that rank on the attention's
            QKV and output projections (`ViTClassifier.enable_lora`). The
            full stage then trains only the LoRA matrices and the layers
            after the backbone (pooling, fc_norm, pre-logits, head); every
            other backbone weight keeps the checkpoint's value. The head-only
            stage is unchanged. The saved model holds the kernels with the
            LoRA updates merged in, a plain model.
        seed: int.
        resume: "auto", True or False, as in `train`.
        verbose: `fit` verbosity.
        **build_kwargs: other `build_vit` arguments (dropout, drop_path_rate, ...).

    Returns:
        A `keras_vit.training.TrainResult` of the last stage whose
        `history` lists the head-only epochs first (each row has a "stage").

    Example:
    >>> result = fine_tune("vit_small_patch16_224.augreg_in21k_ft_in1k", "flowers", run_dir="runs/flowers",
    ...                    time_budget="30m")  # doctest: +SKIP
    >>> result.test_metrics["accuracy"]  # doctest: +SKIP
    """
    import keras

    budget_start = time.time() if budget_start is None else budget_start
    if time_budget is not None:
        time_budget = parse_duration(time_budget)
    elif epochs is None:
        epochs = DEFAULT_EPOCHS
    if epochs is not None:
        check_positive_int(epochs, "epochs", minimum=0)
    check_positive_int(frozen_epochs, "frozen_epochs", minimum=0)
    if lora_rank is not None:
        check_positive_int(lora_rank, "lora_rank")
    if epochs == 0 and frozen_epochs == 0:
        raise ValueError("Nothing to train: `epochs` and `frozen_epochs` are both 0.")
    claim_directory(run_dir, RUN_DIR, inputs=(checkpoint, data), flag="run_dir", mark=False)  # refused before any work
    pretrained = _Pretrained(checkpoint, num_heads, keep_pre_logits)
    size = pretrained.image_size if image_size is None else pair(image_size, "image_size")
    splits = _load_splits(data, size, pretrained.channels, batch_size=batch_size,
                          validation_split=validation_split, test_split=test_split, seed=seed,
                          augment=augment, data_dir=data_dir, label_smoothing=label_smoothing)
    info = splits[3]
    num_classes = num_classes or info.num_classes
    if num_classes == info.num_classes and info.class_names:
        build_kwargs.setdefault("class_names", list(info.class_names))
    keras.utils.set_random_seed(seed)
    model = pretrained.build(num_classes, size, **build_kwargs)
    if lora_rank is not None:
        model.enable_lora(lora_rank)
    common = dict(weight_decay=weight_decay, label_smoothing=label_smoothing, seed=seed, resume=resume,
                  verbose=verbose, budget_start=budget_start,
                  config=dict(checkpoint=pretrained.source, num_classes=num_classes, image_size=list(size),
                              **({} if lora_rank is None else {"lora_rank": lora_rank})))
    history, result = [], None
    if frozen_epochs:
        head_budget = None
        if time_budget is not None:
            elapsed = time.time() - budget_start
            head_budget = elapsed + HEAD_BUDGET_SHARE * max(time_budget - elapsed, 0.0)
        set_backbone_trainable(model, False)
        result = train(model, splits, epochs=frozen_epochs, time_budget=head_budget,
                       run_dir=os.path.join(run_dir, "head"), learning_rate=head_learning_rate, **common)
        history += [dict(row, stage="head") for row in result.history]
        set_backbone_trainable(model, True)
    if epochs != 0:
        result = train(model, splits, epochs=epochs, time_budget=time_budget, run_dir=run_dir,
                       learning_rate=learning_rate, warmup_epochs=warmup_epochs, **common)
        history += [dict(row, stage="full") for row in result.history]
    return TrainResult(model=result.model, history=history, test_metrics=result.test_metrics,
                       run_dir=result.run_dir, initial_epoch=result.initial_epoch)
