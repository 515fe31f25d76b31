"""Inference exports: per-channel affine maps after a Conv folded into its weights.

``fold_conv_affine(model)`` rewrites ``Conv(x, W, B)`` followed (directly or across the layout
Transpose kgraph wraps channels_last convs in) by a chain of ``Mul``/``Add``/``Sub`` with
per-channel operands known before run time into one Conv with new weights::

    y = (conv(x, W) + B) * s + t   →   conv(x, W * s) + (B * s + t)

which is BatchNormalization in inference form (``s = gamma / sqrt(var + eps)``, ``t = beta -
mean * s``), as Keras's graph computes it once the learning phase is 0 and the weights are
frozen.  It is one general rule, not a Keras pattern: any per-channel scale and shift folds.

"Known before run time" means computed from initializers and Constants only (the frozen
kernel's Transpose, the BN's ``Sqrt``/``Reciprocal``/``Mul`` of its moving variance): those
values are evaluated here with ``onnx.reference``.  Only inference files are rewritten: in a
training step the weights are graph inputs, so nothing after a Conv is known.  A chain stops at
a value anything else reads (a residual branch), since that reader needs the unfolded value.
"""
import numpy as np
from onnx import AttributeProto, helper, numpy_helper

from .rules import conv_output_layout, per_channel_count, sole_readers

_AFFINE_OPS = ("Mul", "Add", "Sub")


def _has_body(node):
    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


def _known_names(graph):
    """Names whose values follow from the file alone: initializers that are not also graph
    inputs (those are overridable defaults), and what plain nodes compute from them."""
    fed = {i.name for i in graph.input}
    known = {t.name for t in graph.initializer if t.name not in fed} | {""}
    for n in graph.node:
        if not n.domain and not _has_body(n) and n.op_type not in _RANDOM_OPS \
                and all(i in known for i in n.input):
            known.update(n.output)
    return known


_RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                         "Multinomial", "Bernoulli"})


def _evaluate(model, names):
    """Values of the known ``names`` of ``model``, by ``onnx.reference`` over their ancestors."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name: t for t in graph.initializer}
    needed, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name in needed or not name:
            continue
        needed.add(name)
        if name in producer:
            stack.extend(producer[name].input)
    nodes = [n for n in graph.node if any(o in needed for o in n.output)]
    sub = helper.make_graph(nodes, "known", [], [helper.make_empty_tensor_value_info(n) for n in names],
                            initializer=[inits[n] for n in needed if n in inits])
    sub_model = helper.make_model(sub, opset_imports=list(model.opset_import))
    sub_model.ir_version = model.ir_version
    return dict(zip(names, ReferenceEvaluator(sub_model).run(None, {})))


def _chains(graph, known, keep):
    """For each Conv whose W (and B) are known: (conv, layout, [affine nodes that follow])."""
    readers = sole_readers(graph.node, keep)
    found = []
    for conv in graph.node:
        if conv.op_type != "Conv" or conv.domain or not all(i in known for i in conv.input[1:]):
            continue
        layout = conv_output_layout(conv, readers)
        if layout is None:
            continue
        value, steps = layout[0], []
        while True:
            n = readers.get(value)
            if n is None or n.domain or n.op_type not in _AFFINE_OPS or len(set(n.input)) != 2:
                break
            other = n.input[1] if n.input[0] == value else n.input[0]
            if other not in known or (n.op_type == "Sub" and n.input[0] != value):
                break
            steps.append((n, other))
            value = n.output[0]
        if steps:
            found.append((conv, layout, steps))
    return found


def fold_conv_affine(model):
    """Fold per-channel affine chains into the Convs before them, in place (see the module
    docstring); returns how many nodes were removed."""
    graph = model.graph
    keep = {o.name for o in graph.output}
    known = _known_names(graph)
    chains = _chains(graph, known, keep)
    if not chains:
        return 0
    wanted = sorted({i for conv, _, steps in chains for i in list(conv.input[1:]) + [o for _, o in steps]})
    values = _evaluate(model, wanted)
    taken = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer} | \
        {i.name for i in graph.input}
    removed = set()
    for conv, (_, rank, axis, transpose), steps in chains:
        w = values[conv.input[1]]
        channels = w.shape[0]
        weight = w.astype(np.float64)
        bias = values[conv.input[2]].astype(np.float64) if len(conv.input) > 2 else np.zeros(channels)
        folded = 0
        for node, other in steps:
            v = values[other]
            count = per_channel_count(v.shape, rank, axis)
            if v.dtype != w.dtype or count not in (1, channels):
                break
            v = np.broadcast_to(v.reshape(-1).astype(np.float64), (channels,))
            if node.op_type == "Mul":
                weight = weight * v.reshape((channels,) + (1,) * (w.ndim - 1))
                bias = bias * v
            else:
                bias = bias + v if node.op_type == "Add" else bias - v
            folded += 1
        if not folded:
            continue
        scope = conv.name.rsplit("/", 1)[0] + "/" if "/" in conv.name else ""
        names = []
        for hint, array in (("kernel_folded", weight), ("bias_folded", bias)):
            name, i = scope + hint, 1
            while name in taken:
                name, i = f"{scope}{hint}_{i}", i + 1
            taken.add(name)
            graph.initializer.append(numpy_helper.from_array(array.astype(w.dtype), name))
            names.append(name)
        conv.input[1:] = names
        (transpose or conv).output[0] = steps[folded - 1][0].output[0]
        removed.update(id(node) for node, _ in steps[:folded])
    kept = [n for n in graph.node if id(n) not in removed]
    count = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(kept)
    return count + _drop_unread(graph)


def _drop_unread(graph):
    """Remove what only the folded operands needed: nodes nothing reads (of the plain, known
    kind) and initializers nothing reads (defaults of graph inputs stay)."""
    from .rules import _read_counts

    removed = 0
    outputs = {o.name for o in graph.output}
    known = _known_names(graph)
    while True:
        reads = _read_counts(graph.node)
        dead = [n for n in graph.node if all(o in known and reads.get(o, 0) == 0 and o not in outputs
                                             for o in n.output)]
        if not dead:
            break
        ids = {id(n) for n in dead}
        kept = [n for n in graph.node if id(n) not in ids]
        del graph.node[:]
        graph.node.extend(kept)
        removed += len(dead)
    reads = _read_counts(graph.node)
    fed = {i.name for i in graph.input}
    kept = [t for t in graph.initializer if reads.get(t.name, 0) or t.name in fed or t.name in outputs]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return removed
