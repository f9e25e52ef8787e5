"""The registry of pretrained presets and where their files come from: a
known name, ``hf://owner/repo`` or a local path.

`resolve_preset` turns a handle into local files and never converts
anything. Downloads go through `huggingface_hub`, so its cache, its
``HF_HUB_OFFLINE`` switch, tokens and revisions all apply; nothing is
fetched at import time. Handles:

- a name from `PRETRAINED` (the common timm ViT, DeiT, augreg and MAE
  checkpoints), e.g. ``"vit_base_patch16_224.augreg2_in21k_ft_in1k"``;
- ``"hf://owner/repo"`` or ``"hf://owner/repo@revision"``: any timm ViT
  repository on the Hugging Face hub;
- a local directory (a timm-style ``config.json`` + weights, or a preset
  written by `save_to_preset`) or a single checkpoint file.
"""

import dataclasses
import json
import os
from pathlib import Path

HF_PREFIX = "hf://"
WEIGHT_FILES = ("model.weights.h5", "model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")
DOWNLOAD_PATTERNS = ["config.json", "model.safetensors", "pytorch_model.bin", "preprocessing.json",
                     "model.weights.h5"]

# Known names -> hub repositories (timm publishes each checkpoint as timm/<name>).
PRETRAINED = {
    name: f"timm/{name}"
    for name in (
        "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        "vit_tiny_patch16_384.augreg_in21k_ft_in1k",
        "vit_small_patch16_224.augreg_in21k_ft_in1k",
        "vit_small_patch16_384.augreg_in21k_ft_in1k",
        "vit_small_patch32_224.augreg_in21k_ft_in1k",
        "vit_small_patch16_224.augreg_in1k",
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "vit_base_patch16_224.augreg_in21k_ft_in1k",
        "vit_base_patch16_384.augreg_in21k_ft_in1k",
        "vit_base_patch32_224.augreg_in21k_ft_in1k",
        "vit_base_patch8_224.augreg2_in21k_ft_in1k",
        "vit_base_patch16_224.augreg_in21k",
        "vit_base_patch16_224.mae",
        "vit_large_patch16_224.augreg_in21k_ft_in1k",
        "vit_large_patch16_224.mae",
        "vit_huge_patch14_224.mae",
        "deit_tiny_patch16_224.fb_in1k",
        "deit_small_patch16_224.fb_in1k",
        "deit_base_patch16_224.fb_in1k",
        "deit_base_patch16_384.fb_in1k",
        "vit_base_patch16_clip_224.openai_ft_in1k",
        "vit_base_patch14_reg4_dinov2.lvd142m",
        "vit_small_patch14_reg4_dinov2.lvd142m",
    )
}


@dataclasses.dataclass
class PresetFiles:
    """Local files of a resolved preset.

    Attributes:
        handle: the handle as given.
        directory: the folder holding the files (None for a lone file).
        config: the parsed ``config.json`` (empty for a lone file).
        weights: the weights file.
    """

    handle: str
    directory: Path
    config: dict
    weights: Path


def is_pretrained_name(handle):
    """Whether `handle` names a pretrained preset without a local path: a
    known name or ``hf://owner/repo[@rev]``.

    Example:
    >>> is_pretrained_name("hf://timm/x"), is_pretrained_name("B/16")
    (True, False)
    """
    text = str(handle)
    return text in PRETRAINED or text.startswith(HF_PREFIX)


def parse_hf_handle(handle):
    """Splits ``"hf://owner/repo@rev"`` into (repo_id, revision or None).

    Example:
    >>> parse_hf_handle("hf://timm/vit_small_patch16_224.augreg_in21k_ft_in1k@main")
    ('timm/vit_small_patch16_224.augreg_in21k_ft_in1k', 'main')
    """
    rest = handle[len(HF_PREFIX):]
    repo, _, revision = rest.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(
            f"A hub preset is written 'hf://owner/repo' (optionally '@revision'). Received: {handle!r}")
    return repo, revision or None


def _download(repo_id, revision, handle):
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=DOWNLOAD_PATTERNS))
    except LocalEntryNotFoundError:
        raise ValueError(
            f"The preset {handle!r} ({repo_id}) is not in the local Hugging Face cache and "
            f"downloads are off or failed (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). "
            f"Run once with network access (unset HF_HUB_OFFLINE) to cache it, or pass a local "
            f"directory or checkpoint file.") from None
    except RepositoryNotFoundError:
        raise ValueError(f"The hub repository {repo_id!r} (from {handle!r}) does not exist or is private.") from None


def _weights_in(directory, handle):
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise ValueError(
        f"The preset {handle!r} holds no weights: expected one of {', '.join(WEIGHT_FILES)} in {directory}.")


def resolve_preset(handle):
    """Finds (downloading through huggingface_hub when needed) a preset's files.

    Args:
        handle: a name from `PRETRAINED`, ``"hf://owner/repo[@revision]"``,
            a local directory or a checkpoint file.

    Returns:
        A `PresetFiles`.

    Example:
    >>> resolve_preset("no/such/folder")
    Traceback (most recent call last):
    ...
    ValueError: Unknown preset 'no/such/folder': ...
    """
    if not isinstance(handle, (str, os.PathLike)):
        raise ValueError(f"`preset` must be a string or a path. Received: {handle!r}")
    handle = os.fspath(handle)
    if handle in PRETRAINED:
        directory = _download(PRETRAINED[handle], None, handle)
    elif handle.startswith(HF_PREFIX):
        directory = _download(*parse_hf_handle(handle), handle)
    elif os.path.isfile(handle):
        return PresetFiles(handle, None, {}, Path(handle))
    elif os.path.isdir(handle):
        directory = Path(handle)
    else:
        raise ValueError(
            f"Unknown preset {handle!r}: it is not an architecture preset, a known pretrained "
            f"name (see keras_vit.presets.PRETRAINED), an 'hf://owner/repo' handle, a directory or a file.")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(f"The preset {handle!r} has no config.json in {directory}.")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"The config.json of preset {handle!r} is not valid JSON: {err}") from None
    return PresetFiles(handle, directory, config, _weights_in(directory, handle))
