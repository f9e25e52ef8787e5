"""The docstring examples of the self-contained modules run and stay true."""

import doctest
import importlib

import numpy as np
import pytest

MODULES = (
    "keras_vit.layers.patching",
    "keras_vit.layers.positions",
    "keras_vit.layers.attention",
    "keras_vit.layers.block",
    "keras_vit.layers.pooling",
    "keras_vit.layers.stem",
    "keras_vit.layers.norm",
    "keras_vit.layers.patch_dropout",
    "keras_vit.kernels",
    "keras_vit.kernels.tensorflow_xla",
    "keras_vit.models.backbone",
    "keras_vit.models.classifier",
    "keras_vit.models.lora",
    "keras_vit.models.portable",
    "keras_vit.augment",
    "keras_vit.utils.validation",
    "keras_vit.utils.io",
    "keras_vit.utils.disk",
    "keras_vit.utils.locks",
    "keras_vit.utils.ownership",
    "keras_vit.training.budget",
    "keras_vit.training.auto",
    "keras_vit.training.tools",
    "keras_vit.training.progressive",
    "keras_vit.training.probe",
    "keras_vit.presets.architectures",
    "keras_vit.presets.registry",
    "keras_vit.presets.timm",
    "keras_vit.presets.checkpoint",
    "keras_vit.presets.folder",
    "keras_vit.presets.loaders",
    "keras_vit.convert.readers",
    "keras_vit.convert.rules",
    "keras_vit.convert.timm",
    "keras_vit.convert.big_vision",
    "keras_vit.convert.assign",
    "keras_vit._moved",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
