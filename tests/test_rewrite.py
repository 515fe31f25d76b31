"""Graph rewrites before lowering (kgraph/rewrite): read-only variables of a training step baked in
as constants, and the algebraic identities that makes true.  Each test shows the node a rule
removes from the session's model and that the values stay those of numpy, on ONNX Runtime and
on onnx.reference."""
from collections import Counter

import numpy as np
from onnx.reference import ReferenceEvaluator

import kgraph.backend as K
from kgraph.graph import Constant
from kgraph.ops.shape import broadcast_to
from kgraph.rewrite import specialize


def ops(fn):
    return Counter(n.op_type for n in fn.session_model().graph.node)


def run_reference(fn, inputs):
    """The session's own model on onnx.reference, fed as the session is: the new variable
    values it computes, in update order."""
    model = fn.session_model()
    feeds = {f"in{i}": np.asarray(x) for i, x in enumerate(inputs)}
    feeds.update({f"var{i}": v.numpy() for i, v in enumerate(fn.fed_variables)})
    return ReferenceEvaluator(model).run(None, feeds)


def sgd_step(momentum_value):
    """Keras 2.3.1's SGD update written with K: ``v = momentum * m - lr * g; m = v; p = p + v``."""
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(4, 3)).astype(np.float32)
    x = K.placeholder((None, 4))
    p = K.variable(p0, name="p")
    m = K.zeros((4, 3), name="m")
    momentum = K.variable(momentum_value, name="momentum")
    lr = K.variable(0.1, name="lr")
    loss = K.sum(K.square(K.dot(x, p)))
    g, = K.gradients(loss, [p])
    v = momentum * m - lr * g
    fn = K.function([x], [loss], updates=[K.update(m, v), K.update(p, p + v)])
    return fn, p0, (p, m, momentum, lr), rng.normal(size=(5, 4)).astype(np.float32)


def numpy_sgd(p, m, x, momentum, lr):
    g = 2 * x.T @ (x @ p)
    v = momentum * m - lr * g
    return p + v, v


def test_read_only_variables_are_baked_and_zero_momentum_leaves_the_graph():
    fn, p0, (p, m, momentum, lr), x = sgd_step(0.0)
    assert [v.name for v in fn.fed_variables] == ["p", "m"]  # momentum and lr are constants now
    counts = ops(fn)
    # g = 2 x^T (x p) lowers to MatMuls; the update is (-lr) * g and p + that: one Mul, one Add
    # over the weight — no ``momentum * m``, no ``0 - ...``
    assert counts["Sub"] == 0 and counts["Neg"] == 0, counts
    model = fn.session_model()
    assert not any("var1" in n.input for n in model.graph.node)  # m is written, never read
    ref = run_reference(fn, [x])
    fn([x])
    want_p, want_m = numpy_sgd(p0, np.zeros((4, 3), np.float32), x, 0.0, 0.1)
    np.testing.assert_allclose(K.get_value(p), want_p, rtol=1e-5)
    np.testing.assert_allclose(K.get_value(m), want_m, rtol=1e-5)
    np.testing.assert_allclose(ref[1], want_m, rtol=1e-5)  # outputs: loss, m:new, p:new
    np.testing.assert_allclose(ref[2], want_p, rtol=1e-5)


def test_set_value_rebuilds_the_session_with_the_new_value():
    fn, p0, (p, m, momentum, lr), x = sgd_step(0.0)
    fn([x])
    p1, m1 = K.get_value(p), K.get_value(m)
    K.set_value(momentum, 0.9)
    fn([x])
    want_p, want_m = numpy_sgd(p1, m1, x, 0.9, 0.1)
    np.testing.assert_allclose(K.get_value(m), want_m, rtol=1e-5)
    np.testing.assert_allclose(K.get_value(p), want_p, rtol=1e-5)
    assert fn.bake_read_only is False  # changed one call after a build: baking does not pay
    assert sorted(v.name for v in fn.fed_variables) == ["lr", "m", "momentum", "p"]
    K.set_value(lr, 0.01)  # now fed: no rebuild, the new value is simply read
    p2, m2 = K.get_value(p), K.get_value(m)
    fn([x])
    want_p, want_m = numpy_sgd(p2, m2, x, 0.9, 0.01)
    np.testing.assert_allclose(K.get_value(p), want_p, rtol=1e-5)


def test_rebuilds_that_pay_off_keep_baking():
    fn, p0, (p, m, momentum, lr), x = sgd_step(0.0)
    for _ in range(60):  # a learning-rate schedule that changes once an epoch of 60 steps
        fn([x])
    K.set_value(lr, 0.05)
    fn([x])
    assert fn.bake_read_only is True and [v.name for v in fn.fed_variables] == ["p", "m"]
    p_before = K.get_value(p)
    m_before = K.get_value(m)
    fn([x])
    want_p, _ = numpy_sgd(p_before, m_before, x, 0.0, 0.05)
    np.testing.assert_allclose(K.get_value(p), want_p, rtol=1e-5)


def test_functions_without_updates_do_not_bake():
    v = K.variable(np.ones(3))
    fn = K.function([], [v * 2.0])
    assert fn.mode == "frozen"
    out = K.eval(v * 3.0)  # K.eval: fed, without updates, nothing baked
    np.testing.assert_allclose(out, 3.0)
    counter = K.variable(0.0)
    step = K.function([], [v + 0.0], updates=[K.update_add(counter, 1.0)])
    assert step.read_only == [v] and step.fed_variables == [counter]


def test_multiply_by_one_add_and_subtract_zero_divide_by_one():
    x = K.placeholder((2, 3))
    one, zero = K.variable(1.0, name="one"), K.variable(0.0, name="zero")
    counter = K.variable(0.0, name="counter")
    out = ((x * one + zero) - zero) / one + x * zero
    fn = K.function([x], [out], updates=[K.update_add(counter, 1.0)])
    counts = ops(fn)
    assert not {"Mul", "Div", "Sub"} & set(counts) and counts["Add"] == 1, counts  # the counter's
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(fn([a])[0], a)
    np.testing.assert_allclose(run_reference(fn, [a])[0], a)


def test_broadcasting_by_a_constant_is_kept():
    # x * 1 where the constant broadcasts x to a bigger shape is not x
    x = K.placeholder((3,))
    ones = K.variable(np.ones((2, 3)), name="ones")
    counter = K.variable(0.0)
    fn = K.function([x], [x * ones], updates=[K.update_add(counter, 1.0)])
    assert ops(fn)["Mul"] == 1 or ops(fn)["Expand"] == 1
    a = np.array([1.0, 2.0, 3.0], np.float32)
    np.testing.assert_allclose(fn([a])[0], np.broadcast_to(a, (2, 3)))


def test_zero_times_a_dynamic_shape_is_not_folded():
    x = K.placeholder((None, 3))
    zero = K.variable(0.0)
    counter = K.variable(0.0)
    fn = K.function([x], [x * zero], updates=[K.update_add(counter, 1.0)])
    assert ops(fn)["Mul"] == 1  # the zeros' shape is known only at run time
    np.testing.assert_allclose(fn([np.ones((4, 3), np.float32)])[0], np.zeros((4, 3)))


def test_noop_broadcast_is_removed():
    x = K.placeholder((2, 3))
    y, = specialize([broadcast_to(x, shape=(2, 3)) * 2.0])
    assert y.node.inputs[0] is x
    z, = specialize([broadcast_to(x, shape=(4, 2, 3))])
    assert z.node is not None and z.node.primitive.name == "broadcast_to"


def test_constant_condition_selects_its_branch():
    a, b = K.placeholder((3,)), K.placeholder((3,))
    picked, = specialize([K.switch(K.constant(True, dtype="bool"), a, b)])
    assert picked is a


def test_the_original_graph_is_untouched():
    x = K.placeholder((2,))
    c = K.variable(1.0)
    y = x * c
    node = y.node
    out, = specialize([y], [(c, Constant(np.float32(1.0)))])
    assert out is x and y.node is node and node.inputs[1] is c


def test_a_fed_learning_phase_gets_a_session_per_value():
    # Keras feeds the learning phase (0 to predict, 1 to fit): each value gets a function of its
    # own, specialized to it, so predict computes no dropout mask and no batch statistics
    x = K.placeholder((None, 4))
    phase = K.learning_phase()
    rate = 0.5
    out = K.in_train_phase(K.dropout(x, rate, seed=1), x * 1.0)
    fn = K.function([x, phase], [out])
    a = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(fn([a, 0])[0], a)
    trained = fn([a, 1])[0]
    assert set(np.unique(trained)) <= {0.0, 2.0}
    assert sorted(fn._variants) == [(False,), (True,)]
    inference_ops = Counter(n.op_type for n in fn._variants[(False,)].session_model().graph.node)
    training_ops = Counter(n.op_type for n in fn._variants[(True,)].session_model().graph.node)
    assert "BitwiseXor" not in inference_ops and "Where" not in inference_ops, inference_ops
    assert training_ops["BitwiseXor"] > 0  # the threefry draw of the mask
    exported = fn.to_onnx()  # the export keeps the phase as an input
    names = [i.name for i in exported.graph.input]
    assert names[1] == "keras_learning_phase"
    np.testing.assert_allclose(ReferenceEvaluator(exported).run(None, {names[0]: a, names[1]: np.asarray(False)})[0], a)


def test_placeholders_with_defaults_that_are_not_fed_are_constants():
    x = K.placeholder((2,))
    out = K.in_train_phase(x * 2.0, x * 3.0)
    fn = K.function([x], [out])
    assert "Where" not in ops(fn)
    np.testing.assert_allclose(fn([np.ones(2, np.float32)])[0], [3.0, 3.0])
