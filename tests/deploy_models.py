"""Models that kgraph itself exports, for the CLI and deployment tests: an MLP, an RNN (an ONNX
Loop) and a CTC loss (a model-local function), with seeded inputs and kgraph's own outputs."""
import os
import subprocess
import sys

import numpy as np
import pytest

import kgraph
import kgraph.backend as K

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Exported:
    def __init__(self, path, fn, feeds):
        self.path, self.fn, self.feeds = str(path), fn, feeds
        self.outputs = fn([feeds[name] for name in feeds])


def _mlp(rng):
    x = K.placeholder((None, 4), name="features")
    w1 = K.variable(rng.standard_normal((4, 8)) * 0.5, name="w1")
    b1 = K.variable(rng.standard_normal(8) * 0.1, name="b1")
    w2 = K.variable(rng.standard_normal((8, 3)) * 0.5, name="w2")
    probabilities = K.softmax(K.dot(K.relu(K.bias_add(K.dot(x, w1), b1)), w2))
    probabilities.name = "probabilities"
    return K.function([x], [probabilities], name="mlp"), {"features": rng.standard_normal((5, 4)).astype("float32")}


def _rnn(rng):
    x = K.placeholder((None, 6, 3), name="sequence")
    w = K.variable(rng.standard_normal((3, 4)) * 0.5, name="w")
    u = K.variable(rng.standard_normal((4, 4)) * 0.5, name="u")

    def step(x_t, states):
        h = K.tanh(K.dot(x_t, w) + K.dot(states[0], u))
        return h, [h]
    h0 = K.zeros_like(K.dot(x[:, 0, :], w))
    last, _, _ = K.rnn(step, x, [h0])
    last.name = "last_state"
    return K.function([x], [last], name="rnn"), {"sequence": rng.standard_normal((2, 6, 3)).astype("float32")}


def _ctc(rng):
    x = K.placeholder((None, 5, 3), name="frames")
    labels = K.placeholder((None, 2), dtype="int32", name="labels")
    input_length = K.placeholder((None, 1), dtype="int32", name="input_length")
    label_length = K.placeholder((None, 1), dtype="int32", name="label_length")
    kernel = K.variable(rng.standard_normal((3, 4)) * 0.5, name="kernel")
    loss = K.ctc_batch_cost(labels, K.softmax(K.dot(x, kernel)), input_length, label_length)
    loss.name = "loss"
    feeds = {"frames": rng.standard_normal((2, 5, 3)).astype("float32"),
             "labels": np.array([[0, 1], [2, 2]], np.int32),
             "input_length": np.array([[5], [4]], np.int32), "label_length": np.array([[2], [1]], np.int32)}
    return K.function([x, labels, input_length, label_length], [loss], name="ctc"), feeds


BUILDERS = {"mlp": _mlp, "rnn": _rnn, "ctc": _ctc}


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """``{"mlp" | "rnn" | "ctc": Exported}``, each written by ``kgraph.export``."""
    folder = tmp_path_factory.mktemp("models")
    exported = {}
    for seed, (name, build) in enumerate(BUILDERS.items()):
        fn, feeds = build(np.random.default_rng(seed))
        exported[name] = Exported(kgraph.export(fn, folder / f"{name}.onnx"), fn, feeds)
    return exported


def kgraph_cli(*args, cwd=None, timeout=120):
    """``python -m kgraph ARGS`` in a subprocess: the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, "-m", "kgraph", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)
