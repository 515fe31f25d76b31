"""Python operators and indexing on tensors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kgraph.backend as K
from kcheck import check, check_grad


@pytest.fixture
def xy():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 2, (3, 4)).astype("float32")
    b = rng.uniform(0.5, 2, (4,)).astype("float32")
    return K.placeholder((None, 4)), K.placeholder((4,)), a, b


def test_arithmetic_operators(xy):
    x, y, a, b = xy
    outs = [x + y, x - y, x * y, x / y, x ** 2, -x, +x, abs(-x), 2 - x, 1 / x, 2 ** x, x // y, x % y,
            3.0 * x, x @ K.transpose(x)]
    expected = [a + b, a - b, a * b, a / b, a ** 2, -a, a, a, 2 - a, 1 / a, 2 ** a, a // b, a % b, 3 * a,
                a @ a.T]
    check(outs, {x: a, y: b}, expected, rtol=1e-5)


def test_comparisons_return_bool_tensors(xy):
    x, y, a, b = xy
    check([x < y, x <= y, x > y, x >= y], {x: a, y: b}, [a < b, a <= b, a > b, a >= b])


def test_equality_is_identity_as_in_tf1():
    x = K.placeholder((2,))
    assert (x == x) is True and (x != K.placeholder((2,))) is True
    assert x in [x] and len({x, x}) == 1
    with pytest.raises(TypeError, match="truth value"):
        bool(x > 1)


def test_numpy_on_the_left_defers_to_the_tensor(xy):
    x, _, a, _ = xy
    check([np.float32(2) * x, np.ones(4, "float32") + x], {x: a}, [2 * a, a + 1])


def test_integer_operators():
    i = K.placeholder((5,), dtype="int32")
    j = K.placeholder((5,), dtype="int32")
    a = np.array([7, -7, 7, -7, 0], np.int32)
    b = np.array([2, 2, -2, -2, 3], np.int32)
    check([i // j, i % j, i + j, i * 2, i / j], {i: a, j: b}, [a // b, a % b, a + b, a * 2, a / b])
    k = K.placeholder((3,), dtype="bool")
    m = K.placeholder((3,), dtype="bool")
    p, q = np.array([True, False, True]), np.array([True, True, False])
    check([k & m, k | m, k ^ m, ~k], {k: p, m: q}, [p & q, p | q, p ^ q, ~p])


INDEXES = [
    (1,), (-1,), (slice(None, None, -1),), (slice(1, None),), (slice(None), 2), (Ellipsis, 1),
    (None, 0), (0, None, slice(None, None, 2)), (slice(-2, None), Ellipsis, slice(3, 0, -1)),
    (slice(None, None, -2), -3), (Ellipsis,), (1, 2, 3),
]


@pytest.mark.parametrize("key", INDEXES, ids=str)
def test_getitem_matches_numpy(key):
    a = np.arange(3 * 4 * 5, dtype="float32").reshape(3, 4, 5)
    x = K.placeholder((None, 4, 5))
    check(x[key], {x: a}, a[key])


@settings(max_examples=25, deadline=None)
@given(st.integers(-6, 6), st.integers(-6, 6), st.sampled_from([1, 2, -1, -2, 3]))
def test_getitem_slices_property(start, stop, step):
    a = np.arange(5, dtype="float32")
    x = K.placeholder((5,))
    check(x[start:stop:step], {x: a}, a[start:stop:step], reference=False)


def test_getitem_errors():
    x = K.placeholder((2, 3))
    with pytest.raises(IndexError, match="too many"):
        x[0, 0, 0]
    with pytest.raises(IndexError, match="out of bounds"):
        x[5]
    with pytest.raises(TypeError, match="K.gather"):  # a scalar index tensor works (test_keras_semantics)
        x[K.placeholder((2,), dtype="int32")]


def test_operator_gradients():
    check_grad(lambda p, q: p * q - p / q + p ** 2.0 + (-q), [np.random.rand(3, 4) + 0.5, np.random.rand(4) + 0.5])
    check_grad(lambda p: p[::-1, 1:3] * 2.0 + p[1, None, 1:3], [np.random.rand(3, 4)])
    check_grad(lambda p, q: p ** q, [np.random.rand(3) + 0.5, np.random.rand(3)])
    check_grad(lambda p: p % 0.3, [np.array([0.1, 0.5, 0.8, 1.45])])
