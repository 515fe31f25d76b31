"""Peephole rules over the ONNX nodes a lowering emitted, run after ``merge_duplicate_nodes``.

Each rule is one function ``rule(ctx, keep) -> int`` (how many nodes it removed); ``keep`` holds
the value names the caller looks up afterwards (the graph's outputs), which a rule must keep
computed.  ``PASSES`` is the pipeline, in order: add a rule by appending it.
"""
import numpy as np
from onnx import AttributeProto, numpy_helper


def _constant_values(ctx):
    """name → numpy value of every Constant node and initializer of ``ctx``."""
    values = {i.name: numpy_helper.to_array(i) for i in ctx.initializers}
    for n in ctx.nodes:
        if n.op_type == "Constant" and not n.domain:
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = numpy_helper.to_array(a.t)
    return values


def _read_counts(nodes, counts=None):
    """How many times each value name is read, nested bodies included (they read outer names)."""
    counts = {} if counts is None else counts
    for n in nodes:
        for i in n.input:
            counts[i] = counts.get(i, 0) + 1
        for a in n.attribute:
            bodies = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs) if a.type == AttributeProto.GRAPHS else []
            for g in bodies:
                _read_counts(g.node, counts)
                for o in g.output:
                    counts[o.name] = counts.get(o.name, 0) + 1
    return counts


def clip_selects_to_max(ctx, keep):
    """``Where(Less(x, c), c, x)`` → ``Max(x, c)`` for a scalar constant ``c``.

    ``K.sqrt`` clips at zero with a select so that its *gradient* is 0 below zero (autodiff
    runs on the IR, before lowering); the forward value is exactly ``max(x, c)``, one node
    instead of two and no boolean temporary.  The Less is dropped when nothing else reads it."""
    consts = _constant_values(ctx)
    producer = {o: n for n in ctx.nodes for o in n.output}

    def scalar(name):
        v = consts.get(name)
        return v if v is not None and v.size == 1 else None

    rewritten = []
    for n in ctx.nodes:
        if n.op_type != "Where" or n.domain or len(n.input) != 3:
            continue
        cond, on_true, on_false = n.input
        less = producer.get(cond)
        if less is None or less.op_type != "Less" or less.domain or list(less.input)[0] != on_false:
            continue
        bound, chosen = scalar(less.input[1]), scalar(on_true)
        if bound is None or chosen is None or bound.dtype != chosen.dtype \
                or bound.reshape(()) != chosen.reshape(()) or np.isnan(bound).any():
            continue
        # Max broadcasts like Where here: the output has x's shape when c is a scalar
        # of rank 0; a rank>0 scalar ([1], [1,1]) could raise the rank, so keep those as they are
        if consts[on_true].ndim != 0 or consts[less.input[1]].ndim != 0:
            continue
        n.op_type = "Max"
        n.input[:] = [on_false, on_true]
        rewritten.append(less)
    if not rewritten:
        return 0
    reads = _read_counts(ctx.nodes)
    dead = {id(less) for less in rewritten if reads.get(less.output[0], 0) == 0 and less.output[0] not in keep}
    ctx.nodes[:] = [n for n in ctx.nodes if id(n) not in dead]
    return len(dead)


PASSES = [clip_selects_to_max]


def apply_rules(ctx, keep):
    """Run every rule of ``PASSES`` over ``ctx``'s nodes; the total number of nodes removed."""
    return sum(rule(ctx, keep) for rule in PASSES)
