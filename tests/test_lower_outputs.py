"""Output naming in the lowering (lower/model.py: _bind_outputs): every output gets its name in one
rename pass over the nodes, nested Loop bodies included; a value listed twice, a graph input and
an unchanged variable are outputs through an Identity.  Checked against numpy, with the file
passing the full ONNX checker."""
import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

import kgraph.backend as K


def test_many_outputs_aliases_inputs_and_loop_captures_keep_their_values():
    x = K.placeholder((2, 3), name="x")
    w = K.variable(np.full((3,), 0.5, np.float32), name="w")
    hidden = [K.tanh(x * float(i)) for i in range(40)]  # many outputs: each renamed once
    scale = K.sum(x, axis=1, keepdims=True)  # an output also read inside the Loop body below

    def step(x_t, states):
        new = states[0] + x_t * scale
        return new, [new]

    seq = K.stack([x, 2 * x], axis=1)  # (2, 2, 3)
    last, _, _ = K.rnn(step, seq, [K.zeros_like(x)])
    outputs = hidden + [scale, last, hidden[0], x, w]  # hidden[0] twice; an input; a variable
    f = K.function([x], outputs)
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 6
    got = f([a])
    s = a.sum(axis=1, keepdims=True)
    expected = [np.tanh(a * i) for i in range(40)] + [s, a * s + 2 * a * s, np.tanh(0 * a), a, np.full(3, 0.5)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)

    proto = f.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    names = [o.name for o in proto.graph.output]
    assert len(set(names)) == len(names)
    feeds = {proto.graph.input[0].name: a}
    for g, e in zip(ReferenceEvaluator(proto).run(None, feeds), expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
