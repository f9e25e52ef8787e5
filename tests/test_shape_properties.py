"""Property-based checks (Hypothesis) of the patch geometry: for random image
sizes, patch sizes and strides, `Patches`, `grid_size` and `PatchEncoder`
agree with a numpy reference or raise the documented error, and `build_vit`
never builds silently with a value it does not accept."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_vit import Patches, build_vit
from keras_vit.layers import grid_size

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


def numpy_patches(images, patch, stride):
    """Reference: patches row by row, each flattened (row, column, channel)."""
    b, h, w, c = images.shape
    rows = range(0, h - patch[0] + 1, stride[0])
    cols = range(0, w - patch[1] + 1, stride[1])
    out = [images[:, i:i + patch[0], j:j + patch[1], :].reshape(b, -1) for i in rows for j in cols]
    return np.stack(out, axis=1)


sizes = st.integers(1, 24)
patches = st.integers(1, 6)


@PROPERTY_SETTINGS
@given(h=sizes, w=sizes, ph=patches, pw=patches, data=st.data())
def test_patches_match_numpy_or_raise_the_documented_error(h, w, ph, pw, data):
    sh = data.draw(st.integers(1, ph), label="stride_h")
    sw = data.draw(st.integers(1, pw), label="stride_w")
    tiles = all(size >= p and (size - p) % s == 0 for size, p, s in ((h, ph, sh), (w, pw, sw)))
    images = np.arange(2 * h * w * 2, dtype="float32").reshape(2, h, w, 2)
    if not tiles:
        with pytest.raises(ValueError, match="smaller than the patch size|is not tiled exactly"):
            grid_size((h, w), (ph, pw), (sh, sw))
        with pytest.raises(ValueError, match="smaller than the patch size|is not tiled exactly"):
            Patches((ph, pw), stride=(sh, sw))(images)
        return
    gh, gw = grid_size((h, w), (ph, pw), (sh, sw))
    expected = numpy_patches(images, (ph, pw), (sh, sw))
    assert expected.shape[1] == gh * gw
    out = np.asarray(Patches((ph, pw), stride=(sh, sw))(images))
    np.testing.assert_array_equal(out, expected)


@PROPERTY_SETTINGS
@given(p=patches, extra=st.integers(1, 4))
def test_a_stride_larger_than_the_patch_is_refused(p, extra):
    with pytest.raises(ValueError, match="larger than `patch_size`"):
        Patches(p, stride=p + extra)
    with pytest.raises(ValueError, match="larger than `patch_size`"):
        build_vit(image_size=32, patch_size=p, stride=p + extra, num_classes=2, hidden_dim=8,
                  depth=1, num_heads=1, mlp_dim=8)


# Values `build_vit` must refuse for each argument, of the wrong type or out of range.
WRONG = st.one_of(st.booleans(), st.text(max_size=3), st.floats(allow_nan=True), st.just(None),
                  st.lists(st.integers(), max_size=2), st.integers(-3, 0))
INT_ARGS = ("depth", "num_heads", "hidden_dim", "mlp_dim", "channels")
# the smallest model `build_vit` builds: one block, an 8-px image
SMALLEST = dict(image_size=8, patch_size=4, num_classes=2, hidden_dim=8, depth=1, num_heads=2, mlp_dim=8)


@PROPERTY_SETTINGS
@given(name=st.sampled_from(INT_ARGS + ("num_registers", "num_classes", "dropout", "norm_epsilon",
                                        "qk_norm", "layer_scale", "stride")),
       value=WRONG)
def test_build_vit_never_accepts_a_value_silently(name, value):
    accepted = {
        "num_registers": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "num_classes": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "dropout": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
        "norm_epsilon": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
        "qk_norm": lambda v: v is True or v is False,
        "layer_scale": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
        "stride": lambda v: v is None,  # ints here are <= 0
    }.get(name, lambda v: False)  # every WRONG value is wrong for the positive-int arguments
    if name in INT_ARGS and value is None:
        return  # None means "the preset's value" for the size arguments
    kwargs = {**SMALLEST, name: value}
    if accepted(value):
        return
    with pytest.raises(ValueError, match=f"`{name}`|{name}"):
        build_vit(**kwargs)


@pytest.mark.parametrize("name", ["qk_norm", "class_token", "use_qkv_bias", "final_norm"])
@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, "True"])
def test_switches_take_true_or_false_only(name, value):
    # 0.0 == False in Python; a switch still refuses it (Hypothesis found
    # qk_norm=0.0 building silently)
    with pytest.raises(ValueError, match=f"`{name}`: {value!r}. Accepted values: True, False"):
        build_vit(**{**SMALLEST, name: value})


def test_numpy_bools_are_bools_to_the_switches_and_not_numbers():
    from keras_vit.utils.validation import check_choice

    assert build_vit(**SMALLEST, qk_norm=np.True_).backbone.blocks[0].attention.qk_norm
    with pytest.raises(ValueError, match=r"`channels`: np.True_. Accepted values: 1, 3"):
        check_choice(np.True_, "channels", (1, 3))
