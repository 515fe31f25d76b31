"""Graph rewriting before lowering: tensors replaced by constants, and algebraic identities that
the replacement (or the graph as built) makes true.

``specialize(outputs, replacements)`` rebuilds ``outputs`` with the ``(tensor, Constant)`` pairs
of ``replacements`` substituted (through ``kgraph.ops.tracing.substitute``), and every node
offered to the identity rules of ``identities.RULES`` first: a rule that proves a node computes one of its inputs (``x * 1``), a
constant (``x * 0``) or a cheaper node (``0 - y`` → ``-y``) replaces it.  The IR itself is never
changed: nodes that read nothing replaced and match no rule are shared with the original graph,
so users' tensors stay what they were.

Uses: compiled functions bake the variables they read but never update (Keras's ``momentum``,
``lr``) into constants (``kgraph.runtime.function``); Keras exports fix the learning phase to 0
(``kgraph.keras.export``).
"""
from ..ops.tracing import substitute
from .identities import RULES


def specialize(outputs, replacements=(), rules=RULES):
    """``outputs`` rebuilt with the ``(tensor, Constant)`` pairs of ``replacements`` substituted
    and ``rules`` applied (see the module docstring)."""
    return substitute(outputs, list(replacements), rewrite=lambda node, inputs: apply_rules(node, inputs, rules))


def apply_rules(node, inputs, rules=RULES):
    """The first rule's replacement for ``node`` (reading ``inputs``), else None."""
    for rule in rules.get(node.primitive.name, ()):
        replacement = rule(node, inputs)
        if replacement is not None:
            if replacement.node is not None and replacement.node is not node:
                replacement.node.scope = replacement.node.scope or node.scope
            return replacement
    return None


__all__ = ["specialize", "apply_rules", "RULES"]
