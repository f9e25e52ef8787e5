"""PyTorch kernels for the layers' projections and attention, eager and
autograd-differentiable: each is the plain function, computed in fewer
passes over memory and fewer Python calls than Keras' generic path.

- `dense`: ``rows @ kernel + bias`` as one ``torch.addmm`` (the bias is
  added inside the GEMM) instead of Keras' matmul, then a separate add over
  the whole output, which also allocates a second output-sized tensor.
- `layer_norm`: a float32 LayerNorm as one ``layer_norm`` call, without
  the Keras layer call around it (about 150 microseconds of Python each,
  13 times a Ti forward pass).
- `gelu_inplace`, `add_inplace`: where no gradient is recorded
  (inference), the MLP's GELU and the residual additions write over a
  tensor the block has just made, one output-sized allocation fewer each.
- `attention`: ``scaled_dot_product_attention`` on strided views of the
  QKV rows, where `keras.ops.dot_product_attention` copies query, key and
  value to contiguous (B, heads, N, head_dim) tensors first on CPU.

Measured with `python -m benchmarks.backends --backends torch` (Ti-like,
batch 128, 2-core CPU): against timm's `VisionTransformer` in eager PyTorch,
`predict_on_batch` 0.87x -> 0.97x and `train_on_batch` 0.94x -> 0.98x
(0.99x both with glibc told not to hand freed memory back, which removes
page faults from both sides). What is left is Keras' own Python per step.

Only the TransformerBlock and MultiHeadSelfAttention use them, only on the
torch backend, only in layers constructed with ``kernels="torch"`` (the
default there; see `keras_vit.kernels`), and only for a `keras.layers.Dense`
that is built, unquantized, with a bias and without activation
(`keras_vit.kernels.plain_dense`; any other
Dense keeps its own call, as does a LayerNorm that is not a float32 one over
the last axis with gamma and beta, or whose input is not float32). This
module imports torch: `keras_vit.kernels.torch_module(kernels)` imports it
only where the backend is torch.
"""

import math

import keras
import torch


def dense(layer, rows):
    """``layer(rows)`` for 2-D `rows`, as one ``addmm``, for a
    `keras_vit.kernels.plain_dense` layer with a bias. Called inside the
    call of the layer that owns `layer` (whose autocast scope gives the
    variables in the compute dtype under mixed precision), not the Dense's
    own; `rows` are cast to the kernel's dtype.

    Example:
    >>> layer = keras.layers.Dense(3)
    >>> layer.build((None, 2))
    >>> tuple(dense(layer, torch.ones(4, 2)).shape)
    (4, 3)
    """
    kernel, bias = _value(layer.kernel), _value(layer.bias)
    if rows.dtype != kernel.dtype:
        rows = rows.to(kernel.dtype)
    return torch.addmm(bias.to(kernel.dtype), rows, kernel)


def _value(variable):
    """A variable's tensor (autocast under the caller's scope), or the
    tensor itself (a LoRA kernel is one)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def attention(qkv, batch, num_heads, head_dim):
    """softmax(q kᵀ / √head_dim) v for fused QKV rows `qkv` (batch * N,
    3 * heads * head_dim): the output as (batch * N, heads * head_dim) rows.

    Example:
    >>> tuple(attention(torch.zeros(2 * 5, 3 * 8), 2, 2, 4).shape)
    (10, 8)
    """
    q, k, v = qkv.reshape(batch, -1, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(head_dim))
    return out.transpose(1, 2).reshape(-1, num_heads * head_dim)


def norm_applies(norm, rows):
    """Whether `layer_norm` can compute `norm(rows)` for a LayerNorm over
    the last axis with gamma and beta (`keras_vit.kernels.normalizes_last_axis`,
    which the caller checks): built, float32, on float32 `rows` (under mixed
    precision the layer's own call keeps its casts)."""
    return norm.built and norm.compute_dtype == "float32" and rows.dtype == torch.float32


def layer_norm(norm, rows):
    """``norm(rows)`` as one ``torch.nn.functional.layer_norm`` call.

    Example:
    >>> norm = keras.layers.LayerNormalization(epsilon=1e-6)
    >>> norm.build((None, 4))
    >>> tuple(layer_norm(norm, torch.ones(2, 4)).shape)
    (2, 4)
    """
    return torch.nn.functional.layer_norm(
        rows, rows.shape[-1:], _value(norm.gamma), _value(norm.beta), norm.epsilon)


def gelu_inplace(h):
    """The exact GELU of `h`, written over `h` where no gradient is being
    recorded (inference: one output-sized tensor fewer to allocate and
    fill); None where one is (the caller then uses the out-of-place op)."""
    if torch.is_grad_enabled() and h.requires_grad:
        return None
    return torch.ops.aten.gelu_(h)


def add_inplace(branch, rows):
    """``rows + branch`` written over `branch` (a tensor the caller has just
    made) where no gradient is being recorded; None where one is."""
    if torch.is_grad_enabled() and (branch.requires_grad or rows.requires_grad):
        return None
    if branch.dtype != rows.dtype or branch.shape != rows.shape:
        return None
    return branch.add_(rows)
