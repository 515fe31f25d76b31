"""LSTM benchmark (issue 5): a Keras-style LSTM step function through K.rnn (one ONNX Loop) against
PyTorch's nn.LSTM, ONNX's native LSTM op and a hand-written ONNX Loop on raw onnxruntime.

    python bench/bench_lstm.py [--threads N] [--rounds R] [--seq 100 --batch 32 --input 64 --hidden 128]

Forward: the output sequence (batch, time, hidden) from zero initial states, for
  * K.rnn Loop       — K.function over K.rnn(step, ...), the step traced once into a Loop body
    (traced inside kgraph.ops.rnn_cells.loops_kept(), so that it stays a Loop);
  * K.rnn recognized (ONNX LSTM) — the same K.function traced normally: the Loop of this
    standard cell lowers to ONNX's fused LSTM op (kgraph/ops/rnn_cells.py);
  * K.rnn unrolled   — the same step, unroll=True (one cell per time step in the graph);
  * hand-written Loop — the same computation written directly as an ONNX Loop (Transpose,
    Gather x_t, two MatMuls, Split into gates, ...), weights as initializers, raw ORT;
  * ONNX LSTM op     — ONNX's fused ``LSTM`` (time-major, transposed around), raw ORT;
  * torch nn.LSTM    — batch_first, under no_grad (skipped when torch is not installed).
Forward+backward: the loss sum(outputs * R) and its gradients with respect to the three weight
tensors: K.gradients through the Loop (a reversed Loop) vs torch's backward().

All engines run in one process, interleaved round by round, with the same thread count; every
engine's result is checked against K.rnn's before timing.  Medians of per-call times.
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from harness import measure, ort_session, print_table, setup_threads, torch_or_none  # noqa: E402


def lstm_weights(n_in, hidden, seed=0):
    """Keras layout: kernel (in, 4h), recurrent kernel (h, 4h), bias (4h); gates i, f, c, o."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.1, 0.1, (n_in, 4 * hidden)).astype(np.float32),
            rng.uniform(-0.1, 0.1, (hidden, 4 * hidden)).astype(np.float32),
            rng.uniform(-0.1, 0.1, 4 * hidden).astype(np.float32))


# -- kgraph: a Keras-style step function ---------------------------------------------------------
def k_activations():
    import kgraph.backend as K
    from kgraph.ops import elementwise as ew
    sigmoid = K.sigmoid if "sigmoid" not in K.missing else ew.sigmoid
    tanh = K.tanh if "tanh" not in K.missing else ew.tanh
    return sigmoid, tanh


def kgraph_lstm(weights, hidden, unroll, seq):
    """K.rnn over an LSTMCell-like step (Keras 2.3.1 LSTMCell, implementation=2)."""
    import kgraph.backend as K
    sigmoid, tanh = k_activations()
    kernel, recurrent, bias = [K.variable(w) for w in weights]
    h = hidden

    def step(x_t, states):
        h_tm1, c_tm1 = states
        z = K.dot(x_t, kernel) + K.dot(h_tm1, recurrent) + bias
        i, f = sigmoid(z[:, :h]), sigmoid(z[:, h:2 * h])
        c = f * c_tm1 + i * tanh(z[:, 2 * h:3 * h])
        o = sigmoid(z[:, 3 * h:])
        h_t = o * tanh(c)
        return h_t, [h_t, c]
    x = K.placeholder((None, seq if unroll else None, weights[0].shape[0]), name="x")
    h0 = K.placeholder((None, hidden), name="h0")
    c0 = K.placeholder((None, hidden), name="c0")
    _, outputs, _ = K.rnn(step, x, [h0, c0], unroll=unroll)
    return (x, h0, c0), outputs, (kernel, recurrent, bias)


def kgraph_functions(weights, hidden, seq, r, unroll, train=True):
    import kgraph.backend as K
    inputs, outputs, params = kgraph_lstm(weights, hidden, unroll, seq)
    forward = K.function(list(inputs), [outputs], name="lstm_forward")
    if not train:
        return forward, None
    loss = K.sum(outputs * K.constant(r))
    return forward, K.function(list(inputs), [loss] + K.gradients(loss, list(params)), name="lstm_grad")


# -- raw ONNX: a hand-written Loop and the LSTM op -----------------------------------------------
def handwritten_loop_model(weights, hidden):
    from onnx import TensorProto, helper, numpy_helper
    kernel, recurrent, bias = weights
    f = TensorProto.FLOAT
    body_nodes = [
        helper.make_node("Gather", ["xt_all", "iter"], ["x_t"], axis=0),
        helper.make_node("MatMul", ["x_t", "W"], ["xw"]),
        helper.make_node("MatMul", ["h_in", "U"], ["hu"]),
        helper.make_node("Add", ["xw", "hu"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        helper.make_node("Split", ["z"], ["zi", "zf", "zc", "zo"], axis=1, num_outputs=4),
        helper.make_node("Sigmoid", ["zi"], ["i"]),
        helper.make_node("Sigmoid", ["zf"], ["f"]),
        helper.make_node("Tanh", ["zc"], ["g"]),
        helper.make_node("Sigmoid", ["zo"], ["o"]),
        helper.make_node("Mul", ["f", "c_in"], ["fc"]),
        helper.make_node("Mul", ["i", "g"], ["ig"]),
        helper.make_node("Add", ["fc", "ig"], ["c_out"]),
        helper.make_node("Tanh", ["c_out"], ["tc"]),
        helper.make_node("Mul", ["o", "tc"], ["h_out"]),
        helper.make_node("Identity", ["h_out"], ["h_scan"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body = helper.make_graph(
        body_nodes, "lstm_body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", f, ["batch", hidden]),
         helper.make_tensor_value_info("c_in", f, ["batch", hidden])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", f, ["batch", hidden]),
         helper.make_tensor_value_info("c_out", f, ["batch", hidden]),
         helper.make_tensor_value_info("h_scan", f, ["batch", hidden])])
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt_all"], perm=[1, 0, 2]),
        helper.make_node("Shape", ["xt_all"], ["steps_1d"], start=0, end=1),
        helper.make_node("Squeeze", ["steps_1d", "axis0"], ["steps"]),
        helper.make_node("Loop", ["steps", "true", "h0", "c0"], ["h_T", "c_T", "ys_tm"], body=body),
        helper.make_node("Transpose", ["ys_tm"], ["y"], perm=[1, 0, 2]),
    ]
    inits = [numpy_helper.from_array(kernel, "W"), numpy_helper.from_array(recurrent, "U"),
             numpy_helper.from_array(bias, "b"), numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array(True), "true")]
    return _lstm_model(nodes, inits, "lstm_loop", kernel.shape[0], hidden)


def onnx_lstm_model(weights, hidden):
    """ONNX's LSTM: gates ordered i, o, f, c; W (1, 4h, in), R (1, 4h, h), B = [Wb, Rb = 0]."""
    from onnx import helper, numpy_helper
    kernel, recurrent, bias = weights
    order = np.concatenate([np.arange(g * hidden, (g + 1) * hidden) for g in (0, 3, 1, 2)])
    w = kernel.T[order][None]
    r = recurrent.T[order][None]
    b = np.concatenate([bias[order], np.zeros(4 * hidden, np.float32)])[None]
    # onnxruntime's CPU LSTM runs time-major only (layout=0): transpose around it
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]),
        helper.make_node("Unsqueeze", ["h0", "axis0"], ["h0_3d"]),
        helper.make_node("Unsqueeze", ["c0", "axis0"], ["c0_3d"]),
        helper.make_node("LSTM", ["x_tm", "W", "R", "B", "", "h0_3d", "c0_3d"], ["y4"], hidden_size=hidden),
        helper.make_node("Squeeze", ["y4", "axis1"], ["y_tm"]),
        helper.make_node("Transpose", ["y_tm"], ["y"], perm=[1, 0, 2]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    return _lstm_model(nodes, inits, "lstm_op", kernel.shape[0], hidden)


def _lstm_model(nodes, initializers, name, n_in, hidden):
    """x (batch, time, n_in), h0, c0 (batch, hidden) → y (batch, time, hidden), opset 18."""
    from onnx import TensorProto, helper
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", f, ["batch", "time", n_in]),
         helper.make_tensor_value_info("h0", f, ["batch", hidden]),
         helper.make_tensor_value_info("c0", f, ["batch", hidden])],
        [helper.make_tensor_value_info("y", f, ["batch", "time", hidden])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


# -- torch ------------------------------------------------------------------------------------
def torch_lstm(torch, weights, hidden):
    kernel, recurrent, bias = weights
    lstm = torch.nn.LSTM(kernel.shape[0], hidden, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(kernel.T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(recurrent.T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(bias))
        lstm.bias_hh_l0.zero_()
    return lstm


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seq", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    setup_threads(args.threads)
    torch = torch_or_none()
    seq, batch, hidden = args.seq, args.batch, args.hidden
    print(f"LSTM seq {seq}, batch {batch}, input {args.input}, hidden {hidden}; {args.threads} threads; "
          f"torch {'%s' % torch.__version__ if torch else 'not installed (column skipped)'}")

    weights = lstm_weights(args.input, hidden)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, seq, args.input)).astype(np.float32)
    zeros = np.zeros((batch, hidden), np.float32)
    r = rng.standard_normal((batch, seq, hidden)).astype(np.float32)

    from kgraph.ops.rnn_cells import loops_kept
    with loops_kept():  # the Loop itself, though its body is a standard cell
        k_loop, k_loop_train = kgraph_functions(weights, hidden, seq, r, unroll=False)
    # the same K.rnn traced normally: inference lowers the recognized cell to ONNX's LSTM op
    k_fused, _ = kgraph_functions(weights, hidden, seq, r, unroll=False, train=False)
    assert "LSTM" in [n.op_type for n in k_fused.session_model().graph.node]
    # the unrolled training graph (100 cells and their gradients) takes minutes to build: forward only
    k_unrolled, _ = kgraph_functions(weights, hidden, seq, r, unroll=True, train=False)
    hand = ort_session(handwritten_loop_model(weights, hidden), args.threads)
    native = ort_session(onnx_lstm_model(weights, hidden), args.threads)
    feeds = {"x": x, "h0": zeros, "c0": zeros}
    hand_run, native_run = hand._sess.run, native._sess.run

    reference = k_loop([x, zeros, zeros])[0]
    for name, got in (("K.rnn unrolled", k_unrolled([x, zeros, zeros])[0]),
                      ("K.rnn recognized (ONNX LSTM)", k_fused([x, zeros, zeros])[0]),
                      ("hand-written Loop", hand.run(None, feeds)[0]),
                      ("ONNX LSTM op", native.run(None, feeds)[0])):
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5, err_msg=name)
    forward = {
        "K.rnn Loop": lambda: k_loop([x, zeros, zeros]),
        "K.rnn unrolled": lambda: k_unrolled([x, zeros, zeros]),
        "K.rnn recognized (ONNX LSTM)": lambda: k_fused([x, zeros, zeros]),
        "hand-written Loop": lambda: hand_run(["y"], feeds, None),
        "ONNX LSTM op": lambda: native_run(["y"], feeds, None),
    }
    train = {"K.rnn Loop": lambda: k_loop_train([x, zeros, zeros])}
    grads = k_loop_train([x, zeros, zeros])
    if torch is not None:
        lstm = torch_lstm(torch, weights, hidden)
        xt, rt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(r))  # writable copies

        def torch_forward():
            with torch.no_grad():
                return lstm(xt)[0]

        def torch_train():
            lstm.zero_grad(set_to_none=True)
            loss = (lstm(xt)[0] * rt).sum()
            loss.backward()
            return loss
        np.testing.assert_allclose(torch_forward().numpy(), reference, rtol=1e-4, atol=1e-5, err_msg="torch")
        torch_train()
        np.testing.assert_allclose(lstm.weight_hh_l0.grad.numpy().T, grads[2], rtol=1e-3, atol=1e-3,
                                   err_msg="torch gradient")
        forward["torch nn.LSTM"] = torch_forward
        train["torch nn.LSTM"] = torch_train
    base = "torch nn.LSTM" if torch is not None else "hand-written Loop"
    fwd = measure(forward, args.rounds, target_seconds=0.05)
    print_table("forward: output sequence", fwd, base)
    print(f"  K.rnn Loop / hand-written Loop: {fwd['K.rnn Loop'] / fwd['hand-written Loop']:.3f}x (target <= 1.1x)")
    print(f"  K.rnn recognized / {base}: {fwd['K.rnn recognized (ONNX LSTM)'] / fwd[base]:.3f}x (target <= 1.05x)")
    fb = measure(train, args.rounds, target_seconds=0.1)
    print_table("forward + backward: loss and gradients of the 3 weight tensors", fb,
                base if torch is not None else "K.rnn Loop")


if __name__ == "__main__":
    main()
