"""Hyperparameter search over the architecture and the training recipe with
KerasTuner: the space and each trial's training (`hypermodel`), and the
resumable search with its results (`search`)."""

from keras_vit.tuning.hypermodel import (
    DEFAULT_SPACE, LOG_SCALE, OBJECTIVES, TUNERS, ViTHyperModel, heads_name)
from keras_vit.tuning.search import make_tuner, trial_rows, tune, write_results

__all__ = ["DEFAULT_SPACE", "LOG_SCALE", "OBJECTIVES", "TUNERS", "ViTHyperModel", "heads_name", "make_tuner",
           "trial_rows", "tune", "write_results"]
