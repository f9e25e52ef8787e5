"""keras_vit.convert: timm state dicts and original ViT .npz files load into
build_vit models and give timm's logits; bad files fail clearly.

timm and torch (CPU build) come from the `dev` extra.
"""

import functools
import json
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch

from keras_vit import build_vit
from keras_vit import convert
from keras_vit import presets
from keras_vit.models import pretrained
from keras_vit.layers import pair, resample_posemb
from tests.conftest import import_timm, run_python


TOL = 1e-4
LOGIT_TOL = 1e-5  # float32 logits against timm's


def import_timm_vit():
    """timm's VisionTransformer and its .npz loader (see `conftest.import_timm`)."""
    import_timm()
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    return VisionTransformer, _load_weights


@pytest.fixture(scope="module")
def timm_vit():
    return import_timm_vit()


def pixels(height, width, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def timm_logits(model, images, head=None):
    """timm's logits for [0, 255] images, normalised as the original ViT
    (mean = std = 0.5), which is what build_vit's Rescaling does."""
    x = torch.from_numpy(images / 127.5 - 1.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = model(x)
        return (out if head is None else head(out)).numpy()


def random_timm(VisionTransformer, seed=0, **kwargs):
    """A timm ViT whose every parameter is perturbed, so nothing is zero or one."""
    torch.manual_seed(seed)
    model = VisionTransformer(**kwargs).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def save_state_dict(state, path):
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))
    return path


# name, timm kwargs, build_vit kwargs (beyond the inferred ones), file suffix
TIMM_CONFIGS = {
    "cls_qkv_bias": (
        dict(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0),
        dict(pooling="cls"),
        ".safetensors",
    ),
    "avg_with_class_token_no_qkv_bias": (
        dict(img_size=24, patch_size=8, num_classes=3, embed_dim=16, depth=2, num_heads=2, mlp_ratio=4.0,
             global_pool="avg", fc_norm=False, qkv_bias=False),
        dict(pooling="gap"),
        ".pth",
    ),
    "gap_no_class_token_rectangular": (
        dict(img_size=(16, 24), patch_size=8, num_classes=4, embed_dim=16, depth=1, num_heads=2,
             class_token=False, global_pool="avg", fc_norm=False),
        dict(pooling="gap", image_size=(16, 24)),
        ".bin",
    ),
    "map_attention_pooling": (
        dict(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0,
             class_token=False, global_pool="map"),
        dict(),
        ".pth",
    ),
    "avg_fc_norm": (  # timm's default for global_pool="avg" (MAE and many fine-tunes)
        dict(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2,
             global_pool="avg"),
        dict(),
        ".safetensors",
    ),
    "norm_pre_clip_style": (
        dict(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2, pre_norm=True),
        dict(),
        ".safetensors",
    ),
    "non_square_grid_whose_rows_are_a_square": (  # 4x6 patches + class token = 25 = 5**2 rows
        dict(img_size=(16, 24), patch_size=4, num_classes=3, embed_dim=16, depth=1, num_heads=2),
        dict(image_size=(16, 24)),
        ".safetensors",
    ),
    "no_embed_class_non_square": (  # 5x5 patches without a class row: 25 rows, and a class token
        dict(img_size=20, patch_size=4, num_classes=3, embed_dim=16, depth=1, num_heads=2,
             no_embed_class=True),
        dict(image_size=20),
        ".safetensors",
    ),
    "linear_patch_embedding": (
        dict(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=1, num_heads=4, mlp_ratio=2.0),
        dict(patch_embedding="linear"),
        ".safetensors",
    ),
    # CLIP-style tower: a LayerNorm before the blocks, eps 1e-5, quick GELU
    "clip_pre_norm_quick_gelu": (
        dict(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
             pre_norm=True, act_layer="quick_gelu", norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-5)),
        dict(norm_epsilon=1e-5, activation="quick_gelu"),
        ".pth",
    ),
    "cls_token_with_fc_norm": (  # timm's fc_norm=True with global_pool="token": no final norm
        dict(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2, fc_norm=True),
        dict(pooling="cls"),
        ".safetensors",
    ),
    "non_square_3x5_rows_are_a_square": (  # 3x5 patches + class token = 16 = 4**2 rows
        dict(img_size=(12, 20), patch_size=4, num_classes=3, embed_dim=16, depth=1, num_heads=2),
        dict(image_size=(12, 20)),
        ".safetensors",
    ),
    "non_square_7x2_portrait_avg": (
        dict(img_size=(28, 8), patch_size=4, num_classes=3, embed_dim=16, depth=1, num_heads=2,
             global_pool="avg"),
        dict(image_size=(28, 8)),
        ".safetensors",
    ),
    "registers_class_token_avg_fc_norm": (
        dict(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2, reg_tokens=4,
             no_embed_class=True, global_pool="avg"),
        dict(),
        ".safetensors",
    ),
    "layer_scale_qk_norm_registers": (
        dict(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2,
             init_values=0.5, qk_norm=True, reg_tokens=2, no_embed_class=True),
        dict(pooling="cls"),
        ".safetensors",
    ),
}


@pytest.mark.parametrize("name", sorted(TIMM_CONFIGS))
def test_timm_state_dict_gives_timm_logits(timm_vit, tmp_path, name):
    VisionTransformer, _ = timm_vit
    timm_kwargs, build_kwargs, suffix = TIMM_CONFIGS[name]
    reference = random_timm(VisionTransformer, **timm_kwargs)
    path = save_state_dict(reference.state_dict(), tmp_path / f"vit{suffix}")
    model = pretrained.from_checkpoint(path, num_heads=timm_kwargs["num_heads"], **build_kwargs)
    h, w = pair(timm_kwargs["img_size"], "img_size")
    assert model.image_size == (h, w)
    images = pixels(h, w)
    diff = np.abs(model.predict(images, verbose=0) - timm_logits(reference, images)).max()
    print(f"{name}: max |logit difference| = {diff:.2e}")
    assert diff <= LOGIT_TOL
    assert model.output_shape == (None, timm_kwargs["num_classes"])


def test_pre_logits_state_dict_matches_torch_reference(timm_vit, tmp_path):
    VisionTransformer, _ = timm_vit
    backbone = random_timm(VisionTransformer, img_size=32, patch_size=16, num_classes=0,
                           embed_dim=32, depth=1, num_heads=2)
    torch.manual_seed(1)
    pre_logits, head = torch.nn.Linear(32, 12), torch.nn.Linear(12, 6)
    state = dict(backbone.state_dict())
    state.update({f"pre_logits.fc.{k}": v for k, v in pre_logits.state_dict().items()})
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    path = save_state_dict(state, tmp_path / "vit.pth")
    model = pretrained.from_checkpoint(path, num_heads=2)
    assert model.pre_logits.units == 12
    images = pixels(32, 32)
    expected = timm_logits(backbone, images, head=lambda f: head(torch.tanh(pre_logits(f))))
    diff = np.abs(model.predict(images, verbose=0) - expected).max()
    print(f"pre_logits: max |logit difference| = {diff:.2e}")
    assert diff < TOL

    # Keep the pre-logits but replace the head: pre-logit features equal.
    new = pretrained.from_checkpoint(path, num_classes=3, num_heads=2)
    features = build_features(new, new.pre_logits)(images)
    with torch.no_grad():
        ref = torch.tanh(pre_logits(torch.from_numpy(timm_logits(backbone, images)))).numpy()
    assert np.abs(np.asarray(features) - ref).max() < TOL
    assert new.output_shape == (None, 3)
    dropped = pretrained.from_checkpoint(path, num_classes=3, num_heads=2, keep_pre_logits=False)
    assert dropped.pre_logits is None


def build_features(model, layer):
    import keras

    return keras.Model(model.input, layer.output)


def original_npz_arrays(dim=16, depth=2, heads=2, mlp=32, grid=4, patch=4, classes=3,
                        big_vision=False, cls=True, map_head=False, seed=0):
    """Random arrays named as in the original ViT (or big_vision) .npz files."""
    rng = np.random.default_rng(seed)
    r = lambda *shape: (0.1 * rng.standard_normal(shape)).astype("float32")
    hd = dim // heads
    prefix = "params/" if big_vision else ""
    pos_name = "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"
    mha, ln2, mlp_block = ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0") if big_vision \
        else ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    arrays = {
        "embedding/kernel": r(patch, patch, 3, dim), "embedding/bias": r(dim),
        pos_name: r(1, int(cls) + grid * grid, dim),
        "Transformer/encoder_norm/scale": 1 + r(dim), "Transformer/encoder_norm/bias": r(dim),
        "head/kernel": r(dim, classes), "head/bias": r(classes),
    }
    if cls:
        arrays["cls"] = r(1, 1, dim)
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", ln2):
            arrays.update({b + ln + "/scale": 1 + r(dim), b + ln + "/bias": r(dim)})
        for part in ("query", "key", "value"):
            arrays.update({f"{b}{mha}/{part}/kernel": r(dim, heads, hd), f"{b}{mha}/{part}/bias": r(heads, hd)})
        arrays.update({f"{b}{mha}/out/kernel": r(heads, hd, dim), f"{b}{mha}/out/bias": r(dim)})
        arrays.update({f"{b}{mlp_block}/Dense_0/kernel": r(dim, mlp), f"{b}{mlp_block}/Dense_0/bias": r(mlp),
                       f"{b}{mlp_block}/Dense_1/kernel": r(mlp, dim), f"{b}{mlp_block}/Dense_1/bias": r(dim)})
    if map_head:
        m = "MAPHead_0/"
        arrays.update({m + "probe": r(1, 1, dim), m + "LayerNorm_0/scale": 1 + r(dim), m + "LayerNorm_0/bias": r(dim),
                       m + "MlpBlock_0/Dense_0/kernel": r(dim, mlp), m + "MlpBlock_0/Dense_0/bias": r(mlp),
                       m + "MlpBlock_0/Dense_1/kernel": r(mlp, dim), m + "MlpBlock_0/Dense_1/bias": r(dim)})
        for part in ("query", "key", "value"):
            arrays.update({f"{m}MultiHeadDotProductAttention_0/{part}/kernel": r(dim, heads, hd),
                           f"{m}MultiHeadDotProductAttention_0/{part}/bias": r(heads, hd)})
        arrays.update({f"{m}MultiHeadDotProductAttention_0/out/kernel": r(heads, hd, dim),
                       f"{m}MultiHeadDotProductAttention_0/out/bias": r(dim)})
    return {prefix + k: v for k, v in arrays.items()}


NPZ_LAYOUTS = {  # name: (big_vision naming, class token, pooling)
    "original_cls": (False, True, "cls"),
    "big_vision_gap": (True, False, "gap"),
    "big_vision_map": (True, False, "map"),
}


@pytest.mark.parametrize("layout", sorted(NPZ_LAYOUTS))
def test_npz_matches_timms_own_npz_loader(timm_vit, tmp_path, layout):
    VisionTransformer, timm_load_npz = timm_vit
    big_vision, cls, pooling = NPZ_LAYOUTS[layout]
    path = tmp_path / "vit.npz"
    np.savez(path, **original_npz_arrays(big_vision=big_vision, cls=cls, map_head=pooling == "map"))
    reference = VisionTransformer(
        img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
        class_token=cls, global_pool={"cls": "token", "gap": "avg", "map": "map"}[pooling], fc_norm=False,
    ).eval()
    timm_load_npz(reference, str(path))
    model = pretrained.from_checkpoint(path)  # heads read from the file
    assert model.backbone.blocks[0].num_heads == 2
    images = pixels(16, 16)
    diff = np.abs(model.predict(images, verbose=0) - timm_logits(reference, images)).max()
    print(f"npz {layout}: max |logit difference| = {diff:.2e}")
    assert diff < TOL
    # load_npz into a model built by hand gives the same logits.
    by_hand = build_vit(image_size=16, num_classes=3, patch_size=4, hidden_dim=16, depth=2, num_heads=2,
                        mlp_dim=32, pooling=pooling)
    convert.load_npz(by_hand, path)
    np.testing.assert_allclose(by_hand.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_in_memory_and_bfloat16_state_dicts(timm_vit, tmp_path):
    VisionTransformer, _ = timm_vit
    reference = random_timm(VisionTransformer, img_size=16, patch_size=4, num_classes=3,
                            embed_dim=16, depth=1, num_heads=2)
    model = build_vit(image_size=16, num_classes=3, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=64)
    convert.load_timm(model, reference.state_dict())  # a dict of torch tensors
    images = pixels(16, 16)
    assert np.abs(model.predict(images, verbose=0) - timm_logits(reference, images)).max() < TOL
    # bfloat16 files (numpy has no bfloat16) load as float32 values of the bfloat16 weights
    half = {k: v.to(torch.bfloat16) for k, v in reference.state_dict().items()}
    path = save_state_dict(half, tmp_path / "bf16.safetensors")
    convert.load_timm(model, path)
    assert convert.read_checkpoint(path)[1]["head.weight"].dtype == np.float32
    kernel = model.head.kernel.numpy()
    np.testing.assert_array_equal(kernel, half["head.weight"].float().numpy().T)


def test_resolution_change_resamples_positions_like_timm(timm_vit, tmp_path):
    """A 24 px model from a 16 px checkpoint: the patch positions are
    resampled bicubically on their grid, the class row is kept."""
    VisionTransformer, _ = timm_vit
    source = random_timm(VisionTransformer, img_size=16, patch_size=4, num_classes=3,
                         embed_dim=16, depth=1, num_heads=2)
    path = save_state_dict(source.state_dict(), tmp_path / "vit.safetensors")
    model = pretrained.from_checkpoint(path, image_size=24, num_heads=2)
    table = model.backbone.patch_encoder.position_embedding.numpy()
    old = source.pos_embed.detach().numpy()
    assert table.shape == (1, 1 + 6 * 6, 16)
    np.testing.assert_array_equal(table[:, 0], old[:, 0])
    # the patch rows go through the core's bicubic grid resampling
    expected = resample_posemb(old[:, 1:], (6, 6), (4, 4), "bicubic")
    np.testing.assert_allclose(table[:, 1:], np.asarray(expected), atol=1e-6)
    images = pixels(24, 24)
    assert model.predict(images, verbose=0).shape == (2, 3)


# name: (timm kwargs, checkpoint image size, new image size)
RESAMPLED = {
    "enlarged_4x4_to_6x6": (dict(), 16, 24),
    "shrunk_6x6_to_4x4_antialiased": (dict(), 24, 16),
    "non_square_4x6_to_5x3": (dict(), (16, 24), (20, 12)),
    "no_embed_class_registers_4x4_to_7x5": (dict(reg_tokens=2, no_embed_class=True), 16, (28, 20)),
}


@pytest.mark.parametrize("name", sorted(RESAMPLED))
def test_resampled_checkpoint_matches_timms_own_resampling(timm_vit, tmp_path, name):
    """A checkpoint saved at one size and loaded at another: timm resamples
    the positions itself (`checkpoint_filter_fn`, bicubic with antialias),
    and our model loaded at the new size gives timm's logits."""
    import timm

    kwargs, old_size, new_size = RESAMPLED[name]
    arch = dict(patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3, **kwargs)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=old_size, **arch)
    VisionTransformer, _ = timm_vit
    source.load_state_dict(random_timm(VisionTransformer, img_size=old_size, **arch).state_dict())
    path = save_state_dict(source.state_dict(), tmp_path / "vit.safetensors")
    old_h, old_w = pair(old_size, "old_size")
    reference = timm.create_model(
        "vit_tiny_patch16_224", pretrained=True, img_size=new_size, **arch,
        pretrained_cfg_overlay=dict(file=str(path), input_size=(3, old_h, old_w), num_classes=3)).eval()
    model = pretrained.from_checkpoint(path, image_size=new_size, checkpoint_image_size=old_size, num_heads=2)
    images = pixels(*pair(new_size, "new_size"))
    diff = np.abs(model.predict(images, verbose=0) - timm_logits(reference, images)).max()
    print(f"resampled {name}: max |logit difference| = {diff:.2e}")
    assert diff <= LOGIT_TOL


def test_resampled_positions_follow_the_grid():
    """Resampling works on the 2-D grid: a table that is constant stays
    constant, and one that ramps along the rows (a linear function of the
    row's centre) gives the ramp's values at the new rows' centres, away
    from the clamped border."""
    new_grid = (8, 8)  # from a 4x4 grid
    rows = np.repeat(np.arange(4.0), 4)  # row index of every patch
    table = np.stack([np.full(16, 0.7), rows], axis=-1)[None].astype("float32")
    table = np.concatenate([np.full((1, 1, 2), 9.0, "float32"), table], axis=1)  # class row
    out = convert.fit_position_embedding(table, new_grid, has_cls_token=True)
    assert out.shape == (1, 1 + 64, 2)
    np.testing.assert_array_equal(out[0, 0], [9.0, 9.0])
    np.testing.assert_allclose(out[0, 1:, 0], 0.7, atol=1e-6)
    grid = out[0, 1:, 1].reshape(new_grid)
    centres = (np.arange(8) + 0.5) * 4 / 8 - 0.5  # new row centres in old row units
    np.testing.assert_allclose(grid[3:5], np.repeat(centres[3:5, None], 8, axis=1), atol=1e-5)
    assert np.allclose(grid, grid[:, :1])  # no change along the columns


def test_new_head_when_num_classes_differs(timm_vit, tmp_path):
    VisionTransformer, _ = timm_vit
    source = random_timm(VisionTransformer, img_size=16, patch_size=4, num_classes=3,
                         embed_dim=16, depth=1, num_heads=2)
    path = save_state_dict(source.state_dict(), tmp_path / "vit.safetensors")
    model = pretrained.from_checkpoint(path, num_classes=7, num_heads=2)
    assert model.output_shape == (None, 7)
    features = pretrained.from_checkpoint(path, num_classes=0, num_heads=2)
    images = pixels(16, 16)
    with torch.no_grad():
        ref = source.forward_head(
            source.forward_features(torch.from_numpy(images / 127.5 - 1).permute(0, 3, 1, 2)),
            pre_logits=True,
        ).numpy()
    assert np.abs(features.predict(images, verbose=0) - ref).max() < TOL
    # Loading into a model with another head warns and keeps that head.
    other = build_vit(image_size=16, num_classes=7, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=64)
    head_before = other.head.kernel.numpy().copy()
    with pytest.warns(UserWarning, match="classifier was not loaded"):
        convert.load_timm(other, path)
    np.testing.assert_array_equal(other.head.kernel.numpy(), head_before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert.load_timm(other, path, replace_head=True)


# --------------------------------------------------------------------------
# The model side: every variable by its canonical path, backbones.
# --------------------------------------------------------------------------

TABLE_CONFIGS = {
    "plain": dict(),
    "every_part": dict(pooling="map", fc_norm=True, final_norm=False, pre_norm=True, representation_size=8,
                       head_units=[12], num_registers=2, qk_norm=True, layer_scale=0.1, use_qkv_bias=False),
    "no_tokens_no_head": dict(pooling="gap", patch_embedding="linear", pos_embedding="sincos", num_classes=0),
}


@pytest.mark.parametrize("name", sorted(TABLE_CONFIGS))
def test_variable_table_names_every_variable_once(name):
    """A variable missing from the table would silently keep its initial
    value; one listed twice would be loaded twice."""
    model = tiny_model(**TABLE_CONFIGS[name])
    for part in (model, model.backbone):
        table = convert.variable_table(part)
        assert sorted(id(v) for v in table.values()) == sorted(id(v) for v in part.weights)
        assert all(variable.path == path for path, variable in table.items())  # the models' contract


def test_backbone_takes_the_backbone_tensors_and_ignores_the_classifier(timm_vit):
    from keras_vit.models import ViTBackbone

    VisionTransformer, _ = timm_vit
    source = random_timm(VisionTransformer, img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=1,
                         num_heads=2, class_token=False, global_pool="map", reg_tokens=1, no_embed_class=True)
    backbone = ViTBackbone(image_size=16, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=64,
                           class_token=False, num_registers=1)
    convert.load_timm(backbone, source.state_dict())
    images = pixels(16, 16)
    with torch.no_grad():
        expected = source.forward_features(torch.from_numpy(images / 127.5 - 1).permute(0, 3, 1, 2)).numpy()
    assert np.abs(backbone.predict(images, verbose=0) - expected).max() < TOL
    positioned = random_timm(VisionTransformer, img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=1,
                             num_heads=2, class_token=False, global_pool="map", reg_tokens=1)
    with pytest.raises(ValueError, match="Register tokens with their own position embeddings"):
        convert.load_timm(backbone, positioned.state_dict())


# --------------------------------------------------------------------------
# Pretrained presets: a timm directory (config.json + weights, as on the hub).
# --------------------------------------------------------------------------

# timm name, create_model overrides, keras_vit attributes the config sets
TIMM_PRESETS = {
    "clip": ("vit_base_patch16_clip_224.openai_ft_in1k", dict(global_pool="token"), dict(norm_epsilon=1e-5)),
    "deit_avg_fc_norm": ("deit_tiny_patch16_224.fb_in1k", dict(global_pool="avg"), dict(final_norm=False)),
    "dinov2_registers": ("vit_small_patch14_reg4_dinov2.lvd142m", dict(), dict(num_registers=4)),
}


def write_timm_preset(directory, name, **kwargs):
    """A random timm model saved by timm's own `save_for_hf` (config.json
    with its preprocessing, and model.safetensors)."""
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    patch = 14 if "patch14" in name else 16
    model = timm.create_model(name, pretrained=False, img_size=2 * patch, depth=1, embed_dim=32, num_heads=2,
                              num_classes=4, **kwargs).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    save_for_hf(model, directory, model_config=dict(label_names=["w", "x", "y", "z"]), safe_serialization=True)
    return model


@pytest.mark.parametrize("preset", sorted(TIMM_PRESETS))
def test_timm_preset_directory_gives_timm_logits_from_raw_pixels(timm_vit, tmp_path, preset):
    from keras_vit.models import ViTBackbone, ViTClassifier

    name, kwargs, expected_config = TIMM_PRESETS[preset]
    reference = write_timm_preset(tmp_path / "preset", name, **kwargs)
    cfg = json.loads((tmp_path / "preset" / "config.json").read_text())["pretrained_cfg"]
    size = cfg["input_size"][1]
    images = pixels(size, size)
    x = torch.from_numpy((images / 255 - np.array(cfg["mean"])) / np.array(cfg["std"])).float().permute(0, 3, 1, 2)
    with torch.no_grad():
        logits, features = reference(x).numpy(), reference.forward_features(x).numpy()

    model = ViTClassifier.from_preset(str(tmp_path / "preset"))
    diff = np.abs(model.predict(images, verbose=0) - logits).max()
    print(f"{preset}: max |logit difference| = {diff:.2e}")
    assert diff < TOL
    assert model.class_names == ["w", "x", "y", "z"]
    assert model.preprocessing["interpolation"] == cfg["interpolation"]
    assert model.backbone.pixel_mean == list(cfg["mean"])
    for key, value in expected_config.items():
        assert getattr(model.backbone, key) == value
    backbone = ViTBackbone.from_preset(str(tmp_path / "preset"))
    assert np.abs(backbone.predict(images, verbose=0) - features).max() < TOL
    # A new class count gets a fresh head (and no class names); a new size resampled positions.
    other = ViTClassifier.from_preset(str(tmp_path / "preset"), num_classes=2, image_size=3 * size // 2)
    assert other.num_classes == 2 and other.class_names is None
    if model.fc_norm is not None:  # loaded with the backbone, not with the replaced head
        np.testing.assert_array_equal(other.fc_norm.gamma.numpy(), model.fc_norm.gamma.numpy())
    assert other.predict(pixels(3 * size // 2, 3 * size // 2), verbose=0).shape == (2, 2)


def test_timm_preset_settings_read_what_the_weights_do_not_record():
    settings = presets.timm_preset_settings({
        "architecture": "vit_base_patch16_clip_quickgelu_224", "global_pool": "avg", "num_classes": 2,
        "model_args": {"num_heads": 3}, "label_names": ["a", "b"],
        "pretrained_cfg": {"input_size": [3, 48, 64], "interpolation": "bilinear", "crop_pct": 0.9,
                           "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}})
    assert settings == dict(
        num_heads=3, pooling="gap", norm_epsilon=1e-5, activation="quick_gelu", pixel_mean=[0.1, 0.2, 0.3],
        pixel_std=[0.4, 0.5, 0.6], image_size=(48, 64), class_names=["a", "b"],
        preprocessing=dict(interpolation="bilinear", crop_pct=0.9, source="vit_base_patch16_clip_quickgelu_224"))
    with pytest.raises(ValueError, match="global_pool='avgmax' is not supported"):
        presets.timm_preset_settings({"global_pool": "avgmax"})


# --------------------------------------------------------------------------
# Safety and bad input.
# --------------------------------------------------------------------------

MARKER_ENV = "KERAS_VIT_PAYLOAD_MARKER"


class Payload:
    """Unpickling this object would create a marker file."""

    def __reduce__(self):
        return (open, (os.environ[MARKER_ENV], "w"))


@pytest.mark.parametrize("pickler", ["torch_save", "plain_pickle"])
def test_pickle_with_payload_is_refused(tmp_path, monkeypatch, pickler):
    marker = tmp_path / "payload_ran"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    path = tmp_path / "evil.pth"
    state = {"patch_embed.proj.weight": torch.zeros(4, 3, 2, 2), "evil": Payload()}
    if pickler == "torch_save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    model = build_vit(image_size=4, num_classes=2, patch_size=2, hidden_dim=4, depth=1, num_heads=1, mlp_dim=4)
    with pytest.raises(ValueError, match="Refused to load"):
        convert.load_timm(model, path)
    with pytest.raises(ValueError, match="Refused to load"):
        pretrained.from_checkpoint(path)
    assert not marker.exists()


def test_npz_with_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, cls=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="Refused to load.*object arrays"):
        convert.read_checkpoint(path)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    path = tmp_path / "vit.npz"
    np.savez(path, **original_npz_arrays())
    return path


def tiny_model(**overrides):
    kwargs = dict(image_size=16, num_classes=3, patch_size=4, hidden_dim=16, depth=2, num_heads=2, mlp_dim=32)
    kwargs.update(overrides)
    return build_vit(**kwargs)


def test_shape_mismatch_names_tensor_and_shapes_and_loads_nothing(tiny_checkpoint):
    model = tiny_model(mlp_dim=48)
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(ValueError) as err:
        convert.load_npz(model, tiny_checkpoint)
    message = str(err.value)
    assert "Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias" in message
    assert "(32,)" in message and "(48,)" in message
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_architecture_mismatch_lists_missing_and_extra(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"Missing from the checkpoint \(12\): encoder_block_2/"):
        convert.load_npz(tiny_model(depth=3), tiny_checkpoint)
    with pytest.raises(ValueError, match="In the checkpoint but not in the model.*encoderblock_1"):
        convert.load_npz(tiny_model(depth=1), tiny_checkpoint)
    with pytest.raises(ValueError, match=r"not in the model \(1\): 'cls' \(patch_encoder/cls_token\)"):
        convert.load_npz(tiny_model(pooling="gap"), tiny_checkpoint)  # a class token the model lacks


def test_truncated_and_unknown_files_fail_clearly(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        pretrained.from_checkpoint(truncated)
    from safetensors.numpy import save_file

    st = tmp_path / "w.safetensors"
    save_file({"cls_token": np.ones((1, 1, 8), "float32")}, str(st))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(st.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"The .safetensors file .* is truncated: its header describes"):
        convert.read_checkpoint(cut)
    pth = tmp_path / "w.pth"
    torch.save({"cls_token": torch.ones(1, 1, 8)}, pth)
    cut_pth = tmp_path / "cut.pth"
    cut_pth.write_bytes(pth.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        convert.read_checkpoint(cut_pth)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="Unknown checkpoint format.*npz, safetensors, torch"):
        pretrained.from_checkpoint(text)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="Unknown checkpoint format"):
        convert.read_checkpoint(other_zip)
    with pytest.raises(FileNotFoundError):
        convert.read_checkpoint(tmp_path / "missing.npz")


def test_pytorch_files_without_torch_name_the_extra_to_install(tmp_path):
    """Without torch a .pth file is not 'corrupt': the error says what to
    install; float32 .safetensors files need no torch."""
    pth = tmp_path / "w.pth"
    torch.save({"cls_token": torch.ones(1, 1, 8)}, pth)
    plain = save_state_dict({"cls_token": torch.ones(1, 1, 8)}, tmp_path / "f32.safetensors")
    code = (
        "import sys\n"
        "from keras_vit.convert import read_checkpoint\n"
        "assert 'torch' not in sys.modules\n"
        "sys.modules['torch'] = None  # `import torch` now fails as if it were not installed\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        print('LOADED', sorted(read_checkpoint(path)[1]))\n"
        "    except ValueError as err:\n"
        "        print('ERROR', err)\n"
    )
    lines = run_python(["-c", code, str(pth), str(plain)]).stdout.splitlines()
    results = [line for line in lines if line.startswith(("ERROR", "LOADED"))]
    assert len(results) == 2
    assert results[0].startswith("ERROR") and "PyTorch is not installed" in results[0]
    assert "pip install 'keras-vision-transformer[weights]'" in results[0] and "corrupt" not in results[0]
    assert results[1] == "LOADED ['cls_token']"  # float32 safetensors need no torch


def test_unknown_and_unsupported_tensors_fail_clearly():
    with pytest.raises(ValueError, match="no build_vit layer takes: decoder.weight"):
        convert.convert_timm({"decoder.weight": np.zeros((2, 2), "float32")})
    with pytest.raises(ValueError, match="query/key norms in timm's attention pooling"):
        convert.convert_timm({"attn_pool.q_norm.weight": np.zeros((2,), "float32")})


def test_wrong_loader_and_bad_arguments(tmp_path, tiny_checkpoint):
    pth = tmp_path / "w.pth"
    torch.save({"cls_token": torch.ones(1, 1, 8)}, pth)
    with pytest.raises(ValueError, match="expects a .npz file"):
        convert.load_npz(tiny_model(), pth)
    with pytest.raises(ValueError, match="use `load_npz`"):
        convert.load_timm(tiny_model(), tiny_checkpoint)
    with pytest.raises(ValueError, match="Unknown `pooling`: 'mean'"):
        pretrained.from_checkpoint(tiny_checkpoint, pooling="mean")
    with pytest.raises(ValueError, match="Pass `num_heads`"):
        presets.default_num_heads(40)


@pytest.mark.backend_independent
def test_names_moved_out_of_convert_still_load_from_it_with_a_warning():
    import importlib

    for name, home in convert.MOVED.items():
        with pytest.warns(DeprecationWarning, match=f"{home}.{name}"):
            assert getattr(convert, name) is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError):
        convert.no_such_name
