"""Sparse tensors: scipy.sparse feeds through to_dense/dot/concatenate against scipy and numpy, on
ONNX Runtime and onnx.reference; gradients of the sparse primitives against finite differences."""
import numpy as np
import onnx
import pytest
import scipy.sparse as sp
from onnx.reference import ReferenceEvaluator

import kgraph.backend as K
from kcheck import check_grad
from kgraph.backend.sparse import make_sparse


def run_both(inputs, outputs, values, rtol=1e-5, atol=1e-6):
    """``K.function(inputs, outputs)(values)`` on ONNX Runtime, checked against onnx.reference
    on the exported model fed with the same converted (COO) parts."""
    fn = K.function(inputs, outputs)
    got = fn(values)
    parts = []
    for spec, value in zip(fn.feeds, values):
        converted = spec(value)
        parts.extend(converted if isinstance(converted, tuple) else [converted])
    model = fn.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    names = [i.name for i in model.graph.input]
    ref = ReferenceEvaluator(model).run(None, dict(zip(names, parts)))
    for i, (a, b) in enumerate(zip(got, ref)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"output {i}: ORT and onnx.reference")
    return got


def _random_sparse(shape, density, seed, dtype=np.float32, fmt="csr"):
    rng = np.random.default_rng(seed)
    return sp.random(*shape, density=density, format=fmt, random_state=rng, dtype=dtype,
                     data_rvs=lambda n: rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n))


FORMATS = {
    "csr": lambda m: m.tocsr(),
    "csc": lambda m: m.tocsc(),
    "coo": lambda m: m.tocoo(),
    "lil": lambda m: m.tolil(),
    "csr_array": lambda m: sp.csr_array(m),
    "triple": lambda m: (np.stack([m.tocoo().row, m.tocoo().col], 1), m.tocoo().data, m.shape),
    "dense": lambda m: m.toarray(),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_sparse_placeholder_feeds_any_format(fmt):
    m = _random_sparse((4, 6), 0.4, 1)
    x = K.placeholder((None, 6), sparse=True)
    assert K.is_sparse(x) and K.is_placeholder(x) and K.int_shape(x) == (None, 6)
    dense = K.to_dense(x)
    assert not K.is_sparse(dense) and dense.shape == (None, 6)
    # a dense use of the sparse placeholder reads its densified value
    got = run_both([x], [dense, K.sum(x, axis=1)], [FORMATS[fmt](m)])
    np.testing.assert_array_equal(got[0], m.toarray())
    np.testing.assert_allclose(got[1], m.toarray().sum(1), rtol=1e-6)


def test_sparse_feed_sums_duplicates_and_casts_values():
    rows, cols = np.array([0, 2, 0, 1]), np.array([1, 3, 1, 0])
    m = sp.coo_matrix((np.array([1, 2, 3, 4], np.int64), (rows, cols)), shape=(3, 4))
    x = K.placeholder((3, 4), sparse=True, dtype="float64")
    got = run_both([x], [K.to_dense(x)], [m])[0]
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, m.toarray())  # scipy sums the repeated (0, 1)


def test_sparse_feed_errors_name_the_input():
    x = K.placeholder((None, 5), sparse=True, name="bag")
    fn = K.function([x], [K.to_dense(x)])
    with pytest.raises(ValueError, match="bag.*expects shape"):
        fn([sp.csr_matrix((2, 4), dtype=np.float32)])
    with pytest.raises(ValueError, match="bag.*expects dtype"):
        fn([sp.csr_matrix(np.array([[1j, 0, 2, 0, 1]]))])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sparse_dense_dot_and_its_gradient(dtype):
    m = _random_sparse((5, 7), 0.3, 2, dtype=dtype)
    w = np.random.default_rng(3).standard_normal((7, 3)).astype(dtype)
    g = np.random.default_rng(4).standard_normal((5, 3)).astype(dtype)
    x = K.placeholder((None, 7), sparse=True, dtype=dtype)
    wp = K.placeholder((7, 3), dtype=dtype)
    out = K.dot(x, wp)
    assert not K.is_sparse(out) and K.int_shape(out) == (None, 3)
    grad = K.gradients(K.sum(out * K.constant(g, dtype=dtype)), [wp])[0]
    got = run_both([x, wp], [out, grad], [m, w])
    np.testing.assert_allclose(got[0], m @ w, rtol=1e-5)
    np.testing.assert_allclose(got[1], m.T @ g, rtol=1e-5)


def test_dense_sparse_dot():
    m = _random_sparse((6, 4), 0.4, 5)
    d = np.random.default_rng(6).standard_normal((3, 6)).astype(np.float32)
    x = K.placeholder((6, 4), sparse=True)
    dp = K.placeholder((None, 6))
    out = K.dot(dp, x)
    assert K.int_shape(out) == (None, 4)
    np.testing.assert_allclose(run_both([dp, x], [out], [d, m])[0], d @ m.toarray(), rtol=1e-5, atol=1e-6)


def test_dot_of_two_sparse_operands_and_of_higher_ranks_densifies():
    a, b = _random_sparse((3, 5), 0.5, 7), _random_sparse((5, 4), 0.5, 8)
    y3 = np.random.default_rng(9).standard_normal((2, 5, 4)).astype(np.float32)
    xa = K.placeholder((3, 5), sparse=True)
    xb = K.placeholder((5, 4), sparse=True)
    yp = K.placeholder((2, 5, 4))
    both, higher = K.dot(xa, xb), K.dot(xa, yp)
    assert K.int_shape(higher) == (3, 2, 4)
    got = run_both([xa, xb, yp], [both, higher], [a, b, y3])
    np.testing.assert_allclose(got[0], (a @ b).toarray(), rtol=1e-5, atol=1e-6)
    # Keras/Theano dot: (M, K) · (A, K, N) → (M, A, N)
    np.testing.assert_allclose(got[1], np.einsum("mk,akn->man", a.toarray(), y3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_sparse_operands_stays_sparse_in_row_major_order(axis):
    a, b = _random_sparse((3, 4), 0.5, 10), _random_sparse((3, 4), 0.4, 11)
    c = _random_sparse((2, 4), 0.5, 12) if axis == 0 else _random_sparse((3, 2), 0.5, 12)
    xs = [K.placeholder(m.shape, sparse=True) for m in (a, b, c)]
    out = K.concatenate(xs, axis=axis)
    assert K.is_sparse(out)
    expected = np.concatenate([m.toarray() for m in (a, b, c)], axis=axis)
    assert K.int_shape(out) == expected.shape
    got = run_both(xs, [K.to_dense(out), out.indices, out.values, out.dense_shape], [a, b, c])
    np.testing.assert_array_equal(got[0], expected)
    np.testing.assert_array_equal(got[1], np.argwhere(expected != 0))  # argwhere is row-major
    np.testing.assert_array_equal(got[2], expected[expected != 0])
    np.testing.assert_array_equal(got[3], expected.shape)


def test_concatenate_sparse_with_dense_gives_dense():
    a = _random_sparse((2, 3), 0.5, 13)
    d = np.arange(4, dtype=np.float32).reshape(2, 2)
    x = K.placeholder((2, 3), sparse=True)
    dp = K.placeholder((2, 2))
    out = K.concatenate([x, dp], axis=-1)
    assert not K.is_sparse(out)
    np.testing.assert_array_equal(run_both([x, dp], [out], [a, d])[0], np.concatenate([a.toarray(), d], 1))


# -- gradients of the sparse primitives (float64 finite differences) ----------------------------
INDICES = np.array([[0, 1], [0, 3], [1, 0], [2, 2], [2, 3], [3, 1]], np.int64)


def _sparse_of(values, shape=(4, 4)):
    return make_sparse(K.constant(INDICES, dtype="int64"), values, K.constant(shape, dtype="int64"), shape)


@pytest.mark.parametrize("inner_cols", [1, 3])
def test_sparse_dense_matmul_gradients(inner_cols):
    rng = np.random.default_rng(inner_cols)
    v, y = rng.standard_normal(len(INDICES)), rng.standard_normal((4, inner_cols))
    check_grad(lambda vp, yp: K.dot(_sparse_of(vp), yp), [v, y])
    check_grad(lambda vp, xp: K.dot(xp, _sparse_of(vp)), [v, rng.standard_normal((2, 4))])


def test_sampled_dot_gradients():
    # d/d values of sum(dot(S, y) * G) is the sampled product G·yᵀ at the nonzeros: its own
    # gradient exercises the sampled product's rule
    rng = np.random.default_rng(1)
    g, y = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))

    def build(gp, yp):
        values = K.constant(np.ones(len(INDICES)), dtype="float64")  # the result is linear in them
        loss = K.sum(K.dot(_sparse_of(values), yp) * gp)
        return K.gradients(loss, [values])[0]

    check_grad(build, [g, y])


def test_densify_gather_and_reorder_gradients():
    rng = np.random.default_rng(2)
    check_grad(lambda vp: K.to_dense(_sparse_of(vp)) * 2.0, [rng.standard_normal(len(INDICES))])
    check_grad(lambda a, b: K.to_dense(K.concatenate([_sparse_of(a), _sparse_of(b)], axis=1)),
               [rng.standard_normal(len(INDICES)), rng.standard_normal(len(INDICES))])
    lengths = K.constant([2, 0, 3], dtype="int32")
    check_grad(lambda labels: K.to_dense(K.ctc_label_dense_to_sparse(labels, lengths)),
               [rng.standard_normal((3, 3))])


def test_variable_of_a_scipy_matrix_is_sparse_as_in_keras():
    # Keras' own backend tests: K.dot / K.concatenate of K.variable(scipy matrices)
    a = sp.csr_matrix((np.array([0, 7, 2, 3], np.float32), (np.array([0, 2, 2, 3]), np.array([4, 3, 2, 3]))),
                      shape=(4, 5))
    b = _random_sparse((4, 2), 0.5, 14)
    w = np.random.default_rng(15).random((5, 4)).astype(np.float32)
    va, vb = K.variable(a), K.variable(b)
    assert K.is_sparse(va) and K.int_shape(va) == (4, 5)
    joined = K.concatenate([va, vb])
    assert K.is_sparse(joined)
    np.testing.assert_allclose(K.eval(K.dot(va, K.variable(w))), a.toarray() @ w, rtol=1e-6)
    np.testing.assert_array_equal(K.eval(joined), np.hstack([a.toarray(), b.toarray()]))
