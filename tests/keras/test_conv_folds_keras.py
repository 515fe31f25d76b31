"""Convolution folds on Keras 2.3.1 models: Conv2D's bias in Conv's B input (predict and training
sessions), BatchNormalization folded into the Conv before it in ``kgraph.export_keras`` files."""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

import kgraph
from kgraph.lower import rules

RNG = np.random.default_rng(3)
BN_OPS = {"Mul", "Add", "Sub", "Sqrt", "Reciprocal", "Div", "ReduceMean", "Where"}


def ops(model):
    return Counter(n.op_type for n in model.graph.node)


def randomize_batch_norms(model):
    """Moving statistics and scales far from the defaults (0, 1), so a wrong fold shows."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([RNG.uniform(0.5, 2, gamma.shape), RNG.normal(0, 1, beta.shape),
                               RNG.normal(0, 1, mean.shape), RNG.uniform(0.3, 3, var.shape)])


def residual_cnn():
    from keras import layers, models
    x = layers.Input((10, 10, 3), name="image")
    y = layers.Conv2D(8, 3, padding="same")(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("relu")(y)
    z = layers.Conv2D(8, 3, padding="same", use_bias=False)(y)
    z = layers.BatchNormalization()(z)
    z = layers.Activation("relu")(layers.Add()([z, y]))
    out = layers.Dense(4, activation="softmax")(layers.GlobalAveragePooling2D()(z))
    model = models.Model(x, out)
    randomize_batch_norms(model)
    return model


def run_file(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


def test_batch_normalization_folds_into_conv_in_the_export(tmp_path, monkeypatch):
    model = residual_cnn()
    x = RNG.random((4, 10, 10, 3)).astype(np.float32)
    expected = model.predict(x)
    path = kgraph.export_keras(model, tmp_path / "cnn.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    with monkeypatch.context() as m:  # the same export without the folds, for the op counts
        import kgraph.keras.export as export
        m.setattr(rules, "PASSES", [r for r in rules.PASSES if r is not rules.conv_bias_into_conv])
        m.setattr(export, "fold_conv_affine", lambda proto: 0)
        plain = export.inference_model(model)
    before, after = ops(plain), ops(proto)
    assert before["Conv"] == after["Conv"] == 2
    assert before["Sqrt"] == 2 and before["Mul"] >= 4
    # what is left between the convs and the classifier: the residual Add, and nothing of the BNs
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert all(len(c.input) == 3 for c in convs)
    assert not {"Sqrt", "Reciprocal", "Sub"} & set(after), after
    # conv bias, 2 x (var + eps, BN shift) gone; left: the residual Add and the Dense bias
    assert before["Add"] == 7 and after["Add"] == 2, (before, after)
    assert after["Mul"] == 0, after
    got = run_file(path, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ReferenceEvaluator(proto).run(None, {"image": x})[0], expected, rtol=1e-5, atol=1e-7)


def test_folded_conv_file_matches_predict_before_the_softmax(tmp_path):
    from keras import layers, models
    model = models.Sequential([layers.Conv2D(6, 3, input_shape=(9, 9, 2), name="conv"),
                               layers.BatchNormalization(name="bn"), layers.Flatten(name="flat")])
    randomize_batch_norms(model)
    x = RNG.normal(0, 1, (3, 9, 9, 2)).astype(np.float32)
    expected = model.predict(x)
    proto = onnx.load(str(kgraph.export_keras(model, tmp_path / "cb.onnx")))
    assert ops(proto) == Counter({"Transpose": 2, "Conv": 1, "Flatten": 1}), ops(proto)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"conv_input": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    kernel, bias = model.get_layer("conv").get_weights()
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    scale = gamma / np.sqrt(var + 1e-3)
    conv, = [n for n in proto.graph.node if n.op_type == "Conv"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_allclose(inits[conv.input[1]], (kernel * scale).transpose(3, 2, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(inits[conv.input[2]], (bias - mean) * scale + beta, rtol=1e-5, atol=1e-6)


def test_predict_and_training_sessions_take_the_bias_in_the_conv():
    from keras import layers, models, optimizers
    model = models.Sequential([layers.Conv2D(3, 3, input_shape=(6, 6, 2), name="conv"),
                               layers.Flatten(), layers.Dense(2, name="dense")])
    model.compile(optimizers.SGD(0.1), "mse")
    x = RNG.normal(0, 1, (4, 6, 6, 2)).astype(np.float32)
    t = RNG.normal(0, 1, (4, 2)).astype(np.float32)
    kernel, bias = [w.astype(np.float64) for w in model.get_layer("conv").get_weights()]
    dk, db = [w.astype(np.float64) for w in model.get_layer("dense").get_weights()]
    model.predict(x)
    counts = ops(model.predict_function.session_model())
    assert counts["Add"] == 1 and counts["Conv"] == 1, counts  # only the Dense bias is an Add
    model.train_on_batch(x, t)
    step = model.train_function.session_model()
    forward, = [n for n in step.graph.node if n.op_type == "Conv" and n.name.startswith("conv/")]
    assert len(forward.input) == 3
    # numpy: y = flatten(conv(x) + b) @ dk + db, loss = mean((y - t)^2), one SGD step on b
    c = np.zeros((4, 4, 4, 3))
    for i in range(3):
        for j in range(3):
            c += np.einsum("nhwc,co->nhwo", x[:, i:i + 4, j:j + 4, :], kernel[i, j])
    c += bias
    y = c.reshape(4, -1) @ dk + db
    gy = 2 * (y - t) / y.size
    gb = (gy @ dk.T).reshape(c.shape).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(model.get_layer("conv").get_weights()[1], bias - 0.1 * gb, rtol=1e-5, atol=1e-6)
