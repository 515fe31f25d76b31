"""Keras 2.3.1's LSTM / GRU / SimpleRNN layers on kgraph: predict and the kgraph.export_keras file
run ONNX's fused LSTM / GRU / RNN op (kgraph/ops/rnn_cells.py) instead of a Loop, and agree with
the cells' equations written here in numpy from the layer's own weights, with the Loop version
(the same graph with its gradient taken), and with a fresh onnxruntime session of the file.
Masked layers keep the Loop; training still differentiates the Loop."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import keras
from keras import layers, models

import kgraph
import kgraph.backend as K

B, T, I, U = 3, 6, 4, 5
TOL = dict(rtol=1e-5, atol=1e-5)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


NP_ACTIVATIONS = {"tanh": np.tanh, "sigmoid": _sigmoid, "relu": lambda v: np.maximum(v, 0),
                  "hard_sigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1)}


# -- the cells in numpy (keras/layers/recurrent.py, implementation-independent) --------------------
def np_step(cell):
    act = NP_ACTIVATIONS[cell.activation.__name__]
    weights = cell.get_weights()
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if cell.use_bias else None
    if isinstance(cell, layers.LSTMCell):
        ract = NP_ACTIVATIONS[cell.recurrent_activation.__name__]

        def step(x, states):
            h, c = states
            z = x @ kernel + h @ recurrent + (0 if bias is None else bias)
            i, f, g, o = ract(z[:, :U]), ract(z[:, U:2 * U]), act(z[:, 2 * U:3 * U]), ract(z[:, 3 * U:])
            c = f * c + i * g
            return [o * act(c), c]
    elif isinstance(cell, layers.GRUCell):
        ract = NP_ACTIVATIONS[cell.recurrent_activation.__name__]
        zero = np.zeros(3 * U, np.float32)
        bx, bh = (zero, zero) if bias is None else (bias[0], bias[1]) if cell.reset_after else (bias, zero)

        def step(x, states):
            h = states[0]
            xz = x @ kernel + bx
            inner = h @ recurrent + bh
            z, r = ract(xz[:, :U] + inner[:, :U]), ract(xz[:, U:2 * U] + inner[:, U:2 * U])
            if cell.reset_after:
                hh = act(xz[:, 2 * U:] + r * inner[:, 2 * U:])
            else:
                hh = act(xz[:, 2 * U:] + (r * h) @ recurrent[:, 2 * U:])
            return [z * h + (1 - z) * hh]
    else:
        def step(x, states):
            return [act(x @ kernel + states[0] @ recurrent + (0 if bias is None else bias))]
    return step


def np_layer(layer, x, states=None, mask=None):
    """(output sequence, final states) of a recurrent layer over ``x`` (batch, time, features)."""
    step = np_step(layer.cell)
    n_states = 2 if isinstance(layer.cell, layers.LSTMCell) else 1
    states = [np.zeros((x.shape[0], U), np.float32)] * n_states if states is None else states
    order = range(x.shape[1])
    outputs, previous = [], np.zeros((x.shape[0], U), np.float32)
    for t in (reversed(order) if layer.go_backwards else order):
        new = step(x[:, t], states)
        if mask is not None:
            keep = mask[:, t:t + 1]
            new = [np.where(keep, n, s) for n, s in zip(new, states)]
            previous = np.where(keep, new[0], previous)
        else:
            previous = new[0]
        states = new
        outputs.append(previous)
    return np.stack(outputs, axis=1), states


def _x(seed=0, batch=B):
    return np.random.default_rng(seed).normal(size=(batch, T, I)).astype(np.float32)


def _ops(kfunction):
    return [n.op_type for n in kfunction.session_model().graph.node]


def _predict_ops(model):
    model._make_predict_function()
    return _ops(model.predict_function)


def _check_file(model, tmp_path, x, expected, op, reference=False):
    path = kgraph.export_keras(model, tmp_path / "rnn.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert op in ops and "Loop" not in ops, ops
    feeds = {proto.graph.input[0].name: x}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOL)
    if reference:
        for g, e in zip(ReferenceEvaluator(proto).run(None, feeds), expected):
            np.testing.assert_allclose(g, e, **TOL)


def _check_loop_version(model, x, predicted):
    """The forward values of the same graph with a gradient taken (the Loop and its reverse)."""
    fn = K.function(model.inputs, list(model.outputs) +
                    K.gradients(K.sum(model.outputs[0]), model.trainable_weights))
    ops = _ops(fn)
    assert "Loop" in ops and not {"LSTM", "GRU", "RNN"} & set(ops), ops
    for g, e in zip(fn([x]), predicted):
        np.testing.assert_allclose(g, e, **TOL)


def _sequential(layer):
    model = models.Sequential([layer])
    model.build((None, T, I))
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


CASES = [  # (layer, ONNX op, onnx.reference runs it: its LSTM/GRU/RNN know the default activations only)
    (lambda: layers.LSTM(U, implementation=1, return_sequences=True), "LSTM", True),
    (lambda: layers.LSTM(U, implementation=2, return_sequences=True, go_backwards=True), "LSTM", True),
    (lambda: layers.LSTM(U, activation="relu", recurrent_activation="hard_sigmoid", use_bias=False), "LSTM", False),
    (lambda: layers.GRU(U, implementation=1, return_sequences=True), "GRU", True),
    (lambda: layers.GRU(U, implementation=2, reset_after=True, return_sequences=True), "GRU", True),
    (lambda: layers.GRU(U, implementation=1, reset_after=True, go_backwards=True), "GRU", True),
    (lambda: layers.GRU(U, implementation=2, recurrent_activation="hard_sigmoid", use_bias=False,
                        return_sequences=True), "GRU", False),
    (lambda: layers.SimpleRNN(U, return_sequences=True), "RNN", True),
    (lambda: layers.SimpleRNN(U, activation="relu", use_bias=False, go_backwards=True), "RNN", False),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_layer_predicts_through_the_fused_op(case, tmp_path):
    make, op, reference = CASES[case]
    model = _sequential(make())
    layer = model.layers[0]
    ops = _predict_ops(model)
    assert op in ops and "Loop" not in ops, ops
    x = _x(case)
    predicted = model.predict(x)
    sequence, _ = np_layer(layer, x)
    expected = sequence if layer.return_sequences else sequence[:, -1]
    np.testing.assert_allclose(predicted, expected, **TOL)
    _check_loop_version(model, x, [predicted])
    _check_file(model, tmp_path, x, [expected], op, reference)


def test_return_state_gives_the_ops_final_states(tmp_path):
    inputs = layers.Input((T, I))
    lstm = layers.LSTM(U, return_sequences=True, return_state=True)
    sequence, h, c = lstm(inputs)
    model = models.Model(inputs, [sequence, h, c])
    x = _x(11)
    predicted = model.predict(x)
    assert "LSTM" in _predict_ops(model)
    want_sequence, (want_h, want_c) = np_layer(lstm, x)
    for g, e in zip(predicted, [want_sequence, want_h, want_c]):
        np.testing.assert_allclose(g, e, **TOL)
    _check_file(model, tmp_path, x, [want_sequence, want_h, want_c], "LSTM", reference=True)


def test_stateful_lstm_carries_the_ops_final_states_between_batches():
    model = models.Sequential([layers.LSTM(U, stateful=True, return_sequences=True, batch_input_shape=(B, T, I))])
    lstm = model.layers[0]
    assert "LSTM" in _predict_ops(model)
    x1, x2 = _x(12), _x(13)
    first, second = model.predict(x1, batch_size=B), model.predict(x2, batch_size=B)
    want1, states = np_layer(lstm, x1)
    want2, _ = np_layer(lstm, x2, states)
    np.testing.assert_allclose(first, want1, **TOL)
    np.testing.assert_allclose(second, want2, **TOL)


def test_bidirectional_runs_two_fused_ops(tmp_path):
    model = _sequential(layers.Bidirectional(layers.GRU(U, return_sequences=True)))
    ops = _predict_ops(model)
    assert ops.count("GRU") == 2 and "Loop" not in ops, ops
    x = _x(14)
    wrapper = model.layers[0]
    forward, _ = np_layer(wrapper.forward_layer, x)
    backward, _ = np_layer(wrapper.backward_layer, x)
    expected = np.concatenate([forward, backward[:, ::-1]], axis=-1)  # Keras re-reverses the backward output
    predicted = model.predict(x)
    np.testing.assert_allclose(predicted, expected, **TOL)
    _check_file(model, tmp_path, x, [expected], "GRU", reference=True)


def test_masking_keeps_the_loop():
    model = models.Sequential([layers.Masking(0.0, input_shape=(T, I)), layers.LSTM(U, return_sequences=True)])
    ops = _predict_ops(model)
    assert "Loop" in ops and "LSTM" not in ops, ops
    x = _x(15)
    x[0, 3:] = 0.0
    mask = np.any(x != 0.0, axis=-1)
    sequence, _ = np_layer(model.layers[1], x, mask=mask)
    np.testing.assert_allclose(model.predict(x), sequence, **TOL)


@pytest.mark.parametrize("dropout", [dict(dropout=0.3), dict(recurrent_dropout=0.3)])
def test_dropout_keeps_the_loop(dropout):
    """Keras draws the dropout masks inside the step (a random op in the body), selected by the
    learning phase at run time: not one of ONNX's cells.  predict runs without dropout."""
    model = _sequential(layers.LSTM(U, return_sequences=True, **dropout))
    ops = _predict_ops(model)
    assert "Loop" in ops and "LSTM" not in ops, ops
    x = _x(18)
    np.testing.assert_allclose(model.predict(x), np_layer(model.layers[0], x)[0], **TOL)


def test_training_keeps_the_loop_and_predict_follows_the_new_weights():
    model = _sequential(layers.LSTM(U))
    model.compile("sgd", "mse")
    x, y = _x(16), np.random.default_rng(17).normal(size=(B, U)).astype(np.float32)
    model.train_on_batch(x, y)
    ops = _ops(model.train_function)
    assert "Loop" in ops and "LSTM" not in ops, ops
    assert "LSTM" in _predict_ops(model)
    sequence, _ = np_layer(model.layers[0], x)  # from the trained weights
    np.testing.assert_allclose(model.predict(x), sequence[:, -1], **TOL)
    assert keras.backend.backend() == "kgraph.backend"


def test_stacked_layers_each_become_one_op(tmp_path):
    """LSTM → GRU: the second op reads the first one's output sequence."""
    model = models.Sequential([layers.LSTM(U, return_sequences=True, input_shape=(T, I)),
                               layers.GRU(U, reset_after=True)])
    ops = _predict_ops(model)
    assert ops.count("LSTM") == 1 and ops.count("GRU") == 1 and "Loop" not in ops, ops
    x = _x(19)
    first, _ = np_layer(model.layers[0], x)
    second, _ = np_layer(model.layers[1], first)
    np.testing.assert_allclose(model.predict(x), second[:, -1], **TOL)
    _check_file(model, tmp_path, x, [second[:, -1]], "GRU", reference=True)
