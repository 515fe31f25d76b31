"""The files ``kgraph.export`` writes: external data past a threshold, inlined local functions,
training steps that plain ONNX Runtime loads without warnings, mode 0644, no overwriting without
``force``, and nothing left behind when a write fails.  (Freezing, names, opsets and a failed
inline save are in test_export.py.)"""
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import kgraph
import kgraph.backend as K
from kgraph.deploy.files import OutputExists
from kgraph.deploy.onnx_file import write_model

from deploy_models import BUILDERS


def _dense(rng):
    x = K.placeholder((None, 16), name="features")
    w = K.variable(rng.standard_normal((16, 32)).astype("float32"), name="kernel")  # 2 KiB of weights
    y = K.tanh(K.dot(x, w))
    y.name = "hidden"
    return K.function([x], [y]), rng.standard_normal((3, 16)).astype("float32")


def _mode(path):
    return oct(os.stat(path).st_mode & 0o777)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_external_data_past_the_threshold_loads_in_ort(tmp_path):
    fn, a = _dense(np.random.default_rng(0))
    path = tmp_path / "dense.onnx"
    kgraph.export(fn, path, external_data_threshold=1024)
    assert sorted(os.listdir(tmp_path)) == ["dense.onnx", "dense.onnx.data"]
    assert os.path.getsize(tmp_path / "dense.onnx.data") >= 16 * 32 * 4 > os.path.getsize(path)
    assert _mode(path) == _mode(tmp_path / "dense.onnx.data") == "0o644"
    onnx.checker.check_model(str(path), full_check=True)
    (kernel,) = [t for t in onnx.load(str(path), load_external_data=False).graph.initializer if t.name == "kernel"]
    assert {e.key: e.value for e in kernel.external_data}["location"] == "dense.onnx.data"
    np.testing.assert_allclose(_session(path).run(None, {"features": a})[0], fn([a])[0], rtol=1e-6)


def test_below_the_threshold_the_weights_stay_inside(tmp_path):
    fn, a = _dense(np.random.default_rng(1))
    kgraph.export(fn, tmp_path / "dense.onnx", external_data_threshold=1 << 20)
    assert os.listdir(tmp_path) == ["dense.onnx"]


def test_a_model_failing_the_check_after_an_external_save_leaves_nothing(tmp_path):
    # the >2 GB path can only check the model once saved: an invalid one must take its
    # weights file and temporaries with it
    weights = numpy_helper.from_array(np.ones((64, 64), "float32"), "w")
    node = helper.make_node("NoSuchOp", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    with pytest.raises(onnx.checker.ValidationError, match="NoSuchOp"):
        write_model(model, tmp_path / "bad.onnx", external_data_threshold=1024)
    assert os.listdir(tmp_path) == []


def test_an_existing_weights_file_is_not_overwritten_without_force(tmp_path):
    fn, a = _dense(np.random.default_rng(2))
    (tmp_path / "dense.onnx.data").write_bytes(b"someone else's weights")
    with pytest.raises(OutputExists, match=r"dense\.onnx\.data already exists"):
        kgraph.export(fn, tmp_path / "dense.onnx", external_data_threshold=1024, force=False)
    assert os.listdir(tmp_path) == ["dense.onnx.data"]
    assert (tmp_path / "dense.onnx.data").read_bytes() == b"someone else's weights"
    kgraph.export(fn, tmp_path / "dense.onnx", external_data_threshold=1024, force=True)
    np.testing.assert_allclose(_session(tmp_path / "dense.onnx").run(None, {"features": a})[0], fn([a])[0],
                               rtol=1e-6)


def test_an_existing_model_is_not_overwritten_without_force(tmp_path):
    fn, _ = _dense(np.random.default_rng(3))
    path = tmp_path / "dense.onnx"
    path.write_bytes(b"the model I keep")
    os.chmod(path, 0o600)
    with pytest.raises(OutputExists, match="dense.onnx already exists .use --force"):
        kgraph.export(fn, path, force=False)
    assert path.read_bytes() == b"the model I keep" and _mode(path) == "0o600"
    assert os.listdir(tmp_path) == ["dense.onnx"]  # refused before any temporary was made
    kgraph.export(fn, path, force=True)
    assert _mode(path) == "0o644" and onnx.load(str(path)).graph.output[0].name == "hidden"


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def test_inline_functions_expands_the_ctc_function(tmp_path):
    fn, feeds = BUILDERS["ctc"](np.random.default_rng(2))
    expected = fn(list(feeds.values()))[0]
    kept, inlined = tmp_path / "ctc.onnx", tmp_path / "ctc_inlined.onnx"
    kgraph.export(fn, kept)
    kgraph.export(fn, inlined, inline_functions=True)
    assert _mode(inlined) == "0o644"
    with_functions, plain = onnx.load(str(kept)), onnx.load(str(inlined))
    assert [f.name for f in with_functions.functions] == ["CTCLoss"]
    assert len(plain.functions) == 0
    assert {n.domain for n in _all_nodes(plain.graph)} <= {""}
    assert [o.domain for o in plain.opset_import] == [""]
    assert "Loop" in {n.op_type for n in plain.graph.node}  # the function's body, now in the graph
    for path in (kept, inlined):
        np.testing.assert_allclose(_session(path).run(None, feeds)[0], expected, rtol=1e-5)


_LOAD_WITH_INFO_LOG = """
import sys, onnxruntime as ort
options = ort.SessionOptions()
options.log_severity_level = 1  # INFO: warnings and more reach stderr
ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
print("loaded")
"""


def _ort_load_log(path):
    run = subprocess.run([sys.executable, "-c", _LOAD_WITH_INFO_LOG, str(path)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "loaded", run.stderr
    return run.stderr


def test_training_step_file_loads_without_initializer_warnings(tmp_path):
    x = K.placeholder((None, 2), name="x")
    w = K.variable(np.array([1.0, -1.0], "float32"), name="w")
    loss = K.sum((K.dot(x, K.reshape(w, (2, 1))) - 1.0) ** 2)
    step = K.function([x], [loss], updates=[K.update_sub(w, 0.1 * K.gradients(loss, [w])[0])])
    path = kgraph.export(step, tmp_path / "step.onnx", training=True)
    assert _mode(path) == "0o644"
    log = _ort_load_log(path)
    assert "appears in graph inputs" not in log, log

    # the same capture does see the warning on a file that lists its weights as graph inputs
    model = onnx.load(path)
    model.graph.initializer.append(numpy_helper.from_array(np.ones(2, "float32"), "w"))
    control = tmp_path / "control.onnx"
    onnx.save(model, str(control))
    assert "Initializer w appears in graph inputs" in _ort_load_log(control)
