"""`ViTBackbone`, `ViTClassifier` and `build_vit`: presets, image sizes,
saving, feature extraction, mixed precision and bad input."""

import json

import keras
import numpy as np
import pytest

from keras_vit import PRESETS, ViTBackbone, ViTClassifier, build_vit
from tests.conftest import BACKEND, run_python, tiny_vit_kwargs

# Parameter counts of timm's reference models (1000 classes, 224 px).
TIMM_PARAMS = {
    "Ti/16": 5_717_416,  # vit_tiny_patch16_224
    "S/16": 22_050_664,  # vit_small_patch16_224
    "S/32": 22_878_952,  # vit_small_patch32_224
    "B/16": 86_567_656,  # vit_base_patch16_224
    "B/32": 88_224_232,  # vit_base_patch32_224
    "L/16": 304_326_632,  # vit_large_patch16_224
    "H/14": 632_045_800,  # vit_huge_patch14_224 with a 1000-class head
}


@pytest.mark.backend_independent
@pytest.mark.parametrize("variant", sorted(TIMM_PARAMS))
def test_preset_parameter_counts_equal_timm(variant):
    assert build_vit(variant, image_size=224, num_classes=1000).count_params() == TIMM_PARAMS[variant]


@pytest.mark.backend_independent
def test_small_image_presets_build_at_their_size():
    for name in ("Mu/4", "Ti/4", "S/4"):
        size = PRESETS[name]["image_size"]
        assert 28 <= size <= 64
        model = build_vit(name, image_size=size, num_classes=10)
        assert model.backbone.patch_encoder.grid_size == (size // 4, size // 4)


@pytest.mark.backend_independent
def test_a_preset_builds_at_its_own_image_size_and_class_count():
    model = build_vit("Mu/4", depth=1)
    assert model.image_size == (32, 32) and model.input_shape == (None, 32, 32, 3)
    assert model.num_classes == 10 and model.output_shape == (None, 10)
    assert ViTClassifier.from_preset("Mu/8", depth=1).image_size == (64, 64)
    assert ViTBackbone.from_preset("Ti/16", depth=1).image_size == (224, 224)
    assert build_vit("Mu/4", depth=1, image_size=48, num_classes=3).output_shape == (None, 3)


def test_keyword_arguments_override_the_preset():
    model = build_vit("S/16", image_size=64, num_classes=3, depth=2, patch_size=8)
    assert len(model.backbone.blocks) == 2
    assert model.backbone.patch_encoder.patch_size == (8, 8)
    assert model.backbone.patch_encoder.hidden_dim == 384


def test_issue_example_overlapping_non_square_gap():
    model = build_vit(image_size=(40, 56), patch_size=8, stride=4, num_classes=7,
                      hidden_dim=48, depth=2, num_heads=3, mlp_dim=96, pooling="gap")
    encoder = model.backbone.patch_encoder
    assert encoder.grid_size == (9, 13)
    assert model.output_shape == (None, 7)
    assert model(np.zeros((2, 40, 56, 3))).shape == (2, 7)


def test_parts_are_attributes_with_stable_readable_names(tiny_vit):
    model = tiny_vit(representation_size=8)
    backbone = model.backbone
    assert [layer.name for layer in backbone.layers] == [
        "images", "rescaling", "patch_encoder", "embedding_dropout", "encoder_block_0",
        "encoder_block_1", "encoder_norm",
    ]
    assert backbone.rescaling is backbone.layers[1] and backbone.patch_encoder is backbone.layers[2]
    assert backbone.blocks == backbone.layers[4:6] and backbone.norm is backbone.layers[6]
    assert [layer.name for layer in model.layers] == [
        "images", "vit_backbone", "cls_pooling", "pre_logits", "head_dropout", "head"]
    assert (model.pooler.name, model.pre_logits.units, model.head.units) == ("cls_pooling", 8, 4)
    # Variable paths stay those of the flat model (checkpoint conversion relies on them).
    paths = [v.path for v in model.weights]
    assert paths[0].startswith("patch_encoder/") and paths[-1] == "head/bias"


def test_config_records_what_serving_needs(tiny_vit):
    model = tiny_vit(pooling="gap", classifier_activation="softmax", class_names=list("abcd"),
                     include_rescaling=False)
    config = model.get_config()
    assert config["pooling"] == "gap" and config["classifier_activation"] == "softmax"
    assert config["class_names"] == list("abcd") and config["outputs_logits"] is False
    assert config["backbone"]["config"]["include_rescaling"] is False
    assert tiny_vit().get_config()["outputs_logits"] is True
    clone = ViTClassifier.from_config(config)
    assert (clone.pooling, clone.class_names, clone.include_rescaling) == ("gap", list("abcd"), False)


def test_backbone_features_per_block_as_tokens_and_maps(tiny_vit, images):
    backbone = tiny_vit(num_registers=2).backbone
    tokens = backbone.forward_intermediates(images)
    assert [tuple(t.shape) for t in tokens] == [(3, 1 + 2 + 16, 16)] * 2
    maps = backbone.forward_intermediates(images, indices=[-1], output="maps", norm=True)
    assert tuple(maps[0].shape) == (3, 4, 4, 16)
    final = keras.ops.convert_to_numpy(backbone(images))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(maps[0]).reshape(3, 16, 16), final[:, 3:], atol=1e-5)
    assert len(backbone.forward_intermediates(images, indices=1)) == 1
    with pytest.raises(ValueError, match="`indices` must hold block indices"):
        backbone.forward_intermediates(images, indices=[5])
    with pytest.raises(ValueError, match="Unknown `output`"):
        backbone.forward_intermediates(images, output="nchw")


def test_no_weight_decay_names_biases_norms_tokens_and_positions(tiny_vit):
    model = tiny_vit(pooling="map", class_token=True, num_registers=1, layer_scale=0.1)
    exempt = {id(v) for v in model.no_weight_decay()}
    by_name = {}
    for v in model.trainable_variables:
        by_name.setdefault(v.name, set()).add(id(v) in exempt)
    assert by_name["kernel"] == {False}
    for name in ("bias", "gamma", "beta", "cls_token", "registers", "position_embedding", "probe"):
        assert by_name[name] == {True}, name


def test_any_size_model_runs_at_several_sizes_with_resampled_positions():
    model = build_vit(image_size=None, reference_image_size=16, **{
        k: v for k, v in tiny_vit_kwargs().items() if k != "image_size"})
    assert model.input_shape == (None, None, None, 3)
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (2, 16, 16, 3)).astype("float32")
    big = rng.integers(0, 256, (2, 24, 32, 3)).astype("float32")
    assert model.predict(small, verbose=0).shape == model.predict(big, verbose=0).shape == (2, 4)
    fixed = build_vit(**tiny_vit_kwargs())
    fixed.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(small, verbose=0), fixed.predict(small, verbose=0), atol=1e-5)


# the defaults are the same on every backend; the dynamic-size forward pass on
# each backend is test_any_size_model_runs_at_several_sizes_with_resampled_positions's
# (building a ViT-B/16 took JAX 18 s here)
@pytest.mark.backend_independent
def test_image_size_none_with_all_defaults_builds_and_runs():
    model = build_vit(image_size=None)
    assert model.count_params() == TIMM_PARAMS["B/16"]
    assert model(np.zeros((1, 48, 32, 3))).shape == (1, 1000)


def test_uint8_and_float_pixels_give_the_same_logits(tiny_vit, images):
    model = tiny_vit()
    np.testing.assert_allclose(
        model.predict(images.astype("uint8"), verbose=0), model.predict(images, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize("pooling", ["cls", "gap", "map"])
def test_poolings_give_different_heads(tiny_vit, images, pooling):
    model = tiny_vit(pooling=pooling)
    assert model.pooling == pooling and model.pooler.name == f"{pooling}_pooling"
    assert model.predict(images, verbose=0).shape == (3, 4)


def test_head_options(tiny_vit, images):
    model = tiny_vit(head_units=[12, 6], classifier_activation="softmax", dropout=0.1)
    assert [layer.units for layer in (*model.head_hidden, model.head)] == [12, 6, 4]
    assert not model.outputs_logits
    probs = model.predict(images, verbose=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    features = tiny_vit(num_classes=0)
    assert features.output_shape == (None, 16)


# Configurations whose `.keras` files must reload every weight.
SAVE_CONFIGS = {
    "cls": {},
    "gap_registers_sincos": dict(pooling="gap", num_registers=2, pos_embedding="sincos"),
    "map_layerscale_qknorm": dict(pooling="map", layer_scale=0.1, qk_norm=True, use_qkv_bias=False),
    "prelogits_mlp_head": dict(representation_size=8, head_units=[8], activation="relu"),
    "linear_overlap": dict(patch_embedding="linear", stride=2, class_token=True, pooling="gap"),
    "any_size": dict(image_size=None, reference_image_size=16, pos_interpolation="bilinear"),
}


def test_keras_file_reloads_in_a_fresh_process_with_identical_predictions(tmp_path, tiny_vit, images):
    expected = {}
    for name, overrides in SAVE_CONFIGS.items():
        model = tiny_vit(**overrides)
        # Move every weight off its initial value so a weight left behind shows.
        for weight in model.weights:
            weight.assign(weight + np.random.default_rng(1).normal(0, 0.05, weight.shape))
        model.save(tmp_path / f"{name}.keras")
        expected[name] = model.predict(images, verbose=0).tolist()
    np.save(tmp_path / "images.npy", images)
    code = f"""
import json, keras, numpy as np
import keras_vit  # registers the layers; no custom_objects needed
images = np.load({str(tmp_path / 'images.npy')!r})
out = {{}}
for name in {list(SAVE_CONFIGS)!r}:
    model = keras.saving.load_model({str(tmp_path)!r} + "/" + name + ".keras", safe_mode=True)
    out[name] = model.predict(images, verbose=0).tolist()
print("RESULT" + json.dumps(out))
"""
    proc = run_python(code, lean=True)
    reloaded = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name in SAVE_CONFIGS:
        np.testing.assert_allclose(reloaded[name], expected[name], atol=1e-6, err_msg=name)


POLICIES = ["mixed_bfloat16"] + (["mixed_float16"] if BACKEND == "tensorflow" else [])
# JAX's CPU backend has no float16 matmul ("F16_F16_F32 is not supported by
# dot_general on CPU"), so float16 runs on TensorFlow (and on GPUs) only.


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("pooling", ["cls", "map"])
def test_mixed_precision_gives_finite_float32_logits(policy, pooling):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_vit(**tiny_vit_kwargs(pooling=pooling, layer_scale=0.1, qk_norm=True))
        logits = model.predict(np.full((2, 16, 16, 3), 255, "uint8"), verbose=0)
        block = model.backbone.blocks[0]
        assert block.norm1.compute_dtype == "float32"
        assert block.mlp_dense1.compute_dtype == policy.split("_")[1]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()


# ------------------------------------------------------------- bad input

BAD_BUILDS = [
    (dict(hidden_dim=18, num_heads=4), "divisible by `num_heads`"),
    (dict(image_size=3), "smaller than the patch size 4"),
    (dict(image_size=18), "Sizes that work: 16 or 20"),
    (dict(image_size=17, stride=2), "Sizes that work: 16 or 18"),
    (dict(variant="X/16"), "Unknown `preset`: 'X/16'. Accepted values: 'Mu/4'"),
    (dict(pooling="max"), "Unknown `pooling`: 'max'. Accepted values: 'cls', 'gap', 'map'"),
    (dict(pos_embedding="rope"), "Unknown `pos_embedding`: 'rope'"),
    (dict(activation="tanh"), "Unknown `activation`: 'tanh'"),
    (dict(depth=0), "`depth` must be an int >= 1"),
    (dict(hidden_dim=-16), "`hidden_dim` must be an int >= 1"),
    (dict(patch_size=0), "`patch_size` must be a positive int"),
    (dict(image_size=(16, 0)), "`image_size` must be a positive int"),
    (dict(num_classes=-1), "`num_classes` must be an int >= 0"),
    (dict(num_classes=True), "`num_classes` must be an int >= 0"),
    (dict(dropout=False), "`dropout` must be in [0, 1)"),
    (dict(dropout=1.0), "`dropout` must be in [0, 1)"),
    (dict(attention_dropout=-0.1), "`attention_dropout` must be in [0, 1)"),
    (dict(drop_path_rate=1.5), "`drop_path_rate` must be in [0, 1)"),
    (dict(pos_embedding="sincos", hidden_dim=18, num_heads=3), "divisible by 4"),
    (dict(pooling="cls", class_token=False), "needs a class token"),
    (dict(conv_stem=[4, 8, 16]), "makes 8x8-pixel patches side by side: use patch_size=8"),
    (dict(conv_stem=[4, 8], stride=2), "use patch_size=4 and no stride"),
    (dict(conv_stem=[4, 0]), "`conv_stem` must be a non-empty list of channel counts"),
    (dict(conv_stem=[4, 8], patch_embedding="linear"), "`conv_stem` needs patch_embedding='conv'"),
]


@pytest.mark.backend_independent
@pytest.mark.parametrize("overrides,message", BAD_BUILDS, ids=[m for _, m in BAD_BUILDS])
def test_bad_arguments_raise_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError) as info:
        build_vit(**tiny_vit_kwargs(**overrides))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 16, 16, 1), "Expected images with 3 channels"),
        ((16, 16, 3), "add a batch axis"),
        ((1, 2, 2, 3), "smaller than the patch size 4"),
        ((1, 18, 16, 3), "Sizes that work: 16 or 20"),
    ],
)
def test_bad_images_at_call_time_raise_a_clear_value_error(shape, message):
    model = build_vit(image_size=None, **{k: v for k, v in tiny_vit_kwargs().items() if k != "image_size"})
    with pytest.raises(ValueError) as info:
        model.predict(np.zeros(shape, "float32"), verbose=0)
    assert message in str(info.value)


def test_fixed_size_model_rejects_another_size_clearly(tiny_vit):
    with pytest.raises(ValueError, match="expected shape=\\(None, 16, 16, 3\\)"):
        tiny_vit().predict(np.zeros((1, 24, 24, 3)), verbose=0)


@pytest.mark.parametrize("pixels,message", [
    (np.ones((1, 16, 16, 3), bool), "real pixel values"),
    (np.ones((1, 16, 16, 3)) * (1 + 2j), "real pixel values"),
    (np.full((1, 16, 16, 3), "a"), "real pixel values"),
    (np.ones((16, 16, 3), "float32"), "add a batch axis"),
    (np.zeros((0, 16, 16, 3), "float32"), "batch holds no images"),
])
def test_inputs_that_are_not_a_pixel_batch_are_refused(tiny_vit, pixels, message):
    model = tiny_vit()
    for run in (model, lambda x: model.predict(x, verbose=0), model.backbone):
        with pytest.raises(ValueError, match=message):
            run(pixels)


@pytest.mark.backend_independent
def test_absurd_sizes_are_refused_before_any_weight_is_made():
    with pytest.raises(ValueError, match="too large to build"):
        build_vit(hidden_dim=65536, num_heads=16, mlp_dim=262144, depth=48)
    with pytest.raises(ValueError, match="patch tokens per image"):
        build_vit("Ti/16", image_size=8192, patch_size=8, depth=1)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="graphs with run-time image sizes are TensorFlow's")
def test_untiled_size_is_refused_inside_a_graph_with_dynamic_height_and_width():
    import tensorflow as tf

    model = build_vit(image_size=None, reference_image_size=16, **{
        k: v for k, v in tiny_vit_kwargs().items() if k != "image_size"})
    serve = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec((None, None, None, 3))])
    assert serve(tf.zeros((1, 20, 24, 3))).shape == (1, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not tiled exactly by patches of 4"):
        serve(tf.zeros((1, 18, 16, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than the patch size"):
        serve(tf.zeros((1, 2, 16, 3)))


def test_pre_norm_final_norm_and_fc_norm_options(tiny_vit, images):
    model = tiny_vit(pooling="gap", pre_norm=True, final_norm=False, fc_norm=True)
    backbone = model.backbone
    assert backbone.norm_pre is not None and backbone.norm is None and model.fc_norm is not None
    # By hand: tokens -> norm_pre -> blocks (no final norm) -> mean -> fc_norm -> head.
    x = backbone.norm_pre(backbone.patch_encoder(backbone.rescaling(images)))
    for block in backbone.blocks:
        x = block(x)
    expected = model.head(model.fc_norm(keras.ops.mean(x, axis=1)))  # gap: no class token
    np.testing.assert_allclose(model.predict(images, verbose=0), keras.ops.convert_to_numpy(expected), atol=1e-5)
    clone = ViTClassifier.from_config(model.get_config())
    assert clone.fc_norm is not None and clone.backbone.norm is None and clone.backbone.norm_pre is not None


def test_save_to_preset_reloads_in_a_fresh_process_with_identical_outputs(tmp_path, tiny_vit, images):
    model = tiny_vit(pooling="gap", class_names=list("abcd"), pixel_mean=(0.485, 0.456, 0.406),
                     pixel_std=(0.229, 0.224, 0.225))
    for weight in model.weights:
        weight.assign(weight + np.random.default_rng(2).normal(0, 0.05, weight.shape))
    model.save_to_preset(tmp_path / "preset")
    assert json.loads((tmp_path / "preset" / "preprocessing.json").read_text())["class_names"] == list("abcd")
    np.save(tmp_path / "images.npy", images)
    code = f"""
import json, numpy as np
from keras_vit.models import ViTClassifier, ViTBackbone
model = ViTClassifier.from_preset({str(tmp_path / 'preset')!r})
images = np.load({str(tmp_path / 'images.npy')!r})
other = ViTClassifier.from_preset({str(tmp_path / 'preset')!r}, num_classes=2, image_size=24)
backbone = ViTBackbone.from_preset({str(tmp_path / 'preset')!r})
print("RESULT" + json.dumps(dict(out=model.predict(images, verbose=0).tolist(), names=model.class_names,
      other=[other.num_classes, list(other.image_size)], backbone=type(backbone).__name__)))
"""
    out = json.loads(run_python(code, lean=True).stdout.split("RESULT", 1)[1])
    np.testing.assert_allclose(out["out"], model.predict(images, verbose=0), atol=1e-6)
    assert out["names"] == list("abcd") and out["other"] == [2, [24, 24]]
    assert out["backbone"] == "ViTBackbone"


def test_pixel_mean_and_std_normalise_inside_the_model(tiny_vit):
    model = tiny_vit(pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225))
    out = keras.ops.convert_to_numpy(model.backbone.rescaling(np.full((1, 1, 1, 3), 255.0, "float32")))
    np.testing.assert_allclose(out[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="`pixel_std` must be a list"):
        tiny_vit(pixel_std=(0.5, 0.0, 0.5))
