"""Rewrites of the graph tf2onnx writes into the forms ONNX Runtime fuses.

tf2onnx converts the TensorFlow ops one by one: each LayerNorm arrives as
ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul (and an
Add for beta), and the exact GELU as ``0.5 * x * (1 + erf(x * 0.7071...))``,
neither of which ONNX Runtime's graph optimiser recognises (its runtime
graph of our Ti-like model kept 24 ReduceMean, 58 Mul and 6 Erf, where timm's
own export ran 13 LayerNormalization and 6 BiasGelu). `fuse_for_onnx_runtime`
replaces

- each such LayerNorm (statistics over the last axis, constant 1-D gamma
  and beta) with one standard ``LayerNormalization`` (opset 17 and later);
- each such GELU with ``x * (1 + erf(x / sqrt(2))) * 0.5``, the form
  PyTorch's exporter writes, which ONNX Runtime fuses into its Gelu (and
  BiasGelu) kernels.

Both are standard ONNX and compute the same function; `export_onnx` checks
the result against the Keras model before writing it. Subgraphs that do not
match exactly (another formulation, a non-constant gamma, an intermediate
used elsewhere) are left as they are.
"""

import collections

import numpy as np
from onnx import helper, numpy_helper, shape_inference

REDUCTIONS = ("ReduceMean", "GlobalAveragePool")


class _Graph:
    """Producers, consumers, constants and ranks of an ONNX graph."""

    def __init__(self, proto):
        self.graph = proto.graph
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers = collections.defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.inits = {t.name: t for t in self.graph.initializer}
        inferred = shape_inference.infer_shapes(proto).graph
        self.rank = {v.name: len(v.type.tensor_type.shape.dim)
                     for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)
                     if v.type.tensor_type.HasField("shape")}
        self.removed, self.added, self.count = set(), [], 0

    def const(self, name):
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def op(self, name, *types):
        node = self.producer.get(name)
        return node if node is not None and node.op_type in types and id(node) not in self.removed else None

    def only_consumer(self, name, op_type):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def split(self, node, value_test):
        """(the constant input's value, the other input) of a binary node, or (None, None)."""
        for i in (0, 1):
            value = self.const(node.input[i])
            if value is not None and value_test(value):
                return value, node.input[1 - i]
        return None, None

    def new_const(self, name, value):
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, "float32"), name))
        return name


def _last_axis_mean(g, node, x):
    """Whether `node` is a keepdims mean of `x` over its last axis."""
    rank = g.rank.get(x)
    if node is None or node.input[0] != x or rank is None:
        return False
    if node.op_type == "GlobalAveragePool":
        return rank == 3  # averages the axes after 1: only the last one for (B, N, D)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axes = list(attrs.get("axes", [])) or ([int(v) for v in g.const(node.input[1])] if len(node.input) > 1 else [])
    return attrs.get("keepdims", 1) == 1 and len(axes) == 1 and axes[0] in (-1, rank - 1)


def _layer_norm(g, recip):
    """Replaces the LayerNorm ending in the Reciprocal `recip`; True if it matched."""
    sqrt = g.op(recip.input[0], "Sqrt")
    add_eps = sqrt and g.op(sqrt.input[0], "Add")
    eps, variance = g.split(add_eps, lambda v: v.size == 1) if add_eps else (None, None)
    var_mean = variance and g.op(variance, *REDUCTIONS)
    square = var_mean and g.op(var_mean.input[0], "Mul")
    if not square or square.input[0] != square.input[1]:
        return False
    centered = g.op(square.input[0], "Sub")
    x = centered and centered.input[0]
    mean = centered and g.op(centered.input[1], *REDUCTIONS)
    if not (mean and _last_axis_mean(g, mean, x) and _last_axis_mean(g, var_mean, square.output[0])):
        return False
    scale = g.only_consumer(recip.output[0], "Mul")
    gamma, _ = g.split(scale, lambda v: v.ndim == 1) if scale else (None, None)
    out = scale and g.only_consumer(scale.output[0], "Mul")
    if gamma is None or out is None or set(out.input) != {centered.output[0], scale.output[0]}:
        return False
    if sorted(map(id, g.consumers[centered.output[0]])) != sorted([id(square), id(square), id(out)]):
        return False
    if any(len(g.consumers[n.output[0]]) != 1 for n in (mean, var_mean, add_eps, sqrt)):
        return False
    nodes = [mean, centered, square, var_mean, add_eps, sqrt, recip, scale, out]
    # An Add of a constant (D,) after it is beta (or, beta folded away, a constant that is beta all the same).
    beta_add = g.only_consumer(out.output[0], "Add")
    beta, _ = g.split(beta_add, lambda v: v.shape == gamma.shape) if beta_add else (None, None)
    if beta is None:
        beta = np.zeros_like(gamma)
    else:
        nodes.append(beta_add)
    name = f"{recip.name}_layer_norm"
    inputs = [x, g.new_const(name + "_gamma", gamma), g.new_const(name + "_beta", beta)]
    g.added.append((nodes[-1], helper.make_node("LayerNormalization", inputs, [nodes[-1].output[0]], name=name,
                                                axis=-1, epsilon=float(np.asarray(eps).reshape(())))))
    g.removed.update(id(n) for n in nodes)
    return True


def _gelu(g, erf):
    """Replaces the exact GELU around `erf` with PyTorch's form; True if it matched."""
    scaled = g.op(erf.input[0], "Mul")
    _, x = g.split(scaled, lambda v: v.size == 1 and abs(float(v.reshape(())) - 0.5 ** 0.5) < 1e-6) if scaled \
        else (None, None)
    plus_one = g.only_consumer(erf.output[0], "Add")
    one, _ = g.split(plus_one, lambda v: v.size == 1 and float(v.reshape(())) == 1.0) if plus_one else (None, None)
    out = plus_one and g.only_consumer(plus_one.output[0], "Mul")
    if x is None or one is None or out is None or len(g.consumers[scaled.output[0]]) != 1:
        return False
    half_x = g.op(out.input[0] if out.input[1] == plus_one.output[0] else out.input[1], "Mul")
    half, other = g.split(half_x, lambda v: v.size == 1 and float(v.reshape(())) == 0.5) if half_x else (None, None)
    if half is None or other != x or len(g.consumers[half_x.output[0]]) != 1:
        return False
    name = f"{erf.name}_gelu"
    root2, one_c, half_c = (g.new_const(f"{name}_{k}", v) for k, v in (("sqrt2", 2 ** 0.5), ("one", 1.0), ("half", 0.5)))
    fresh = [f"{name}_{k}" for k in ("div", "erf", "add", "mul")]
    new = [helper.make_node("Div", [x, root2], [fresh[0]], name=fresh[0]),
           helper.make_node("Erf", [fresh[0]], [fresh[1]], name=fresh[1]),
           helper.make_node("Add", [fresh[1], one_c], [fresh[2]], name=fresh[2]),
           helper.make_node("Mul", [x, fresh[2]], [fresh[3]], name=fresh[3]),
           helper.make_node("Mul", [fresh[3], half_c], [out.output[0]], name=f"{name}_out")]
    for node in new:
        g.added.append((out, node))
    g.removed.update(id(n) for n in (scaled, erf, plus_one, half_x, out))
    return True


def fuse_for_onnx_runtime(proto, layer_norm=True):
    """Rewrites `proto` (an `onnx.ModelProto` from tf2onnx) in place;
    returns {"layer_norm": n, "gelu": m}, the subgraphs replaced.
    `layer_norm`: whether to write ``LayerNormalization`` (opset 17 and
    later only)."""
    g = _Graph(proto)
    counts = {"layer_norm": 0, "gelu": 0}
    for node in list(g.graph.node):
        if id(node) in g.removed:
            continue
        if node.op_type == "Reciprocal" and layer_norm:
            counts["layer_norm"] += _layer_norm(g, node)
        elif node.op_type == "Erf":
            counts["gelu"] += _gelu(g, node)
    replacement = collections.defaultdict(list)
    for anchor, node in g.added:
        replacement[id(anchor)].append(node)
    nodes = []
    for node in g.graph.node:  # each replacement where the subgraph's last node was: the order stays topological
        nodes += replacement.get(id(node), [])
        if id(node) not in g.removed:
            nodes.append(node)
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [t for t in g.graph.initializer if t.name in used]
    del g.graph.initializer[:]
    g.graph.initializer.extend(kept)
    return counts
