"""Preset handles resolve through the real huggingface_hub, offline, from a
local Hugging Face cache built here (the layout the library reads)."""

import json

import pytest

from keras_vit.hub import PRETRAINED, parse_hf_handle, resolve_preset
from tests.conftest import run_python


def make_hub_cache(root, repo_id, files, revision="0123456789abcdef0123456789abcdef01234567"):
    """Writes `files` (name -> bytes) as a cached snapshot of `repo_id`."""
    folder = root / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def test_known_names_and_hf_handles_resolve_offline_from_the_cache(tmp_path):
    cache = tmp_path / "hub"
    name = "vit_small_patch16_224.augreg_in21k_ft_in1k"
    config = {"architecture": "vit_small_patch16_224", "num_classes": 1000}
    files = {"config.json": json.dumps(config).encode(), "model.safetensors": b"weights"}
    snapshot = make_hub_cache(cache, PRETRAINED[name], files)
    make_hub_cache(cache, "someone/my_vit", files)
    code = f"""
import json
from keras_vit.hub import resolve_preset
out = {{}}
for handle in ({name!r}, "hf://someone/my_vit", "hf://someone/my_vit@main"):
    files = resolve_preset(handle)
    out[handle] = [str(files.directory), files.config, str(files.weights)]
try:
    resolve_preset("hf://someone/not_cached")
except ValueError as err:
    out["error"] = str(err)
print("RESULT" + json.dumps(out))
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    out = json.loads(run_python(code, env=env).stdout.split("RESULT", 1)[1])
    assert out[name] == [str(snapshot), config, str(snapshot / "model.safetensors")]
    assert out["hf://someone/my_vit"][1] == config
    assert out["hf://someone/my_vit@main"][1] == config
    assert "'hf://someone/not_cached'" in out["error"] and "HF_HUB_OFFLINE=1" in out["error"]
    assert "unset HF_HUB_OFFLINE" in out["error"]


def test_local_directories_and_files_resolve_without_the_hub(tmp_path):
    (tmp_path / "config.json").write_text('{"architecture": "vit_tiny_patch16_224"}')
    (tmp_path / "model.safetensors").write_bytes(b"w")
    files = resolve_preset(tmp_path)
    assert files.weights == tmp_path / "model.safetensors" and files.config["architecture"]
    assert resolve_preset(tmp_path / "model.safetensors").directory is None


@pytest.mark.parametrize("handle,message", [
    ("hf://just_a_name", "'hf://owner/repo'"),
    ("hf://a/b/c", "'hf://owner/repo'"),
    ("not/a/preset", "Unknown preset 'not/a/preset'"),
    (3, "`preset` must be a string or a path"),
])
def test_bad_handles_are_named_in_the_error(handle, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_preset(handle)


def test_a_directory_without_weights_or_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        resolve_preset(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_preset(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no weights"):
        resolve_preset(tmp_path)


def test_parse_hf_handle_keeps_the_revision():
    assert parse_hf_handle("hf://timm/x@v1.0") == ("timm/x", "v1.0")
