"""``gradients(ys, xs)``: walk the graph backwards from ``ys``, summing cotangents."""
import numpy as np

from .. import dtypes
from ..graph import Constant, Graph
from ..ops.elementwise import add, zeros_like_
from ..ops.shape import expand_like, merge_slice_adjoints


def _ones_like(y):
    one = Constant(np.ones((), dtype=y.dtype))
    return one if y.ndim == 0 else expand_like(one, y)


def zeros_for(x):
    if None not in x.shape:
        return Constant(np.zeros(x.shape, dtype=x.dtype))
    return zeros_like_(x)


def gradients(ys, xs, grad_ys=None):
    """d(sum of ``ys``)/d``xs``.  Every x gets a tensor: zeros where no path reaches it."""
    ys, xs = list(ys), list(xs)
    for x in xs:
        if not dtypes.is_float(x.dtype):
            raise TypeError(f"gradients: cannot differentiate with respect to {x.name!r} of dtype {x.dtype}")
    graph = Graph(ys, stop=())
    depends = {id(x) for x in xs}
    for node in graph.nodes:
        if any(id(t) in depends for t in node.inputs):
            depends.update(id(o) for o in node.outputs)
    contributions = {}
    seeds = grad_ys or [None] * len(ys)
    for y, seed in zip(ys, seeds):
        if id(y) in depends and dtypes.is_float(y.dtype):
            contributions.setdefault(id(y), []).append(_ones_like(y) if seed is None else seed)

    def total(t):
        parts = contributions.get(id(t))
        if not parts:
            return None
        if len(parts) > 1:
            parts = merge_slice_adjoints(parts)
        acc = parts[0]
        for p in parts[1:]:
            acc = add(acc, p)
        contributions[id(t)] = [acc]
        return acc

    for node in reversed(graph.nodes):
        if not node.primitive.differentiable:
            continue
        gs = [total(o) for o in node.outputs]
        if all(g is None for g in gs):
            continue
        if not any(id(t) in depends for t in node.inputs):
            continue
        rule = node.primitive.vjp_rule
        if rule is None:
            raise NotImplementedError(f"gradients: primitive {node.primitive.name!r} has no gradient rule")
        in_grads = rule(node, *gs)
        if len(in_grads) != len(node.inputs):
            raise RuntimeError(f"vjp of {node.primitive.name} returned {len(in_grads)} gradients "
                               f"for {len(node.inputs)} inputs")
        for t, g in zip(node.inputs, in_grads):
            if g is not None and id(t) in depends and dtypes.is_float(t.dtype):
                contributions.setdefault(id(t), []).append(g)
    return [total(x) if contributions.get(id(x)) else zeros_for(x) for x in xs]
