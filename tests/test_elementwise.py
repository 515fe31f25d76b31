"""Elementwise K functions against numpy, on ONNX Runtime and onnx.reference; gradients against
finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kgraph.backend as K
from kcheck import check, check_grad, check_typed

FAST = settings(max_examples=8, deadline=None)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
seeds = st.integers(0, 2 ** 32 - 1)


def _values(shape, dtype, seed, low=-3.0, high=3.0):
    rng = np.random.default_rng(seed)
    if dtype == "int32":
        return rng.integers(int(low), int(high) + 1, size=shape).astype(np.int32)
    # rounded to quarters: exact in every float dtype, and ties/zeros/halves do occur
    return (np.round(rng.uniform(low, high, size=shape) * 4) / 4).astype(dtype)


def _placeholder(shape, dtype, dynamic):
    # dynamic: leading dim unknown, so lowerings that read run-time shapes are exercised too
    static = tuple(None if dynamic and i == 0 else d for i, d in enumerate(shape))
    return K.placeholder(static, dtype=dtype)


# -- unary --------------------------------------------------------------------------------------
def _float_of(a):
    # integer inputs of float-only functions are computed in floatx, as K.exp(int tensor) is
    return a if a.dtype.kind == "f" else a.astype(K.floatx())


UNARY = {
    # name: (numpy reference, dtypes, value range)
    "square": (lambda a: a * a, ("float32", "float64", "int32"), (-3, 3)),
    "abs": (np.abs, ("float32", "float64", "int32"), (-3, 3)),
    "sign": (np.sign, ("float32", "float64", "int32"), (-3, 3)),
    "sqrt": (lambda a: np.sqrt(np.maximum(_float_of(a), _float_of(a).dtype.type(0))), ("float32", "float64", "int32"), (-3, 9)),
    "exp": (lambda a: np.exp(_float_of(a)), ("float32", "float64", "int32"), (-5, 5)),
    "log": (lambda a: np.log(_float_of(a)), ("float32", "float64", "int32"), (1, 20)),
    "round": (lambda a: np.round(a), ("float32", "float64", "int32"), (-4, 4)),
    "sin": (lambda a: np.sin(_float_of(a)), ("float32", "float64", "int32"), (-4, 4)),
    "cos": (lambda a: np.cos(_float_of(a)), ("float32", "float64", "int32"), (-4, 4)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@FAST
@given(shape=shapes, seed=seeds, dtype_index=st.integers(0, 2), dynamic=st.booleans())
def test_unary_against_numpy(name, shape, seed, dtype_index, dynamic):
    reference, dtypes_, (low, high) = UNARY[name]
    dtype = dtypes_[dtype_index % len(dtypes_)]
    a = _values(shape, dtype, seed, low, high)
    if name == "log":
        a = np.where(a == 0, 1, a).astype(dtype)
    x = _placeholder(shape, dtype, dynamic and len(shape) > 0)
    check_typed(getattr(K, name)(x), {x: a}, reference(a), rtol=2e-6 if dtype == "float32" else 1e-12)


def test_round_is_half_to_even_like_tf():
    a = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, 3.7], np.float32)
    x = K.placeholder((8,))
    check(K.round(x), {x: a}, np.array([-2, -2, -0, 0, 2, 2, 0, 4], np.float32))


def test_sqrt_clips_negatives_to_zero():
    a = np.array([-4.0, -0.0, 0.0, 2.25, np.inf], np.float32)
    x = K.placeholder((5,))
    check(K.sqrt(x), {x: a}, np.array([0, 0, 0, 1.5, np.inf], np.float32))


def test_unary_accept_python_and_numpy_values():
    check([K.exp(1.0), K.abs(np.array([-2, 3], np.int32)), K.square(3), K.cos(0)], {},
          [np.float32(np.e), np.array([2, 3], np.int32), np.int32(9), np.float32(1)])


# -- binary, broadcasting -----------------------------------------------------------------------
COMPARISONS = {
    "equal": np.equal, "not_equal": np.not_equal, "greater": np.greater,
    "greater_equal": np.greater_equal, "less": np.less, "less_equal": np.less_equal,
}
BINARY = dict(COMPARISONS, maximum=np.maximum, minimum=np.minimum)


@pytest.mark.parametrize("name", sorted(BINARY))
@FAST
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=seeds, dtype=st.sampled_from(["float32", "float64", "int32"]), dynamic=st.booleans())
def test_binary_broadcasting_against_numpy(name, shapes, seed, dtype, dynamic):
    (sx, sy), _ = shapes
    # few distinct values, so equal elements (ties) are common
    a, b = _values(sx, dtype, seed, -2, 2), _values(sy, dtype, seed + 1, -2, 2)
    x, y = _placeholder(sx, dtype, dynamic and len(sx) > 0), _placeholder(sy, dtype, False)
    check_typed(getattr(K, name)(x, y), {x: a, y: b}, BINARY[name](a, b))


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_with_python_scalars_take_the_tensor_dtype(name):
    a = np.array([[-1.5, 0.0, 2.0]], np.float64)
    x = K.placeholder((None, 3), dtype="float64")
    fn = getattr(K, name)
    check_typed(fn(x, 2.0), {x: a}, BINARY[name](a, np.float64(2.0)))
    check_typed(fn(0, x), {x: a}, BINARY[name](np.float64(0), a))
    i = K.placeholder((3,), dtype="int32")
    c = np.array([-1, 0, 4], np.int32)
    check_typed(fn(i, 0), {i: c}, BINARY[name](c, np.int32(0)))


def test_comparisons_with_nan():
    a = np.array([np.nan, 1.0, np.nan], np.float32)
    b = np.array([np.nan, np.nan, 1.0], np.float32)
    x, y = K.placeholder((3,)), K.placeholder((3,))
    outs = [getattr(K, n)(x, y) for n in sorted(COMPARISONS)]
    check(outs, {x: a, y: b}, [COMPARISONS[n](a, b) for n in sorted(COMPARISONS)])


def test_mixed_dtypes_promote_as_numpy():
    x = K.placeholder((3,), dtype="int32")
    y = K.placeholder((3,), dtype="float64")
    a, b = np.array([1, 2, 3], np.int32), np.array([1.5, 2.0, 2.5])
    check_typed(K.maximum(x, y), {x: a, y: b}, np.maximum(a, b))
    check_typed(K.less(x, y), {x: a, y: b}, a < b)


@FAST
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=seeds, dtype=st.sampled_from(["float32", "float64"]))
def test_pow_broadcasting_floats(shapes, seed, dtype):
    (sx, sy), _ = shapes
    a = _values(sx, dtype, seed, 0.25, 3)
    b = _values(sy, dtype, seed + 1, -2, 2)
    x, y = K.placeholder(sx, dtype=dtype), K.placeholder(sy, dtype=dtype)
    check_typed(K.pow(x, y), {x: a, y: b}, np.power(a, b), rtol=2e-6 if dtype == "float32" else 1e-12)


def test_pow_scalar_exponents_and_integers():
    a = np.array([[-2.0, 0.0, 1.5]], np.float32)
    x = K.placeholder((None, 3))
    check([K.pow(x, 2), K.pow(x, 3.0), K.pow(x, 0), K.pow(2.0, x)], {x: a},
          [a ** 2, a ** 3, np.ones_like(a), np.float32(2) ** a])
    i = K.placeholder((4,), dtype="int32")
    c = np.array([-3, 0, 2, 5], np.int32)
    check_typed(K.pow(i, 3), {i: c}, c ** 3)
    # a fractional exponent is not truncated to the integer dtype: the base goes to floatx
    check_typed(K.pow(i, 0.5), {i: np.abs(c)}, np.sqrt(np.abs(c).astype(np.float32)))


def test_pow_negative_base_fractional_exponent_is_nan():
    x = K.placeholder((2,))
    check(K.pow(x, 0.5), {x: np.array([-4.0, 4.0], np.float32)}, np.array([np.nan, 2.0], np.float32))


# -- clip ---------------------------------------------------------------------------------------
@FAST
@given(shape=shapes, seed=seeds, dtype=st.sampled_from(["float32", "float64", "int32"]),
       lo=st.one_of(st.none(), st.integers(-3, 3)), hi=st.one_of(st.none(), st.integers(-3, 3)))
def test_clip_against_numpy(shape, seed, dtype, lo, hi):
    a = _values(shape, dtype, seed, -4, 4)
    x = K.placeholder(shape, dtype=dtype)
    if lo is not None and hi is not None and hi < lo:
        expected = np.full_like(a, lo)  # Keras: an empty interval clips everything to min_value
    else:
        expected = np.clip(a, -np.inf if lo is None else lo, np.inf if hi is None else hi).astype(dtype)
    check_typed(K.clip(x, lo, hi), {x: a}, expected)


def test_clip_with_tensor_and_array_bounds():
    a = np.array([[-3.0, 0.5, 3.0], [1.0, -1.0, 2.5]], np.float32)
    x = K.placeholder((None, 3))
    lo_arr = np.array([-1.0, 0.0, 1.0], np.float32)
    check([K.clip(x, K.constant(-1.0), K.constant(2.0)), K.clip(x, lo_arr, 2.0),
           K.clip(x, 0.0, K.variable(1.0))], {x: a},
          [np.clip(a, -1, 2), np.clip(a, lo_arr, 2), np.clip(a, 0, 1)])


def test_clip_integer_none_bounds_use_the_dtype_range():
    for dtype in ("uint8", "int64"):
        a = np.array([0, 7, 200], dtype)
        x = K.placeholder((3,), dtype=dtype)
        check_typed(K.clip(x, None, 7), {x: a}, np.minimum(a, 7))
        check_typed(K.clip(x, 7, None), {x: a}, np.maximum(a, 7))


# -- errors -------------------------------------------------------------------------------------
def test_errors_name_the_k_function():
    x, y = K.placeholder((2, 3)), K.placeholder((4,))
    for name in ("maximum", "minimum", "equal", "not_equal", "greater", "less", "pow"):
        with pytest.raises(ValueError, match=f"K.{name}: .*cannot be broadcast"):
            getattr(K, name)(x, y)
    with pytest.raises(TypeError, match="K.exp"):
        K.exp(object())


# -- gradients ----------------------------------------------------------------------------------
def _grad_data(shape, seed, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_unary_gradients(shape):
    a = _grad_data(shape, 1)
    # keep away from the kinks and singularities, where finite differences are meaningless
    away_from_zero = np.where(np.abs(a) < 0.2, 0.7, a)
    positive = np.abs(away_from_zero)
    check_grad(K.square, [a])
    check_grad(K.abs, [away_from_zero])
    check_grad(K.sqrt, [positive])
    check_grad(K.exp, [a])
    check_grad(K.log, [positive])
    check_grad(K.sin, [a])
    check_grad(K.cos, [a])


def test_sqrt_gradient_is_zero_for_negative_inputs():
    a = np.array([-2.0, -0.5, 0.5, 3.0])
    got = check_grad(K.sqrt, [a])[0]
    assert np.all(got[:2] == 0) and np.all(np.isfinite(got))


@pytest.mark.parametrize("sx,sy", [((3,), (3,)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((), (2, 2))])
def test_pow_gradient_both_operands_with_broadcasting(sx, sy):
    base = _grad_data(sx, 2, 0.5, 2.0)
    exponent = _grad_data(sy, 3, -1.5, 2.5)
    check_grad(K.pow, [base, exponent])
    check_grad(lambda x: K.pow(x, 3), [_grad_data(sx, 4)])  # negative bases, integer exponent


@pytest.mark.parametrize("fn", [K.maximum, K.minimum])
@pytest.mark.parametrize("sx,sy", [((4,), (4,)), ((2, 3), (3,)), ((3, 1), (1, 2))])
def test_maximum_minimum_gradients(fn, sx, sy):
    check_grad(fn, [_grad_data(sx, 5), _grad_data(sy, 6)])


@pytest.mark.parametrize("fn", [K.maximum, K.minimum])
def test_maximum_minimum_gradient_splits_ties(fn):
    # at a tie the central difference sees half of each side: the gradient is split evenly
    a = np.array([1.0, -0.5, 2.0, 0.25])
    b = np.array([1.0, -0.5, -1.0, 3.0])
    got = check_grad(fn, [a, b])
    tie = a == b
    assert np.allclose(np.abs(got[0][tie]), np.abs(got[1][tie])) and np.all(got[0][tie] != 0)
    check_grad(lambda x: fn(x, x), [a])  # both sides are the same input: full gradient
    check_grad(lambda x: fn(x, 1.0), [a])  # a tie against a constant


@pytest.mark.parametrize("shape", [(5,), (2, 3)])
def test_clip_gradient(shape):
    a = _grad_data(shape, 7, -3, 3)
    a = np.where(np.abs(np.abs(a) - 1) < 0.1, 0.3, a)  # off the boundaries, where it has a kink
    got = check_grad(lambda x: K.clip(x, -1.0, 1.0), [a])[0]
    assert np.all(got[np.abs(a) > 1] == 0)
    check_grad(lambda x, lo: K.clip(x, lo, 2.5), [a, np.full(shape, -0.5) + 0.05 * np.arange(shape[-1])])
