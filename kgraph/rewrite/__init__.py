"""Graph rewriting before lowering: tensors replaced by constants, and algebraic identities that
the replacement (or the graph as built) makes true.

``specialize(outputs, constants)`` rebuilds ``outputs`` with each tensor in ``constants``
(``id(tensor)`` → ``Constant``) replaced, and every node offered to the identity rules of
``identities.RULES`` first: a rule that proves a node computes one of its inputs (``x * 1``), a
constant (``x * 0``) or a cheaper node (``0 - y`` → ``-y``) replaces it.  The IR itself is never
changed: nodes that read nothing replaced and match no rule are shared with the original graph,
so users' tensors stay what they were.

Uses: compiled functions bake the variables they read but never update (Keras's ``momentum``,
``lr``) into constants (``kgraph.runtime.function``); Keras exports fix the learning phase to 0
(``kgraph.keras.export``).
"""
from ..graph import Graph, Subgraph, Tensor
from .identities import RULES


def specialize(outputs, constants=None, rules=RULES):
    """``outputs`` rebuilt with ``constants`` substituted and ``rules`` applied (see the module
    docstring).  Rebuilt nodes keep the name scope of the node they replace."""
    new = dict(constants or {})
    for node in Graph(outputs).nodes:
        inputs = [new.get(id(t), t) for t in node.inputs]
        if len(node.outputs) == 1 and not node.subgraphs:
            replacement = apply_rules(node, inputs, rules)
            if replacement is not None:
                new[id(node.outputs[0])] = replacement
                continue
        captured = [c for g in node.subgraphs for c in g.captures]
        if not any(id(t) in new for t in list(node.inputs) + captured):
            continue
        subgraphs = tuple(_specialize_captures(g, new, rules) for g in node.subgraphs)
        result = node.primitive.bind(inputs, dict(node.attrs), subgraphs)
        results = (result,) if isinstance(result, Tensor) else tuple(result)
        results[0].node.scope = node.scope
        for old, repl in zip(node.outputs, results):
            new[id(old)] = repl
    return [new.get(id(t), t) for t in outputs]


def apply_rules(node, inputs, rules=RULES):
    """The first rule's replacement for ``node`` (reading ``inputs``), else None."""
    for rule in rules.get(node.primitive.name, ()):
        replacement = rule(node, inputs)
        if replacement is not None:
            if replacement.node is not None and replacement.node is not node:
                replacement.node.scope = replacement.node.scope or node.scope
            return replacement
    return None


def _specialize_captures(sub, new, rules):
    if not any(id(c) in new for c in sub.captures):
        return sub
    pairs = {id(c): new[id(c)] for c in sub.captures if id(c) in new}
    return Subgraph(sub.inputs, specialize(sub.outputs, pairs, rules), [new.get(id(c), c) for c in sub.captures])


__all__ = ["specialize", "apply_rules", "RULES"]
