"""Training: the recipe (`recipe`), the optimizer and loss (`optim`), precision and distribution
(`distribute`), run directories that resume (`run`) and fine-tuning of
pretrained checkpoints (`finetune`)."""

from keras_vit.training.distribute import (
    PRECISIONS, STRATEGIES, get_strategy, prepare_multi_worker, set_precision, worker_info)
from keras_vit.training.finetune import fine_tune, set_backbone_trainable
from keras_vit.training.optim import compile_model, make_optimizer, make_schedule
from keras_vit.training.recipe import DEFAULT_RECIPE, RECIPES, Recipe, read_config_file, resolve_recipe
from keras_vit.training.run import TrainResult, train, train_from_config
from keras_vit.training.rundir import RunBackup, write_history_files

__all__ = [
    "DEFAULT_RECIPE", "PRECISIONS", "RECIPES", "STRATEGIES", "Recipe", "RunBackup",
    "TrainResult", "compile_model", "fine_tune", "get_strategy", "make_optimizer", "make_schedule",
    "prepare_multi_worker", "read_config_file", "resolve_recipe", "set_backbone_trainable",
    "set_precision", "train", "train_from_config", "worker_info", "write_history_files",
]
