"""The recognizer of standard recurrent cells (kgraph/ops/rnn_cells.py): K.rnn over a Keras
2.3.1-style LSTM / GRU / SimpleRNN step lowers to ONNX's LSTM / GRU / RNN op in inference
graphs and exports, and keeps the Loop for anything else and for training.

Every case is checked against the cell's equations written here in numpy, against the Loop
version of the same K.rnn (the forward outputs of a function that also takes gradients, which
keeps the Loop), on a fresh onnxruntime session of the exported file and, where its LSTM/GRU/RNN
implement the activations (defaults only), on onnx.reference."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph
import kgraph.backend as K
from kgraph.ops import rnn_cells

B, T, I, H = 3, 5, 4, 3
TOL = dict(rtol=1e-5, atol=1e-5)


def _np_sigmoid(v):
    return 1 / (1 + np.exp(-v))


ACTIVATIONS = {  # Keras activation → (K function, numpy)
    "tanh": (K.tanh, np.tanh),
    "sigmoid": (K.sigmoid, _np_sigmoid),
    "hard_sigmoid": (K.hard_sigmoid, lambda v: np.clip(0.2 * v + 0.5, 0, 1)),
    "relu": (K.relu, lambda v: np.maximum(v, 0)),
}


# -- cells as Keras 2.3.1 writes them (layers/recurrent.py), and in numpy ---------------------------
def lstm_cell(w, implementation, act="tanh", ract="sigmoid"):
    kernel, recurrent, bias = [None if v is None else K.variable(v) for v in w]
    ka, kr = ACTIVATIONS[act][0], ACTIVATIONS[ract][0]
    # implementation 1: the per-gate slices are taken in build(), outside the step
    k_i, k_f, k_c, k_o = [kernel[:, g * H:(g + 1) * H] for g in range(4)]
    r_i, r_f, r_c, r_o = [recurrent[:, g * H:(g + 1) * H] for g in range(4)]
    b_g = [None if bias is None else bias[g * H:(g + 1) * H] for g in range(4)]

    def step(x_t, states):
        h_tm1, c_tm1 = states
        if implementation == 1:
            x = [K.dot(x_t, k) for k in (k_i, k_f, k_c, k_o)]
            if bias is not None:
                x = [K.bias_add(v, b) for v, b in zip(x, b_g)]
            i = kr(x[0] + K.dot(h_tm1, r_i))
            f = kr(x[1] + K.dot(h_tm1, r_f))
            c = f * c_tm1 + i * ka(x[2] + K.dot(h_tm1, r_c))
            o = kr(x[3] + K.dot(h_tm1, r_o))
        else:
            z = K.dot(x_t, kernel)
            z += K.dot(h_tm1, recurrent)
            if bias is not None:
                z = K.bias_add(z, bias)
            i, f = kr(z[:, :H]), kr(z[:, H:2 * H])
            c = f * c_tm1 + i * ka(z[:, 2 * H:3 * H])
            o = kr(z[:, 3 * H:])
        h = o * ka(c)
        return h, [h, c]
    return step, (kernel, recurrent, bias)


def np_lstm(w, act="tanh", ract="sigmoid"):
    kernel, recurrent, bias = w
    ka, kr = ACTIVATIONS[act][1], ACTIVATIONS[ract][1]

    def step(x_t, states):
        h, c = states
        z = x_t @ kernel + h @ recurrent + (0 if bias is None else bias)
        i, f, g, o = kr(z[:, :H]), kr(z[:, H:2 * H]), ka(z[:, 2 * H:3 * H]), kr(z[:, 3 * H:])
        c = f * c + i * g
        h = o * ka(c)
        return h, [h, c]
    return step


def gru_cell(w, implementation, reset_after, act="tanh", ract="sigmoid"):
    kernel, recurrent, bias = [None if v is None else K.variable(v) for v in w]
    ka, kr = ACTIVATIONS[act][0], ACTIVATIONS[ract][0]
    if bias is None:
        input_bias = recurrent_bias = None
    elif reset_after:
        input_bias, recurrent_bias = K.flatten(bias[0]), K.flatten(bias[1])
    else:
        input_bias, recurrent_bias = bias, None
    kz, kr_, kh = [kernel[:, g * H:(g + 1) * H] for g in range(3)]
    rz, rr, rh = [recurrent[:, g * H:(g + 1) * H] for g in range(3)]

    def cols(v, g):
        return None if v is None else v[g * H:(g + 1) * H]

    def step(x_t, states):
        h_tm1 = states[0]
        if implementation == 1:
            x_z, x_r, x_h = K.dot(x_t, kz), K.dot(x_t, kr_), K.dot(x_t, kh)
            if input_bias is not None:
                x_z, x_r, x_h = [K.bias_add(v, cols(input_bias, g)) for g, v in enumerate((x_z, x_r, x_h))]
            recurrent_z, recurrent_r = K.dot(h_tm1, rz), K.dot(h_tm1, rr)
            if reset_after and bias is not None:
                recurrent_z = K.bias_add(recurrent_z, cols(recurrent_bias, 0))
                recurrent_r = K.bias_add(recurrent_r, cols(recurrent_bias, 1))
            z, r = kr(x_z + recurrent_z), kr(x_r + recurrent_r)
            if reset_after:
                recurrent_h = K.dot(h_tm1, rh)
                if bias is not None:
                    recurrent_h = K.bias_add(recurrent_h, cols(recurrent_bias, 2))
                recurrent_h = r * recurrent_h
            else:
                recurrent_h = K.dot(r * h_tm1, rh)
        else:
            matrix_x = K.dot(x_t, kernel)
            if input_bias is not None:
                matrix_x = K.bias_add(matrix_x, input_bias)
            x_z, x_r, x_h = matrix_x[:, :H], matrix_x[:, H:2 * H], matrix_x[:, 2 * H:]
            if reset_after:
                matrix_inner = K.dot(h_tm1, recurrent)
                if bias is not None:
                    matrix_inner = K.bias_add(matrix_inner, recurrent_bias)
            else:
                matrix_inner = K.dot(h_tm1, recurrent[:, :2 * H])
            z = kr(x_z + matrix_inner[:, :H])
            r = kr(x_r + matrix_inner[:, H:2 * H])
            if reset_after:
                recurrent_h = r * matrix_inner[:, 2 * H:]
            else:
                recurrent_h = K.dot(r * h_tm1, recurrent[:, 2 * H:])
        hh = ka(x_h + recurrent_h)
        h = z * h_tm1 + (1 - z) * hh
        return h, [h]
    return step, (kernel, recurrent, bias)


def np_gru(w, reset_after, act="tanh", ract="sigmoid"):
    kernel, recurrent, bias = w
    ka, kr = ACTIVATIONS[act][1], ACTIVATIONS[ract][1]
    if bias is None:
        bx, bh = np.zeros(3 * H, np.float32), np.zeros(3 * H, np.float32)
    else:
        bx, bh = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * H, np.float32))

    def step(x_t, states):
        h = states[0]
        x = x_t @ kernel + bx
        inner = h @ recurrent + bh
        z, r = kr(x[:, :H] + inner[:, :H]), kr(x[:, H:2 * H] + inner[:, H:2 * H])
        if reset_after:
            hh = ka(x[:, 2 * H:] + r * inner[:, 2 * H:])
        else:
            hh = ka(x[:, 2 * H:] + (r * h) @ recurrent[:, 2 * H:])
        h = z * h + (1 - z) * hh
        return h, [h]
    return step


def simple_cell(w, act="tanh"):
    kernel, recurrent, bias = [None if v is None else K.variable(v) for v in w]
    ka = ACTIVATIONS[act][0]

    def step(x_t, states):
        h = K.dot(x_t, kernel)
        if bias is not None:
            h = K.bias_add(h, bias)
        output = ka(h + K.dot(states[0], recurrent))
        return output, [output]
    return step, (kernel, recurrent, bias)


def np_simple(w, act="tanh"):
    kernel, recurrent, bias = w
    ka = ACTIVATIONS[act][1]

    def step(x_t, states):
        h = ka(x_t @ kernel + states[0] @ recurrent + (0 if bias is None else bias))
        return h, [h]
    return step


def np_rnn(step, x, states, go_backwards=False):
    outputs = []
    steps = range(x.shape[1])
    for t in (reversed(steps) if go_backwards else steps):
        out, states = step(x[:, t], states)
        outputs.append(out)
    return [np.stack(outputs, axis=1), outputs[-1]] + list(states)


def weights(kind, use_bias, reset_after=False, seed=0):
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    rng = np.random.default_rng(seed)
    bias_shape = (2, gates * H) if reset_after else (gates * H,)
    return (rng.normal(0, 0.5, (I, gates * H)).astype(np.float32),
            rng.normal(0, 0.5, (H, gates * H)).astype(np.float32),
            rng.normal(0, 0.5, bias_shape).astype(np.float32) if use_bias else None)


# -- running a step three ways -------------------------------------------------------------------
def op_types(model):
    return [n.op_type for n in model.graph.node]


def build(step, n_states, go_backwards=False, mask=None):
    x = K.placeholder((None, None, I), name="x")
    states = [K.placeholder((None, H), name=f"s{i}") for i in range(n_states)]
    last, outputs, new_states = K.rnn(step, x, states, go_backwards=go_backwards, mask=mask)
    return [x] + states, [outputs, last] + list(new_states)


def feeds(n_states, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(B, T, I)).astype(np.float32)] + \
        [rng.normal(size=(B, H)).astype(np.float32) for _ in range(n_states)]


def check_recognized(step, params, np_step, n_states, op, tmp_path, go_backwards=False, reference=True):
    inputs, outputs = build(step, n_states, go_backwards)
    values = feeds(n_states)
    fn = K.function(inputs, outputs)
    model = fn.session_model()
    onnx.checker.check_model(model, full_check=True)
    assert op in op_types(model) and "Loop" not in op_types(model), op_types(model)
    assert "MatMul" not in op_types(model)  # the hoisted input projection went into the op
    got = fn(values)
    expected = np_rnn(np_step, values[0], values[1:], go_backwards)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOL)
    # the same K.rnn traced under loops_kept() is a Loop, and agrees
    with rnn_cells.loops_kept():
        kept_inputs, kept_outputs = build(step, n_states, go_backwards)
    kept = K.function(kept_inputs, kept_outputs)
    kept_ops = op_types(kept.session_model())
    assert "Loop" in kept_ops and op not in kept_ops, kept_ops
    for g, e in zip(got, kept(values)):
        np.testing.assert_allclose(g, e, **TOL)
    # and so does its gradient's graph, which differentiates the Loop
    trainable = [p for p in params if p is not None]
    loop_fn = K.function(inputs, outputs + K.gradients(K.sum(outputs[0]), trainable))
    loop_ops = op_types(loop_fn.session_model())
    assert "Loop" in loop_ops and op not in loop_ops
    for g, e in zip(got, loop_fn(values)):
        np.testing.assert_allclose(g, e, **TOL)
    # the exported file, on a fresh session and on onnx.reference
    path = tmp_path / "cell.onnx"
    kgraph.export(fn, path)
    exported = onnx.load(str(path))
    assert op in op_types(exported) and "Loop" not in op_types(exported)
    names = [i.name for i in exported.graph.input]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for g, e in zip(session.run(None, dict(zip(names, values))), got):
        np.testing.assert_allclose(g, e, **TOL)
    if reference:
        for g, e in zip(ReferenceEvaluator(exported).run(None, dict(zip(names, values))), got):
            np.testing.assert_allclose(g, e, **TOL)
    return exported


# -- recognized: Keras's cells ---------------------------------------------------------------------
@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("use_bias", [True, False])
def test_lstm_cell_becomes_one_lstm_op(implementation, use_bias, tmp_path):
    w = weights("LSTM", use_bias)
    step, params = lstm_cell(w, implementation)
    check_recognized(step, params, np_lstm(w), 2, "LSTM", tmp_path)


@pytest.mark.parametrize("act, ract", [("relu", "hard_sigmoid"), ("tanh", "hard_sigmoid"), ("sigmoid", "sigmoid")])
def test_lstm_activations_and_go_backwards(act, ract, tmp_path):
    w = weights("LSTM", True, seed=2)
    step, params = lstm_cell(w, 2, act, ract)
    # onnx.reference's LSTM knows only the default activations
    check_recognized(step, params, np_lstm(w, act, ract), 2, "LSTM", tmp_path, go_backwards=True, reference=False)


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_cell_becomes_one_gru_op(implementation, reset_after, tmp_path):
    w = weights("GRU", True, reset_after, seed=3)
    step, params = gru_cell(w, implementation, reset_after)
    exported = check_recognized(step, params, np_gru(w, reset_after), 1, "GRU", tmp_path)
    gru, = [n for n in exported.graph.node if n.op_type == "GRU"]
    # written even when 0: onnxruntime's CUDA provider keeps a GRU without it on cuDNN, which resets after
    assert [a.i for a in gru.attribute if a.name == "linear_before_reset"] == [int(reset_after)]


@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_without_bias_hard_sigmoid_and_go_backwards(reset_after, tmp_path):
    w = weights("GRU", False, reset_after, seed=4)
    step, params = gru_cell(w, 2, reset_after, "tanh", "hard_sigmoid")
    check_recognized(step, params, np_gru(w, reset_after, "tanh", "hard_sigmoid"), 1, "GRU", tmp_path,
                     go_backwards=True, reference=False)


@pytest.mark.parametrize("act, use_bias", [("tanh", True), ("relu", False)])
def test_simple_rnn_cell_becomes_one_rnn_op(act, use_bias, tmp_path):
    w = weights("RNN", use_bias, seed=5)
    step, params = simple_cell(w, act)
    check_recognized(step, params, np_simple(w, act), 1, "RNN", tmp_path, reference=act == "tanh")


# -- kept as a Loop ----------------------------------------------------------------------------
def check_loop_kept(step, np_step, n_states, dtype="float32"):
    inputs, outputs = build(step, n_states)
    values = [v.astype(dtype) for v in feeds(n_states)]
    fn = K.function(inputs, outputs)
    ops = op_types(fn.session_model())
    assert "Loop" in ops and not {"LSTM", "GRU", "RNN"} & set(ops), ops
    got = fn(values)
    expected = np_rnn(np_step, values[0].astype(np.float64), [v.astype(np.float64) for v in values[1:]])
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOL)


def test_mixed_gate_activations_keep_the_loop():
    """ONNX's LSTM has one activation for i, f and o: a cell with a hard_sigmoid o does not fit."""
    w = weights("LSTM", True, seed=6)
    kernel, recurrent, bias = [K.variable(v) for v in w]

    def step(x_t, states):
        z = K.bias_add(K.dot(x_t, kernel) + K.dot(states[0], recurrent), bias)
        i, f, o = K.sigmoid(z[:, :H]), K.sigmoid(z[:, H:2 * H]), K.hard_sigmoid(z[:, 3 * H:])
        c = f * states[1] + i * K.tanh(z[:, 2 * H:3 * H])
        h = o * K.tanh(c)
        return h, [h, c]
    hs = ACTIVATIONS["hard_sigmoid"][1]

    def np_step(x_t, states):
        z = x_t @ w[0] + states[0] @ w[1] + w[2]
        i, f, o = _np_sigmoid(z[:, :H]), _np_sigmoid(z[:, H:2 * H]), hs(z[:, 3 * H:])
        c = f * states[1] + i * np.tanh(z[:, 2 * H:3 * H])
        h = o * np.tanh(c)
        return h, [h, c]
    check_loop_kept(step, np_step, 2)


def test_an_extra_op_in_the_step_keeps_the_loop():
    """The step's output is 2 h while the state is h: not the cell ONNX's RNN computes."""
    w = weights("RNN", True, seed=7)
    inner, _ = simple_cell(w)
    np_inner = np_simple(w)

    def step(x_t, states):
        h, new = inner(x_t, states)
        return h * 2.0, new

    def np_step(x_t, states):
        h, new = np_inner(x_t, states)
        return h * 2.0, new
    check_loop_kept(step, np_step, 1)


def test_masked_rnn_keeps_the_loop():
    w = weights("LSTM", True, seed=8)
    step, _ = lstm_cell(w, 2)
    mask = K.placeholder((None, None), name="mask")
    x = K.placeholder((None, None, I))
    states = [K.placeholder((None, H)) for _ in range(2)]
    _, outputs, _ = K.rnn(step, x, states, mask=mask)
    fn = K.function([x] + states + [mask], [outputs])
    ops = op_types(fn.session_model())
    assert "Loop" in ops and "LSTM" not in ops
    values = feeds(2, seed=9)
    m = np.ones((B, T), np.float32)
    m[0, 2:] = 0
    np_step = np_lstm(w)
    out, (h, c), want = None, values[1:], []
    for t in range(T):
        y, (h2, c2) = np_step(values[0][:, t], [h, c])
        keep = m[:, t:t + 1] > 0
        out = np.where(keep, y, np.zeros_like(y) if out is None else out)
        h, c = np.where(keep, h2, h), np.where(keep, c2, c)
        want.append(out)
    np.testing.assert_allclose(fn(values + [m])[0], np.stack(want, axis=1), **TOL)


def test_float64_cell_keeps_the_loop():
    """onnxruntime's LSTM/GRU/RNN kernels take float32 only."""
    K.set_floatx("float64")  # the fixture restores it
    w = weights("RNN", True, seed=10)
    w64 = tuple(v.astype(np.float64) for v in w)
    step, params = simple_cell(w64)
    assert params[0].dtype == "float64"
    check_loop_kept(step, np_simple(w64), 1, dtype="float64")


def test_training_differentiates_the_loop_not_the_op():
    """K.gradients through a recognized cell: the gradient graph keeps both Loops and matches
    central differences of the numpy forward in float64."""
    w = weights("GRU", True, reset_after=True, seed=11)
    step, (kernel, recurrent, bias) = gru_cell(w, 2, True)
    inputs, outputs = build(step, 1)
    loss = K.sum(outputs[0] * outputs[0])
    fn = K.function(inputs, K.gradients(loss, [recurrent]))
    ops = op_types(fn.session_model())
    assert ops.count("Loop") == 2 and "GRU" not in ops, ops
    values = feeds(1, seed=12)
    grad = fn(values)[0]
    w64 = tuple(v.astype(np.float64) for v in w)
    x64, h64 = values[0].astype(np.float64), values[1].astype(np.float64)

    def np_loss(rk):
        out = np_rnn(np_gru((w64[0], rk, w64[2]), True), x64, [h64])[0]
        return np.sum(out * out)
    eps, numeric = 1e-6, np.zeros_like(w64[1])
    for idx in np.ndindex(*numeric.shape):
        up, down = w64[1].copy(), w64[1].copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (np_loss(up) - np_loss(down)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


def test_a_body_that_reads_x_t_itself_is_recognized_too():
    """K.rnn hoists x_t @ W out of the loop; a loop built without that rewrite (the step's own
    product of x_t inside the body) is the same cell and lowers to the same op."""
    from kgraph.graph import Placeholder, Subgraph
    from kgraph.ops import control
    w = weights("LSTM", True, seed=13)
    step, _ = lstm_cell(w, 2)
    x = K.placeholder((None, None, I))
    states = [K.placeholder((None, H)) for _ in range(2)]
    sequence = K.permute_dimensions(x, (1, 0, 2))
    start = control.trace_start()
    state_params = [Placeholder(s.shape, s.dtype) for s in states]
    x_t = Placeholder(sequence.shape[1:], sequence.dtype)
    output, new_states = step(x_t, state_params)
    params = state_params + [x_t]
    captures, capture_params, body_outputs = control.close_over(params, new_states + [output], start)
    body = Subgraph(params + capture_params, body_outputs)
    assert "matmul" in [n.primitive.name for n in body.graph.nodes if any(t is x_t for t in n.inputs)]
    h_T, c_T, stacked = control.loop.bind(
        [*states, sequence, *captures], dict(n_carried=2, n_sequences=1, n_scan=1, n_residuals=0,
                                             reverse=False, grad_loop=False), (body,))
    fn = K.function([x] + states, [K.permute_dimensions(stacked, (1, 0, 2)), h_T, c_T])
    ops = op_types(fn.session_model())
    assert "LSTM" in ops and "Loop" not in ops, ops
    values = feeds(2, seed=14)
    expected = np_rnn(np_lstm(w), values[0], values[1:])
    for g, e in zip(fn(values), [expected[0]] + expected[2:]):
        np.testing.assert_allclose(g, e, **TOL)


def test_a_projection_the_function_also_returns_stays_computed():
    """The hoisted x @ W the fused op replaces is dropped only when nothing else reads it: here
    the function returns the same product too (merged with the hoisted one)."""
    w = weights("RNN", True, seed=15)
    step, (kernel, _, _) = simple_cell(w)
    inputs, outputs = build(step, 1)
    projection = K.dot(K.permute_dimensions(inputs[0], (1, 0, 2)), kernel)
    fn = K.function(inputs, outputs + [projection])
    model = fn.session_model()
    onnx.checker.check_model(model, full_check=True)
    assert "RNN" in op_types(model) and "MatMul" in op_types(model)
    values = feeds(1, seed=16)
    got = fn(values)
    expected = np_rnn(np_simple(w), values[0], values[1:])
    for g, e in zip(got, expected + [values[0].transpose(1, 0, 2) @ w[0]]):
        np.testing.assert_allclose(g, e, **TOL)


class _KOps:
    dot, tanh, sigmoid = staticmethod(K.dot), staticmethod(K.tanh), staticmethod(K.sigmoid)


class _NpOps:
    dot, tanh, sigmoid = staticmethod(np.matmul), staticmethod(np.tanh), staticmethod(_np_sigmoid)


# steps near the cells' equations, written once for K and numpy: (step(ops, w, x_t, h) -> h, fused?)
NEAR_MISSES = {
    "two recurrent products": (lambda o, w, x, h: o.tanh(o.dot(x, w[0]) + o.dot(o.dot(h, w[1]), w[2])), False),
    "state times the activation": (lambda o, w, x, h: o.tanh(o.dot(x, w[0]) + o.dot(h, w[1])) * h, False),
    "2 - z in a GRU-like update": (lambda o, w, x, h: (lambda z: z * h + (2 - z) * o.tanh(o.dot(x, w[0])
                                                                                       + o.dot(h, w[2])))(
        o.sigmoid(o.dot(x, w[0]) + o.dot(h, w[1]))), False),
    "a projection of a projection": (lambda o, w, x, h: o.tanh(o.dot(o.dot(x, w[0]), w[2]) + o.dot(h, w[1])), True),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_steps_near_a_cell_lower_correctly(name):
    """Either the fused op or the Loop, and numpy's values either way; never a failed lowering."""
    formula, fused = NEAR_MISSES[name]
    rng = np.random.default_rng(17)
    w = [rng.normal(0, 0.5, s).astype(np.float32) for s in ((I, H), (H, H), (H, H))]
    kw = [K.variable(v) for v in w]

    def step(x_t, states):
        h = formula(_KOps, kw, x_t, states[0])
        return h, [h]

    def np_step(x_t, states):
        h = formula(_NpOps, w, x_t, states[0])
        return h, [h]
    inputs, outputs = build(step, 1)
    fn = K.function(inputs, outputs)
    model = fn.session_model()
    onnx.checker.check_model(model, full_check=True)
    assert ("RNN" in op_types(model)) == fused and ("Loop" in op_types(model)) != fused, op_types(model)
    values = feeds(1, seed=18)
    for g, e in zip(fn(values), np_rnn(np_step, values[0], values[1:])):
        np.testing.assert_allclose(g, e, **TOL)


def test_a_deep_custom_step_keeps_the_loop():
    """A step of a few thousand chained ops (deeper than Python's recursion limit) is no cell."""
    rng = np.random.default_rng(19)
    w, u = rng.normal(0, 0.5, (I, H)).astype(np.float32), rng.normal(0, 0.5, (H, H)).astype(np.float32)
    kw, ku = K.variable(w), K.variable(u)

    def step(x_t, states):
        h = K.dot(x_t, kw) + K.dot(states[0], ku)
        for _ in range(1500):
            h = K.tanh(h)
        return h, [h]

    def np_step(x_t, states):
        h = x_t @ w + states[0] @ u
        for _ in range(1500):
            h = np.tanh(h)
        return h, [h]
    check_loop_kept(step, np_step, 1)
