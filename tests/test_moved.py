"""Public modules that moved (0.1's, and 0.2's preset modules) still import, and say where their names went."""

import importlib

import pytest


@pytest.mark.backend_independent
@pytest.mark.parametrize("old, new, name", [
    ("keras_vit.weights", "keras_vit.convert", "load_npz"),
    ("keras_vit.weights", "keras_vit.convert", "read_checkpoint"),
    ("keras_vit.model", "keras_vit.models", "build_vit"),
    ("keras_vit.model", "keras_vit.models", "PRESETS"),
    ("keras_vit.visualize", "keras_vit.explain", "attention_maps"),
    ("keras_vit.hub", "keras_vit.presets.registry", "PRETRAINED"),
    ("keras_vit.hub", "keras_vit.presets.registry", "resolve_preset"),
    ("keras_vit.models.presets", "keras_vit.presets.architectures", "PRESETS"),
    ("keras_vit.models.preset_io", "keras_vit.presets.folder", "save_to_preset"),
])
def test_a_0_1_import_gives_the_new_object_and_names_its_home(old, new, name):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.warns(DeprecationWarning, match=new):
        exec(f"from {old} import {name}", {})


@pytest.mark.backend_independent
def test_a_name_the_new_home_lacks_is_an_attribute_error_that_says_so():
    import keras_vit.model

    with pytest.raises(AttributeError, match="moved to keras_vit.models, which has no 'resolve_config'"):
        keras_vit.model.resolve_config  # noqa: B018 - 0.1 had it; 0.2 has no such function
