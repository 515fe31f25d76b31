"""Gaps found by an audit of the other test files: K functions that no test ran through both
engines against numpy, vjp rules that no finite-difference check reached (mostly the rules of
gradient primitives, reached only by second- and third-order derivatives), and the
Keras-facing details of the API contract (``_keras_shape``, ``_uses_learning_phase``,
``K.int_shape`` of op results, Keras' update forms, zero gradients, ``.eval()``)."""

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph.deploy
import kgraph.backend as K
from kcheck import check, check_grad, evaluate
from kgraph.ops import shape as sh


def with_cotangent(f, wrt):
    """``(*args, w) -> d<f(*args), w>/d args[wrt]``: a gradient as a function of the inputs *and*
    of the cotangent ``w``, so that ``check_grad`` also differentiates with respect to ``w`` —
    the path that reaches the vjp rules of gradient primitives (``max_pool_grad`` etc.)."""
    def gradient(*phs):
        *args, w = phs
        return K.gradients(K.sum(f(*args) * w), [args[wrt]])[0]
    return gradient


# -- configuration and tensors: direct assertions the other files leave out ------------------------
def test_cast_to_floatx_values_and_dtype():
    got = K.cast_to_floatx([[1, 2], [3, 4]])
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([[1, 2], [3, 4]], np.float32))
    K.set_floatx("float16")
    half = K.cast_to_floatx(np.array([0.1, 2.5]))
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, np.array([0.1, 2.5]).astype(np.float16))


def test_manual_variable_initialization_leaves_variables_usable():
    # kgraph variables hold their values from creation, so either setting must keep them readable
    for value in (True, False):
        K.manual_variable_initialization(value)
        v = K.variable([1.0, 2.0])
        np.testing.assert_array_equal(K.get_value(v), [1, 2])
        x = K.placeholder((2,))
        check(x * v, {x: np.array([3, 4], "float32")}, np.array([3, 8], "float32"))


def test_type_predicates_on_non_tensors():
    a = np.zeros(2)
    assert not K.is_tensor(a) and not K.is_variable(a) and not K.is_placeholder(a) and not K.is_sparse(a)
    assert K.is_tensor(K.constant(1.0)) and not K.is_placeholder(K.constant(1.0))
    assert K.is_tensor(K.variable(1.0) + 1) and not K.is_variable(K.variable(1.0) + 1)


def test_zeros_ones_eye_inside_graphs():
    x = K.placeholder((2, 3))
    a = np.arange(6, dtype="float32").reshape(2, 3)
    check([x + K.zeros((2, 3)), x * K.ones((3,)), K.dot(x, K.eye(3)), K.dot(x, K.eye((3, 2)))],
          {x: a}, [a, a, a, a @ np.eye(3, 2, dtype="float32")])
    i = K.placeholder((2,), dtype="int32")
    check([i + K.ones((2,), dtype="int32"), i * K.zeros((2,), dtype="int32")],
          {i: np.array([4, -5], "int32")}, [np.array([5, -4], "int32"), np.zeros(2, "int32")])
    assert K.eye(2, dtype="float64").dtype == "float64"


def test_identity_and_size_on_both_engines():
    x = K.placeholder((None, 3))
    a = np.arange(6, dtype="float32").reshape(2, 3)
    check([K.identity(x), K.size(x), K.size(K.expand_dims(x, 0))], {x: a},
          [a, np.array(6, "int32"), np.array(6, "int32")])


def test_cast_between_dtypes_on_both_engines():
    x = K.placeholder((5,))
    a = np.array([-1.7, -0.2, 0.0, 0.6, 2.5], "float32")
    b = K.placeholder((3,), dtype="bool")
    i = K.placeholder((2,), dtype="int64")
    check([K.cast(x, "int32"), K.cast(x, "bool"), K.cast(x, "float16"), K.cast(b, "float32"),
           K.cast(i, "float64"), K.cast(i, "int32"), K.cast(x, np.float64)],
          {x: a, b: np.array([True, False, True]), i: np.array([2 ** 40, -3])},
          [a.astype("int32"), a != 0, a.astype("float16"), np.array([1, 0, 1], "float32"),
           np.array([2.0 ** 40, -3.0]), np.array([2 ** 40, -3]).astype("int32"), a.astype("float64")])


# -- stop_gradient and in_test_phase: no test ran them through both engines ------------------------
def test_stop_gradient_forward_and_zero_gradient():
    x = K.placeholder((2, 3), dtype="float64")
    a = np.linspace(-1, 1, 6).reshape(2, 3)
    check(K.stop_gradient(x * 2), {x: a}, a * 2)
    # d/dx sum(stop(x) * x) = stop(x): the stopped factor is a constant
    check(K.gradients(K.sum(K.stop_gradient(x) * x), [x]), {x: a}, [a])
    # the list form stops each tensor
    y = K.placeholder((3,), dtype="float64")
    sx, sy = K.stop_gradient([x, y])
    b = np.array([0.5, -1.0, 2.0])
    check(K.gradients(K.sum(sx * sy + x), [x, y]), {x: a, y: b}, [np.ones((2, 3)), np.zeros(3)])


def test_in_test_phase_on_both_engines():
    lp = K.learning_phase()
    x = K.placeholder((3,))
    a = np.array([1, 2, 3], "float32")
    y = K.in_test_phase(x * 2, x * 3)
    assert y._uses_learning_phase
    check(y, {x: a, lp: np.array(True)}, a * 3)
    check(y, {x: a, lp: np.array(False)}, a * 2)
    t = K.placeholder((), dtype="bool")
    z = K.in_test_phase(lambda: x - 1, lambda: x + 1, training=t)
    check(z, {x: a, t: np.array(True)}, a + 1)
    check(z, {x: a, t: np.array(False)}, a - 1)
    check(K.in_test_phase(x * 2, x * 3, training=0), {x: a}, a * 2)


# -- random ops against numpy: threefry-2x32 and the documented bits → values maps -----------------
M32 = 0xFFFFFFFF
STREAM = {"uniform": 1, "normal": 2, "truncated_normal": 3}  # kgraph's documented stream numbers


def np_threefry(key, x0, x1):
    """Threefry-2x32, 20 rounds (Random123), on uint64 arrays holding 32-bit words."""
    k0, k1 = key
    ks = [k0, k1, k0 ^ k1 ^ 0x1BD11BDA]
    x0 = (np.asarray(x0, np.uint64) + np.uint64(ks[0])) & np.uint64(M32)
    x1 = (np.asarray(x1, np.uint64) + np.uint64(ks[1])) & np.uint64(M32)
    rotations = [13, 15, 26, 6, 17, 29, 16, 24]
    for i in range(20):
        r = np.uint64(rotations[i % 8])
        x0 = (x0 + x1) & np.uint64(M32)
        x1 = (((x1 << r) | (x1 >> (np.uint64(32) - r))) & np.uint64(M32)) ^ x0
        if i % 4 == 3:
            j = i // 4 + 1
            x0 = (x0 + np.uint64(ks[j % 3])) & np.uint64(M32)
            x1 = (x1 + np.uint64(ks[(j + 1) % 3] + j)) & np.uint64(M32)
    return x0, x1


def np_words(seed, stream, lanes, counter):
    """Lane i of a call: threefry(key, (i, counter)); the key: threefry(seed words, (stream, 0))."""
    k0, k1 = np_threefry((seed & M32, seed >> 32), STREAM[stream], 0)
    return np_threefry((int(k0), int(k1)), np.arange(lanes), np.full(lanes, counter))


def np_uniform(seed, n, counter, dtype="float32"):
    if dtype == "float64":  # 53 bits: (hi >> 5) * 2**26 + (lo >> 6)
        hi, lo = np_words(seed, "uniform", n, counter)
        return ((hi >> np.uint64(5)).astype(np.float64) * 2.0 ** 26 + (lo >> np.uint64(6))) * 2.0 ** -53
    y0, y1 = np_words(seed, "uniform", -(-n // 2), counter)
    bits = np.concatenate([y0, y1])[:n] >> np.uint64(8)  # 24 bits
    return bits.astype(np.float32) * np.float32(2.0 ** -24)


def np_box_muller(y0, y1):
    """radius from u = (a + 1) / 2**32; angle psi from b's low 30 bits, signs from its top two."""
    u = (y0.astype(np.float64) + 1) / 2.0 ** 32
    radius = np.sqrt(-2 * np.log(u))
    psi = ((y1 * np.uint64(4)) & np.uint64(M32)).astype(np.float64) * (np.pi / 2.0 ** 33)
    z0 = np.where(y1 >= 2 ** 31, -1, 1) * radius * np.cos(psi)
    z1 = np.where(((y1 * np.uint64(2)) & np.uint64(M32)) >= 2 ** 31, -1, 1) * radius * np.sin(psi)
    return np.concatenate([z0, z1])


def np_normal(seed, n, counter):
    return np_box_muller(*np_words(seed, "normal", -(-n // 2), counter))[:n]


def np_truncated_normal(seed, n, counter):
    """Candidates from a pool of n / (1 - p) + 8 sigma + 16 normals (p: P(|z| >= 2)), those with
    |z| < 2 kept in order."""
    p = 0.04550026389635842
    pool = int(np.ceil(n / (1 - p) + np.sqrt(n) * 8 * np.sqrt(p) / (1 - p) + 16))
    z = np_box_muller(*np_words(seed, "truncated_normal", -(-pool // 2), counter))
    return z[np.abs(z) < 2][:n]


def check_random(outputs, expected_at, rtol=1e-6, atol=1e-6):
    """onnxruntime's first call draws with the counters at 0; the exported model freezes them at
    their advanced value 1, which onnx.reference then draws with: both against numpy."""
    fn = K.function([], outputs)
    first = fn([])
    model = fn.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    second = ReferenceEvaluator(model).run(None, {})
    for counter, got in ((0, first), (1, second)):
        for g, e in zip(got, expected_at(counter)):
            assert g.shape == np.shape(e) and g.dtype == np.asarray(e).dtype
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"counter {counter}")


def test_random_uniform_matches_numpy_threefry():
    u = K.random_uniform((3, 5), seed=11)
    r = K.random_uniform((7,), minval=-2.0, maxval=3.0, seed=12)
    d = K.random_uniform((2, 3), dtype="float64", seed=13)
    check_random([u, r, d], lambda c: [
        np_uniform(11, 15, c).reshape(3, 5),
        np_uniform(12, 7, c) * np.float32(5.0) + np.float32(-2.0),
        np_uniform(13, 6, c, "float64").reshape(2, 3)])


def test_random_binomial_matches_numpy_threefry():
    b = K.random_binomial((4, 5), p=0.3, seed=21)
    check_random([b], lambda c: [(np_uniform(21, 20, c) < np.float32(0.3)).astype("float32").reshape(4, 5)])


def test_random_normal_matches_numpy_box_muller():
    z = K.random_normal((3, 3), mean=1.0, stddev=2.0, seed=31)
    z64 = K.random_normal((5,), dtype="float64", seed=32)
    check_random([z, z64], lambda c: [
        (np_normal(31, 9, c) * 2 + 1).astype("float32").reshape(3, 3),
        np_normal(32, 5, c)], rtol=1e-5, atol=1e-5)


def test_truncated_normal_matches_numpy_box_muller():
    z = K.truncated_normal((4, 6), mean=-1.0, stddev=0.5, seed=41)
    check_random([z], lambda c: [(np_truncated_normal(41, 24, c) * 0.5 - 1).astype("float32").reshape(4, 6)],
                 rtol=1e-5, atol=1e-5)


def test_random_variables_shape_dtype_range_and_seed():
    a = K.random_uniform_variable((4, 3), -0.5, 0.5, dtype="float64", seed=5, name="ru")
    assert K.is_variable(a) and a.dtype == "float64" and K.int_shape(a) == (4, 3) and a.name == "ru"
    va = K.get_value(a)
    assert va.min() >= -0.5 and va.max() <= 0.5 and len(np.unique(va)) == va.size
    assert not np.array_equal(va, K.get_value(K.random_uniform_variable((4, 3), -0.5, 0.5, seed=6)))
    n = K.random_normal_variable((3,), 0.0, 1.0, seed=5)
    x = K.placeholder((3,))
    check(x + n, {x: np.ones(3, "float32")}, 1 + K.get_value(n))


# -- vjp rules no finite-difference check reached ------------------------------------------------------
def test_broadcast_to_forward_and_gradient(rng):
    # unused by the backend, but registered as differentiable
    a = rng.standard_normal((3, 1))
    x = K.placeholder((3, 1), dtype="float64")
    check(sh.broadcast_to(x, shape=(2, 3, 4)), {x: a}, np.broadcast_to(a, (2, 3, 4)))
    check_grad(lambda x: sh.broadcast_to(x, shape=(2, 3, 4)), [a])


def test_cast_gradient_between_float_dtypes(rng):
    a = rng.standard_normal((2, 3))
    check_grad(lambda x: K.cast(x, "float64") * x, [a])
    # through float32 and back: the values lose precision, so a wider step and tolerance
    check_grad(lambda x: K.cast(K.cast(x, "float32") * 3, "float64") + x, [a], eps=1e-3, rtol=1e-4, atol=1e-5)


def test_mod_gradient_in_the_divisor():
    x = np.array([[5.3, -2.7, 7.9], [1.2, 3.4, -6.1]])
    y = np.array([2.1, 1.3, -2.4])  # away from the jumps of floor(x / y)
    check_grad(lambda x, y: x % y, [x, y])
    a, b = K.placeholder((2, 3), dtype="float64"), K.placeholder((3,), dtype="float64")
    check(K.gradients(K.sum(a % b), [b]), {a: x, b: y}, [-np.floor(x / y).sum(axis=0)])


def test_print_tensor_gradient_passes_through(capfd):
    check_grad(lambda x: K.print_tensor(x * x, "square"), [np.array([0.5, -1.5])])
    assert "square" in capfd.readouterr().out


def test_second_order_of_reductions_reaches_expand_like(rng):
    """The gradient of a reduction is its cotangent expanded back (``expand_like``); only a
    derivative with respect to that cotangent differentiates ``expand_like`` itself."""
    x = rng.standard_normal((2, 3, 4))
    for f, out_shape in [(lambda x: K.sum(x, axis=1), (2, 4)),
                         (lambda x: K.mean(x, axis=(0, 2), keepdims=True), (1, 3, 1)),
                         (lambda x: K.max(x, axis=-1), (2, 3)),
                         (lambda x: K.sum(x), ())]:
        check_grad(with_cotangent(f, 0), [x, rng.standard_normal(out_shape)])


def test_second_order_of_concatenate_reaches_split_like(rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 2))
    f = with_cotangent(lambda a, b: K.concatenate([a * a, b], axis=-1), 0)
    check_grad(f, [a, b, rng.standard_normal((2, 5))])
    g = with_cotangent(lambda a, b: K.concatenate([a, b * a[:, :2]], axis=1), 1)
    check_grad(g, [a, b, rng.standard_normal((2, 5))])


def test_second_order_of_slicing_reaches_slice_grad(rng):
    x = rng.standard_normal((4, 5))
    check_grad(with_cotangent(lambda x: x[1:3, ::-2] * x[:2, 1:4], 0), [x, rng.standard_normal((2, 3))])


def test_second_order_of_gather_reaches_gather_grad(rng):
    ref = rng.standard_normal((4, 3))
    idx = K.constant(np.array([[2, 0], [2, 3]]), dtype="int32")
    check_grad(with_cotangent(lambda r: K.gather(r, idx) ** 2, 0), [ref, rng.standard_normal((2, 2, 3))])


def test_second_order_of_sparse_categorical_crossentropy_reaches_scatter(rng):
    target = K.constant(np.array([2, 0, 1]), dtype="int32")
    logits = rng.standard_normal((3, 4))
    f = with_cotangent(lambda o: K.sparse_categorical_crossentropy(target, o, from_logits=True), 0)
    check_grad(f, [logits, rng.standard_normal(3)])


def _distinct(rng, shape):
    """Values with no ties (max pooling's argmax is then locally constant)."""
    return rng.permutation(np.prod(shape)).reshape(shape) / 7.0 - 1.0


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_max_pool_second_and_third_order(rng, padding):
    x = _distinct(rng, (1, 4, 5, 2))
    pool = lambda x: K.pool2d(x, (2, 2), strides=(2, 2), padding=padding, pool_mode="max")  # noqa: E731
    out = (1, 2, 3, 2) if padding == "same" else (1, 2, 2, 2)
    first = with_cotangent(pool, 0)            # max_pool_grad(w, x)
    check_grad(first, [x, rng.standard_normal(out)])  # reaches max_pool_grad's vjp: max_pool_select
    second = with_cotangent(first, 1)          # d<max_pool_grad(w, x), u>/dw = max_pool_select(u, x)
    check_grad(second, [x, rng.standard_normal(out), rng.standard_normal(x.shape)])


def test_avg_pool_second_order(rng):
    x = rng.standard_normal((1, 5, 4, 2))
    first = with_cotangent(lambda x: K.pool2d(x, (2, 3), strides=(2, 1), padding="same", pool_mode="avg"), 0)
    check_grad(first, [x, rng.standard_normal((1, 3, 4, 2))])


def test_conv_kernel_gradient_in_its_cotangent(rng):
    x, w = rng.standard_normal((2, 5, 4, 2)), rng.standard_normal((3, 2, 2, 3))
    first = with_cotangent(lambda x, w: K.conv2d(x, w, strides=(2, 1), padding="same"), 1)
    check_grad(first, [x, w, rng.standard_normal((2, 3, 4, 3))])


# -- Keras-facing details of the contract ------------------------------------------------------------
def test_int_shape_of_op_results_is_static_with_none_for_unknown_dims():
    x = K.placeholder((None, 4, 6))
    w = K.variable(np.zeros((6, 5)))
    cases = [
        (K.dot(x, w), (None, 4, 5)), (K.batch_flatten(x), (None, 24)), (K.reshape(x, (-1, 2, 12)), (None, 2, 12)),
        (K.permute_dimensions(x, (2, 0, 1)), (6, None, 4)), (K.concatenate([x, x], axis=1), (None, 8, 6)),
        (K.expand_dims(x, 1), (None, 1, 4, 6)), (K.sum(x, axis=-1), (None, 4)),
        (K.mean(x, 1, keepdims=True), (None, 1, 6)),
        (K.softmax(x), (None, 4, 6)), (K.argmax(x), (None, 4)), (x[:, 1:3], (None, 2, 6)),
        (K.pool2d(K.expand_dims(x), (2, 2), strides=(2, 2)), (None, 2, 3, 1)),
        (K.one_hot(K.cast(x[:, :, 0], "int32"), 3), (None, 4, 3)), (K.repeat_elements(x, 2, axis=1), (None, 8, 6)),
        (K.tile(x, (1, 2, 1)), (None, 8, 6)), (K.stack([x, x], axis=1), (None, 2, 4, 6)), (K.flatten(w), (30,)),
        (K.shape(x), (3,)), (K.gather(w, K.placeholder((None,), dtype="int32")), (None, 5)),
        (K.batch_dot(x, K.placeholder((None, 6, 2))), (None, 4, 2)),
        (K.rnn(lambda i, s: (i * 2, s), x, [K.placeholder((None, 6))])[1], (None, 4, 6)),
        (K.conv2d(K.placeholder((None, None, None, 3)), K.variable(np.zeros((3, 3, 3, 4))), padding="same"),
         (None, None, None, 4)),
    ]
    for t, expected in cases:
        assert K.int_shape(t) == expected, (t, expected)
        assert K.ndim(t) == len(expected)
    # Keras' Layer.__call__ stamps its own shape on outputs; int_shape must then return it
    y = K.dot(x, w)
    y._keras_shape = (None, 4, 5)
    y._uses_learning_phase = False
    y._keras_history = ("dense", 0, 0)
    assert K.int_shape(y) == (None, 4, 5) and K.is_keras_tensor(y)


def test_keras_attributes_on_sources_and_learning_phase_results():
    for t in (K.placeholder((None, 2)), K.variable(np.zeros((2, 2))), K.constant(1.0, shape=(3,))):
        assert t._keras_shape == t.shape and t._uses_learning_phase is False
    x = K.placeholder((2,))
    assert K.in_train_phase(x * 2, x)._uses_learning_phase is True
    # an explicit training tensor is not the learning phase: Keras reads the attribute with a default
    t = K.placeholder((), dtype="bool")
    assert getattr(K.in_train_phase(x * 2, x, training=t), "_uses_learning_phase", False) is False

    def step(inputs, states):
        out = K.in_train_phase(inputs * 2, inputs) + states[0]
        return out, [out]
    seq = K.placeholder((None, 3, 2))
    last, outputs, states = K.rnn(step, seq, [K.zeros_like(seq[:, 0])])
    assert getattr(last, "_uses_learning_phase", False) is True


def test_function_accepts_keras_update_forms():
    """What Keras 2.3.1's optimizers, BatchNormalization and stateful metrics pass."""
    x = K.placeholder((None, 2), name="x")
    w = K.variable(np.array([1.0, -1.0]), name="w")
    iterations = K.variable(0, dtype="int64", name="iterations")
    moving_mean = K.variable(np.zeros(2), name="moving_mean")
    total = K.variable(10.0, name="total")
    loss = K.sum(K.square(K.sum(x * w, axis=1)))
    (grad,) = K.gradients(loss, [w])
    lr = 0.1
    updates = [K.update_add(iterations, 1),                            # Optimizer.iterations
               K.update(w, w - lr * grad),                              # SGD
               K.moving_average_update(moving_mean, K.mean(x, axis=0), 0.9),
               (total, total - K.sum(x))]                               # a (variable, value) pair
    f = K.function([x], [loss], updates=tuple(updates), name="train_function")
    a = np.array([[1.0, 2.0], [3.0, -1.0]], "float32")
    w0 = np.array([1.0, -1.0])
    # the training-step export on onnx.reference: one step from the current values
    model = f.to_onnx(training=True)
    onnx.checker.check_model(model, full_check=True)
    names = [o.name for o in model.graph.output]
    start = kgraph.deploy.initial_state(model)  # the variables' values at export
    ref = dict(zip(names, ReferenceEvaluator(model).run(None, {"x": a, **start})))
    s0 = a @ w0
    np.testing.assert_allclose(ref[names[0]], np.sum(s0 ** 2), rtol=1e-6)
    np.testing.assert_allclose(ref["w:new"], w0 - lr * 2 * (a.T @ s0), rtol=1e-6)
    assert ref["iterations:new"] == 1 and ref["iterations:new"].dtype == np.int64
    np.testing.assert_allclose(ref["moving_mean:new"], 0.1 * a.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ref["total:new"], 10.0 - a.sum(), rtol=1e-6)
    for step in range(1, 3):
        s = a @ w0
        (got,) = f([a])
        np.testing.assert_allclose(got, np.sum(s ** 2), rtol=1e-6)
        w0 = w0 - lr * 2 * (a.T @ s)
        np.testing.assert_allclose(K.get_value(w), w0, rtol=1e-6)
        assert K.get_value(iterations) == step and K.get_value(iterations).dtype == np.int64
    np.testing.assert_allclose(K.get_value(moving_mean), a.mean(0) * (1 - 0.9 ** 2), rtol=1e-6)
    np.testing.assert_allclose(K.get_value(total), 10.0 - 2 * a.sum(), rtol=1e-6)
    # update_sub with a numpy decrement, and an empty update list
    v = K.variable(np.array([5.0, 5.0]))
    K.function([], [], updates=[K.update_sub(v, np.array([1.0, 2.0], "float32"))])([])
    np.testing.assert_array_equal(K.get_value(v), [4, 3])
    np.testing.assert_array_equal(K.function([x], [x * 2], updates=[])([a])[0], a * 2)
    with pytest.raises(ValueError, match="K.function"):
        K.function([x], [x], updates=[], unknown_option=True)
    # as Keras' TF backend: a bare update (not in a list) is a TypeError
    with pytest.raises(TypeError, match="K.function: updates must be a list or tuple"):
        K.function([], [], updates=K.update_add(v, 1.0))


def test_gradients_give_zeros_for_unreached_variables_and_tensors():
    x = K.placeholder((2, 3), dtype="float64")
    v = K.variable(np.ones((3,)), dtype="float64")
    unused = K.variable(np.ones((4, 1)), dtype="float64")
    other = K.placeholder((5,), dtype="float64")
    hidden = x * 2
    loss = K.sum(hidden * v)
    grads = K.gradients(loss, [v, unused, other, hidden, x])
    assert isinstance(grads, list) and all(g is not None for g in grads)
    assert [K.int_shape(g) for g in grads] == [(3,), (4, 1), (5,), (2, 3), (2, 3)]
    a = np.arange(6.0).reshape(2, 3)
    check(grads, {x: a, other: np.zeros(5)},
          [2 * a.sum(axis=0), np.zeros((4, 1)), np.zeros(5), np.ones((2, 3)), np.full((2, 3), 2.0)])
    # a loss that reaches nothing: every gradient is zero
    (z,) = K.gradients(K.sum(K.constant(np.ones(2), dtype="float64")), [v])
    check(z, {}, np.zeros(3))
    # a single variable (not a list) still gives a list, as tf.gradients does
    single = K.gradients(loss, v)
    assert isinstance(single, list) and len(single) == 1


def test_eval_method_of_tensors_sees_current_values():
    v = K.variable(np.array([1.0, 2.0]))
    doubled = v * 2
    np.testing.assert_array_equal(doubled.eval(), [2, 4])
    K.set_value(v, np.array([5.0, 6.0]))
    np.testing.assert_array_equal(doubled.eval(), [10, 12])  # not a stale frozen value
    np.testing.assert_array_equal(v.eval(), [5, 6])
    np.testing.assert_array_equal(K.constant([[1, 2]], dtype="int32").eval(), [[1, 2]])
    np.testing.assert_allclose(K.sum(K.softmax(K.constant(np.arange(4.0)))).eval(), 1.0, rtol=1e-6)
    assert K.zeros((2, 3)).eval().shape == (2, 3) and (K.ones((2,)) + 1).eval().tolist() == [2, 2]
    # evaluated on both engines as well
    np.testing.assert_array_equal(evaluate(doubled), [10, 12])
    with pytest.raises(ValueError, match="'unfed'"):
        (K.placeholder((2,), name="unfed") * 2).eval()
