"""Tensors and variables; state and values."""
import numpy as np
import pytest

import kgraph.backend as K
from kcheck import check, evaluate


def test_placeholder_forms():
    p = K.placeholder(shape=(None, 3), name="x")
    assert p.shape == (None, 3) and p.dtype == "float32" and K.int_shape(p) == (None, 3)
    assert K.is_placeholder(p) and not K.is_variable(p) and K.is_tensor(p)
    assert K.placeholder(ndim=3).shape == (None, None, None)
    assert K.placeholder((2,), dtype="int32").dtype == "int32"
    assert p._uses_learning_phase is False and p._keras_shape == (None, 3)
    with pytest.raises(ValueError, match="K.placeholder"):
        K.placeholder()
    with pytest.raises(TypeError, match="dtype"):
        K.placeholder((2,), dtype="complex64")


def test_variable_and_values():
    v = K.variable([[1, 2], [3, 4]], name="w")
    assert K.is_variable(v) and v.dtype == "float32" and K.int_shape(v) == (2, 2)
    assert v.name == "w"
    np.testing.assert_array_equal(K.get_value(v), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(K.eval(v), [[1, 2], [3, 4]])
    got = K.get_value(v)
    got[0, 0] = 100  # a copy: the variable is unchanged
    assert K.get_value(v)[0, 0] == 1
    assert K.variable(3, dtype="int64").dtype == "int64"
    assert K.count_params(v) == 4 and K.get_variable_shape(v) == (2, 2)


def test_set_value_checks_shape_and_keeps_caller_array():
    v = K.variable(np.zeros(3))
    new = np.array([1.0, 2.0, 3.0])
    K.set_value(v, new)
    new[0] = 50
    np.testing.assert_array_equal(K.get_value(v), [1, 2, 3])
    with pytest.raises(ValueError, match=r"K.set_value.*\(3,\).*\(2,\)"):
        K.set_value(v, np.zeros(2))
    np.testing.assert_array_equal(K.get_value(v), [1, 2, 3])


def test_batch_set_value_is_all_or_nothing():
    a, b = K.variable(np.zeros(2)), K.variable(np.zeros(3))
    with pytest.raises(ValueError, match="K.batch_set_value"):
        K.batch_set_value([(a, np.ones(2)), (b, np.ones(2))])
    np.testing.assert_array_equal(K.get_value(a), [0, 0])  # nothing half-written
    K.batch_set_value([(a, np.ones(2)), (b, np.ones(3))])
    assert [x.tolist() for x in K.batch_get_value([a, b])] == [[1, 1], [1, 1, 1]]


def test_constant_forms():
    np.testing.assert_array_equal(K.eval(K.constant(2.0, shape=(2, 2))), np.full((2, 2), 2.0))
    c = K.constant([1, 2, 3, 4], dtype="int32", shape=(2, 2))
    assert c.dtype == "int32"
    np.testing.assert_array_equal(K.eval(c), [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="K.constant"):
        K.constant([1, 2, 3], shape=(2, 2))


def test_is_keras_tensor():
    p = K.placeholder((2,))
    assert K.is_keras_tensor(p) is False
    p._keras_history = ("layer", 0, 0)
    assert K.is_keras_tensor(p)
    with pytest.raises(ValueError, match="Expected a symbolic tensor"):
        K.is_keras_tensor(np.zeros(2))


def test_shape_size_ndim_dtype():
    x = K.placeholder((None, 3, 4))
    a = np.zeros((2, 3, 4), "float32")
    shape, size = evaluate([K.shape(x), K.size(x)], {x: a})
    np.testing.assert_array_equal(shape, [2, 3, 4])
    assert shape.dtype == np.int32 and size == 24
    assert K.ndim(x) == 3 and K.dtype(x) == "float32"
    assert K.int_shape(np.zeros((2, 5))) == (2, 5)
    assert K.dtype(K.variable(1, dtype="float64")) == "float64"


def test_filled_variables():
    z, o, e = K.zeros((2, 3)), K.ones((2,), dtype="int32"), K.eye(3)
    assert all(K.is_variable(t) for t in (z, o, e))
    np.testing.assert_array_equal(K.eval(z), np.zeros((2, 3)))
    np.testing.assert_array_equal(K.eval(o), [1, 1])
    assert o.dtype == "int32"
    np.testing.assert_array_equal(K.eval(e), np.eye(3))
    np.testing.assert_array_equal(K.eval(K.eye((2, 3))), np.eye(2, 3))


def test_like_functions_and_identity_and_cast():
    x = K.placeholder((None, 2))
    a = np.array([[1.5, -2.0], [np.inf, np.nan]], "float32")
    zl, ol, ident, c, zl64 = evaluate([K.zeros_like(x), K.ones_like(x), K.identity(x), K.cast(x, "int32"),
                                       K.zeros_like(x, dtype="float64")], {x: a[:1]})
    np.testing.assert_array_equal(zl, [[0, 0]])
    np.testing.assert_array_equal(ol, [[1, 1]])
    np.testing.assert_array_equal(ident, a[:1])
    np.testing.assert_array_equal(c, a[:1].astype(np.int32))
    assert zl64.dtype == np.float64
    # zeros_like of inf/nan is still zero (not nan)
    check(K.zeros_like(x), {x: a}, np.zeros((2, 2), "float32"))


def test_random_variables_are_seeded():
    a = K.random_uniform_variable((100, 10), -1, 1, seed=3)
    b = K.random_uniform_variable((100, 10), -1, 1, seed=3)
    np.testing.assert_array_equal(K.get_value(a), K.get_value(b))
    va = K.get_value(a)
    assert va.min() >= -1 and va.max() <= 1 and abs(va.mean()) < 0.1
    n = K.get_value(K.random_normal_variable((200, 50), 2.0, 0.5, seed=1))
    assert abs(n.mean() - 2.0) < 0.02 and abs(n.std() - 0.5) < 0.02
    assert n.dtype == np.float32


def test_is_sparse_and_to_dense_on_dense_tensors():
    x = K.placeholder((2, 2))
    assert not K.is_sparse(x)
    check(K.to_dense(x), {x: np.eye(2, dtype="float32")}, np.eye(2))


def test_print_tensor_returns_its_input():
    x = K.placeholder((2,))
    check(K.print_tensor(x, "x"), {x: np.array([1, 2], "float32")}, [1, 2])
