"""Keras 2.3.1 on kgraph gives Keras's numbers: each test here failed before the kgraph fix it
names, and compares with numpy computed from the formula Keras documents (or the layer's own
weights), not with kgraph itself."""
import numpy as np
import pytest

import keras
import keras.backend as KB
from keras import activations, layers, models

import kgraph.backend as K

SELU_ALPHA = 1.6732632423543772848170429916717  # keras/activations.py:86-87
SELU_SCALE = 1.0507009873554804934193349852946


def test_selu_is_keras_formula_to_float32_rounding():
    # fix: kgraph/ops/nn.py elu lowering (ONNX Runtime's Elu was up to 2 ulps off after scaling)
    x = np.concatenate([np.linspace(-20, 5, 20001), -np.logspace(-40, 1.5, 2001),
                        np.logspace(-40, 38, 201), [0.0, -0.0, -1e4, -3e38]]).astype(np.float32)
    # TF's K.elu: where(x > 0, elu(x), alpha * elu(x)), each step rounded to float32
    elu = np.where(x > 0, x, np.expm1(np.minimum(x, 0).astype(np.float64)).astype(np.float32))
    expected = np.float32(SELU_SCALE) * np.where(x > 0, elu, np.float32(SELU_ALPHA) * elu)
    got = K.eval(activations.selu(K.constant(x)))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    model = models.Sequential([layers.Activation("selu", input_shape=(x.size,))])
    np.testing.assert_array_equal(model.predict(x[None])[0], expected)


# -- BatchNormalization ---------------------------------------------------------------------------
# keras/layers/normalization.py: training phase normalizes with the batch's mean and (biased)
# variance; inference with the moving statistics; fit moves them towards the batch's mean and
# unbiased variance (n / (n - (1 + epsilon)), normalization.py:192-194) by 1 - momentum.
EPS, MOMENTUM = 1e-3, 0.99


def _bn_train(x, gamma, beta, axes):
    mean, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def _bn_infer(x, gamma, beta, moving_mean, moving_var):
    return (x - moving_mean) / np.sqrt(moving_var + EPS) * gamma + beta


def _bn_delta(moving_mean, moving_var, x, axes):
    """What one batch subtracts from the moving mean and variance."""
    n = np.prod([x.shape[a] for a in axes])
    mean, var = x.mean(axes), x.var(axes) * n / (n - (1 + EPS))
    return (moving_mean - mean) * (1 - MOMENTUM), (moving_var - var) * (1 - MOMENTUM)


def _bn_weights(bn, rng):
    c = bn.get_weights()[0].shape[0]
    weights = [rng.uniform(0.5, 2, c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 2, c)]
    bn.set_weights([w.astype(np.float32) for w in weights])
    return weights  # gamma, beta, moving mean, moving variance


def _phases(model):
    f = K.function(model.inputs + [K.learning_phase()], model.outputs)
    return lambda xs, phase: f(list(xs) + [phase])


def _bn_model(case):
    """(model, the BatchNormalization layer, input shapes, (axes reduced, the layer's input of
    each model input as a function of it), trains) for each way Keras users apply the layer."""
    if case == "plain":
        bn = layers.BatchNormalization(input_shape=(4,))
        return models.Sequential([bn]), bn, [(4,)], (0,), True
    if case == "functional_axis1":
        inp = layers.Input((3, 5))
        bn = layers.BatchNormalization(axis=1)
        return models.Model(inp, bn(inp)), bn, [(3, 5)], (0, 2), True
    if case == "time_distributed":
        bn = layers.BatchNormalization()
        inp = layers.Input((3, 4))
        return models.Model(inp, layers.TimeDistributed(bn)(inp)), bn, [(3, 4)], "td", True
    if case == "training_true":
        inp = layers.Input((4,))
        bn = layers.BatchNormalization()
        return models.Model(inp, bn(inp, training=True)), bn, [(4,)], (0,), True
    if case == "not_trainable":
        bn = layers.BatchNormalization(trainable=False, input_shape=(4,))
        return models.Sequential([bn]), bn, [(4,)], (0,), False
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["plain", "functional_axis1", "time_distributed", "training_true",
                                  "not_trainable"])
def test_batch_normalization_forward_in_both_phases_and_moving_statistics(case):
    rng = np.random.default_rng(3)
    model, bn, shapes, axes, updates_moving = _bn_model(case)
    gamma, beta, mm, mv = _bn_weights(bn, rng)
    x = rng.normal(1.0, 2.0, (6,) + shapes[0]).astype(np.float32)
    flat, axes = (x.reshape(-1, x.shape[-1]), (0,)) if axes == "td" else (x, axes)
    bshape = [1] * flat.ndim
    channel = bn.axis % flat.ndim
    bshape[channel] = -1
    g, b, m, v = (w.reshape(bshape) for w in (gamma, beta, mm, mv))
    trained, inferred = _bn_train(flat, g, b, axes).reshape(x.shape), _bn_infer(flat, g, b, m, v).reshape(x.shape)
    run = _phases(model)
    np.testing.assert_allclose(run([x], 1)[0], trained, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run([x], 0)[0], trained if case == "training_true" else inferred,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict(x), trained if case == "training_true" else inferred,
                               rtol=1e-4, atol=1e-5)

    model.compile(keras.optimizers.SGD(0.0), "mse")  # lr 0: only the moving statistics move
    loss = model.train_on_batch(x, np.zeros_like(x))
    assert np.isfinite(loss)
    d_mean, d_var = _bn_delta(mm, mv, flat, axes)
    new = bn.get_weights()
    np.testing.assert_allclose(new[0], gamma, rtol=1e-6)
    if updates_moving:
        np.testing.assert_allclose(new[2], mm - d_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new[3], mv - d_var, rtol=1e-5, atol=1e-6)
    else:  # a frozen layer's updates are not the model's (base_layer.py: Layer.updates)
        np.testing.assert_allclose(new[2:], [mm, mv], rtol=1e-6)


def test_shared_batch_normalization_moves_once_per_call():
    rng = np.random.default_rng(4)
    bn = layers.BatchNormalization()
    a, b = layers.Input((4,)), layers.Input((4,))
    model = models.Model([a, b], layers.Add()([bn(a), bn(b)]))
    gamma, beta, mm, mv = _bn_weights(bn, rng)
    xa, xb = rng.normal(0, 1, (5, 4)).astype(np.float32), rng.normal(2, 3, (5, 4)).astype(np.float32)
    run = _phases(model)
    np.testing.assert_allclose(run([xa, xb], 1)[0], _bn_train(xa, gamma, beta, 0) + _bn_train(xb, gamma, beta, 0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run([xa, xb], 0)[0], _bn_infer(xa, gamma, beta, mm, mv) + _bn_infer(xb, gamma, beta, mm, mv),
                               rtol=1e-4, atol=1e-5)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit([xa, xb], np.zeros_like(xa), batch_size=5, epochs=1, verbose=0)
    # both calls' updates in one step, each delta from the step's starting value (TF's
    # assign_sub of deltas that read the variable before either assignment)
    (dma, dva), (dmb, dvb) = _bn_delta(mm, mv, xa, (0,)), _bn_delta(mm, mv, xb, (0,))
    new = bn.get_weights()
    np.testing.assert_allclose(new[2], mm - dma - dmb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new[3], mv - dva - dvb, rtol=1e-5, atol=1e-6)


# -- floatx ---------------------------------------------------------------------------------------
@pytest.fixture(params=["keras", "kgraph"])
def set_floatx(request):
    """keras.backend.set_floatx lives in keras/backend/common.py; kgraph's is K.set_floatx."""
    setter = KB.set_floatx if request.param == "keras" else K.set_floatx
    yield setter
    K.set_floatx("float32")


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_set_floatx_sets_every_default_dtype(set_floatx, dtype):
    set_floatx(dtype)
    assert K.floatx() == KB.floatx() == dtype
    made = {"variable": K.variable(1.0), "placeholder": K.placeholder((2,)), "constant": K.constant(1.0),
            "zeros": K.zeros((2,)), "ones": K.ones((2,)), "eye": K.eye(2),
            "random_normal": K.random_normal((2,)), "random_uniform": K.random_uniform((2,)),
            "truncated_normal": K.truncated_normal((2,)), "random_binomial": K.random_binomial((2,)),
            "random_normal_variable": K.random_normal_variable((2,), 0, 1),
            "random_uniform_variable": K.random_uniform_variable((2,), 0, 1),
            "cast_to_floatx": K.constant(K.cast_to_floatx(np.ones(2)))}
    assert {name: K.dtype(t) for name, t in made.items()} == {name: dtype for name in made}
    for name in ("variable", "zeros", "random_normal", "random_uniform"):
        assert K.eval(made[name]).dtype == np.dtype(dtype), name


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_keras_layers_built_after_set_floatx_compute_in_it(set_floatx, dtype):
    set_floatx(dtype)
    # hard_sigmoid: ONNX's HardSigmoid holds 0.2 as a float32 attribute (fix: kgraph/ops/nn.py)
    model = models.Sequential([layers.Dense(3, activation="tanh", input_shape=(4,)),
                               layers.Dense(2, activation="hard_sigmoid")])
    model.compile("sgd", "mse")
    weights = model.get_weights()
    assert [w.dtype for w in weights] == [np.dtype(dtype)] * 4
    x = np.random.default_rng(5).random((3, 4))
    got = model.predict(x)
    assert got.dtype == np.dtype(dtype)
    w1, b1, w2, b2 = (w.astype(np.float64) for w in weights)
    expected = np.clip(0.2 * (np.tanh(x.astype(dtype).astype(np.float64) @ w1 + b1) @ w2 + b2) + 0.5, 0, 1)
    if dtype == "float64":  # float64 all through: float32 rounding would show at 1e-8
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2)
    assert np.isfinite(model.train_on_batch(x, np.zeros((3, 2))))


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_conv_recurrent_and_normalization_layers_train_in_floatx(set_floatx, dtype):
    set_floatx(dtype)
    inp = layers.Input((4, 5, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = layers.BatchNormalization()(x)
    x = layers.SeparableConv2D(2, 2)(x)
    x = layers.Reshape((3, 8))(x)
    x = layers.GRU(3, reset_after=True, return_sequences=True)(x)
    out = layers.LSTM(2)(x)
    model = models.Model(inp, out)
    model.compile("adam", "mse")
    assert {w.dtype for w in model.get_weights()} == {np.dtype(dtype)}
    xs = np.random.default_rng(9).normal(size=(3, 4, 5, 3))
    loss = model.train_on_batch(xs, np.zeros((3, 2)))
    assert np.asarray(loss).dtype == np.dtype(dtype) and np.isfinite(loss)
    assert model.predict(xs).dtype == np.dtype(dtype)


# -- static shapes --------------------------------------------------------------------------------
_P = (3, 4)  # a placeholder's per-sample shape in the sweep below
_SHAPE_SWEEP = {
    "repeat_elements_1": lambda x: K.repeat_elements(x, 2, axis=1),
    "repeat_elements_2": lambda x: K.repeat_elements(x, 3, axis=2),
    "repeat_elements_batch": lambda x: K.repeat_elements(x, 2, axis=0),
    "repeat": lambda x: K.repeat(K.batch_flatten(x), 2),
    "tile": lambda x: K.tile(x, (1, 2, 3)),
    "reshape": lambda x: K.reshape(x, (-1, 2, 6)),
    "reshape_from_shape": lambda x: K.reshape(x, K.stack([K.shape(x)[0], 12])),
    "reshape_from_concat": lambda x: K.reshape(x, K.concatenate([K.shape(x)[:1], K.constant([2, 6], dtype="int32")])),
    "batch_flatten": K.batch_flatten,
    "flatten": K.flatten,
    "permute_dimensions": lambda x: K.permute_dimensions(x, (0, 2, 1)),
    "transpose": K.transpose,
    "expand_dims": lambda x: K.expand_dims(x, 1),
    "squeeze": lambda x: K.squeeze(K.expand_dims(x, -1), -1),
    "concatenate": lambda x: K.concatenate([x, x * 2], axis=-1),
    "stack": lambda x: K.stack([x, x], axis=1),
    "one_hot": lambda x: K.one_hot(K.cast(x[:, 0], "int32"), 5),
    "reverse": lambda x: K.reverse(x, 1),
    "slice": lambda x: K.slice(x, (0, 1, 0), (-1, 2, 3)),
    "getitem": lambda x: x[:, 1:, ::2],
    "temporal_padding": lambda x: K.temporal_padding(x, (1, 2)),
    "spatial_2d_padding": lambda x: K.spatial_2d_padding(K.expand_dims(x), ((1, 0), (0, 2))),
    "resize_images": lambda x: K.resize_images(K.expand_dims(x), 2, 3, "channels_last"),
    "dot": lambda x: K.dot(x, K.ones((4, 5))),
    "batch_dot": lambda x: K.batch_dot(x, x, axes=(2, 2)),
    "sum": lambda x: K.sum(x, axis=1),
    "mean_keepdims": lambda x: K.mean(x, axis=-1, keepdims=True),
    "max": lambda x: K.max(x, axis=(1, 2)),
    "argmax": lambda x: K.argmax(x, axis=-1),
    "gather": lambda x: K.gather(K.ones((7, 2)), K.cast(x[:, 0], "int32")),
    "cumsum": lambda x: K.cumsum(x, axis=1),
    "softmax": K.softmax,
    "l2_normalize": lambda x: K.l2_normalize(x, axis=-1),
    "bias_add": lambda x: K.bias_add(x, K.ones((4,))),
    "switch": lambda x: K.switch(K.greater(x, 0), x, -x),
    "in_train_phase": lambda x: K.in_train_phase(x * 2, x),
    "dropout": lambda x: K.dropout(x, 0.5),
    "conv1d": lambda x: K.conv1d(x, K.ones((2, 4, 5))),
    "pool2d": lambda x: K.pool2d(K.expand_dims(x), (2, 2), (1, 2)),
    "rnn": lambda x: K.rnn(lambda i, s: (i * 2, s), x, [K.sum(x, axis=1)])[1],
    "map_fn": lambda x: K.map_fn(lambda r: r * 2, x),
    "arange_like": lambda x: x + K.cast(K.arange(4), K.floatx()),
    "zeros_like": K.zeros_like,
    "cast": lambda x: K.cast(x, "float64"),
    "square_of_sum": lambda x: K.square(K.sum(x, axis=0)),
    "broadcast_binary": lambda x: K.maximum(x, K.ones((1, 4))) * K.pow(K.abs(x) + 1, 2.0),
    "comparisons": lambda x: K.cast(K.equal(K.sign(x), K.round(x)), "int32"),
    "clip_softplus": lambda x: K.softplus(K.clip(x, 0.5, 2.0)),
    "std_var": lambda x: K.std(x, axis=1) + K.var(x, axis=-1, keepdims=True)[:, :, 0][:, :1],
    "logsumexp": lambda x: K.logsumexp(x, axis=1, keepdims=True),
    "any_all": lambda x: K.cast(K.any(x > 1, axis=2), "int32") + K.cast(K.all(x > 0, axis=2), "int32"),
    "argmin_cumprod": lambda x: K.cast(K.argmin(K.cumprod(x, axis=2), axis=1), "float32"),
    "categorical_crossentropy": lambda x: K.categorical_crossentropy(K.softmax(x), K.softmax(x)),
    "sparse_categorical_crossentropy": lambda x: K.sparse_categorical_crossentropy(
        K.cast(K.argmax(x, axis=-1), "float32"), K.softmax(x)),
    "binary_crossentropy": lambda x: K.binary_crossentropy(K.sigmoid(x), K.sigmoid(x)),
    "in_top_k": lambda x: K.cast(K.in_top_k(x[:, 0], K.cast(K.argmax(x[:, 1]), "int32"), 2), "int32"),
    "normalize_batch_in_training": lambda x: K.normalize_batch_in_training(
        x, K.ones((4,)), K.zeros((4,)), [0, 1])[0],
    "batch_normalization": lambda x: K.batch_normalization(x, K.zeros((4,)), K.ones((4,)), K.zeros((4,)), K.ones((4,))),
    "conv2d_transpose": lambda x: K.conv2d_transpose(K.expand_dims(x), K.ones((2, 2, 3, 1)),
                                                     K.stack([K.shape(x)[0], 6, 8, 3]), strides=(2, 2)),
    "separable_conv2d": lambda x: K.separable_conv2d(K.expand_dims(x), K.ones((2, 2, 1, 2)), K.ones((1, 1, 2, 3)),
                                                     padding="same"),
    "depthwise_conv2d": lambda x: K.depthwise_conv2d(K.expand_dims(x), K.ones((2, 2, 1, 3))),
    "conv3d_pool3d": lambda x: K.pool3d(K.conv3d(K.reshape(x, (-1, 3, 2, 2, 1)), K.ones((1, 2, 2, 1, 2))),
                                        (2, 1, 1), pool_mode="avg"),
    "zeros_ones_of_a_runtime_shape": lambda x: K.zeros((K.shape(x)[0], 2)) + K.ones(K.stack([K.shape(x)[0], 2])),
    "resize_volumes_padding": lambda x: K.spatial_3d_padding(
        K.resize_volumes(K.expand_dims(K.expand_dims(x)), 1, 2, 1, "channels_last")),
    "local_conv1d": lambda x: K.local_conv1d(x, K.ones((2, 8, 5)), (2,), (1,)),
    "foldl": lambda x: K.foldl(lambda acc, r: acc + r, x),
    "l2_normalize_sum": lambda x: K.sum(K.l2_normalize(x, axis=1), axis=[1, 2]),
    "eye_arange": lambda x: K.dot(x, K.eye(4)) + K.cast(K.arange(0, 8, 2), K.floatx()),
    "tile_tensor_reps": lambda x: K.tile(x, [1, 1, 2]),
    "ctc_batch_cost": lambda x: K.ctc_batch_cost(K.ones((K.shape(x)[0], 2)), K.softmax(x),
                                                 3 * K.ones((K.shape(x)[0], 1), "int32"),
                                                 K.ones((K.shape(x)[0], 1), "int32")),
    "gradients": lambda x: K.gradients(K.sum(K.square(x)), [x])[0],
    "stop_gradient_identity": lambda x: K.identity(K.stop_gradient(x)),
    "print_tensor": lambda x: K.print_tensor(x * 1, message=""),
}


@pytest.mark.parametrize("name", sorted(_SHAPE_SWEEP))
def test_k_functions_set_the_static_shape_keras_reads(name):
    """K.int_shape (and _keras_shape where set) is what the numbers have: a dim fixed by the
    input's known dims is known, and only the batch's dims are None."""
    fn = _SHAPE_SWEEP[name]
    x = K.placeholder((None,) + _P)
    y = fn(x)
    f = K.function([x], [y])
    rng = np.random.default_rng(6)
    small, large = (f([rng.random((n,) + _P, dtype=np.float32) * 3])[0].shape for n in (2, 5))
    expected = tuple(a if a == b else None for a, b in zip(small, large))
    assert len(small) == len(large) and K.int_shape(y) == expected
    assert getattr(y, "_keras_shape", expected) == expected
    static = K.int_shape(fn(K.placeholder((2,) + _P)))
    if name in _TF_LEAVES_UNKNOWN:
        assert len(static) == len(small) and all(d in (None, s) for d, s in zip(static, small))
    else:
        assert static == small


def test_zeros_and_ones_of_a_runtime_shape_are_tensors():
    # fix: kgraph/backend/variables.py (was a TypeError): TF's K.zeros/K.ones give a tensor when
    # the shape is not fully static, and a variable when it is
    x = K.placeholder((None, 3))
    zeros, ones = K.zeros((K.shape(x)[0], 2), dtype="float64"), K.ones(K.stack([K.shape(x)[0], 3]))
    assert not K.is_variable(zeros) and K.is_variable(K.zeros((2, 3)))
    assert K.dtype(zeros) == "float64" and K.dtype(ones) == K.floatx()
    got = K.function([x], [zeros, ones * x])([np.full((4, 3), 2.0, np.float32)])
    np.testing.assert_array_equal(got[0], np.zeros((4, 2)))
    np.testing.assert_array_equal(got[1], np.full((4, 3), 2.0))


# TF's constant_value reads no K.shape(x)[i] inside a stack, even of a fully known shape
_TF_LEAVES_UNKNOWN = {"reshape_from_shape", "zeros_ones_of_a_runtime_shape"}


# -- SimpleRNN training ---------------------------------------------------------------------------
def _numpy_simple_rnn_fit(weights, x, y, epochs, batch, lr=0.001, rho=0.9, eps=1e-7):
    """SimpleRNN(tanh) + Dense(softmax), categorical cross-entropy, Keras 2.3.1's RMSprop
    (optimizers.py: a = rho a + (1 - rho) g^2; p -= lr g / (sqrt(a) + epsilon)), in float64 with
    hand-written backpropagation through time.  Returns the weights and, per epoch, the mean
    loss and accuracy of the forward passes that preceded each update (what fit reports)."""
    params = [w.astype(np.float64) for w in weights]
    W, U, b, V, c = params
    acc = [np.zeros_like(p) for p in params]
    history = []
    for _ in range(epochs):
        losses, hits = [], []
        for s in range(0, len(x), batch):
            xb, yb = x[s:s + batch].astype(np.float64), y[s:s + batch]
            n, steps, _ = xb.shape
            hs = [np.zeros((n, U.shape[0]))]
            for t in range(steps):
                hs.append(np.tanh(xb[:, t] @ W + hs[-1] @ U + b))
            z = hs[-1] @ V + c
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            losses.append(-np.log((p * yb).sum(1)).mean())
            hits.append(p.argmax(1) == yb.argmax(1))
            dz = (p - yb) / n
            grads = [np.zeros_like(W), np.zeros_like(U), np.zeros_like(b), hs[-1].T @ dz, dz.sum(0)]
            dh = dz @ V.T
            for t in reversed(range(steps)):
                da = dh * (1 - hs[t + 1] ** 2)
                grads[0] += xb[:, t].T @ da
                grads[1] += hs[t].T @ da
                grads[2] += da.sum(0)
                dh = da @ U.T
            for i, g in enumerate(grads):
                acc[i] = rho * acc[i] + (1 - rho) * g * g
                params[i] -= lr * g / (np.sqrt(acc[i]) + eps)
        history.append((np.mean(losses), np.concatenate(hits).mean()))
    return params, history


def test_simple_rnn_rmsprop_trains_as_numpy_and_reaches_075():
    np.random.seed(2)  # Keras's initializers draw from numpy's global generator
    rng = np.random.RandomState(2)
    x = rng.standard_normal((200, 3, 4)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[(x[:, :, 0].sum(1) > 0).astype(int)]
    model = models.Sequential([layers.SimpleRNN(8, input_shape=(3, 4)), layers.Dense(2, activation="softmax")])
    model.compile("rmsprop", "categorical_crossentropy", metrics=["accuracy"])
    initial = model.get_weights()
    history = model.fit(x, y, epochs=5, batch_size=10, verbose=0, shuffle=False).history
    weights, expected = _numpy_simple_rnn_fit(initial, x, y, epochs=5, batch=10)
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(history["loss"], [loss for loss, _ in expected], rtol=1e-5)
    np.testing.assert_allclose(history["accuracy"], [a for _, a in expected], atol=1e-6)
    assert history["accuracy"][-1] >= 0.75


# -- rank-0 outputs -------------------------------------------------------------------------------
def test_rank0_function_outputs_are_numpy_scalars_keras_can_log(tmp_path):
    x = K.placeholder((None, 3))
    f = K.function([x], [K.sum(x), K.mean(x, axis=1)])
    total, means = f([np.ones((2, 3), np.float32)])
    # TF's Session.run gives numpy scalars for rank-0 fetches: shape (), a numpy dtype, float()
    assert np.shape(total) == () and np.asarray(total).dtype == np.float32 and float(total) == 6.0
    assert means.shape == (2,)
    model = models.Sequential([layers.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
    xs, ys = np.ones((4, 3), np.float32), np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    loss, accuracy = model.train_on_batch(xs, ys)
    assert np.shape(loss) == np.shape(accuracy) == () and accuracy == 0.5
    log = tmp_path / "log.csv"
    history = model.fit(xs, ys, epochs=2, verbose=0, callbacks=[keras.callbacks.CSVLogger(str(log))]).history
    rows = log.read_text().splitlines()
    assert rows[0] == "epoch,accuracy,loss" and len(rows) == 3
    for epoch, row in enumerate(rows[1:]):  # plain numbers (CSVLogger, callbacks.py:1122-1127)
        logged = [float(v) for v in row.split(",")]
        np.testing.assert_allclose(logged, [epoch, history["accuracy"][epoch], history["loss"][epoch]], rtol=1e-6)


# -- Keras's K.backend() branches: kgraph takes the generic graph-backend path --------------------
@pytest.mark.parametrize("clip", [{"clipnorm": 0.1}, {"clipvalue": 0.05}])
def test_gradient_clipping_takes_the_generic_path(clip):
    # optimizers.py:37-57: TF clips with tf.cond; every other backend with K.switch
    rng = np.random.default_rng(7)
    model = models.Sequential([layers.Dense(2, input_shape=(4,))])
    model.compile(keras.optimizers.SGD(0.5, **clip), "mse")
    x, y = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 2)).astype(np.float32)
    w, b = (v.astype(np.float64) for v in model.get_weights())
    d_out = 2 * (x @ w + b - y) / y.size
    grads = [x.T.astype(np.float64) @ d_out, d_out.sum(0)]
    if "clipnorm" in clip:
        norm = np.sqrt(sum((g * g).sum() for g in grads))
        assert norm > 0.1
        grads = [g * 0.1 / norm for g in grads]
    else:
        grads = [np.clip(g, -0.05, 0.05) for g in grads]
    model.train_on_batch(x, y)
    for got, old, g in zip(model.get_weights(), (w, b), grads):
        np.testing.assert_allclose(got, old - 0.5 * g, rtol=1e-5, atol=1e-6)


def test_loading_tf_trained_kernels_needs_no_conversion():
    # engine/saving.py:1161-1166: an unknown backend is taken to correlate, as TF does, so
    # TF-trained conv kernels load as they are and Theano-trained ones are flipped
    from keras.engine import saving
    assert saving._need_convert_kernel("tensorflow") is False
    assert saving._need_convert_kernel("theano") is True


def test_precision_and_recall_metrics_match_numpy():
    # metrics.py:1411, 1521: only top_k is TF-only; the thresholded counts are generic K code
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (rng.random((40, 1)) > 0.5).astype(np.float32)
    model = models.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(4,))])
    model.compile("sgd", "binary_crossentropy", metrics=[keras.metrics.Precision(), keras.metrics.Recall()])
    _, precision, recall = model.evaluate(x, y, batch_size=16, verbose=0)
    predicted, actual = model.predict(x)[:, 0] > 0.5, y[:, 0] == 1
    tp = (predicted & actual).sum()
    np.testing.assert_allclose([precision, recall], [tp / predicted.sum(), tp / actual.sum()], rtol=1e-6)
