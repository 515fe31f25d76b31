"""Hoisting the per-step input work of a traced loop step out of the loop.

Keras's RNN cells compute ``K.dot(x_t, kernel)`` inside the step; that depends on the step's
input slice and a loop-invariant weight only, so it is computed once over the whole sequence
instead, the way PyTorch and cuDNN compute an RNN's input projection.
"""
from .. import dtypes
from ..graph import Placeholder
from .tracing import body_nodes, has_effects, node_reads, params_reached, substitute

# primitives that, applied to a whole (steps, ...) sequence, give every step's value at once: they
# act elementwise (their operands broadcast from the right, so a new leading axis is a batch axis)
_ELEMENTWISE = frozenset({
    "neg", "abs", "exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "softplus", "reciprocal",
    "cast", "identity", "relu", "leaky_relu", "elu", "softsign", "hard_sigmoid",
    "add", "sub", "mul", "div", "pow", "maximum", "minimum"})


def _computes_every_step_at_once(node, timed):
    """Whether ``node``, with each per-step operand (``timed``) given for all steps along a new
    leading axis, computes all steps' values along that axis."""
    name = node.primitive.name
    if name == "matmul":  # (B, k) @ W → (T, B, k) @ W: MatMul broadcasts the leading axes
        a, b = node.inputs
        return id(a) in timed and id(b) not in timed and b.ndim == 2 and a.ndim >= 2
    if name not in _ELEMENTWISE:
        return False
    rank = node.outputs[0].ndim
    return all(t.ndim == rank if id(t) in timed else t.ndim <= rank for t in node.inputs)


def hoist_sequence_work(sequences, params, outputs, n_carried, start):
    """Move what a traced step computes from its sequence slices and loop-invariant values alone
    — Keras's ``K.dot(x_t, kernel)`` — out of the loop, as one op over the whole sequence, the way
    PyTorch and cuDNN compute an RNN's input projection.  Only work that includes a matrix product
    is moved.  Returns ``(sequences, params, outputs)``: the hoisted values are new sequences
    with step placeholders of their own, and a sequence the step no longer reads is dropped."""
    C = n_carried
    seq_params = params[C:]
    nodes = body_nodes(outputs, params, start)
    timed = {id(p) for p in seq_params if dtypes.is_float(p.dtype)}
    blocked = {id(p) for p in params[:C]}
    hoisted, heavy = {}, set()  # id → tensor computed for every step outside; ids behind a matmul
    for node in nodes:
        reads = node_reads(node)
        if (node.subgraphs or has_effects(node) or len(node.outputs) != 1
                or any(id(t) in blocked for t in reads)):
            blocked.update(id(o) for o in node.outputs)
        elif any(id(t) in timed for t in reads):
            out = node.outputs[0]
            if _computes_every_step_at_once(node, timed):
                timed.add(id(out))
                hoisted[id(out)] = out
                if node.primitive.name == "matmul" or any(id(t) in heavy for t in reads):
                    heavy.add(id(out))
            else:
                blocked.add(id(out))
    # the hoisted values the rest of the step reads: each becomes one new sequence
    consumers = [t for n in nodes if id(n.outputs[0]) not in hoisted or len(n.outputs) != 1 for t in node_reads(n)]
    frontier, seen = [], set()
    for t in consumers + list(outputs):
        if id(t) in heavy and id(t) not in seen:
            seen.add(id(t))
            frontier.append(t)
    if not frontier:
        return sequences, params, outputs
    whole = substitute(frontier, list(zip(seq_params, sequences)))
    steps = [Placeholder(f.shape, f.dtype, name=f"hoisted_{i}") for i, f in enumerate(frontier)]
    outputs = substitute(outputs, list(zip(frontier, steps)))
    reached = params_reached(outputs, seq_params)
    kept = [k for k, p in enumerate(seq_params) if id(p) in reached]
    sequences = [sequences[k] for k in kept] + whole
    params = list(params[:C]) + [seq_params[k] for k in kept] + steps
    return sequences, params, outputs
