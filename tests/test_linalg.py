"""Linear algebra and reductions against numpy, on ONNX Runtime and onnx.reference; gradients
against finite differences."""
import sys
import types

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx.reference import ReferenceEvaluator

import kgraph.backend as K
from kcheck import check, check_grad, check_typed
from kgraph.graph import Placeholder
from kgraph.ops import shape as sh
from kgraph.runtime import Function

FAST = settings(max_examples=10, deadline=None)
seeds = st.integers(0, 2 ** 32 - 1)


def _values(shape, dtype, seed, low=-3, high=3):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype in ("int32", "int64"):
        return rng.integers(low, high + 1, size=shape).astype(dtype)
    # quarters: exact in float32, and repeated values (ties) occur
    return (np.round(rng.uniform(low, high, size=shape) * 4) / 4).astype(dtype)


def _unknown_dims(shape, dynamic):
    return tuple(None if dynamic else d for d in shape)


@st.composite
def shape_and_axis(draw, min_dims=0, max_dims=4):
    """A shape and a Keras axis argument for it: None, an int (maybe negative), or a list/tuple."""
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=3))
    rank = len(shape)
    if rank == 0:
        return shape, draw(st.sampled_from([None, []]))
    one = st.integers(-rank, rank - 1)
    axis = draw(st.one_of(st.none(), one, st.lists(one, min_size=0, max_size=rank, unique_by=lambda a: a % rank)))
    if isinstance(axis, list) and draw(st.booleans()):
        axis = tuple(axis)
    return shape, axis


def _np_axis(axis, rank):
    if axis is None:
        return None
    return tuple(a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis]))


def _logsumexp64(a, axis, keepdims):
    return np.log(np.sum(np.exp(a.astype(np.float64)), axis=axis, keepdims=keepdims))


def _floatx(a):
    return a if a.dtype.kind == "f" else a.astype(np.float32)


# name: (numpy reference taking (a, axis, keepdims), input dtypes, value range)
REDUCTIONS = {
    "sum": (lambda a, ax, kd: np.sum(a, ax, keepdims=kd).astype(np.int32 if a.dtype == bool else a.dtype),
            ("float32", "float64", "int32", "bool"), (-3, 3)),
    "prod": (lambda a, ax, kd: np.prod(a, ax, keepdims=kd).astype(a.dtype), ("float32", "float64", "int32"), (-2, 2)),
    "max": (lambda a, ax, kd: np.max(a, ax, keepdims=kd), ("float32", "float64", "int32", "bool"), (-3, 3)),
    "min": (lambda a, ax, kd: np.min(a, ax, keepdims=kd), ("float32", "float64", "int32", "bool"), (-3, 3)),
    "mean": (lambda a, ax, kd: np.mean(a.astype(np.float64), ax, keepdims=kd).astype(_floatx(a).dtype),
             ("float32", "float64", "int32", "bool"), (-3, 3)),
    "var": (lambda a, ax, kd: np.var(a.astype(np.float64), ax, keepdims=kd).astype(_floatx(a).dtype),
            ("float32", "float64", "int32"), (-3, 3)),
    "std": (lambda a, ax, kd: np.std(a.astype(np.float64), ax, keepdims=kd).astype(_floatx(a).dtype),
            ("float32", "float64", "int32"), (-3, 3)),
    "any": (lambda a, ax, kd: np.any(a != 0, ax, keepdims=kd), ("float32", "int32", "bool"), (-1, 1)),
    "all": (lambda a, ax, kd: np.all(a != 0, ax, keepdims=kd), ("float32", "int32", "bool"), (-1, 1)),
    "logsumexp": (lambda a, ax, kd: _logsumexp64(a, ax, kd).astype(_floatx(a).dtype),
                  ("float32", "float64", "int32"), (-3, 3)),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@FAST
@given(case=shape_and_axis(), keepdims=st.booleans(), seed=seeds, dtype_index=st.integers(0, 3),
       dynamic=st.booleans())
def test_reductions_against_numpy(name, case, keepdims, seed, dtype_index, dynamic):
    shape, axis = case
    reference, dtypes_, (low, high) = REDUCTIONS[name]
    dtype = dtypes_[dtype_index % len(dtypes_)]
    a = _values(shape, dtype, seed, low, high)
    x = K.placeholder(_unknown_dims(shape, dynamic), dtype=dtype)
    expected = reference(a, _np_axis(axis, a.ndim), keepdims)
    out = getattr(K, name)(x, axis=axis, keepdims=keepdims)
    tol = dict(rtol=2e-5, atol=1e-5) if _floatx(a).dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    check_typed(out, {x: a}, expected, **tol)


def test_reductions_default_to_all_axes_without_keepdims():
    a = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    x = K.placeholder((2, 3))
    check([K.sum(x), K.max(x), K.min(x), K.prod(x), K.mean(x), K.var(x), K.std(x), K.any(x), K.all(x - 1)],
          {x: a}, [a.sum(), a.max(), a.min(), a.prod(), a.mean(), a.var(), a.std(), True, False], rtol=1e-6)


def test_empty_axis_list_reduces_nothing():
    a = np.array([[1.0, -2.0], [0.0, 4.0]], np.float32)
    x = K.placeholder((2, 2))
    outs = [K.sum(x, []), K.max(x, []), K.prod(x, ()), K.mean(x, []), K.var(x, []), K.logsumexp(x, [])]
    check(outs, {x: a}, [a, a, a, a, np.zeros_like(a), a])
    check([K.any(x, []), K.all(x, [])], {x: a}, [a != 0, a != 0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # onnx.reference computes inf - inf on the way
def test_logsumexp_is_stable():
    a = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0],
                  [-1e4, -1e4 + np.log(3.0), -np.inf]])
    x = K.placeholder((4, 3), dtype="float64")
    expected = np.array([1000 + np.log(2), -np.inf, np.inf, -1e4 + np.log(4.0)])
    check([K.logsumexp(x, axis=1), K.logsumexp(x, axis=-1, keepdims=True)], {x: a},
          [expected, expected[:, None]], rtol=1e-12)
    y = K.placeholder((2,))
    check(K.logsumexp(y), {y: np.array([88.0, 88.0], np.float32)}, np.float32(88 + np.log(2)), rtol=1e-6)


def test_var_of_large_offset_values_is_accurate():
    # deviations from the mean, not E[x^2] - E[x]^2, which would cancel catastrophically
    a = 1e4 + np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    x = K.placeholder((None, 4))
    check([K.var(x, axis=-1), K.std(x, axis=1)], {x: a}, [np.float32([1.25]), np.float32([np.sqrt(1.25)])])


def test_max_min_with_nan_and_inf():
    a = np.array([[1.0, np.inf, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    x = K.placeholder((2, 3))
    check([K.max(x, 1), K.min(x, 1)], {x: a}, [np.float32([np.inf, -np.inf]), np.float32([-np.inf, -np.inf])])


# -- argmax / argmin ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["argmax", "argmin"])
@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), data=st.data(), seed=seeds,
       dtype=st.sampled_from(["float32", "float64", "int32", "int64"]), dynamic=st.booleans())
def test_argmax_argmin_against_numpy(name, shape, data, seed, dtype, dynamic):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = _values(shape, dtype, seed, -2, 2)  # few values: ties, where the first index wins
    x = K.placeholder(_unknown_dims(shape, dynamic), dtype=dtype)
    expected = getattr(np, name)(a, axis=axis).astype(np.int64)
    check_typed(getattr(K, name)(x, axis=axis), {x: a}, expected)


def test_argmax_default_axis_is_last_and_none_is_zero():
    a = np.array([[0.0, 5.0, 5.0], [7.0, -1.0, 2.0]], np.float32)
    x = K.placeholder((2, 3))
    check([K.argmax(x), K.argmin(x), K.argmax(x, axis=None), K.argmin(x, None)], {x: a},
          [np.int64([1, 0]), np.int64([0, 1]), np.int64([1, 0, 0]), np.int64([0, 1, 1])])


# -- cumsum / cumprod -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), data=st.data(), seed=seeds,
       dtype=st.sampled_from(["float32", "float64", "int32"]), dynamic=st.booleans())
def test_scans_against_numpy(name, shape, data, seed, dtype, dynamic):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = _values(shape, dtype, seed, -2, 2)
    # dynamic: the scanned length is unknown, which cumprod lowers differently
    x = K.placeholder(_unknown_dims(shape, dynamic), dtype=dtype)
    expected = getattr(np, name)(a, axis=axis).astype(dtype)
    check_typed(getattr(K, name)(x, axis=axis), {x: a}, expected, rtol=1e-6)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 8, 9, 17])
@pytest.mark.parametrize("dynamic", [False, True])
def test_cumprod_lengths(length, dynamic):
    a = np.random.default_rng(length).uniform(0.5, 1.5, size=(2, length, 3))
    x = K.placeholder((2, None if dynamic else length, 3), dtype="float64")
    check(K.cumprod(x, axis=1), {x: a}, np.cumprod(a, axis=1), rtol=1e-12)


def test_scans_default_axis_zero_and_bool():
    a = np.array([[1, 2], [3, 4], [5, 6]], np.int32)
    x = K.placeholder((None, 2), dtype="int32")
    b = K.placeholder((3,), dtype="bool")
    flags = np.array([True, False, True])
    check([K.cumsum(x), K.cumprod(x), K.cumsum(b)], {x: a, b: flags},
          [np.cumsum(a, 0).astype(np.int32), np.cumprod(a, 0).astype(np.int32), np.int32([1, 1, 2])])


# -- dot / batch_dot / transpose ------------------------------------------------------------------
DOT_SHAPES = [((2, 3), (3, 4)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((2, 3), (3,)), ((3,), (3,)),
              ((2, 3), (4, 3, 5)), ((2, 3, 4), (2, 4, 5)), ((5,), (2, 5, 3)), ((1, 2, 3), (5, 4, 3, 2)),
              ((2, 2, 1, 3), (3, 2))]


@pytest.mark.parametrize("sx,sy", DOT_SHAPES)
@pytest.mark.parametrize("dynamic", [False, True])
def test_dot_against_numpy(sx, sy, dynamic):
    # numpy's dot is Theano's: sum over x's last and y's second-to-last axis
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sx).astype(np.float32), rng.standard_normal(sy).astype(np.float32)
    x, y = K.placeholder(_unknown_dims(sx, dynamic)), K.placeholder(_unknown_dims(sy, dynamic))
    out = K.dot(x, y)
    expected = np.dot(a, b)
    assert len(K.int_shape(out)) == expected.ndim
    if not dynamic:
        assert K.int_shape(out) == expected.shape
    check(out, {x: a, y: b}, expected, rtol=1e-5, atol=1e-5)


def test_dot_partially_known_shapes_and_integers():
    x = K.placeholder((None, 3, 4), dtype="int32")
    y = K.placeholder((2, 4, None), dtype="int32")
    out = K.dot(x, y)
    assert K.int_shape(out) == (None, 3, 2, None)
    a, b = _values((2, 3, 4), "int32", 1), _values((2, 4, 5), "int32", 2)
    check_typed(out, {x: a, y: b}, np.dot(a, b).astype(np.int32))


def test_dot_errors():
    with pytest.raises(ValueError, match=r"K.dot: x.shape\[-1\] must equal"):
        K.dot(K.placeholder((2, 3)), K.placeholder((4, 5)))
    with pytest.raises(ValueError, match=r"K.dot: x.shape\[-1\] must equal"):
        K.dot(K.placeholder((2, 3)), K.placeholder((6, 4, 5)))
    with pytest.raises(ValueError, match="K.dot: operands must have rank >= 1"):
        K.dot(K.placeholder(()), K.placeholder((3,)))


def test_dot_delegates_sparse_operands(monkeypatch):
    import kgraph.backend as backend
    calls = []
    fake = types.ModuleType("kgraph.backend.sparse")
    fake.dot = lambda x, y: calls.append((x, y)) or "sparse result"
    monkeypatch.setitem(sys.modules, "kgraph.backend.sparse", fake)
    monkeypatch.setattr(backend, "sparse", fake, raising=False)
    sp = Placeholder((3, 4), "float32", sparse=True)  # what marks a tensor sparse
    dense = K.placeholder((4, 2))
    assert K.dot(sp, dense) == "sparse result"
    assert K.dot(dense, Placeholder((2, 3), "float32", sparse=True)) == "sparse result"
    assert len(calls) == 2 and calls[0][0] is sp


def _np_batch_dot(a, b, axes):
    """Per sample tensordot: x's free axes then y's; a (batch,) result becomes (batch, 1)."""
    out = np.stack([np.tensordot(a[i], b[i], axes=(axes[0] - 1, axes[1] - 1)) for i in range(a.shape[0])])
    return out[:, None] if out.ndim == 1 else out


BATCH_DOT_CASES = [
    ((4, 3), (4, 3), None, (1, 1)), ((4, 3), (4, 3), 1, (1, 1)), ((4, 2), (4, 3, 2), (1, 2), (1, 2)),
    ((4, 2), (4, 2, 3), None, (1, 1)), ((4, 3, 2), (4, 2), None, (2, 1)), ((4, 3, 2), (4, 3), (1, 1), (1, 1)),
    ((4, 3, 2), (4, 2, 5), None, (2, 1)), ((4, 5, 1), (4, 6, 5), (1, 2), (1, 2)),
    ((4, 2, 3), (4, 3, 2), [-1, 1], (2, 1)), ((4, 2, 3), (4, 5, 3), -1, (2, 2)),
    ((2, 3, 4, 5), (2, 5, 6), None, (3, 1)), ((2, 3, 4, 5), (2, 4, 6, 7), (2, 1), (2, 1)),
    ((2, 3, 4), (2, 5, 3, 6, 2), (1, 2), (1, 2)), ((2, 5, 2, 3, 4), (2, 4, 5, 3, 2), (-2, 3), (3, 3)),
]


@pytest.mark.parametrize("sx,sy,axes,np_axes", BATCH_DOT_CASES)
@pytest.mark.parametrize("dynamic", [False, True])
def test_batch_dot_against_numpy(sx, sy, axes, np_axes, dynamic):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sx).astype(np.float32), rng.standard_normal(sy).astype(np.float32)
    x, y = K.placeholder(_unknown_dims(sx, dynamic)), K.placeholder(_unknown_dims(sy, dynamic))
    out = K.batch_dot(x, y, axes=axes)
    expected = _np_batch_dot(a, b, np_axes)
    if not dynamic:
        assert K.int_shape(out) == expected.shape
    check(out, {x: a, y: b}, expected, rtol=1e-5, atol=1e-5)


def test_batch_dot_keras_docstring_example():
    # Keras 2.3.1: x = [[1, 2], [3, 4]], y = [[5, 6], [7, 8]], axes=1 gives [[17], [53]]
    x = K.variable([[1, 2], [3, 4]])
    y = K.variable([[5, 6], [7, 8]])
    check(K.batch_dot(x, y, axes=1), {}, np.float32([[17], [53]]))
    assert K.int_shape(K.batch_dot(K.placeholder((32, 20, 1)), K.placeholder((32, 30, 20)), axes=(1, 2))) == (32, 1, 30)


def test_batch_dot_errors():
    x3, y3 = K.placeholder((2, 3, 4)), K.placeholder((2, 4, 5))
    with pytest.raises(ValueError, match="K.batch_dot: inputs must have rank >= 2"):
        K.batch_dot(K.placeholder((3,)), y3)
    with pytest.raises(ValueError, match="K.batch_dot: inputs have different batch sizes"):
        K.batch_dot(x3, K.placeholder((3, 4, 5)))
    with pytest.raises(ValueError, match="K.batch_dot: cannot contract over axis 0"):
        K.batch_dot(x3, y3, axes=(0, 1))
    with pytest.raises(ValueError, match="K.batch_dot: multiple target dimensions"):
        K.batch_dot(x3, y3, axes=([1, 2], [1, 2]))
    with pytest.raises(ValueError, match=r"K.batch_dot: axes\[1\]=3 is out of range"):
        K.batch_dot(x3, y3, axes=(2, 3))
    with pytest.raises(ValueError, match=r"K.batch_dot: x.shape\[1\] != y.shape\[1\] \(3 != 4\)"):
        K.batch_dot(x3, y3, axes=1)
    with pytest.raises(ValueError, match="K.batch_dot: axes must be None, an int or a pair"):
        K.batch_dot(x3, y3, axes=(1, 2, 3))


@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (2, 3, 4), (1, 2, 3, 2)])
def test_transpose_reverses_axes(shape):
    a = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    x = K.placeholder(shape)
    out = K.transpose(x)
    assert K.int_shape(out) == a.T.shape
    check(out, {x: a}, a.T)


# -- gather ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref_shape", [(5,), (5, 3), (5, 2, 3)])
@pytest.mark.parametrize("indices", [2, [4, 0, -1], [[0, 1], [1, 3], [-5, 4]]])
@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_gather_against_numpy(ref_shape, indices, index_dtype):
    a = np.arange(int(np.prod(ref_shape)), dtype=np.float32).reshape(ref_shape)
    idx = np.asarray(indices, dtype=index_dtype)
    ref = K.placeholder((None,) + ref_shape[1:])
    i = K.placeholder(idx.shape, dtype=index_dtype)
    out = K.gather(ref, i)
    assert K.int_shape(out) == idx.shape + ref_shape[1:]
    check([out, K.gather(ref, indices)], {ref: a, i: idx}, [a[idx], a[idx]])


def test_gather_errors():
    ref = K.placeholder((5, 3))
    with pytest.raises(TypeError, match="K.gather: indices must be an integer tensor"):
        K.gather(ref, K.placeholder((2,)))
    with pytest.raises(ValueError, match=r"K.gather: indices must lie in \[-5, 5\)"):
        K.gather(ref, [0, 5])
    with pytest.raises(ValueError, match="K.gather: reference must have rank >= 1"):
        K.gather(K.placeholder(()), [0])


# -- errors naming the K function -----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REDUCTIONS) + ["argmax", "argmin", "cumsum", "cumprod"])
def test_axis_out_of_range_names_the_k_function(name):
    x = K.placeholder((2, 3))
    for bad in (2, -3, [0, 5]):
        if name in ("argmax", "argmin", "cumsum", "cumprod") and isinstance(bad, list):
            bad = 7
        with pytest.raises(ValueError, match=f"K.{name}: axis .* out of range"):
            getattr(K, name)(x, bad)
    with pytest.raises(TypeError, match=f"K.{name}: axis must be an int"):
        getattr(K, name)(x, 1.5)


def test_scalar_axis_errors():
    with pytest.raises(ValueError, match="K.sum"):
        K.sum(K.placeholder(()), axis=0)
    with pytest.raises(ValueError, match="K.argmax"):
        K.argmax(K.placeholder(()))


# -- gradients ------------------------------------------------------------------------------------
def _data(shape, seed, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def _dynamic(x):
    """``x`` with every static dim forgotten, to differentiate the unknown-shape lowerings."""
    return sh.reshape_dynamic(x, sh.shape_of(x), static=None)


@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), (-1, True), ([0, 2], False), ((0, 1), True)])
def test_reduction_gradients(axis, keepdims):
    a = _data((2, 3, 4), 1)
    for name in ("sum", "mean", "var", "std", "logsumexp", "max", "min", "prod"):
        check_grad(lambda x, name=name: getattr(K, name)(x, axis=axis, keepdims=keepdims), [a])


@pytest.mark.parametrize("fn", [K.max, K.min])
def test_max_min_gradients_split_two_way_ties(fn):
    a = np.array([[1.0, 3.0, 3.0], [-2.0, 0.5, -2.0], [4.0, 4.0, 4.5]])
    got = check_grad(lambda x: fn(x, axis=1), [a])[0]
    assert np.count_nonzero(got) >= 3


def test_prod_gradient_is_exact_with_zeros():
    a = np.array([[0.0, 2.0, 3.0, -1.5], [0.0, 0.0, 2.0, 1.0], [1.5, -2.0, 0.5, 3.0], [2.0, 0.0, 0.0, 0.0]])
    for axis in (None, 0, 1, -1):
        got = check_grad(lambda x, axis=axis: K.prod(x, axis=axis), [a])[0]
        assert np.all(np.isfinite(got))
    got = check_grad(lambda x: K.prod(x, axis=1, keepdims=True), [a])[0]
    assert got[0, 0] != 0 and np.all(got[0, 1:] == 0) and np.all(got[1] == 0)


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scan_gradients_with_zeros(dynamic, axis):
    a = _data((4, 5), 2)
    a[0, 1] = a[1, 1] = a[1, 3] = a[2, 4] = a[3, 0] = a[3, 2] = 0.0
    wrap = _dynamic if dynamic else (lambda x: x)
    got = check_grad(lambda x: K.cumprod(wrap(x), axis=axis), [a])[0]
    assert np.all(np.isfinite(got))
    check_grad(lambda x: K.cumsum(wrap(x), axis=axis), [a])
    check_grad(lambda x: K.cumprod(wrap(x), axis=axis), [_data((3, 4), 3, 0.5, 2.0)])


@pytest.mark.parametrize("sx,sy", [((2, 3), (3, 4)), ((2, 3, 4), (4, 2)), ((3,), (3, 2)), ((2, 3), (3,)),
                                   ((2, 3), (2, 3, 2)), ((2, 1, 3), (2, 2, 3, 2))])
def test_dot_gradients(sx, sy):
    check_grad(K.dot, [_data(sx, 4), _data(sy, 5)])


@pytest.mark.parametrize("sx,sy,axes", [(c[0], c[1], c[2]) for c in BATCH_DOT_CASES[::2]])
def test_batch_dot_gradients(sx, sy, axes):
    check_grad(lambda x, y: K.batch_dot(x, y, axes=axes), [_data(sx, 6), _data(sy, 7)])


def test_transpose_and_dynamic_dot_gradients():
    check_grad(K.transpose, [_data((2, 3, 4), 8)])
    check_grad(lambda x, y: K.dot(_dynamic(x), _dynamic(y)), [_data((2, 3), 9), _data((2, 3, 2), 10)])
    check_grad(lambda x, y: K.batch_dot(_dynamic(x), _dynamic(y), axes=(1, 2)),
               [_data((2, 3, 2, 2), 11), _data((2, 2, 3), 12)])


@pytest.mark.parametrize("indices", [1, [3, 0, 3, -1], [[0, 0], [2, -4]]])
def test_gather_gradient_scatter_adds(indices):
    a = _data((4, 3), 13)
    got = check_grad(lambda r: K.gather(r, K.constant(indices, dtype="int32")), [a])[0]
    rows = np.asarray(indices).reshape(-1) % 4
    assert np.all(got[np.setdiff1d(np.arange(4), rows)] == 0)


# -- other opsets ---------------------------------------------------------------------------------
def _cumprod_grad_brute_force(a, w):
    """d/da[r, j] of sum(w * cumprod(a, axis=1)): products of the other entries, term by term."""
    grad = np.zeros_like(a)
    for r in range(a.shape[0]):
        for j in range(a.shape[1]):
            grad[r, j] = sum(w[r, i] * np.prod(np.delete(a[r, :i + 1], j)) for i in range(j, a.shape[1]))
    return grad


@pytest.mark.parametrize("opset", [17, 21])
def test_new_lowerings_at_other_opsets(opset):
    """The scans, gather and its gradient, and the axis-taking reductions on opsets 17 and 21
    (their ONNX signatures change at 18), on ORT and onnx.reference."""
    a = _data((3, 4), 14).astype(np.float32)
    a[1, 2] = 0.0
    w = _data((3, 4), 15).astype(np.float32)
    x, xd = K.placeholder((3, 4)), K.placeholder((None, None))
    idx = [2, 0, 2]
    outs = [K.cumsum(x, axis=1), K.cumprod(x, axis=0), K.cumprod(xd, axis=1), K.max(x, axis=1),
            K.logsumexp(x, axis=0, keepdims=True), K.prod(x, axis=[0]), K.argmin(x, 0), K.gather(x, idx),
            K.gradients(K.sum(K.gather(x, idx) * w), [x])[0],
            K.gradients(K.sum(K.cumprod(xd, axis=1) * w), [xd])[0],
            K.gradients(K.sum(K.prod(x, axis=1)), [x])[0]]
    fn = Function([x, xd], outs, opset=opset)
    got = fn([a, a])
    model = _checked(fn.to_onnx())
    ref = ReferenceEvaluator(model).run(None, {i.name: a for i in model.graph.input})
    gather_grad = np.zeros_like(a)
    np.add.at(gather_grad, idx, w)
    prod_grad = np.array([[np.prod(np.delete(row, j)) for j in range(4)] for row in a])
    expected = [np.cumsum(a, 1), np.cumprod(a, 0), np.cumprod(a, 1), a.max(1),
                np.log(np.exp(a.astype(np.float64)).sum(0, keepdims=True)), a.prod(0), a.argmin(0), a[idx],
                gather_grad, _cumprod_grad_brute_force(a, w), prod_grad]
    for i, (g, r, e) in enumerate(zip(got, ref, expected)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=f"output {i} on onnxruntime")
        np.testing.assert_allclose(r, e, rtol=1e-5, atol=1e-6, err_msg=f"output {i} on onnx.reference")


def _checked(model):
    onnx.checker.check_model(model, full_check=True)
    return model
