"""Algebraic identities over IR nodes, one small function each.

A rule ``rule(node, inputs)`` looks at a single-output ``node`` whose inputs are now ``inputs``
and returns the tensor that computes the same value more cheaply, or None.  A rule fires only
where static shapes and dtypes prove the replacement exact: the replacement has the node's own
shape and dtype, so no broadcast is lost.

``x * 0`` → ``0`` assumes ``x`` is finite (IEEE gives NaN for ``inf * 0``).  The zeros it folds
come from values the program fixed (Keras's ``momentum = 0``), multiplying state that is finite
while training works at all; TF's graph optimizer makes the same trade for ``x * 0``.
"""
import numpy as np

from ..graph import Constant
from ..ops.elementwise import mul, neg, sub


def _constant_equal_to(t, number):
    """``t`` is a constant whose every element equals ``number``."""
    return isinstance(t, Constant) and t.value.size > 0 and bool(np.all(t.value == number))


def _is_result(node, t):
    """``t`` can stand for ``node``'s output: same static shape and dtype."""
    out = node.outputs[0]
    return t.shape == out.shape and t.dtype == out.dtype


def _zeros(node):
    out = node.outputs[0]
    if None in out.shape:
        return None
    # a read-only broadcast view: a (784, 512) zero costs no memory unless it is emitted
    return Constant(np.broadcast_to(np.zeros((), dtype=out.dtype), out.shape))


def multiply_by_one(node, inputs):
    """``x * 1`` and ``1 * x`` → ``x``."""
    a, b = inputs
    for one, x in ((b, a), (a, b)):
        if _constant_equal_to(one, 1) and _is_result(node, x):
            return x
    return None


def multiply_by_zero(node, inputs):
    """``x * 0`` and ``0 * x`` → zeros of the output's shape (see the module docstring)."""
    a, b = inputs
    if _constant_equal_to(a, 0) or _constant_equal_to(b, 0):
        return _zeros(node)
    return None


def divide_by_one(node, inputs):
    """``x / 1`` → ``x``."""
    x, one = inputs
    return x if _constant_equal_to(one, 1) and _is_result(node, x) else None


def add_zero(node, inputs):
    """``x + 0`` and ``0 + x`` → ``x``."""
    a, b = inputs
    for zero, x in ((b, a), (a, b)):
        if _constant_equal_to(zero, 0) and _is_result(node, x):
            return x
    return None


def subtract_zero(node, inputs):
    """``x - 0`` → ``x``."""
    x, zero = inputs
    return x if _constant_equal_to(zero, 0) and _is_result(node, x) else None


def _scaled_negation(y):
    """``(-c) * x`` when ``y`` is ``c * x`` with a constant scalar ``c`` (the sign goes into the
    constant instead of costing an op over the tensor), else None."""
    producer = y.node
    if producer is not None and producer.primitive is mul:
        for c, x in (producer.inputs, producer.inputs[::-1]):
            if isinstance(c, Constant) and c.value.size == 1 and c.ndim <= x.ndim and y.shape == x.shape:
                return mul(Constant(-c.value), x)
    return None


def _negated(y):
    scaled = _scaled_negation(y)
    return neg(y) if scaled is None else scaled


def subtract_from_zero(node, inputs):
    """``0 - y`` → ``-y`` (Keras's SGD with ``momentum = 0``: ``0 * m - lr * g`` → ``(-lr) * g``)."""
    zero, y = inputs
    if _constant_equal_to(zero, 0) and _is_result(node, y):
        return _negated(y)
    return None


def negate_scaled(node, inputs):
    """``-(c * x)`` → ``(-c) * x`` for a constant scalar ``c``."""
    return _scaled_negation(inputs[0])


def add_negation(node, inputs):
    """``x + (-y)`` and ``(-y) + x`` → ``x - y``: one op over the tensor, not two."""
    a, b = inputs
    for x, negated in ((a, b), (b, a)):
        if negated.node is not None and negated.node.primitive is neg:
            return sub(x, negated.node.inputs[0])
    return None


def noop_broadcast(node, inputs):
    """A broadcast to the shape its input already has (fully static) → the input."""
    x = inputs[0]
    out = node.outputs[0]
    if None not in out.shape and _is_result(node, x):
        return x
    return None


def select_constant_branch(node, inputs):
    """``where(c, a, b)`` with a constant scalar condition → the branch it selects (Keras's
    ``in_train_phase`` once the learning phase is fixed)."""
    condition, a, b = inputs
    if not isinstance(condition, Constant) or condition.value.size != 1:
        return None
    chosen = a if bool(condition.value.reshape(())) else b
    return chosen if _is_result(node, chosen) else None


# primitive name → its rules, tried in order
RULES = {
    "mul": (multiply_by_zero, multiply_by_one),
    "div": (divide_by_one,),
    "add": (add_zero, add_negation),
    "sub": (subtract_zero, subtract_from_zero),
    "neg": (negate_scaled,),
    "expand_like": (noop_broadcast,),
    "broadcast_to": (noop_broadcast,),
    "where": (select_constant_branch,),
}
