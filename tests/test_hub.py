"""Preset handles resolve through the real huggingface_hub, offline, from a
local Hugging Face cache built here (the layout the library reads)."""

import json

import pytest

from keras_vit.presets import PRETRAINED, resolve_preset
from keras_vit.presets.registry import parse_hf_handle
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
from keras_vit.presets import resolve_preset
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
    out = json.loads(run_python(code, env=env, lean=True).stdout.split("RESULT", 1)[1])
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
    out = json.loads(run_python(code, env=env, lean=True).stdout.split("RESULT", 1)[1])
    diff = np.abs(np.array(out["logits"]) - expected).max()
    print(f"hf:// timm preset, avg + fc_norm, 4x6 grid: max |logit difference| = {diff:.2e}")
    assert diff < 1e-5
    np.testing.assert_allclose(out["again"], out["logits"], atol=1e-6)
    assert out["size"] == [16, 24] and out["pooling"] == "gap" and out["fc_norm"]
    assert out["mean"] == list(mean) and out["interpolation"] == config["pretrained_cfg"]["interpolation"]
    assert out["new_head"] == 7 and out["backbone"] == "ViTBackbone"


# --------------------------------------------------------------------------
# The commands on pretrained presets, offline from a local Hugging Face cache.
# --------------------------------------------------------------------------

KNOWN = "vit_small_patch16_224.augreg_in21k_ft_in1k"
LABELS = ["cat", "dog", "fox", "owl"]


@pytest.fixture
def hub_preset(tmp_path):
    """A tiny random timm ViT saved by timm's own `save_for_hf` as the cached
    snapshot of the known name's repository (timm/KNOWN), with class names,
    bicubic interpolation and crop_pct 0.875; returns (env, timm model, config)."""
    import torch

    from tests.test_convert import import_timm_vit

    import_timm_vit()
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=16,
                              depth=1, num_heads=2, num_classes=4).eval()
    model.pretrained_cfg = dict(model.pretrained_cfg, crop_pct=0.875, crop_mode="center", interpolation="bicubic")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    snapshot = make_hub_cache(tmp_path / "hub", PRETRAINED[KNOWN], {})
    save_for_hf(model, snapshot, model_config=dict(label_names=LABELS), safe_serialization=True)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    return env, model, json.loads((snapshot / "config.json").read_text())


def photo(path, height=45, width=61):
    from PIL import Image

    from tests.test_preprocessing import textured_image

    Image.fromarray(textured_image(height, width)).save(path)
    return path


def parse_predictions(stdout):
    """{class name: probability} of the first image row of `keras-vit predict`."""
    import re

    row = [line for line in stdout.splitlines() if line.endswith(")")][0]
    return {name: float(p) for name, p in re.findall(r"(\w+) \(([0-9.]+)\)", row)}


def test_predict_command_on_a_known_name_matches_timm(tmp_path, hub_preset):
    """`keras-vit predict NAME cat.png` loads the cached preset offline,
    prepares the image with timm's eval transform (resize, centre crop) and
    prints class names with timm's probabilities."""
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    env, model, config = hub_preset
    image = photo(tmp_path / "cat.png")
    transform = create_transform(**resolve_data_config(pretrained_cfg=config["pretrained_cfg"]))
    with torch.no_grad():
        expected = torch.softmax(model(transform(Image.open(image).convert("RGB"))[None]), -1)[0].numpy()
    # the known name here; hf:// handles (a revision too) resolve to the same
    # files (test_known_names_and_hf_handles_resolve_offline_from_the_cache)
    # and `finetune hf://...` runs below
    proc = run_python(["-m", "keras_vit.cli", "predict", KNOWN, str(image), "--top-k", "4"], env=env)
    printed = parse_predictions(proc.stdout)
    assert sorted(printed) == LABELS  # the preset's class names
    diff = max(abs(p - expected[LABELS.index(name)]) for name, p in printed.items())
    print(f"predict {KNOWN}: max |probability difference| vs timm = {diff:.4f}")
    assert diff < 0.01
    assert list(printed.values()) == sorted(printed.values(), reverse=True)


def test_commands_refuse_an_uncached_preset_offline(tmp_path, hub_preset):
    env, _, _ = hub_preset
    (tmp_path / "data").mkdir()
    image = photo(tmp_path / "data" / "cat.png")
    # The run directory lies beside the data: one inside the folder a
    # command reads is refused before the preset is looked at.
    for args in (["predict", "hf://timm/not_cached", str(image)],
                 ["finetune", "vit_base_patch16_224.augreg2_in21k_ft_in1k", str(tmp_path / "data"), "--run-dir",
                  str(tmp_path / "run")]):
        proc = run_python(["-m", "keras_vit.cli", *args], env=env, check=False)
        assert proc.returncode == 2, proc.stderr
        handle = args[1]
        assert f"keras-vit {args[0]}: error: The preset {handle!r}" in proc.stderr
        assert "not in the local Hugging Face cache" in proc.stderr and "unset HF_HUB_OFFLINE" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# not `quiet`: the 300 s budget is far more than its two capped epochs of 16 images need (at 120 s, a
# run on a loaded 2-core AMD machine took 45 s to start its second phase and was refused: under 77 s left)
def test_finetune_command_from_a_hub_preset_with_a_time_budget(tmp_path, hub_preset):
    """`keras-vit finetune hf://... DATA --time-budget`: loads the preset
    offline with a new head for the data's classes, trains within the budget
    (planned, plan.json), and the saved model keeps the preset's
    preprocessing and records the data's class names."""
    from PIL import Image

    from tests.test_preprocessing import textured_image

    env, _, config = hub_preset
    for label, seed in (("bright", 1), ("dark", 2)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(10):
            pixels = textured_image(32, 32, seed=seed * 100 + i) // (1 if label == "bright" else 4)
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    run_dir = tmp_path / "run"
    proc = run_python(["-m", "keras_vit.cli", "finetune", f"hf://{PRETRAINED[KNOWN]}", str(tmp_path / "data"),
                       "--run-dir", str(run_dir), "--time-budget", "300s", "--epochs", "2", "--frozen-epochs", "1",
                       "--batch-size", "2", "--test-split", "0.2"], env=env)
    assert f"Saved {run_dir / 'model.keras'} (2 classes" in proc.stdout
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan and (run_dir / "head" / "plan.json").exists()
    import keras

    import keras_vit  # noqa: F401 - registers the classes

    model = keras.models.load_model(run_dir / "model.keras")
    assert model.class_names == ["bright", "dark"]
    assert model.preprocessing["crop_pct"] == 0.875 and model.preprocessing["interpolation"] == "bicubic"
    assert list(model.backbone.pixel_mean) == list(config["pretrained_cfg"]["mean"])


def test_saved_preset_reloads_in_a_fresh_process_identically(tmp_path, hub_preset):
    """save_to_preset in one process, from_preset in another: the same
    outputs, class names and preprocessing (crop included)."""
    env, _, _ = hub_preset
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32"))
    save = f"""
import numpy as np
from keras_vit.models import ViTClassifier
m = ViTClassifier.from_preset({KNOWN!r})
np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))
m.save_to_preset({str(tmp_path / 'mine')!r})
"""
    run_python(save, env=env, lean=True)
    load = f"""
import json, numpy as np
from keras_vit.models import ViTClassifier
m = ViTClassifier.from_preset({str(tmp_path / 'mine')!r})
y = m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)
print("RESULT" + json.dumps(dict(diff=float(np.abs(y - np.load({str(tmp_path / 'y.npy')!r})).max()),
                                 names=m.class_names, pre=m.preprocessing)))
"""
    out = json.loads(run_python(load, env={"HF_HUB_OFFLINE": "1"}, lean=True).stdout.split("RESULT", 1)[1])
    assert out["diff"] == 0.0
    assert out["names"] == LABELS and out["pre"]["crop_pct"] == 0.875
    saved = json.loads((tmp_path / "mine" / "preprocessing.json").read_text())
    assert saved["class_names"] == LABELS and saved["crop_pct"] == 0.875
