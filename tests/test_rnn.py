"""K.rnn (ONNX Loop and unrolled), map_fn, foldl, foldr and switch against numpy loops written
here; finite-difference gradients through the loops; exported models with Loops on a fresh
onnxruntime session and on onnx.reference."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph.backend as K
from kgraph.deploy import initial_state
from kgraph.ops import elementwise as ew
from kcheck import check, check_grad, evaluate

B, T, I, H = 3, 4, 3, 5


def rng_arrays(*shapes, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# -- numpy oracle: Keras 2.3.1 (TF backend) rnn semantics -----------------------------------
def np_rnn(step, x, states, mask=None, go_backwards=False, constants=()):
    """Masked steps repeat the previous output (zeros before the first) and hold the states."""
    steps = range(x.shape[1])
    outputs, previous = [], None
    for t in (reversed(steps) if go_backwards else steps):
        out, new = step(x[:, t], list(states) + list(constants))
        if mask is not None:
            m = mask[:, t].astype(bool)
            previous = np.zeros_like(out) if previous is None else previous
            out = np.where(m.reshape(m.shape + (1,) * (out.ndim - 1)), out, previous)
            new = [np.where(m.reshape(m.shape + (1,) * (n.ndim - 1)), n, s) for n, s in zip(new, states)]
        previous, states = out, new
        outputs.append(out)
    return outputs[-1], np.stack(outputs, axis=1), list(states)


def tanh_cell(w, u):
    def k_step(x_t, states):
        h = ew.tanh(K.dot(x_t, w) + K.dot(states[0], u))
        return h, [h]

    def np_step(x_t, states):
        h = np.tanh(x_t @ w + states[0] @ u)
        return h, [h]
    return k_step, np_step


def lstm_cell(w, u, b):
    """A Keras-style LSTM step (implementation 2: one matmul for all gates), two states."""
    def k_step(x_t, states):
        h, c = states
        z = K.dot(x_t, w) + K.dot(h, u) + b
        i, f = ew.sigmoid(z[:, :H]), ew.sigmoid(z[:, H:2 * H])
        g, o = ew.tanh(z[:, 2 * H:3 * H]), ew.sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * ew.tanh(c)
        return h, [h, c]

    def np_step(x_t, states):
        sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
        h, c = states
        z = x_t @ w + h @ u + b
        c = sig(z[:, H:2 * H]) * c + sig(z[:, :H]) * np.tanh(z[:, 2 * H:3 * H])
        h = sig(z[:, 3 * H:]) * np.tanh(c)
        return h, [h, c]
    return k_step, np_step


def run_rnn(k_step, x, states, **kwargs):
    """K.rnn on placeholders (unknown batch and time) → (last, outputs, states) tensors and feeds."""
    xp = K.placeholder((None, None) + x.shape[2:])
    sps = [K.placeholder((None,) + s.shape[1:]) for s in states]
    feeds = {xp: x, **dict(zip(sps, states))}
    mask = kwargs.pop("mask", None)
    if mask is not None:
        mp = K.placeholder((None, None), dtype=str(mask.dtype))
        feeds[mp] = mask
        kwargs["mask"] = mp
    last, outputs, new_states = K.rnn(k_step, xp, sps, **kwargs)
    return [last, outputs] + list(new_states), feeds


def flat(last, outputs, states):
    return [last, outputs] + list(states)


# -- forward values ---------------------------------------------------------------------------
def test_rnn_plain_matches_numpy_loop():
    x, h0, w, u = rng_arrays((B, T, I), (B, H), (I, H), (H, H))
    k_step = tanh_cell(K.constant(w), K.constant(u))[0]
    outs, feeds = run_rnn(k_step, x, [h0])
    assert outs[1].shape == (None, None, H) and outs[0].shape == (None, H)
    assert not getattr(outs[0], "_uses_learning_phase", False)
    check(outs, feeds, flat(*np_rnn(tanh_cell(w, u)[1], x, [h0])))


@pytest.mark.parametrize("go_backwards", [False, True])
def test_rnn_masked_holds_states_and_repeats_outputs(go_backwards):
    x, h0, c0, w, u, b = rng_arrays((B, T, I), (B, H), (B, H), (I, 4 * H), (H, 4 * H), (4 * H,))
    mask = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]], dtype="float32")  # row 1: all masked
    k_step, _ = lstm_cell(K.constant(w), K.constant(u), K.constant(b))
    outs, feeds = run_rnn(k_step, x, [h0, c0], mask=mask, go_backwards=go_backwards)
    expected = np_rnn(lstm_cell(w, u, b)[1], x, [h0, c0], mask=mask, go_backwards=go_backwards)
    np.testing.assert_array_equal(expected[1][1], 0)  # the all-masked row: zero outputs
    np.testing.assert_array_equal(expected[2][0][1], h0[1])  # ... and its initial states
    check(outs, feeds, flat(*expected))


def test_rnn_go_backwards_returns_the_reversed_sequence():
    x, h0, w, u = rng_arrays((B, T, I), (B, H), (I, H), (H, H), seed=1)
    k_step, np_step = tanh_cell(K.constant(w), K.constant(u))[0], tanh_cell(w, u)[1]
    outs, feeds = run_rnn(k_step, x, [h0], go_backwards=True)
    check(outs, feeds, flat(*np_rnn(np_step, x, [h0], go_backwards=True)))


def test_rnn_constants_reach_the_step():
    x, h0, w, k = rng_arrays((B, T, I), (B, H), (I, H), (B, H), seed=2)
    kp = K.placeholder((None, H))

    def k_step(x_t, states):
        h, const = states
        h = ew.tanh(K.dot(x_t, K.constant(w)) + h * const)
        return h, [h]

    def np_step(x_t, states):
        h, const = states
        h = np.tanh(x_t @ w + h * const)
        return h, [h]
    outs, feeds = run_rnn(k_step, x, [h0], constants=[kp])
    feeds[kp] = k
    check(outs, feeds, flat(*np_rnn(np_step, x, [h0], constants=[k])))


def test_rnn_states_of_rank_3_and_inputs_of_rank_4_with_mask():
    x, s0, w = rng_arrays((B, T, 2, 3), (B, 2, 3), (3, 3), seed=3)
    mask = np.array([[1, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=bool)

    def k_step(x_t, states):  # per-step input (B, 2, 3), state (B, 2, 3), output (B, 2)
        s = ew.tanh(K.dot(x_t, K.constant(w)) + states[0])
        return K.sum(s, axis=-1), [s]

    def np_step(x_t, states):
        s = np.tanh(x_t @ w + states[0])
        return s.sum(axis=-1), [s]
    outs, feeds = run_rnn(k_step, x, [s0], mask=mask)
    assert outs[1].shape == (None, None, 2)
    check(outs, feeds, flat(*np_rnn(np_step, x, [s0], mask=mask)))


@pytest.mark.parametrize("masked", [False, True])
def test_rnn_length_one_sequences(masked):
    x, h0, w, u = rng_arrays((B, 1, I), (B, H), (I, H), (H, H), seed=4)
    mask = np.array([[1], [0], [1]], dtype="float32") if masked else None
    k_step, np_step = tanh_cell(K.constant(w), K.constant(u))[0], tanh_cell(w, u)[1]
    outs, feeds = run_rnn(k_step, x, [h0], mask=mask)
    check(outs, feeds, flat(*np_rnn(np_step, x, [h0], mask=mask)))


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_rnn_unroll_equals_loop(go_backwards, masked):
    x, h0, c0, w, u, b = rng_arrays((B, T, I), (B, H), (B, H), (I, 4 * H), (H, 4 * H), (4 * H,), seed=5)
    mask = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype="float32") if masked else None
    k_step, _ = lstm_cell(K.constant(w), K.constant(u), K.constant(b))
    xp, hp, cp = K.placeholder((None, T, I)), K.placeholder((None, H)), K.placeholder((None, H))
    mp = K.constant(mask) if masked else None
    looped = flat(*K.rnn(k_step, xp, [hp, cp], mask=mp, go_backwards=go_backwards))
    unrolled = flat(*K.rnn(k_step, xp, [hp, cp], mask=mp, go_backwards=go_backwards, unroll=True,
                           input_length=T))
    feeds = {xp: x, hp: h0, cp: c0}
    expected = np_rnn(lstm_cell(w, u, b)[1], x, [h0, c0], mask=mask, go_backwards=go_backwards)
    got_loop = check(looped, feeds, flat(*expected))
    got_unrolled = check(unrolled, feeds, flat(*expected))
    for a, b_ in zip(got_loop, got_unrolled):
        np.testing.assert_allclose(a, b_, rtol=1e-6, atol=1e-6)


def test_rnn_step_with_variables_and_learning_phase():
    x, h0, w, u = rng_arrays((B, T, I), (B, H), (I, H), (H, H), seed=6)
    wv, uv = K.variable(w), K.variable(u)

    def k_step(x_t, states):
        h = ew.tanh(K.dot(x_t, wv) + K.dot(states[0], uv))
        h = K.in_train_phase(h * 0.5, h)  # a train-time branch, chosen inside the loop
        return h, [h]

    def np_step(scale):
        def step(x_t, states):
            h = np.tanh(x_t @ w + states[0] @ u) * scale
            return h, [h]
        return step
    xp, hp = K.placeholder((None, None, I)), K.placeholder((None, H))
    last, outputs, states = K.rnn(k_step, xp, [hp])
    assert getattr(last, "_uses_learning_phase", False)
    phase = K.learning_phase()
    for value, scale in ((0, 1.0), (1, 0.5)):
        check([last, outputs], {xp: x, hp: h0, phase: np.asarray(bool(value))},
              flat(*np_rnn(np_step(scale), x, [h0]))[:2])
    fn = K.function([xp, hp], [last])  # the learning phase defaults to test mode
    np.testing.assert_allclose(fn([x, h0])[0], np_rnn(np_step(1.0), x, [h0])[0], rtol=1e-5, atol=1e-6)
    K.set_value(wv, 2 * w)  # the loop reads the variable's current value
    w = 2 * w
    np.testing.assert_allclose(fn([x, h0])[0], np_rnn(np_step(1.0), x, [h0])[0], rtol=1e-5, atol=1e-6)


def test_rnn_step_returning_a_state_unchanged_and_a_scalar_output_shape():
    x, h0, k0 = rng_arrays((B, T, I), (B, H), (B, 2), seed=7)

    def k_step(x_t, states):
        h, k = states
        h = h + K.sum(x_t, axis=-1, keepdims=True)
        return K.sum(h, axis=-1, keepdims=True), [h, k]

    def np_step(x_t, states):
        h, k = states
        h = h + x_t.sum(-1, keepdims=True)
        return h.sum(-1, keepdims=True), [h, k]
    outs, feeds = run_rnn(k_step, x, [h0, k0])
    check(outs, feeds, flat(*np_rnn(np_step, x, [h0, k0])))


def test_rnn_masked_with_feature_dims_known_only_at_run_time():
    x, h0 = rng_arrays((B, T, I), (B, I), seed=20)
    mask = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]], dtype=bool)
    xp, hp, mp = K.placeholder(ndim=3), K.placeholder(ndim=2), K.placeholder(ndim=2, dtype="bool")

    def step(x_t, states):  # the output's shape is (None, None): its zeros come from a first step
        h = states[0] * 0.5 + x_t
        return h * h, [h]

    def np_step(x_t, states):
        h = states[0] * 0.5 + x_t
        return h * h, [h]
    check(flat(*K.rnn(step, xp, [hp], mask=mp)), {xp: x, hp: h0, mp: mask},
          flat(*np_rnn(np_step, x, [h0], mask=mask)))


def test_rnn_without_states_and_with_an_integer_state():
    x, h0 = rng_arrays((B, T, I), (B, H), seed=19)
    xp = K.placeholder((None, None, I))
    last, outputs, states = K.rnn(lambda x_t, s: (x_t * 2.0, []), xp, [])
    assert states == []
    check([last, outputs], {xp: x}, [x[:, -1] * 2, x * 2])

    def k_step(x_t, states):  # an int32 step counter switches the update after two steps
        h, count = states
        h = K.switch(K.less(count, 2), h + K.sum(x_t, axis=1, keepdims=True), h * 0.5)
        return h, [h, count + 1]
    hp, cp = K.placeholder((None, H)), K.placeholder((None, 1), dtype="int32")
    count = np.zeros((B, 1), "int32")
    outs = flat(*K.rnn(k_step, xp, [hp, cp]))
    h, expected = h0, []
    for t in range(T):
        h = h + x[:, t].sum(1, keepdims=True) if t < 2 else h * 0.5
        expected.append(h)
    check(outs, {xp: x, hp: h0, cp: count},
          [h, np.stack(expected, 1), h, np.full((B, 1), T, "int32")])
    check_grad(lambda x_, h_: rnn_summary(*K.rnn(k_step, x_, [h_, K.constant(count[:2], dtype="int32")])[:2], []),
               [x[:2, :, :2].astype("float64"), h0[:2, :2].astype("float64")])


def test_rnn_errors():
    xp, hp = K.placeholder((None, T, I)), K.placeholder((None, H))
    good = lambda x_t, s: (s[0], [s[0]])  # noqa: E731
    with pytest.raises(ValueError, match="K.rnn: inputs must be at least 3D"):
        K.rnn(good, K.placeholder((None, I)), [hp])
    with pytest.raises(ValueError, match="K.rnn: unrolling requires a fixed number of timesteps"):
        K.rnn(good, K.placeholder((None, None, I)), [hp], unroll=True)
    with pytest.raises(ValueError, match="K.rnn: step_function returned 2 new states for 1"):
        K.rnn(lambda x_t, s: (s[0], [s[0], s[0]]), xp, [hp])
    with pytest.raises(ValueError, match="K.rnn: state 0 must keep shape"):
        K.rnn(lambda x_t, s: (x_t, [x_t]), xp, [hp])
    with pytest.raises(TypeError, match="K.rnn: step_function must return"):
        K.rnn(lambda x_t, s: s[0], xp, [hp])
    with pytest.raises(ValueError, match="K.rnn: mask must have shape"):
        K.rnn(good, xp, [hp], mask=K.placeholder((None, T + 1)))
    with pytest.raises(ValueError, match="K.rnn: input_length=3"):
        K.rnn(good, xp, [hp], input_length=3)


# -- gradients ----------------------------------------------------------------------------------
def rnn_summary(last, outputs, states):
    return K.concatenate([K.batch_flatten(t) for t in [outputs, last] + list(states)], axis=1)


@pytest.mark.parametrize("masked,go_backwards,unroll", [(False, False, False), (True, True, False),
                                                        (True, False, True)])
def test_rnn_gradient_wrt_inputs_states_and_weights(masked, go_backwards, unroll):
    b, t, i, h = 2, 3, 2, 2
    mask = K.constant(np.array([[1, 0, 1], [0, 1, 1]]), dtype="float64") if masked else None

    def build(x, h0, c0, w, u, bias):
        def step(x_t, states):
            hh, cc = states
            z = K.dot(x_t, w) + K.dot(hh, u) + bias
            cc = ew.sigmoid(z[:, :h]) * cc + ew.tanh(z[:, h:])
            hh = ew.tanh(cc) * ew.sigmoid(z[:, :h])
            return hh * 2.0, [hh, cc]
        return rnn_summary(*K.rnn(step, x, [h0, c0], mask=mask, go_backwards=go_backwards, unroll=unroll))
    arrays = rng_arrays((b, t, i), (b, h), (b, h), (i, 2 * h), (h, 2 * h), (2 * h,), seed=8, dtype="float64")
    check_grad(build, arrays)


def test_rnn_gradient_with_constants_rank3_states_and_training_branch():
    def build(x, s0, const, w):
        def step(x_t, states):
            s, k = states
            s = ew.tanh(K.dot(x_t, w) + s * k)
            s = K.in_train_phase(s * 3.0, s, training=K.constant(True, dtype="bool"))
            return K.sum(s, axis=2), [s]
        return rnn_summary(*K.rnn(step, x, [s0], constants=[const]))
    arrays = rng_arrays((2, 3, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2), seed=9, dtype="float64")
    check_grad(build, arrays)


def test_rnn_training_step_updates_variables():
    """SGD on a recurrent model: the gradient of the weights comes from the reversed Loop."""
    x, h0, w, u = rng_arrays((B, T, I), (B, H), (I, H), (H, H), seed=10)
    wv, uv = K.variable(w), K.variable(u)
    xp, hp = K.placeholder((None, None, I)), K.placeholder((None, H))
    k_step, _ = tanh_cell(wv, uv)
    last, outputs, _ = K.rnn(k_step, xp, [hp])
    loss = K.sum(outputs * outputs) + K.sum(last)
    gw, gu = K.gradients(loss, [wv, uv])
    step = K.function([xp, hp], [loss], updates=[K.update_sub(wv, gw * 0.1), K.update_sub(uv, gu * 0.1)])
    model = step.to_onnx(training=True)

    def np_loss(w_, u_):
        _, outs, _ = np_rnn(tanh_cell(w_, u_)[1], x.astype("float64"), [h0.astype("float64")])
        return (outs ** 2).sum() + outs[:, -1].sum()
    eps, numeric = 1e-6, []
    for arr, other, first in ((w, u, True), (u, w, False)):
        g = np.zeros(arr.shape)
        for idx in np.ndindex(arr.shape):
            p, m = arr.astype("float64"), arr.astype("float64")
            p[idx] += eps
            m[idx] -= eps
            args_p = (p, other.astype("float64")) if first else (other.astype("float64"), p)
            args_m = (m, other.astype("float64")) if first else (other.astype("float64"), m)
            g[idx] = (np_loss(*args_p) - np_loss(*args_m)) / (2 * eps)
        numeric.append(g)
    step([x, h0])
    np.testing.assert_allclose(K.get_value(wv), w - 0.1 * numeric[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(K.get_value(uv), u - 0.1 * numeric[1], rtol=1e-4, atol=1e-4)
    # the exported training step runs on a fresh onnxruntime session and on onnx.reference
    onnx.checker.check_model(model, full_check=True)
    names = [i.name for i in model.graph.input]
    feeds = {names[0]: x, names[1]: h0, **initial_state(model)}  # the variables' values at export
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    ref = ReferenceEvaluator(model).run(None, feeds)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], K.get_value(wv), rtol=1e-5, atol=1e-6)


def test_second_order_gradients_through_a_loop_are_refused():
    xp = K.placeholder((None, T, I))
    _, outputs, _ = K.rnn(lambda x_t, s: (x_t * x_t, [s[0]]), xp, [K.placeholder((None, H))])
    g = K.gradients(K.sum(outputs), [xp])[0]
    with pytest.raises(NotImplementedError, match="second-order"):
        K.gradients(K.sum(g * g), [xp])


# -- exported models ----------------------------------------------------------------------------
def test_exported_rnn_runs_on_fresh_sessions_and_keeps_only_needed_loop_outputs():
    x, h0, c0, w, u, b = rng_arrays((B, T, I), (B, H), (B, H), (I, 4 * H), (H, 4 * H), (4 * H,), seed=11)
    k_lstm, np_lstm = lstm_cell(K.variable(w), K.variable(u), K.variable(b))[0], lstm_cell(w, u, b)[1]

    # a cell state clipped to [-1, 1]: not one of ONNX's fused cells (kgraph.ops.rnn_cells), so
    # the Loop stays
    def k_step(x_t, states):
        h, c = k_lstm(x_t, states)[1]
        return h, [h, K.clip(c, -1.0, 1.0)]

    def np_step(x_t, states):
        h, c = np_lstm(x_t, states)[1]
        return h, [h, np.clip(c, -1.0, 1.0)]
    xp, hp, cp = K.placeholder((None, None, I)), K.placeholder((None, H)), K.placeholder((None, H))
    last, outputs, states = K.rnn(k_step, xp, [hp, cp])
    K.gradients(K.sum(outputs), [xp])  # builds the backward loop; inference must not pay for it
    fn = K.function([xp, hp, cp], [outputs])
    expected = np_rnn(np_step, x, [h0, c0])[1]
    for opset in (17, 18, 21):
        model = fn.to_onnx(opset=opset)
        onnx.checker.check_model(model, full_check=True)
        loops = [n for n in model.graph.node if n.op_type == "Loop"]
        assert len(loops) == 1
        # carried h and c (ONNX outputs the final carried values) and the stacked outputs: none
        # of the per-step values the backward loop would read (and no per-step shape: only the
        # batch dim of a step is unknown)
        assert len(loops[0].output) == 3
        names = [i.name for i in model.graph.input]
        feeds = dict(zip(names, [x, h0, c0]))
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(sess.run(None, feeds)[0], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ReferenceEvaluator(model).run(None, feeds)[0], expected,
                                   rtol=1e-5, atol=1e-6)


# -- map_fn, foldl, foldr ----------------------------------------------------------------------
def test_map_fn_values_structures_and_dtype():
    x, y, w = rng_arrays((4, 2, 3), (4, 3), (3, 2), seed=12)
    xp, yp = K.placeholder((None, 2, 3)), K.placeholder((None, 3))
    wk = K.constant(w)
    mapped = K.map_fn(lambda e: K.dot(e, wk) * 2.0, xp)
    pair = K.map_fn(lambda e: (K.sum(e[0], axis=0) + e[1], K.cast(K.argmax(e[1], axis=0), "int32")),
                    (xp, yp), dtype=("float32", "int32"))
    assert isinstance(pair, tuple) and pair[1].dtype == "int32"
    check([mapped, pair[0], pair[1]], {xp: x, yp: y},
          [np.stack([e @ w * 2 for e in x]), x.sum(axis=1) + y, y.argmax(axis=1).astype("int32")])
    with pytest.raises(TypeError, match="K.map_fn: fn returned dtype float32"):
        K.map_fn(lambda e: e, xp, dtype="int32")


@pytest.mark.parametrize("fold", ["foldl", "foldr"])
def test_folds_with_and_without_initializer(fold):
    x, w = rng_arrays((5, 3), (3, 3), seed=13)
    xp = K.placeholder((None, 3))
    wk = K.constant(w)
    fn = lambda acc, e: ew.tanh(K.dot(K.expand_dims(acc, 0), wk)[0] + e)  # noqa: E731
    order = list(range(5)) if fold == "foldl" else list(range(4, -1, -1))

    def np_fold(acc, idx):
        for i in idx:
            acc = np.tanh(acc @ w + x[i])
        return acc
    k_fold = getattr(K, fold)
    with_init = k_fold(fn, xp, initializer=K.zeros_like(xp[0]))
    without = k_fold(fn, xp)
    summed = k_fold(lambda acc, e: acc + e, xp)
    pairs = k_fold(lambda acc, e: (acc[0] + e[0], acc[1] * e[1]), (xp, xp * 0.5),
                   initializer=(K.zeros_like(xp[0]), K.ones_like(xp[0])))
    check([with_init, without, summed, pairs[0], pairs[1]], {xp: x},
          [np_fold(np.zeros(3, "float32"), order), np_fold(x[order[0]], order[1:]), x.sum(axis=0),
           x.sum(axis=0), np.prod(x * 0.5, axis=0)])


def test_fold_errors():
    xp = K.placeholder((None, 3))
    with pytest.raises(ValueError, match="K.foldl: accumulator 0 must keep shape"):
        K.foldl(lambda acc, e: K.concatenate([acc, e]), xp)
    with pytest.raises(ValueError, match="K.foldr: elems must have at least one axis"):
        K.foldr(lambda acc, e: acc, K.constant(1.0))


def test_map_fold_gradients():
    check_grad(lambda x, w: K.map_fn(lambda e: ew.tanh(K.dot(e, w)), x),
               rng_arrays((3, 2, 2), (2, 3), seed=14, dtype="float64"))
    check_grad(lambda x, a0: K.foldl(lambda acc, e: acc * ew.sin(e) + e, x, initializer=a0),
               rng_arrays((4, 3), (3,), seed=15, dtype="float64"))
    check_grad(lambda x, w: K.foldr(lambda acc, e: ew.tanh(acc * w + e), x),
               rng_arrays((4, 2), (2,), seed=16, dtype="float64"))


def test_nested_loops_forward_and_gradient():
    """A step function that maps inside: a Loop in a Loop body, differentiated."""
    x, h0 = rng_arrays((2, 3, 2), (2, 2), seed=17, dtype="float64")

    def build(xp, hp):
        def step(x_t, states):
            inner = K.map_fn(lambda row: ew.sin(row) * states[0][0], x_t)  # (2, 2) per step
            h = ew.tanh(inner + states[0])
            return h, [h]
        return rnn_summary(*K.rnn(step, xp, [hp]))

    def np_step(x_t, states):
        h = np.tanh(np.sin(x_t) * states[0][0] + states[0])
        return h, [h]
    xp, hp = K.placeholder((None, None, 2), dtype="float64"), K.placeholder((None, 2), dtype="float64")
    last, outs, st = np_rnn(np_step, x, [h0])
    check(build(xp, hp), {xp: x, hp: h0}, np.concatenate([outs.reshape(2, -1), last, st[0]], axis=1))
    check_grad(build, [x, h0])


# -- switch (kgraph/backend/control.py) ---------------------------------------------------------
def test_switch_scalar_and_lower_rank_conditions():
    a, b = rng_arrays((2, 3, 4), (2, 3, 4), seed=18)
    ap, bp = K.placeholder((None, 3, 4)), K.placeholder((None, 3, 4))
    flag = K.placeholder((), dtype="int32")
    rows = np.array([True, False])
    cells = np.array([[True, False, True], [False, False, True]])
    out = [K.switch(flag, ap, bp), K.switch(flag, lambda: ap * 2, lambda: bp),
           K.switch(K.constant(rows, dtype="bool"), ap, bp),
           K.switch(K.constant(cells, dtype="bool"), ap, bp),
           K.switch(K.greater(ap, 0), ap, bp)]
    for value in (0, 1):
        check(out, {ap: a, bp: b, flag: np.asarray(value, dtype="int32")},
              [a if value else b, a * 2 if value else b, np.where(rows[:, None, None], a, b),
               np.where(cells[:, :, None], a, b), np.where(a > 0, a, b)])
    with pytest.raises(ValueError, match="K.switch: the rank of condition"):
        K.switch(K.placeholder((None, 3, 4, 1), dtype="bool"), ap, bp)


def test_switch_gradient():
    cond = K.constant(np.array([True, False, True]), dtype="bool")
    check_grad(lambda a, b: K.switch(cond, a * a, ew.sin(b)), rng_arrays((3, 2), (3, 2), dtype="float64"))


def test_learning_phase_dependency_marks_the_last_output():
    xp, hp = K.placeholder((None, 2, I)), K.placeholder((None, H))
    step = lambda x_t, s: (K.in_train_phase(s[0] * 2.0, s[0]), [s[0]])  # noqa: E731
    last, _, _ = K.rnn(step, xp, [hp], unroll=True)
    assert getattr(last, "_uses_learning_phase", False)
    # reached through the inputs (a dropout before the recurrent layer), as Keras' TF backend checks
    dropped = K.in_train_phase(xp * 0.5, xp)
    assert getattr(K.rnn(lambda x_t, s: (x_t, s), dropped, [hp])[0], "_uses_learning_phase", False)
    got = evaluate(last, {xp: np.zeros((1, 2, I), "float32"), hp: np.ones((1, H), "float32"),
                          K.learning_phase(): np.asarray(True)})
    np.testing.assert_array_equal(got, 2 * np.ones((1, H)))


def test_input_projection_is_hoisted_out_of_the_loop():
    """K.dot(x_t, kernel) depends on the step's input and a loop-invariant weight only: it is
    computed once over the whole sequence, and only the recurrent product stays in the Loop."""
    rng = np.random.default_rng(3)
    kernel, recurrent = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(6, 6)).astype(np.float32)
    x = K.placeholder((None, 5, 4))
    w, r = K.variable(kernel), K.variable(recurrent)

    def step(x_t, states):
        h = K.tanh(K.dot(x_t, w) * 0.5 + K.dot(states[0], r))
        return h, [h]
    h0 = K.zeros_like(K.dot(x[:, 0, :], w))
    last, outputs, _ = K.rnn(step, x, [h0])
    fn = K.function([x], [outputs])
    model = fn.session_model()
    loop, = [n for n in model.graph.node if n.op_type == "Loop"]
    body_ops = [n.op_type for n in loop.attribute[0].g.node]
    assert body_ops.count("MatMul") == 1, body_ops
    assert [n.op_type for n in model.graph.node].count("MatMul") >= 1
    a = rng.normal(size=(3, 5, 4)).astype(np.float32)
    h, want = np.zeros((3, 6), np.float32), []
    for t in range(5):
        h = np.tanh(a[:, t] @ kernel * 0.5 + h @ recurrent)
        want.append(h)
    np.testing.assert_allclose(fn([a])[0], np.stack(want, axis=1), rtol=1e-5, atol=1e-6)
    recurrent64, a64 = K.constant(recurrent.astype(np.float64) * 0.3), K.constant(a.astype(np.float64))

    def step64(k):
        def step_fn(x_t, states):
            h = K.tanh(K.dot(x_t, k) + K.dot(states[0], recurrent64))
            return h, [h]
        return step_fn
    check_grad(lambda k: K.rnn(step64(k), a64, [K.constant(np.zeros((3, 6)), dtype="float64")])[1],
               [kernel.astype(np.float64) * 0.3])


def test_weight_gradients_leave_the_backward_loop():
    """The recurrent kernel's and the bias's gradients are one product / one sum over all steps
    after the reversed Loop, not accumulated inside it; the Loop's invariant values (R^T) and
    constants are computed once, outside."""
    rng = np.random.default_rng(4)
    x = K.placeholder((None, 6, 3))
    w = K.variable(rng.normal(size=(3, 8)).astype(np.float32) * 0.5)
    r = K.variable(rng.normal(size=(8, 8)).astype(np.float32) * 0.3)
    b = K.variable(np.zeros(8, np.float32))

    def step(x_t, states):
        h = K.tanh(K.bias_add(K.dot(x_t, w) + K.dot(states[0], r), b))
        return h, [h]
    last, outputs, _ = K.rnn(step, x, [K.zeros_like(K.dot(x[:, 0, :], w))])
    fn = K.function([x], K.gradients(K.sum(outputs * outputs), [r, b]))
    model = fn.session_model()
    loops = [n for n in model.graph.node if n.op_type == "Loop"]
    backward = [n for n in loops if any(a.g.node and any(k.op_type == "Concat" or k.op_type == "Sub"
                                                            for k in a.g.node) for a in n.attribute)]
    for loop in loops:
        body = [k.op_type for k in loop.attribute[0].g.node]
        assert body.count("MatMul") == 1 and "Transpose" not in body and "Constant" not in body, body
        assert "ReduceSum" not in body, body  # the bias gradient is summed outside
    assert backward
    w64, x64 = K.constant(K.get_value(w).astype(np.float64)), K.constant(rng.normal(size=(2, 6, 3)))

    def outputs_for(rr):
        def step64(x_t, states):
            h = K.tanh(K.dot(x_t, w64) + K.dot(states[0], rr))
            return h, [h]
        return K.rnn(step64, x64, [K.constant(np.zeros((2, 8)), dtype="float64")])[1]
    check_grad(outputs_for, [K.get_value(r).astype(np.float64)])
