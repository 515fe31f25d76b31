"""Tracing a step function into a closed loop body, and the graph walks loops need.

A step function (K.rnn's, map_fn's) is called once on placeholders; ``trace_start`` marks where
the body's tensors begin, ``close_over`` turns every outer value it reads into a capture, and
``substitute`` rebuilds a graph with some tensors replaced.
"""
from ..graph import Constant, Graph, Placeholder, Subgraph, Tensor

INLINE_CONSTANT_MAX = 16  # elements; as ``LoweringContext.const`` decides between node and initializer


# -- tracing a step function into a closed body ----------------------------------------------
def trace_start():
    """A mark in tensor creation order: tensors a step function creates after it belong to the
    body, older ones are outer values the body captures."""
    return Tensor((), "bool", name="trace_mark").uid


def node_reads(node):
    return tuple(node.inputs) + tuple(c for g in node.subgraphs for c in g.captures)


def substitute(outputs, replacements, rewrite=None):
    """``outputs`` rebuilt with each ``old`` of the ``(old, new)`` pairs replaced by ``new``.  Nodes
    between them are bound again (their shape rules rerun) and keep their name scope; nodes that
    read nothing replaced are shared, not copied.  ``rewrite(node, inputs)``, when given, is
    offered every single-output node first: a tensor it returns stands for the node's output."""
    new = {id(old): repl for old, repl in replacements}
    graph = Graph(outputs, stop=[old for old, _ in replacements])
    for node in graph.nodes:
        inputs = [new.get(id(t), t) for t in node.inputs]
        if rewrite is not None and len(node.outputs) == 1 and not node.subgraphs:
            replacement = rewrite(node, inputs)
            if replacement is not None:
                new[id(node.outputs[0])] = replacement
                continue
        if not any(id(t) in new for t in node_reads(node)):
            continue
        subgraphs = tuple(_substitute_captures(g, new, rewrite) for g in node.subgraphs)
        res = node.primitive.bind(inputs, dict(node.attrs), subgraphs)
        res = (res,) if isinstance(res, Tensor) else tuple(res)
        res[0].node.scope = node.scope
        for old, repl in zip(node.outputs, res):
            new[id(old)] = repl
    return [new.get(id(t), t) for t in outputs]


def _substitute_captures(sub, new, rewrite):
    pairs = [(c, new[id(c)]) for c in sub.captures if id(c) in new]
    if not pairs:
        return sub
    return Subgraph(sub.inputs, substitute(sub.outputs, pairs, rewrite), [new.get(id(c), c) for c in sub.captures])


def close_over(params, outputs, start):
    """Split a traced step into outer values and body: returns ``(captures, capture_params,
    outputs)`` where ``outputs`` no longer read the captures but their placeholders.  Captured:
    every tensor the step reads that existed before ``start``, and every variable or placeholder
    (also one made during the trace, such as a first use of the learning phase).  Small constants
    stay in the body; larger ones are captured too."""
    param_ids = {id(p) for p in params}
    captures, seen, stack = [], set(), list(reversed(outputs))
    while stack:
        t = stack.pop()
        if id(t) in seen or id(t) in param_ids:
            continue
        seen.add(id(t))
        if isinstance(t, Constant):
            if t.value.size > INLINE_CONSTANT_MAX:  # an initializer of the outer graph, shared by both bodies
                captures.append(t)
            continue
        if t.node is None or t.uid < start:
            captures.append(t)
            continue
        stack.extend(reversed(node_reads(t.node)))
    capture_params = [Placeholder(c.shape, c.dtype, name=f"capture_{i}") for i, c in enumerate(captures)]
    return captures, capture_params, substitute(outputs, list(zip(captures, capture_params)))


def params_reached(outputs, params):
    """Ids of the ``params`` that ``outputs`` depend on."""
    param_ids = {id(p) for p in params}
    found, seen, stack = set(), set(), list(outputs)
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if id(t) in param_ids:
            found.add(id(t))
        elif t.node is not None:
            stack.extend(node_reads(t.node))
    return found


def has_effects(node):
    from ..lower.simplify import has_effects
    return has_effects(node.primitive)


def depending(nodes, roots, effects=False):
    """Ids of the tensors of topologically ordered ``nodes`` that depend on ``roots`` (with
    ``effects``, also on a random or otherwise effectful node: a value that must not be computed
    twice)."""
    ids = {id(r) for r in roots}
    for node in nodes:
        if any(id(t) in ids for t in node_reads(node)) or (effects and has_effects(node)):
            ids.update(id(o) for o in node.outputs)
    return ids


def body_nodes(outputs, params, start):
    """The nodes of a traced step in topological order: those made after ``start``, reached from
    ``outputs`` without passing a ``params`` placeholder."""
    stop = {id(p) for p in params}
    order, seen, stack = [], set(), [(t, False) for t in reversed(outputs)]
    while stack:
        t, expanded = stack.pop()
        node = t.node
        if id(t) in stop or node is None or t.uid < start:
            continue
        if expanded:
            if id(node) not in seen:
                seen.add(id(node))
                order.append(node)
            continue
        if id(node) in seen:
            continue
        stack.append((t, True))
        stack.extend((i, False) for i in reversed(node_reads(node)))
    return order
