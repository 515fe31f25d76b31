"""Convolution folds on K-level graphs: a per-channel bias into Conv's B input (a peephole rule of
kgraph/lower/rules.py, every lowering) and per-channel scale/shift chains, BatchNormalization in
inference form, into the Conv's weights (kgraph/lower/conv_affine.py, inference exports)."""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph
import kgraph.backend as K
from kgraph.lower import rules
from kgraph.lower.conv_affine import fold_conv_affine
from kcheck import check, check_grad

RNG = np.random.default_rng(7)


def conv2d_nhwc(x, w):
    """'valid' stride-1 correlation: x (N, H, W, C), w (kh, kw, C, O) → (N, H', W', O)."""
    kh, kw = w.shape[:2]
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", x[:, i:i + ho, j:j + wo, :], w[i, j])
    return out


def ops(model):
    return Counter(n.op_type for n in model.graph.node)


def without_bias_rule(monkeypatch):
    monkeypatch.setattr(rules, "PASSES", [r for r in rules.PASSES if r is not rules.conv_bias_into_conv])
    # frozen sessions also fold per-channel affine chains (the bias among them) into the Conv
    import kgraph.runtime.function as function
    monkeypatch.setattr(function, "fold_conv_affine", lambda model: 0)


def data(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def conv_bias_graph(data_format="channels_last"):
    x = K.placeholder((2, 6, 7, 3) if data_format == "channels_last" else (2, 3, 6, 7), name="x")
    w, b = data(3, 3, 3, 4), data(4)
    out = K.bias_add(K.conv2d(x, K.variable(w), data_format=data_format), K.variable(b),
                     data_format=data_format)
    return x, w, b, out


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_bias_becomes_the_conv_b_input(monkeypatch, data_format):
    x, w, b, out = conv_bias_graph(data_format)
    fn = K.function([x], [out])
    folded = ops(fn.session_model())
    conv, = [n for n in fn.session_model().graph.node if n.op_type == "Conv"]
    assert len(conv.input) == 3
    with monkeypatch.context() as m:
        without_bias_rule(m)
        unfolded = ops(K.function([x], [out]).session_model())
    assert unfolded["Add"] == 1 and folded["Add"] == 0, (unfolded, folded)
    assert unfolded["Conv"] == folded["Conv"] == 1
    a = data(*x.shape)
    nhwc = a if data_format == "channels_last" else a.transpose(0, 2, 3, 1)
    expected = conv2d_nhwc(nhwc.astype(np.float64), w.astype(np.float64)) + b
    if data_format == "channels_first":
        expected = expected.transpose(0, 3, 1, 2)
    check(out, {x: a}, expected.astype(np.float32), rtol=1e-4, atol=1e-5)  # ORT and onnx.reference


def test_fed_bias_is_reshaped_into_b():
    # a training step's variables are graph inputs: the bias reaches B as Reshape(b, [C])
    x = K.placeholder((2, 6, 7, 3), name="x")
    w, b = data(3, 3, 3, 4), data(4)
    wv, bv = K.variable(w, name="w"), K.variable(b, name="b")
    loss = K.sum(K.bias_add(K.conv2d(x, wv), bv))
    step = K.function([x], [loss], updates=[K.update_sub(bv, 0.1 * K.gradients(loss, [bv])[0])])
    model = step.to_onnx(training=True)
    onnx.checker.check_model(model, full_check=True)
    conv, = [n for n in model.graph.node if n.op_type == "Conv"]
    producer = {o: n for n in model.graph.node for o in n.output}
    reshape = producer[conv.input[2]]
    assert reshape.op_type == "Reshape" and reshape.input[0] == "b"
    assert list(onnx.numpy_helper.to_array(producer[reshape.input[1]].attribute[0].t)) == [4]
    assert ops(model)["Add"] == 0
    a = data(2, 6, 7, 3)
    expected = (conv2d_nhwc(a.astype(np.float64), w.astype(np.float64)) + b).sum()
    new_b = b - 0.1 * 2 * 4 * 5  # d loss / d b = the number of output cells per channel
    feeds = {"x": a, "w": w, "b": b}
    for got in (ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds),
                ReferenceEvaluator(model).run(None, feeds)):
        np.testing.assert_allclose(got[0], expected, rtol=1e-4)
        np.testing.assert_allclose(got[1], new_b, rtol=1e-5)
    np.testing.assert_allclose(step([a])[0], expected, rtol=1e-4)
    np.testing.assert_allclose(K.get_value(bv), new_b, rtol=1e-5)


def test_add_that_is_not_per_channel_stays():
    x = K.placeholder((2, 5, 5, 2))
    w = data(3, 3, 2, 2)
    other = data(1, 3, 1, 2)  # varies along a spatial axis: not a bias
    out = K.conv2d(x, K.variable(w)) + K.constant(other)
    fn = K.function([x], [out])
    assert ops(fn.session_model())["Add"] == 1
    a = data(2, 5, 5, 2)
    check(out, {x: a}, (conv2d_nhwc(a, w) + other).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_conv_output_read_twice_is_not_folded():
    x, w, b, out = conv_bias_graph()
    raw = K.conv2d(x, K.variable(w))
    y = K.bias_add(raw, K.variable(b))
    fn = K.function([x], [y, raw * 2.0])
    assert ops(fn.session_model())["Add"] == 1
    a = data(2, 6, 7, 3)
    ref = conv2d_nhwc(a, w)
    check([y, raw * 2.0], {x: a}, [(ref + b).astype(np.float32), (2 * ref).astype(np.float32)],
          rtol=1e-4, atol=1e-5)


def test_training_gradients_with_the_folded_bias():
    # float32 (the dtype ORT's Conv runs, so the rule fires) against numpy's gradients of
    # loss = 0.5 * sum(y ** 2), y = conv(x, w) + b: the backward pass reads the folded y
    x = K.placeholder((2, 6, 7, 3))
    w, b = K.variable(data(3, 3, 3, 4)), K.variable(data(4))
    y = K.bias_add(K.conv2d(x, w), b)
    loss = 0.5 * K.sum(K.square(y))
    gw, gb = K.gradients(loss, [w, b])
    fn = K.function([x], [loss, gw, gb])
    model = fn.session_model()
    conv = [n for n in model.graph.node if n.op_type == "Conv"]
    assert any(len(c.input) == 3 for c in conv), [list(c.input) for c in conv]
    a = data(2, 6, 7, 3)
    yv = conv2d_nhwc(a.astype(np.float64), K.get_value(w).astype(np.float64)) + K.get_value(b)
    gw_np = np.zeros((3, 3, 3, 4))
    for i in range(3):
        for j in range(3):
            gw_np[i, j] = np.einsum("nhwc,nhwo->co", a[:, i:i + 4, j:j + 5, :], yv)
    got = fn([a])
    np.testing.assert_allclose(got[0], 0.5 * (yv ** 2).sum(), rtol=1e-4)
    np.testing.assert_allclose(got[1], gw_np, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[2], yv.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    # and the same graph in float64 against central differences
    check_grad(lambda p, q, c: K.bias_add(K.conv2d(p, q), c),
               [RNG.standard_normal((1, 4, 4, 2)), RNG.standard_normal((2, 2, 2, 3)), RNG.standard_normal(3)])


# -- per-channel affine chains (BatchNormalization) folded into the Conv in inference exports ------
def bn_graph(residual=False):
    x = K.placeholder((None, 6, 7, 3), name="x")
    w, b = data(3, 3, 3, 4), data(4)
    mean, var, beta, gamma = data(4), RNG.uniform(0.5, 2.0, 4).astype(np.float32), data(4), data(4)
    conv = K.bias_add(K.conv2d(x, K.variable(w)), K.variable(b))
    out = K.batch_normalization(conv, K.variable(mean), K.variable(var), K.variable(beta),
                                K.variable(gamma), axis=-1, epsilon=1e-3)
    if residual:
        out = out + conv
    out = K.relu(out)
    a = data(3, 6, 7, 3)
    c = conv2d_nhwc(a.astype(np.float64), w.astype(np.float64)) + b
    bn = (c - mean) / np.sqrt(var + 1e-3) * gamma + beta
    return x, out, a, np.maximum(bn + c if residual else bn, 0).astype(np.float32)


def test_batch_normalization_folds_into_the_conv_of_an_export(tmp_path):
    x, out, a, expected = bn_graph()
    fn = K.function([x], [out])
    path = kgraph.export(fn, tmp_path / "cnn.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    session = ops(fn.session_model())  # a predict session (frozen weights) folds it as well
    assert not {"Mul", "Sqrt"} & set(session), session
    folded = ops(model)
    assert folded["Conv"] == 1 and folded["Relu"] == 1
    assert not {"Mul", "Add", "Sub", "Sqrt", "Reciprocal", "Div"} & set(folded), folded
    conv, = [n for n in model.graph.node if n.op_type == "Conv"]
    assert {conv.input[1], conv.input[2]} <= {t.name for t in model.graph.initializer}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": a})[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ReferenceEvaluator(model).run(None, {"x": a})[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fn([a])[0], expected, rtol=1e-5, atol=1e-5)


def test_fold_stops_where_another_reader_needs_the_conv_output():
    x, out, a, expected = bn_graph(residual=True)
    model = K.function([x], [out]).to_onnx()
    onnx.checker.check_model(model, full_check=True)
    counts = ops(model)
    assert counts["Sqrt"] == 1 and counts["Mul"] >= 1  # the BN reads a value the residual add reads too
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": a})[0], expected, rtol=1e-5, atol=1e-5)


def test_channels_first_scale_and_shift_fold_without_transposes():
    x = K.placeholder((None, 3, 6, 7), name="x")
    w, s, t = data(3, 3, 3, 4), data(1, 4, 1, 1), data(4, 1, 1)
    out = (K.conv2d(x, K.variable(w), data_format="channels_first") * K.variable(s)) - K.variable(t)
    model = K.function([x], [out]).to_onnx()
    onnx.checker.check_model(model, full_check=True)
    assert ops(model) == Counter({"Conv": 1}), ops(model)
    a = data(2, 3, 6, 7)
    ref = conv2d_nhwc(a.transpose(0, 2, 3, 1).astype(np.float64), w.astype(np.float64)).transpose(0, 3, 1, 2)
    expected = ref * s - t
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": a})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_fold_leaves_a_model_without_convs_alone():
    x = K.placeholder((None, 3), name="x")
    model = K.function([x], [K.dot(x, K.variable(data(3, 2))) * 2.0]).to_onnx()
    before = model.SerializeToString()
    assert fold_conv_affine(model) == 0 and model.SerializeToString() == before
