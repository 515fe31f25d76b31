"""Peephole rule: the select K.sqrt clips with lowers to one Max (kgraph/lower/rules.py)."""
from collections import Counter

import numpy as np
import onnx

import kgraph.backend as K
from kcheck import check, check_grad


def op_counts(fn, training=False):
    return Counter(n.op_type for n in fn.to_onnx(training=training).graph.node)


def test_sqrt_clip_is_one_max_not_less_and_where():
    x = K.placeholder((3, 4))
    fn = K.function([x], [K.sqrt(x)])
    ops = op_counts(fn)
    assert ops["Max"] == 1 and ops["Where"] == 0 and ops["Less"] == 0, ops
    onnx.checker.check_model(fn.to_onnx(), full_check=True)
    a = np.array([[-2.0, -0.0, 0.0, 0.25], [1.0, 4.0, -1e-30, 9.0], [16.0, -5.0, 2.0, 3.0]], np.float32)
    check(K.sqrt(x), {x: a}, np.sqrt(np.maximum(a, 0)))  # ORT and onnx.reference


def test_gradient_keeps_the_select_semantics():
    # the rule rewrites only the forward value: the gradient stays 0 below zero, not nan
    x = K.placeholder((4,), dtype="float64")
    g, = K.gradients(K.sum(K.sqrt(x)), [x])
    a = np.array([-1.0, -4.0, 1.0, 4.0])
    check(g, {x: a}, np.where(a > 0, 0.5 / np.sqrt(np.abs(a)), 0.0))
    check_grad(lambda p: K.sqrt(p), [np.array([0.5, 2.0, 3.0])])


def test_less_kept_when_something_else_reads_it():
    x = K.placeholder((5,))
    mask = K.less(x, K.constant(0.0))
    fn = K.function([x], [K.sqrt(x), mask])
    a = np.array([-1.0, 0.0, 1.0, 4.0, -2.0], np.float32)
    root, m = fn([a])
    np.testing.assert_allclose(root, np.sqrt(np.maximum(a, 0)))
    np.testing.assert_array_equal(m, a < 0)
    check([K.sqrt(x), mask], {x: a}, [np.sqrt(np.maximum(a, 0)), a < 0])


def test_select_with_different_constants_is_left_alone():
    x = K.placeholder((3,))
    out = K.switch(K.less(x, K.constant(0.0)), K.ones_like(x) * 2.0, x)
    a = np.array([-1.0, 0.5, 3.0], np.float32)
    check(out, {x: a}, np.where(a < 0, 2.0, a))
