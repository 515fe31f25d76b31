"""Neural-network ops against numpy on onnxruntime and onnx.reference, with float64
finite-difference gradient checks."""
import numpy as np
import pytest

import kgraph.backend as K
from kgraph.graph import Graph

import kcheck
from test_random import assert_engines_bit_identical

EPS = 1e-7  # K.epsilon() default


def ph(a, dtype="float32"):
    return K.placeholder(np.shape(a), dtype=dtype)


def away_from(x, points, gap=0.05):
    """Move values within ``gap`` of a kink so finite differences do not straddle it."""
    x = np.array(x, dtype=np.float64)
    for p in points:
        near = np.abs(x - p) < gap
        x[near] = p + np.where(x[near] >= p, gap, -gap) * 2
    return x


# -- activations ----------------------------------------------------------------------------------
def relu_ref(x, alpha, max_value, threshold):
    """Keras 2.3.1's TF composition: x kept above the threshold, clipped to [0, max_value],
    alpha times the distance below the threshold subtracted."""
    y = np.where(x > threshold, x, 0) if threshold != 0 else np.maximum(x, 0)
    if max_value is not None:
        y = np.clip(y, 0, max_value)
    if alpha != 0:
        y = y - alpha * np.maximum(threshold - x, 0)
    return y


RELU_CASES = [(0.0, None, 0.0), (0.1, None, 0.0), (0.0, 6.0, 0.0), (0.0, 2.5, 0.0), (0.2, 4.0, 0.0),
              (0.0, None, 0.5), (0.3, None, -0.5), (0.1, 2.0, 0.5), (0.0, 2.0, -1.0), (2.0, None, 0.0)]


@pytest.mark.parametrize("alpha,max_value,threshold", RELU_CASES)
def test_relu(rng, alpha, max_value, threshold):
    x = (rng.standard_normal((4, 7)) * 4).astype(np.float32)
    p = ph(x)
    kcheck.check(K.relu(p, alpha=alpha, max_value=max_value, threshold=threshold), {p: x},
                 relu_ref(x, alpha, max_value, threshold))


@pytest.mark.parametrize("alpha,max_value,threshold", RELU_CASES[:6] + [(0.3, None, -0.5)])
def test_relu_grad(rng, alpha, max_value, threshold):
    kinks = [0.0, threshold] + ([max_value] if max_value is not None else [])
    x = away_from(rng.standard_normal((3, 5)) * 4, kinks)
    kcheck.check_grad(lambda p: K.relu(p, alpha=alpha, max_value=max_value, threshold=threshold), [x])


def test_relu_accepts_keras_layer_arguments(rng):
    """Keras's ReLU/LeakyReLU layers pass K.cast_to_floatx values: 0-d float32 arrays."""
    x = (rng.standard_normal((3, 4)) * 4).astype(np.float32)
    p = ph(x)
    a, m, t = (np.asarray(v, np.float32) for v in (0.1, 3.0, 0.5))
    kcheck.check(K.relu(p, alpha=a, max_value=m, threshold=t), {p: x}, relu_ref(x, 0.1, 3.0, 0.5))
    kcheck.check(K.relu(p, alpha=a), {p: x}, relu_ref(x, 0.1, None, 0.0))
    with pytest.raises(TypeError, match="K.relu: alpha"):
        K.relu(p, alpha="big")


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu(rng, alpha):
    x = (rng.standard_normal((5, 3)) * 3).astype(np.float32)
    p = ph(x)
    kcheck.check(K.elu(p, alpha), {p: x}, np.where(x > 0, x, alpha * np.expm1(x)), rtol=1e-5, atol=1e-6)
    kcheck.check_grad(lambda q: K.elu(q, alpha), [away_from(x, [0.0])])


ACTIVATIONS = [
    (K.sigmoid, lambda x: 1 / (1 + np.exp(-x)), []),
    (K.tanh, np.tanh, []),
    (K.softsign, lambda x: x / (1 + np.abs(x)), [0.0]),
    (K.softplus, lambda x: np.logaddexp(0, x), []),
    (K.hard_sigmoid, lambda x: np.clip(0.2 * x + 0.5, 0, 1), [-2.5, 2.5]),
]


@pytest.mark.parametrize("fn,ref,kinks", ACTIVATIONS, ids=lambda v: getattr(v, "__name__", ""))
def test_activations(rng, fn, ref, kinks):
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
    p = ph(x)
    kcheck.check(fn(p), {p: x}, ref(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    kcheck.check_grad(fn, [away_from(x[0], kinks)])


def test_hard_sigmoid_saturates_at_2_5():
    x = np.array([-10, -2.5, -1, 0, 1, 2.5, 10], np.float32)
    p = ph(x)
    kcheck.check(K.hard_sigmoid(p), {p: x}, np.array([0, 0, 0.3, 0.5, 0.7, 1, 1], np.float32))


def test_softplus_large_inputs_stay_finite():
    x = np.array([-200.0, -30.0, 0.0, 30.0, 200.0], np.float32)
    p = ph(x)
    # onnx.reference's Softplus computes log(exp(x) + 1), which overflows above x ~ 88; ORT's is stable
    kcheck.check(K.softplus(p), {p: x}, np.logaddexp(0, x.astype(np.float64)), reference=False, rtol=1e-6)


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_softmax(rng, axis):
    x = (rng.standard_normal((2, 3, 4)) * 5).astype(np.float32)
    p = ph(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    kcheck.check(K.softmax(p, axis=axis), {p: x}, e / e.sum(axis=axis, keepdims=True))
    kcheck.check_grad(lambda q: K.softmax(q, axis=axis), [x])


def test_softmax_large_logits():
    x = np.array([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]], np.float32)
    p = ph(x)
    kcheck.check(K.softmax(p), {p: x}, np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], np.float32))


# -- cross-entropies --------------------------------------------------------------------------------
def log_softmax_ref(z, axis):
    z = z.astype(np.float64)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def categorical_probs_ref(t, p, axis):
    p = p / p.sum(axis=axis, keepdims=True)
    return -(t * np.log(np.clip(p, EPS, 1 - EPS))).sum(axis=axis)


@pytest.mark.parametrize("axis", [-1, 1])
def test_categorical_crossentropy_probabilities_with_zeros_and_ones(rng, axis):
    t = rng.dirichlet(np.ones(4), size=(3, 5)).astype(np.float32)
    p = rng.dirichlet(np.ones(4), size=(3, 5)).astype(np.float32)
    p[0, 0] = [1, 0, 0, 0]
    p[1, 2] = [0, 0, 0, 1]
    if axis == 1:
        t, p = np.moveaxis(t, 2, 1), np.moveaxis(p, 2, 1)
    pt, pp = ph(t), ph(p)
    (got,) = kcheck.check(K.categorical_crossentropy(pt, pp, axis=axis), {pt: t, pp: p},
                          categorical_probs_ref(t, p, axis), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(got))


def test_categorical_crossentropy_from_logits_large(rng):
    z = (rng.standard_normal((4, 6)) * 3).astype(np.float32)
    z[0] = [1000, -1000, 0, 0, 0, 0]
    t = np.eye(6, dtype=np.float32)[[1, 2, 3, 0]]
    pt, pz = ph(t), ph(z)
    expected = -(t * log_softmax_ref(z, -1)).sum(-1)
    (got,) = kcheck.check(K.categorical_crossentropy(pt, pz, from_logits=True), {pt: t, pz: z}, expected, rtol=1e-5)
    assert got[0] == pytest.approx(2000, rel=1e-6)


def test_categorical_crossentropy_of_softmax_uses_the_logits():
    """Keras' TF backend reads the logits of a softmax output: a saturated softmax still gives
    the exact loss (2000 here, not -log(epsilon)) and a finite gradient."""
    z = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]], np.float32)
    t = np.array([[0, 0, 1], [0, 1, 0]], np.float32)
    pt, pz = ph(t), ph(z)
    loss = K.categorical_crossentropy(pt, K.softmax(pz))
    kcheck.check(loss, {pt: t, pz: z}, -(t * log_softmax_ref(z, -1)).sum(-1), rtol=1e-5)
    grad = K.function([pt, pz], K.gradients(K.sum(loss), [pz]))([t, z])[0]
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("from_logits", [False, True])
def test_categorical_crossentropy_grad(rng, from_logits):
    t = rng.dirichlet(np.ones(4), size=3)
    if from_logits:
        z = rng.standard_normal((3, 4))
        kcheck.check_grad(lambda a, b: K.categorical_crossentropy(a, b, from_logits=True), [t, z])
        kcheck.check_grad(lambda b: K.categorical_crossentropy(K.constant(t, "float64"), K.softmax(b)), [z])
    else:
        p = rng.dirichlet(np.ones(4), size=3) + 0.05
        kcheck.check_grad(lambda a, b: K.categorical_crossentropy(a, b), [t, p])


@pytest.mark.parametrize("target_shape", ["flat", "column", "float"])
def test_sparse_categorical_crossentropy(rng, target_shape):
    p = rng.dirichlet(np.ones(5), size=6).astype(np.float32)
    p[0] = [0, 0, 1, 0, 0]
    labels = np.array([2, 0, 4, 1, 3, 3])
    t = {"flat": labels.astype(np.int32), "column": labels[:, None].astype(np.int64),
         "float": labels[:, None].astype(np.float32)}[target_shape]
    pt, pp = K.placeholder(t.shape, dtype=t.dtype.name), ph(p)
    clipped = np.log(np.clip(p.astype(np.float64), EPS, 1 - EPS))
    expected = -log_softmax_ref(clipped, -1)[np.arange(6), labels]
    (got,) = kcheck.check(K.sparse_categorical_crossentropy(pt, pp), {pt: t, pp: p}, expected, rtol=1e-5, atol=1e-6)
    assert got[0] == pytest.approx(-np.log(1 - EPS), abs=1e-6) and np.all(np.isfinite(got))


@pytest.mark.parametrize("axis", [-1, 1])
def test_sparse_categorical_crossentropy_logits_rank3(rng, axis):
    z = (rng.standard_normal((2, 3, 4)) * 4).astype(np.float32)
    labels = rng.integers(0, z.shape[axis], size=(2, 4) if axis == 1 else (2, 3))
    pt, pz = K.placeholder(labels.shape, dtype="int64"), ph(z)
    ls = log_softmax_ref(z, axis)
    expected = -np.take_along_axis(ls, np.expand_dims(labels, axis), axis=axis).squeeze(axis)
    kcheck.check(K.sparse_categorical_crossentropy(pt, pz, from_logits=True, axis=axis), {pt: labels, pz: z},
                 expected, rtol=1e-5, atol=1e-6)
    kcheck.check_grad(lambda b: K.sparse_categorical_crossentropy(K.constant(labels, "int64"), b,
                                                                  from_logits=True, axis=axis), [z])


def test_sparse_categorical_crossentropy_second_order(rng):
    labels = K.constant(np.array([1, 0, 2]), "int64")
    w = K.constant(rng.standard_normal((3, 3)), "float64")

    def grad_of_loss(b):
        loss = K.sum(K.sparse_categorical_crossentropy(labels, b * b, from_logits=True))
        return K.gradients(loss, [b])[0] * w
    kcheck.check_grad(grad_of_loss, [rng.standard_normal((3, 3))], rtol=1e-4, atol=1e-6)


def test_sparse_categorical_crossentropy_of_softmax_and_flattened_targets():
    z = np.array([[[1000.0, 0.0, -1000.0]], [[1.0, 2.0, 3.0]]], np.float32)  # (2, 1, 3)
    labels = np.array([2, 1], np.int32)  # (2,): flattened against (2, 1)
    pt, pz = K.placeholder((2,), dtype="int32"), ph(z)
    expected = -log_softmax_ref(z, -1)[[0, 1], [0, 0], [2, 1]].reshape(2, 1)
    kcheck.check(K.sparse_categorical_crossentropy(pt, K.softmax(pz)), {pt: labels, pz: z}, expected, rtol=1e-5)
    kcheck.check_grad(lambda b: K.sparse_categorical_crossentropy(K.constant(np.array([2, 0, 1])), b),
                      [np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.25, 0.5, 0.25]])])


def test_binary_crossentropy_probabilities(rng):
    t = rng.random((4, 5)).astype(np.float32)
    p = rng.random((4, 5)).astype(np.float32)
    p[0, :2] = [0, 1]
    pt, pp = ph(t), ph(p)
    # the clip bounds as float32 holds them (1 - 1e-7 rounds to 1 - 1.19e-7), as TF computes
    c = np.clip(p, np.float32(EPS), np.float32(1 - EPS)).astype(np.float64)
    expected = -(t * np.log(c + EPS) + (1 - t) * np.log(1 - c + EPS))
    (got,) = kcheck.check(K.binary_crossentropy(pt, pp), {pt: t, pp: p}, expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(got))


def test_binary_crossentropy_logits_and_sigmoid_outputs(rng):
    z = (rng.standard_normal((3, 4)) * 3).astype(np.float32)
    z[0, :3] = [500, -500, 0]
    t = rng.random((3, 4)).astype(np.float32)
    pt, pz = ph(t), ph(z)
    zz = z.astype(np.float64)
    expected = np.maximum(zz, 0) - zz * t + np.log1p(np.exp(-np.abs(zz)))
    kcheck.check(K.binary_crossentropy(pt, pz, from_logits=True), {pt: t, pz: z}, expected, rtol=1e-5, atol=1e-6)
    kcheck.check(K.binary_crossentropy(pt, K.sigmoid(pz)), {pt: t, pz: z}, expected, rtol=1e-5, atol=1e-6)
    kcheck.check_grad(lambda a, b: K.binary_crossentropy(a, b, from_logits=True), [t, zz])
    kcheck.check_grad(lambda b: K.binary_crossentropy(K.constant(t, "float64"), K.sigmoid(b)), [zz])
    kcheck.check_grad(lambda a, b: K.binary_crossentropy(a, b), [t, np.clip(np.abs(zz) / 600, 0.05, 0.95)])


def test_crossentropy_errors():
    with pytest.raises(ValueError, match="K.categorical_crossentropy"):
        K.categorical_crossentropy(K.placeholder((2, 3)), K.placeholder((2, 4)))
    with pytest.raises(ValueError, match="K.categorical_crossentropy.*axis 5"):
        K.categorical_crossentropy(K.placeholder((2, 3)), K.placeholder((2, 3)), axis=5)
    with pytest.raises(ValueError, match="K.sparse_categorical_crossentropy"):
        K.sparse_categorical_crossentropy(K.placeholder((4,), dtype="int32"), K.placeholder((2, 3)))


# -- dropout ----------------------------------------------------------------------------------------
def test_dropout_rate_scale_and_fresh_masks(rng):
    x = rng.random((64, 128)).astype(np.float32) + 1
    p = ph(x)
    fn = K.function([p], [K.dropout(p, 0.3, seed=5)])
    outs = [fn([x])[0] for _ in range(4)]
    drop = np.mean([o == 0 for o in outs])
    assert abs(drop - 0.3) < 0.01
    for o in outs:
        kept = o != 0
        np.testing.assert_allclose(o[kept], x[kept] / 0.7, rtol=1e-6)
    assert not np.array_equal(outs[0] == 0, outs[1] == 0)


def test_dropout_noise_shape_forms():
    x = K.placeholder((None, 6, 5))
    xs = np.ones((8, 6, 5), np.float32)
    for noise_shape in [(8, 1, 5), (None, 1, 5), (K.shape(x)[0], 1, 5), (1, 6, 1), (5,)]:
        y = K.function([x], [K.dropout(x, 0.5, noise_shape=noise_shape, seed=1)])([xs])[0]
        broadcast = [i for i, d in enumerate(noise_shape[::-1]) if d == 1]
        for i in broadcast:
            axis = 2 - i
            assert np.all(y == y.take([0], axis=axis)), (noise_shape, axis)
        assert set(np.unique(y)) <= {0.0, 2.0} and 0.2 < np.mean(y == 0) < 0.8


def test_dropout_tensor_level_and_level_zero(rng):
    x = rng.random((50, 40)).astype(np.float32) + 1
    p = ph(x)
    y = K.function([p], [K.dropout(p, K.constant(0.25), seed=2)])([x])[0]
    assert abs(np.mean(y == 0) - 0.25) < 0.03
    np.testing.assert_allclose(y[y != 0], x[y != 0] / 0.75, rtol=1e-6)
    kcheck.check(K.dropout(p, 0.0), {p: x}, x)


def test_dropout_gradient_reuses_the_forward_mask(rng):
    x = rng.random((6, 7)) + 1
    w = rng.standard_normal((6, 7))
    p = K.placeholder((6, 7), dtype="float64")
    y = K.dropout(p, 0.4, seed=3)
    loss = K.sum(y * K.constant(w, "float64"))
    out, grad = K.function([p], [y, K.gradients(loss, [p])[0]])([x])
    np.testing.assert_allclose(grad, w * np.where(out != 0, 1 / 0.6, 0.0), rtol=1e-12)
    # finite differences with the counter held, so every evaluation sees the same mask
    (counter,) = [v for v in Graph([y]).variables if getattr(v, "implicit_update", None) is not None]
    f_loss = K.function([p], [loss])

    def loss_at(a):
        counter.value = np.zeros((), np.uint32)
        return f_loss([a])[0]
    numeric = np.zeros_like(x)
    for i in range(x.size):
        d = np.zeros(x.size)
        d[i] = 1e-6
        numeric.reshape(-1)[i] = (loss_at(x + d.reshape(x.shape)) - loss_at(x - d.reshape(x.shape))) / 2e-6
    counter.value = np.zeros((), np.uint32)
    g = K.function([p], K.gradients(loss, [p]))([x])[0]
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


def test_dropout_engines_agree_with_noise_shape():
    x = K.placeholder((None, 9))
    assert_engines_bit_identical([K.dropout(x, 0.2, noise_shape=(K.shape(x)[0], 1), seed=4)],
                                 {x: np.ones((5, 9), np.float32)})


@pytest.mark.parametrize("call,error,words", [
    (lambda: K.dropout(K.placeholder((2, 3)), 1.0), ValueError, ["K.dropout", "[0, 1)"]),
    (lambda: K.dropout(K.placeholder((2, 3)), -0.1), ValueError, ["K.dropout", "level"]),
    (lambda: K.dropout(K.placeholder((2, 3), dtype="int32"), 0.5), TypeError, ["K.dropout", "float"]),
    (lambda: K.dropout(K.placeholder((2, 3)), 0.5, noise_shape=(2, 4)), ValueError, ["K.dropout", "noise_shape"]),
])
def test_dropout_errors(call, error, words):
    with pytest.raises(error) as info:
        call()
    for w in words:
        assert w in str(info.value)


# -- normalization -----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [None, 0, -1, [0, 2]])
def test_l2_normalize(rng, axis):
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    x[1, :, :] = 0
    p = ph(x)
    ax = tuple(axis) if isinstance(axis, list) else axis
    expected = x / np.sqrt(np.maximum((x.astype(np.float64) ** 2).sum(axis=ax, keepdims=True), 1e-12))
    (got,) = kcheck.check(K.l2_normalize(p, axis=axis), {p: x}, expected, rtol=1e-5)
    assert np.all(np.isfinite(got))
    kcheck.check_grad(lambda q: K.l2_normalize(q, axis=axis), [rng.standard_normal((3, 4, 2))])


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # onnx.reference computes inf - inf
def test_in_top_k_ties_and_invalid_rows():
    pred = np.array([[1, 2, 2, 3],      # ties at the boundary all count
                     [0.5, 0.5, 0.5, 0.5],
                     [1, np.inf, 0, 0],  # a non-finite row is never in
                     [4, 3, 2, 1],
                     [4, 3, 2, 1]], np.float32)
    for k in (0, 1, 2, 3, 4):
        targets = np.array([1, 3, 0, 2, 7], np.int32)  # 7 is out of range: False
        pp, pt = ph(pred), K.placeholder((5,), dtype="int32")
        greater = (pred > pred[np.arange(5), np.minimum(targets, 3)][:, None]).sum(1)
        expected = (greater < k) & np.isfinite(pred).all(1) & (targets < 4)
        kcheck.check(K.in_top_k(pp, pt, k), {pp: pred, pt: targets}, expected)
    assert list(K.eval(K.in_top_k(K.constant(pred[:2]), K.constant(np.array([1, 3]), "int64"), 2))) == [True, True]
    with pytest.raises(TypeError, match="K.in_top_k"):
        K.in_top_k(K.constant(pred), K.constant(np.zeros(5, np.float32)), 1)


def moments_ref(x, axes):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return mean, var


@pytest.mark.parametrize("shape,axes,use_gamma,use_beta", [
    ((6, 4), [0], True, True),
    ((3, 4, 5, 2), [0, 1, 2], True, True),
    ((3, 2, 4, 5), [0, 2, 3], True, False),
    ((4, 3, 5), [0, 1], False, True),
    ((4, 3, 5), [0, 2], False, False),
])
def test_normalize_batch_in_training(rng, shape, axes, use_gamma, use_beta):
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    kept = [d for i, d in enumerate(shape) if i not in axes]
    gamma = rng.random(kept).astype(np.float32) + 0.5
    beta = rng.standard_normal(kept).astype(np.float32)
    px, pg, pb = ph(x), ph(gamma), ph(beta)
    normed, mean, var = K.normalize_batch_in_training(px, pg if use_gamma else None, pb if use_beta else None, axes)
    m, v = moments_ref(x.astype(np.float64), tuple(axes))
    bshape = m.shape
    y = (x - m) / np.sqrt(v + 1e-3)
    if use_gamma:
        y = y * gamma.reshape(bshape)
    if use_beta:
        y = y + beta.reshape(bshape)
    feeds = {px: x}
    feeds.update({pg: gamma} if use_gamma else {})
    feeds.update({pb: beta} if use_beta else {})
    kcheck.check([normed, mean, var], feeds, [y, m.reshape(kept), v.reshape(kept)], rtol=1e-4, atol=1e-5)

    def build(a, g, b):
        return K.normalize_batch_in_training(a, g if use_gamma else None, b if use_beta else None, axes)[0]
    kcheck.check_grad(build, [x[:3] if len(shape) == 2 else x, gamma, beta], rtol=1e-4, atol=1e-6)


def test_normalize_batch_in_training_moment_gradients(rng):
    x = rng.standard_normal((5, 3))
    kcheck.check_grad(lambda a: K.normalize_batch_in_training(a, None, None, [0])[1], [x])
    kcheck.check_grad(lambda a: K.normalize_batch_in_training(a, None, None, [0])[2], [x])


@pytest.mark.parametrize("shape,axis,param_shape", [
    ((4, 5), -1, (5,)),
    ((2, 3, 4, 5), -1, (5,)),
    ((2, 3, 4, 5), 1, (3,)),
    ((2, 3, 4), 1, (3,)),
    ((2, 3, 4, 5), 1, (1, 3, 1, 1)),
])
@pytest.mark.parametrize("with_beta,with_gamma", [(True, True), (False, True), (True, False)])
def test_batch_normalization(rng, shape, axis, param_shape, with_beta, with_gamma):
    x = rng.standard_normal(shape).astype(np.float32)
    mean, beta = (rng.standard_normal(param_shape).astype(np.float32) for _ in range(2))
    var, gamma = (rng.random(param_shape).astype(np.float32) + 0.5 for _ in range(2))
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]

    def b(a):
        return a.reshape(bshape).astype(np.float64)
    expected = (x - b(mean)) / np.sqrt(b(var) + 1e-3) * (b(gamma) if with_gamma else 1) + (b(beta) if with_beta else 0)
    arrays = [x, mean, var, beta, gamma]
    phs = [ph(a) for a in arrays]
    out = K.batch_normalization(phs[0], phs[1], phs[2], phs[3] if with_beta else None,
                                phs[4] if with_gamma else None, axis=axis)
    feeds = {p: a for p, a in zip(phs, arrays) if (p is not phs[3] or with_beta) and (p is not phs[4] or with_gamma)}
    kcheck.check(out, feeds, expected, rtol=1e-5, atol=1e-5)
    if shape == (2, 3, 4) or shape == (4, 5):
        kcheck.check_grad(lambda *a: K.batch_normalization(a[0], a[1], a[2], a[3] if with_beta else None,
                                                           a[4] if with_gamma else None, axis=axis),
                          [a.astype(np.float64) for a in arrays], rtol=1e-4, atol=1e-6)


def test_batch_normalization_errors():
    x = K.placeholder((2, 3, 4))
    with pytest.raises(ValueError, match="K.batch_normalization.*mean"):
        K.batch_normalization(x, K.placeholder((5,)), K.placeholder((3,)), None, None, axis=1)
    with pytest.raises(TypeError, match="K.batch_normalization.*var"):
        K.batch_normalization(x, K.placeholder((4,)), None, None, None)


# -- bias_add -------------------------------------------------------------------------------------------
def bias_ref(x, bias, data_format):
    """Keras 2.3.1: a vector lies on the channel axis; a full-rank bias is given channels-last
    and reshaped (not transposed) into channels-first layout."""
    if x.ndim in (3, 4, 5):
        if bias.ndim == 1:
            shape = (1,) * (x.ndim - 1) + bias.shape
        else:
            shape = (1,) + bias.shape
        if data_format == "channels_first":
            shape = (shape[0], shape[-1]) + shape[1:-1]
        return x + bias.reshape(shape)
    return x + bias


@pytest.mark.parametrize("rank,full", [(2, False), (3, False), (3, True), (4, False), (4, True), (5, False),
                                       (5, True), (6, False)])  # ranks 2 and 6 take only vectors
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_bias_add(rng, rank, data_format, full):
    x_shape = (2, 3, 4, 2, 3, 2)[:rank]
    channels = x_shape[1] if data_format == "channels_first" and rank in (3, 4, 5) else x_shape[-1]
    if full:
        spatial = x_shape[2:] if data_format == "channels_first" else x_shape[1:-1]
        b_shape = tuple(spatial) + (channels,)
    else:
        b_shape = (channels,)
    x = rng.standard_normal(x_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    px, pb = ph(x), ph(b)
    kcheck.check(K.bias_add(px, pb, data_format=data_format), {px: x, pb: b}, bias_ref(x, b, data_format))
    if rank <= 4:
        kcheck.check_grad(lambda a, c: K.bias_add(a, c, data_format=data_format), [x, b])


def test_bias_add_default_data_format_follows_settings(rng):
    K.set_image_data_format("channels_first")
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    b = rng.standard_normal((3,)).astype(np.float32)
    px = ph(x)
    kcheck.check(K.bias_add(px, K.constant(b)), {px: x}, x + b.reshape(1, 3, 1))


@pytest.mark.parametrize("x_shape,b_shape,data_format,words", [
    ((2, 3, 4), (2, 3, 4, 5), None, "Unexpected bias dimensions 4, expect to be 1 or 2"),
    ((2, 3, 4, 5), (4,), "channels_last", "as many biases"),
    ((2, 3, 4), (5,), "channels_first", "does not match"),
    ((2, 3), (3,), "channels_middle", "channels_middle"),
    ((2, 3, 4, 5, 6, 7), (3, 4, 5, 6, 7), None, "vector"),
])
def test_bias_add_errors(x_shape, b_shape, data_format, words):
    with pytest.raises(ValueError) as info:
        K.bias_add(K.placeholder(x_shape), K.placeholder(b_shape), data_format=data_format)
    assert "bias_add" in str(info.value) and words in str(info.value)


# -- opsets ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [17, 21])
def test_nn_ops_lower_for_other_opsets(rng, opset):
    from kgraph.runtime import Function
    x, t = K.placeholder((3, 4)), K.placeholder((3,), dtype="int32")
    outs = [K.relu(x, 0.1, 2.0, 0.5), K.elu(x, 0.5), K.softmax(x, 0), K.softsign(x), K.hard_sigmoid(x),
            K.categorical_crossentropy(K.softmax(x), x, from_logits=True),
            K.sparse_categorical_crossentropy(t, x, from_logits=True), K.binary_crossentropy(K.sigmoid(x), x),
            K.l2_normalize(x, 1), K.in_top_k(x, t, 2), K.normalize_batch_in_training(x, None, None, [0])[0],
            K.bias_add(x, K.constant(np.ones(4)))]
    outs += K.gradients(K.sum(outs[5]) + K.sum(outs[6]), [x])
    feeds = [rng.random((3, 4)).astype(np.float32), np.array([0, 3, 1], np.int32)]
    for a, b in zip(Function([x, t], outs)(feeds), Function([x, t], outs, opset=opset)(feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
