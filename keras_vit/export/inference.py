"""`inference_model`: the one explicit transform that rearranges a model's
weights for fast inference.

The layers compute the plain ViT in every mode; this transform returns a
Keras model with the same outputs (within float rounding, 1e-5 in float32)
whose transformer blocks compute their inference pass with two rewrites
(`INFERENCE_REWRITES`):

- ``"layer_norm_fold"``: each block's LayerNorm has gamma and beta folded
  into the Dense after it (gamma scales the kernel's rows, beta becomes a
  bias, ``beta @ kernel``), so the activations get only the centring and one
  row scale; the centring stays on the activations (folding it into the
  kernel loses precision on rows whose mean is large against their spread);
- ``"heads_first_attention"``: the QKV projection is one batched matmul of
  the rows with the kernel viewed as (3 * heads, D, head_dim), whose output
  is already heads-first (no 5-D transpose of the activations); 1/√head_dim
  goes into the query kernel and bias; the key bias is left out (it adds
  q·b_k to all the scores of a query, which the softmax removes); the value
  bias joins the output projection's bias, ``b_v @ W_o + b_o`` (each row of
  the attention weights sums to 1).

Both are `keras.ops`, so they run on every backend. Where a rewrite does not
apply the block keeps the plain computation for that part: quantized or
activated Dense layers (no fold), qk-norm or the fused attention kernel (no
heads-first attention: the fold into the QKV projection still applies). The
weights are shared with the original model, not copied: training the
original changes the inference model too (the folded weights are computed
from the variables on every call).

Measured on TensorFlow (Ti, batch 128, 2-core CPU, in-process A/B): predict
296 → 291 ms a batch with the fold, 294 → 284 ms with the heads-first
attention on top (README, Performance); re-measured with this transform on a
loaded machine, 1052 → 1000 CPU ms a batch; with TensorFlow's oneDNN
rewrites on (`TF_ENABLE_ONEDNN_OPTS=1`, load 10–12, two in-process runs)
1944 → 1720 and 2091 → 1777 wall ms, 698 → 685 and 732 → 707 CPU ms, each
rewrite alone within noise: the gain is small and mostly in wall time. On JAX (jit, CPU) it did not
pay: 766 → 781 CPU ms a batch, within that run's noise; the outputs are the
same there, so the transform is applied on every backend. TFLite export does not use the
transform (LiteRT runs the heads-first batched matmul at half the speed of
its row-wise FULLY_CONNECTED); SavedModel export, the Keras predictor and
`benchmarks.mfu` do.
"""

import math

import keras
from keras import ops

from keras_vit.kernels import normalizes_last_axis, plain_dense
from keras_vit.layers.block import ACTIVATIONS, TransformerBlock
from keras_vit.layers.norm import LayerNorm, centered_and_inv
from keras_vit.models.portable import PortableCompile

INFERENCE_REWRITES = ("layer_norm_fold", "heads_first_attention")


def inference_model(model):
    """A model computing `model`'s inference outputs faster, with the
    rewrites of `INFERENCE_REWRITES` (see this module).

    Every `TransformerBlock` of `model` (also inside a nested backbone) is
    wrapped in an `InferenceBlock` sharing its weights; every other layer is
    the same object. The result is a plain functional `InferenceModel`
    (a `keras.Model`) with the same inputs and outputs; it records what was
    done in `inference_rewrites` (also in its config). Use it for
    inference only: it has no training path of its own.

    Args:
        model: a functional `keras.Model` (a `ViTClassifier`, a
            `ViTBackbone`, or a functional model around them).

    Returns:
        An `InferenceModel`.

    Example:
    >>> from keras_vit import build_vit
    >>> model = build_vit("Mu/4", depth=1, num_classes=3)
    >>> fast = inference_model(model)
    >>> fast.inference_rewrites
    ['layer_norm_fold', 'heads_first_attention']
    >>> x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    >>> bool(np.allclose(fast.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5))
    True
    """
    if isinstance(model, InferenceModel):
        return model
    from keras.src.models.functional import Functional  # what keras.models.clone_model can rebuild

    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            "`inference_model` takes a functional or Sequential keras.Model (such as a ViTClassifier or "
            f"ViTBackbone). Received: {type(model).__name__}")
    if not model.built:
        raise ValueError("Build the model (call it once) before `inference_model`.")
    blocks = []

    def clone(layer):
        if isinstance(layer, TransformerBlock) and not isinstance(layer, InferenceBlock):
            blocks.append(InferenceBlock(layer, name=f"{layer.name}_inference"))
            return blocks[-1]
        return layer  # shared, not copied

    clone_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    rewrites = [r for r in INFERENCE_REWRITES if any(r in block.rewrites for block in blocks)]
    fast = InferenceModel(clone_model.input, clone_model.output, inference_rewrites=rewrites,
                          name=f"{model.name}_inference")
    if model.compiled:  # the same jit_compile for predict: "auto" stays "auto" (PortableCompile)
        fast.compile(jit_compile=getattr(model, "jit_compile_setting", model.jit_compile))
    for attribute in ("class_names", "preprocessing", "outputs_logits"):  # what readers of a classifier look up
        if getattr(model, attribute, None) is not None:
            setattr(fast, attribute, getattr(model, attribute))
    return fast


@keras.saving.register_keras_serializable(package="keras_vit")
class InferenceModel(PortableCompile, keras.Model):
    """The functional model `inference_model` returns: a `keras.Model`
    whose config records `inference_rewrites`, the rewrites applied (a
    list of `INFERENCE_REWRITES` entries). Compiled with the source
    model's `jit_compile` as given: "auto" is saved as "auto"
    (`PortableCompile`)."""

    def __init__(self, inputs, outputs, name=None, **kwargs):
        rewrites = kwargs.pop("inference_rewrites", ())
        super().__init__(inputs, outputs, name=name, **kwargs)
        self.inference_rewrites = list(rewrites)

    def get_config(self):
        config = super().get_config()
        config["inference_rewrites"] = list(self.inference_rewrites)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        rewrites = config.pop("inference_rewrites", [])
        model = super().from_config(config, custom_objects)
        model.inference_rewrites = list(rewrites)
        return model


def foldable(norm, dense):
    """Whether `fold` applies: a float32 `LayerNorm` over the last axis with
    gamma and beta, before a `plain_dense`."""
    return isinstance(norm, LayerNorm) and norm.built and normalizes_last_axis(norm, 2) and plain_dense(dense)


def fold(norm, rows, dense):
    """``(h, kernel, bias)`` with ``h @ kernel + bias == dense(norm(rows))``
    for 2-D `rows`: gamma folded into the kernel (a scale of its rows) and
    beta into the bias (``beta @ kernel``), so the activations get the
    centring and one multiply by ``rsqrt(var + epsilon)`` per row. The
    folded weights are computed on every call from the variables; they are
    small next to the activations. All three come in `dense`'s compute
    dtype. Only where `foldable(norm, dense)`."""
    centered, inv = centered_and_inv(rows, norm.epsilon)
    kernel = ops.cast(dense.kernel, "float32")
    bias = ops.matmul(ops.cast(norm.beta, "float32")[None], kernel)[0]
    if dense.use_bias:
        bias = bias + ops.cast(dense.bias, "float32")
    kernel = kernel * ops.cast(norm.gamma, "float32")[:, None]
    dtype = dense.compute_dtype
    return ops.cast(centered * inv, dtype), ops.cast(kernel, dtype), ops.cast(bias, dtype)


def project(norm, rows, dense):
    """``dense(norm(rows))``, folded where `foldable`."""
    if not foldable(norm, dense):
        return dense(norm(rows))
    h, kernel, bias = fold(norm, rows, dense)
    return ops.add(ops.matmul(h, kernel), bias)


@keras.saving.register_keras_serializable(package="keras_vit")
class InferenceBlock(keras.layers.Layer):
    """A `TransformerBlock`'s inference pass with the rewrites of
    `INFERENCE_REWRITES`, on the block's own weights (shared).

    Args:
        block: the `TransformerBlock` (built).

    Attributes:
        rewrites: the rewrites this block applies (fewer where they do not
            apply; see `keras_vit.export.inference`).
    """

    def __init__(self, block, **kwargs):
        if isinstance(block, dict):  # from_config
            block = keras.saving.deserialize_keras_object(block)
        if not isinstance(block, TransformerBlock):
            raise ValueError(f"`block` must be a TransformerBlock. Received: {type(block).__name__}")
        super().__init__(**{"dtype": block.dtype_policy, **kwargs})
        self.block = block
        self.built = block.built

    @property
    def rewrites(self):
        b, attention = self.block, self.block.attention
        done = []
        if foldable(b.norm1, attention.qkv) or foldable(b.norm2, b.mlp_dense1):
            done.append("layer_norm_fold")
        if self._heads_first():
            done.append("heads_first_attention")
        return done

    def _heads_first(self):
        attention = self.block.attention
        return not (attention.qk_norm or attention.fused) and plain_dense(attention.qkv) and plain_dense(attention.proj)

    def build(self, input_shape):
        if not self.block.built:
            self.block.build(input_shape)
        self.built = True

    def call(self, x, training=None):
        if training:
            raise ValueError("An InferenceBlock computes inference only; train the original model.")
        b = self.block
        shape = ops.shape(x)
        rows = ops.reshape(x, (-1, x.shape[-1]))
        if self._heads_first():
            attn = self._attention_heads_first(rows, shape[0])
        else:
            attn = b.attention.attend(project(b.norm1, rows, b.attention.qkv), shape[0])
        rows = b._residual(rows, attn, getattr(b, "layer_scale1", None), False, shape[0])
        h = ACTIVATIONS[b.activation](project(b.norm2, rows, b.mlp_dense1))
        rows = b._residual(rows, b.mlp_dense2(h), getattr(b, "layer_scale2", None), False, shape[0])
        return ops.reshape(rows, shape)

    def _attention_heads_first(self, rows, batch):
        """The attention of the block's `norm1(rows)`, heads-first (see
        ``"heads_first_attention"``); the output projection's rows."""
        b, attention = self.block, self.block.attention
        if foldable(b.norm1, attention.qkv):
            h, kernel, bias = fold(b.norm1, rows, attention.qkv)
        else:
            h = ops.cast(b.norm1(rows), attention.compute_dtype)
            kernel, bias = attention.qkv.kernel, attention.qkv.bias
        heads, head_dim, dim = attention.num_heads, attention.head_dim, h.shape[-1]
        scale = 1.0 / math.sqrt(head_dim)
        kernel = ops.reshape(kernel, (dim, 3, heads * head_dim)) * ops.cast([[scale], [1.0], [1.0]], kernel.dtype)
        kernel = ops.transpose(ops.reshape(kernel, (dim, 3 * heads, head_dim)), (1, 0, 2))
        q, k, v = ops.unstack(ops.reshape(ops.matmul(h[None], kernel), (3, heads, batch, -1, head_dim)), 3, axis=0)
        proj_bias = attention.proj.bias
        if bias is not None:
            q_bias, _, v_bias = ops.unstack(ops.reshape(bias, (3, heads * head_dim)), 3, axis=0)
            q = q + ops.reshape(q_bias * scale, (heads, 1, 1, head_dim))
            proj_bias = proj_bias + ops.matmul(v_bias[None], attention.proj.kernel)[0]
        weights = ops.softmax(ops.cast(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), "float32"), axis=-1)
        out = ops.transpose(ops.matmul(ops.cast(weights, v.dtype), v), (1, 2, 0, 3))
        return ops.add(ops.matmul(ops.reshape(out, (-1, heads * head_dim)), attention.proj.kernel), proj_bias)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["block"] = keras.saving.serialize_keras_object(self.block)
        return config
