"""Peephole rules over the ONNX nodes a lowering emitted, run after ``merge_duplicate_nodes``.

Each rule is one function ``rule(ctx, keep) -> int`` (how many nodes it removed); ``keep`` holds
the value names the caller looks up afterwards (the graph's outputs), which a rule must keep
computed.  ``PASSES`` is the pipeline, in order: add a rule by appending it.
"""
import numpy as np
from onnx import AttributeProto, helper, numpy_helper


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


# -- conv bias ------------------------------------------------------------------------------------
def per_channel_count(shape, rank, axis):
    """How many values an operand of ``shape`` adds along ``axis`` of a rank-``rank`` value
    when it broadcasts along every other axis (1: one value for all), else None."""
    shape = tuple(shape)
    if len(shape) > rank:
        return None
    padded = (1,) * (rank - len(shape)) + shape
    if any(d != 1 for i, d in enumerate(padded) if i != axis):
        return None
    return padded[axis]


def sole_readers(nodes, keep):
    """value name → the one node of ``nodes`` that reads it, for values read exactly once (a read
    from a nested body, or a value in ``keep``, disqualifies)."""
    reads = _read_counts(nodes)
    readers = {}
    for n in nodes:
        for i in n.input:
            if reads.get(i) == 1 and i not in keep:
                readers[i] = n
    return readers


def conv_output_layout(conv, readers):
    """``(value, rank, channel_axis, transpose)``: a Conv's output as the graph reads it, the
    Conv's own output (channels at axis 1) or the output of the one layout Transpose that alone
    reads it (kgraph wraps channels_last convs in two).  None when the raw output is read twice."""
    kernel = [a.ints for a in conv.attribute if a.name == "kernel_shape"]
    reader = readers.get(conv.output[0])
    if not kernel or reader is None:
        return None
    rank = len(kernel[0]) + 2
    if reader.op_type != "Transpose" or reader.domain:
        return conv.output[0], rank, 1, None
    perm = [list(a.ints) for a in reader.attribute if a.name == "perm"]
    perm = perm[0] if perm else list(reversed(range(rank)))
    return reader.output[0], rank, perm.index(1), reader


def conv_bias_into_conv(ctx, keep):
    """``Add(Conv(x, w), b)`` → ``Conv(x, w, B)`` for a per-channel bias ``b``, across the
    layout Transpose of a channels_last conv: ``Add(Transpose(Conv(x, w)), b)`` →
    ``Transpose(Conv(x, w, B))``.

    ``K.bias_add`` adds ``Reshape(bias, (1, 1, 1, C))``: a fed (or frozen) bias becomes
    ``Reshape(bias, [C])`` into B, a constant one a [C] constant.  One pass fewer over the conv's
    whole output: Conv adds B as it writes it.  This runs after lowering, so gradients (built on
    the IR, where the add stays an add) are untouched, and every name left holds the value it
    held.  The Conv (and its Transpose) move to the Add's place in the node order, so that B,
    computed before the Add, is computed before them too."""
    consts = _constant_values(ctx)
    producer = {o: n for n in ctx.nodes for o in n.output}
    readers = sole_readers(ctx.nodes, keep)
    moved, removed, replaced = {}, set(), []
    for conv in ctx.nodes:
        if conv.op_type != "Conv" or conv.domain or len(conv.input) != 2:
            continue
        layout = conv_output_layout(conv, readers)
        if layout is None:
            continue
        value, rank, axis, transpose = layout
        add = readers.get(value)
        if add is None or add.op_type != "Add" or add.domain or len(set(add.input)) != 2:
            continue
        other = add.input[1] if add.input[0] == value else add.input[0]
        scope = conv.name.rsplit("/", 1)[0] + "/" if "/" in conv.name else ""
        mark = len(ctx.nodes)
        if other in consts:
            count = per_channel_count(consts[other].shape, rank, axis)
            if count is None or count == 1:  # one value for all channels: their number is not known here
                continue
            bias = _fresh_const(ctx, consts[other].reshape(-1), scope + "bias")
        else:
            reshape = producer.get(other)
            if reshape is None or reshape.op_type != "Reshape" or reshape.domain or len(reshape.input) != 2:
                continue
            target = consts.get(reshape.input[1])
            if target is None or target.ndim != 1 or not (target > 0).all():
                continue  # 0 and -1 take sizes from the data: not provably per-channel
            count = per_channel_count([int(d) for d in target], rank, axis)
            if count is None or count == 1:
                continue
            bias = ctx.fresh(scope + "bias")
            shape = _fresh_const(ctx, np.asarray([count], np.int64), scope + "bias_shape")
            ctx.nodes.append(helper.make_node("Reshape", [reshape.input[0], shape], [bias],
                                              name=ctx.fresh(scope + "Reshape")))
        emitted = ctx.nodes[mark:]  # the B computation, placed right before the Conv below
        del ctx.nodes[mark:]
        conv.input.append(bias)
        (transpose or conv).output[0] = add.output[0]
        moved[id(add)] = emitted + [conv] + ([transpose] if transpose is not None else [])
        removed.update({id(conv), id(add)} | ({id(transpose)} if transpose is not None else set()))
        replaced.append(other)
    if not moved:
        return 0
    nodes = []
    for n in ctx.nodes:
        if id(n) in moved:
            nodes.extend(moved[id(n)])
        elif id(n) not in removed:
            nodes.append(n)
    ctx.nodes[:] = nodes
    return len(moved) + drop_unread(ctx, keep, replaced)


def _fresh_const(ctx, value, hint):
    """A constant of its own (not ``ctx.const``'s shared one, which may sit anywhere in the node
    order): a Constant node the caller places, or an initializer when large, as ``ctx.const``."""
    name = ctx.fresh(hint)
    tensor = numpy_helper.from_array(value, name)
    if ctx.inline_constants or value.size <= 16:
        ctx.nodes.append(helper.make_node("Constant", [], [name], name=ctx.fresh(hint + "/Constant"), value=tensor))
    else:
        ctx.initializers.append(tensor)
    return name


def drop_unread(ctx, keep, names):
    """Remove the producers of ``names`` that nothing reads any more (the bias Reshape a rule
    replaced), and then theirs (the Constant of its shape); how many were removed."""
    removed = 0
    while names:
        reads = _read_counts(ctx.nodes)
        names = set(n for n in names if reads.get(n, 0) == 0 and n not in keep)
        dead = [n for n in ctx.nodes if not n.domain and n.output and set(n.output) <= names]
        if not dead:
            return removed
        ids = {id(n) for n in dead}
        ctx.nodes[:] = [n for n in ctx.nodes if id(n) not in ids]
        removed += len(dead)
        names = [i for n in dead for i in n.input if i]
    return removed


def released_projections(ctx, keep):
    """What computed the values a lowering stopped reading — the input projections hoisted out
    of a loop that a fused LSTM/GRU/RNN op computes itself (kgraph/ops/rnn_cells.py lists them
    in ``ctx.released``) — is removed when nothing else reads it: ONNX Runtime runs unread nodes
    too (measured: it keeps them in its optimized graph)."""
    names = getattr(ctx, "released", None)
    if not names:
        return 0
    ctx.released = []
    return drop_unread(ctx, keep, set(names))


PASSES = [clip_selects_to_max, conv_bias_into_conv, released_projections]


def apply_rules(ctx, keep):
    """Run every rule of ``PASSES`` over ``ctx``'s nodes; the total number of nodes removed."""
    return sum(rule(ctx, keep) for rule in PASSES)
