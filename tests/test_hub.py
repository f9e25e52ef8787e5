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


def test_from_preset_loads_a_timm_hub_repository_exactly(tmp_path):
    """A timm checkpoint saved in timm's own hub layout (save_for_hf) in a local
    cache: from_preset("hf://...") reproduces timm's logits, takes the image
    size from the config (a 4x6 grid, whose 25 rows look square), and records
    the normalisation and interpolation; a saved preset reloads too."""
    import numpy as np
    import torch

    from tests.test_convert import import_timm_vit, random_timm

    VisionTransformer, _ = import_timm_vit()
    import timm
    from timm.models._hub import save_for_hf

    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(16, 24), patch_size=4,
                                  num_classes=3, embed_dim=16, depth=2, num_heads=2, global_pool="avg")
    state = random_timm(VisionTransformer, img_size=(16, 24), patch_size=4, num_classes=3, embed_dim=16,
                        depth=2, num_heads=2, global_pool="avg").state_dict()
    reference.load_state_dict(state)
    reference.eval()
    snapshot = make_hub_cache(tmp_path / "hub", "timm/tiny_test", {})
    save_for_hf(reference, snapshot)
    config = json.loads((snapshot / "config.json").read_text())
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 24, 3)).astype("float32")
    mean, std = np.array(config["pretrained_cfg"]["mean"]), np.array(config["pretrained_cfg"]["std"])
    with torch.no_grad():
        x = torch.from_numpy(((images / 255.0 - mean) / std).astype("float32")).permute(0, 3, 1, 2)
        expected = reference(x).numpy()
    np.save(tmp_path / "images.npy", images)
    code = f"""
import json, numpy as np
from keras_vit.models import ViTClassifier, ViTBackbone
model = ViTClassifier.from_preset("hf://timm/tiny_test")
images = np.load({str(tmp_path / 'images.npy')!r})
model.save_to_preset({str(tmp_path / 'mine')!r})
again = ViTClassifier.from_preset({str(tmp_path / 'mine')!r})
new_head = ViTClassifier.from_preset("hf://timm/tiny_test", num_classes=7)
backbone = ViTBackbone.from_preset("hf://timm/tiny_test")
print("RESULT" + json.dumps(dict(
    logits=model.predict(images, verbose=0).tolist(), again=again.predict(images, verbose=0).tolist(),
    size=list(model.image_size), pooling=model.pooling, fc_norm=model.fc_norm is not None,
    mean=model.backbone.pixel_mean, interpolation=model.preprocessing["interpolation"],
    new_head=new_head.num_classes, backbone=type(backbone).__name__)))
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    out = json.loads(run_python(code, env=env).stdout.split("RESULT", 1)[1])
    diff = np.abs(np.array(out["logits"]) - expected).max()
    print(f"hf:// timm preset, avg + fc_norm, 4x6 grid: max |logit difference| = {diff:.2e}")
    assert diff < 1e-5
    np.testing.assert_allclose(out["again"], out["logits"], atol=1e-6)
    assert out["size"] == [16, 24] and out["pooling"] == "gap" and out["fc_norm"]
    assert out["mean"] == list(mean) and out["interpolation"] == config["pretrained_cfg"]["interpolation"]
    assert out["new_head"] == 7 and out["backbone"] == "ViTBackbone"
