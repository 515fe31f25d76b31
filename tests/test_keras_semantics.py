"""K-level semantics that Keras 2.3.1 relies on (issue 9, item 3), each against numpy on both
engines: what TF's convert_to_tensor accepts, reads ordered after updates by
control_dependencies, K.eval of update ops, indexing with scalar tensors, floatx as the default
dtype everywhere, static shapes, selu, rank-0 outputs."""
import numpy as np
import pytest

import kgraph.backend as K
from kcheck import check, check_grad, evaluate


# -- nested lists of tensors, variables and numbers are tensors (TF's auto-packing) ------------------
def test_prod_of_a_list_of_scalar_shape_tensors():
    # keras/layers/normalization.py:188: K.prod([K.shape(inputs)[axis] for axis in reduction_axes])
    x = K.placeholder((None, 3, 4))
    size = K.prod([K.shape(x)[axis] for axis in (0, 1)])
    assert size.dtype == "int32" and size.shape == ()
    check(size, {x: np.zeros((5, 3, 4), "float32")}, np.array(15, "int32"))


def test_nested_lists_of_tensors_variables_and_numbers(rng):
    x = K.placeholder((2, 3))
    v = K.variable([10.0, 20.0, 30.0])
    a = rng.standard_normal((2, 3)).astype("float32")
    nested = [[x[0], v], [x[1], [1, 2, 3]]]
    got = K.sum(nested, axis=1)
    assert got.shape == (2, 3) and got.dtype == "float32"
    expected = np.array([[a[0], [10, 20, 30]], [a[1], [1, 2, 3]]], "float32").sum(axis=1)
    check(got, {x: a}, expected)
    check(K.max(K.stack([x[0, 0], 2.5, x[1, 2]])), {x: a}, np.max([a[0, 0], 2.5, a[1, 2]]).astype("float32"))
    check(K.concatenate([[x[0, 0], 1.0], x[1, :2]]), {x: a}, np.array([a[0, 0], 1, a[1, 0], a[1, 1]], "float32"))


def test_packed_list_dtype_and_shape_rules():
    i = K.placeholder((), dtype="int64")
    f = K.placeholder((), dtype="float32")
    assert K.prod([i, 3]).dtype == "int64"
    assert K.sum([i, f]).dtype == "float64"  # tensors promote as numpy does
    assert K.cast([i, i], "float32").shape == (2,)
    with pytest.raises(ValueError, match="share a shape"):
        K.sum([K.placeholder((2,)), K.placeholder((3,))])
    with pytest.raises(ValueError, match="share a shape"):
        K.sum([K.placeholder((2,)), 1.0])


def test_gradient_through_a_packed_list(rng):
    check_grad(lambda x, y: K.stack([[x[0], y[1]], [K.sum(x), 2.0 * y[0]]]) * 1.5,
               [rng.standard_normal(3), rng.standard_normal(2)])


# -- control_dependencies: reads after the updates named -----------------------------------------------
def test_reads_inside_control_dependencies_see_the_updated_value():
    total = K.variable(0.0)
    count = K.variable(0.0)
    x = K.placeholder((None,))
    updates = [K.update_add(total, K.sum(x)), K.update_add(count, K.cast(K.size(x), "float32"))]
    before = K.identity(total / count)
    with K.control_dependencies(updates):
        after = K.identity(total / count)  # Keras' Mean.result() under its update ops
    step = K.function([x], [before, after], updates=updates)
    batches = [np.array([1, 2, 3], "float32"), np.array([10, 20], "float32"), np.array([0.5], "float32")]
    seen = []
    for b in batches:
        got_before, got_after = step([b])
        seen.append(b)
        flat = np.concatenate(seen)
        np.testing.assert_allclose(got_after, flat.mean(), rtol=1e-6)
        if len(seen) > 1:
            np.testing.assert_allclose(got_before, np.concatenate(seen[:-1]).mean(), rtol=1e-6)
    np.testing.assert_allclose(K.get_value(total), np.concatenate(batches).sum(), rtol=1e-6)
    # the exported step computes the same: one graph, pure data flow, on both engines
    total2 = K.variable(4.0)
    upd = K.update_add(total2, K.sum(x))
    with K.control_dependencies([upd]):
        read = total2 * 2.0
    check(read, {x: np.array([1, 2], "float32")}, np.array(14, "float32"))


def test_control_dependencies_merge_several_updates_of_one_variable_and_nest():
    v = K.variable(1.0)
    a, b = K.update_add(v, 2.0), K.update_sub(v, 0.5)
    with K.control_dependencies([a, [b], None]):
        r1 = v * 1.0
        c = K.update(v, v * 10.0)  # an update made inside reads the updated value too
        with K.control_dependencies(c):
            r2 = v + 0.0
    r0 = v + 0.0  # outside the block: the value before
    f = K.function([], [r0, r1, r2])
    np.testing.assert_allclose(f([]), [1.0, 2.5, 25.0])
    assert K.get_value(v) == 1.0  # nothing was run as an update


def test_control_dependencies_on_plain_tensors_and_bad_arguments():
    x = K.placeholder((2,))
    with K.control_dependencies([x * 2]):
        y = x + 1
    check(y, {x: np.array([1, 2], "float32")}, np.array([2, 3], "float32"))
    with pytest.raises(TypeError, match="K.control_dependencies: control_inputs must be tensors"):
        with K.control_dependencies(["train"]):
            pass


# -- K.eval of update ops applies them ------------------------------------------------------------------
def test_eval_of_update_ops_applies_them_and_returns_the_new_value():
    v = K.variable(np.zeros(2))
    inc = K.update_add(v, 1.5)
    np.testing.assert_array_equal(K.eval(inc), [1.5, 1.5])
    np.testing.assert_array_equal(K.get_value(v), [1.5, 1.5])
    np.testing.assert_array_equal(K.eval(inc), [3.0, 3.0])  # every run applies it, as sess.run does
    np.testing.assert_array_equal(K.eval(K.update_sub(v, [1.0, 2.0])), [2.0, 1.0])
    np.testing.assert_array_equal(K.eval(K.update(v, K.constant([7.0, 8.0]))), [7.0, 8.0])
    np.testing.assert_array_equal(K.get_value(v), [7.0, 8.0])
    np.testing.assert_array_equal(K.eval(K.moving_average_update(v, K.constant([1.0, 0.0]), 0.5)), [4.0, 4.0])
    np.testing.assert_array_equal(K.eval(K.update_add(v, 1.0) * 2.0), [10.0, 10.0])
    np.testing.assert_array_equal(K.get_value(v), [5.0, 5.0])


def test_update_does_not_mark_the_new_value_tensor():
    v = K.variable(0.0)
    new = K.constant(3.0) + 1.0
    K.update(v, new)
    assert K.eval(new) == 4.0 and K.get_value(v) == 0.0  # evaluating the operand applies nothing


# -- indexing with scalar tensors -----------------------------------------------------------------------
def test_indexing_and_slicing_with_scalar_tensors(rng):
    x = K.placeholder((5, 3))
    i = K.placeholder((), dtype="int32")
    j = K.placeholder((), dtype="int64")
    exprs = [lambda a, I, J: a[I], lambda a, I, J: a[I:I + 2], lambda a, I, J: a[:, I % 3],
             lambda a, I, J: a[J:], lambda a, I, J: a[::-1, I % 3], lambda a, I, J: a[I:J:2],
             lambda a, I, J: a[:J, None, 1], lambda a, I, J: a[..., I % 3]]
    outs = [e(x, i, j) for e in exprs]
    assert [o.shape for o in outs] == [(3,), (None, 3), (5,), (None, 3), (5,), (None, 3), (None, 1), (5,)]
    a = rng.standard_normal((5, 3)).astype("float32")
    for I, J in [(2, 4), (-1, 1), (0, -1), (-5, 5)]:
        check(outs, {x: a, i: np.asarray(I, "int32"), j: np.asarray(J, "int64")},
              [e(a, I, J) for e in exprs])


def test_gradient_of_tensor_indexing(rng):
    i = K.constant(1, dtype="int32")
    j = K.constant(3, dtype="int64") + 0  # a computed bound: the run-time path
    check_grad(lambda x: x[i + 0] * 2.0 + K.sum(x[i + 1:j, :], axis=0), [rng.standard_normal((4, 3))])
    check_grad(lambda x: x[j - 1:0:-1, i + 0], [rng.standard_normal((4, 3))])
    # second order reaches the gradient primitive's own rule
    check_grad(lambda x, w: K.gradients(K.sum(x[1:j] * w[1:j]), [x])[0],
               [rng.standard_normal(4), rng.standard_normal(4)])


def test_tensor_indexing_inside_map_fn_foldl_and_rnn_bodies(rng):
    x = K.placeholder((4, 5))
    i = K.placeholder((), dtype="int32")
    seq = K.placeholder((2, 3, 5))
    mapped = K.map_fn(lambda row: row[i] * 2.0, x)
    folded = K.foldl(lambda acc, row: acc + row[i:i + 2], x, initializer=K.zeros((2,)))
    rows = K.map_fn(lambda k: K.sum(x[k]), K.arange(4), dtype="float32")  # the loop's own element

    def step(inp, states):
        out = inp[:, i] + states[0][:, 0]
        return out, [K.expand_dims(out)]
    _, outputs, _ = K.rnn(step, seq, [K.zeros((2, 1))])
    a, s = rng.standard_normal((4, 5)).astype("float32"), rng.standard_normal((2, 3, 5)).astype("float32")
    check([mapped, folded, rows, outputs], {x: a, i: np.asarray(3, "int32"), seq: s},
          [a[:, 3] * 2, a[:, 3:5].sum(0), a.sum(1), np.cumsum(s[:, :, 3], axis=1)], rtol=1e-5, atol=1e-5)


def test_bad_index_tensors_are_clear_errors():
    x = K.placeholder((4, 5))
    with pytest.raises(TypeError, match="use K.gather"):
        x[K.placeholder((2,), dtype="int32")]
    with pytest.raises(TypeError, match="must hold integers"):
        x[K.placeholder(())]
    with pytest.raises(TypeError, match="slice step"):
        x[::K.constant(2, dtype="int32")]
