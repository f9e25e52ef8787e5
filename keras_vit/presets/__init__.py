"""Presets: everything a model can be made from by name, in one place.

- `architectures`: the table of architecture presets (`PRESETS`: "B/16",
  "Mu/4", ...; sizes only, random weights), `preset_config` and
  `vit_arguments` (`build_vit`'s arguments resolved against a preset);
- `registry`: the pretrained presets (`PRETRAINED`, ``hf://owner/repo``,
  local folders and files) resolved to local files (`resolve_preset`);
- `timm`: what a timm ``config.json`` says beyond the tensors;
- `checkpoint`: the architecture a converted checkpoint implies
  (`infer_config`);
- `folder`: keras_vit's own preset folders (`save_to_preset`,
  ``preprocessing.json``);
- `loaders`: one loader per kind of preset behind one interface
  (`get_preset_loader(handle)`: config, preprocessing, geometry, weights).

`from_preset(handle)` of the models, fine-tuning, export and explain all
ask `get_preset_loader`; none reads a preset file itself. This package
imports no model class.
"""

from keras_vit.presets.architectures import (
    DEFAULT_PRESET, FROM_PRESET, HEAD_ARGS, PRESETS, SIZE_FIELDS, SIZES, heads_for_width, preset_config,
    vit_arguments)
from keras_vit.presets.checkpoint import default_num_heads, infer_config
from keras_vit.presets.folder import PRESET_FORMAT, is_keras_vit_preset, preprocessing_of, save_to_preset
from keras_vit.presets.loaders import (
    ArchitectureLoader, CheckpointLoader, PresetLoader, SavedPresetLoader, get_preset_loader, load_checkpoint)
from keras_vit.presets.registry import HF_PREFIX, PRETRAINED, PresetFiles, is_pretrained_name, resolve_preset
from keras_vit.presets.timm import timm_preset_settings

__all__ = [
    "DEFAULT_PRESET", "FROM_PRESET", "HEAD_ARGS", "HF_PREFIX", "PRESETS", "PRESET_FORMAT", "PRETRAINED",
    "SIZES", "SIZE_FIELDS", "ArchitectureLoader", "CheckpointLoader", "PresetFiles", "PresetLoader",
    "SavedPresetLoader", "default_num_heads", "get_preset_loader", "heads_for_width", "infer_config",
    "is_keras_vit_preset", "is_pretrained_name", "load_checkpoint", "preprocessing_of", "preset_config",
    "resolve_preset", "save_to_preset", "timm_preset_settings", "vit_arguments",
]
