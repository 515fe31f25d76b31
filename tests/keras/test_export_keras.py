"""kgraph.export_keras: Keras 2.3.1 models as ONNX files that reproduce predict and train_on_batch
in fresh onnxruntime sessions (and on onnx.reference where it runs the ops)."""
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import keras
from keras import layers, models

import kgraph
import kgraph.backend as K


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _rng(seed):
    return np.random.default_rng(seed)


def _cnn():
    model = models.Sequential([
        layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 3)),
        layers.MaxPooling2D(2),
        layers.Dropout(0.3),
        layers.Flatten(),
        layers.Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    return model


def _node_names(model):
    return [n.name for n in model.graph.node]


def test_inference_export_reproduces_predict_for_batch_1_and_7(tmp_path):
    model = _cnn()
    path = kgraph.export_keras(model, tmp_path / "cnn.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["conv2d_1_input"] == model.input_names
    assert [o.name for o in proto.graph.output] == ["dense_1"] == model.output_names
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    sess, ref = _session(path), ReferenceEvaluator(proto)
    for batch in (1, 7):
        x = _rng(batch).random((batch, 8, 8, 3), dtype=np.float32)
        expected = model.predict(x)
        np.testing.assert_allclose(sess.run(None, {"conv2d_1_input": x})[0], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ref.run(None, {"conv2d_1_input": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_node_names_carry_the_keras_layer(tmp_path):
    model = _cnn()
    proto = onnx.load(kgraph.export_keras(model, tmp_path / "cnn.onnx"))
    names = _node_names(proto)
    assert "dense_1/MatMul" in names and "dense_1/Softmax" in names and "conv2d_1/Conv" in names
    assert any(n.startswith("max_pooling2d_1/") for n in names)
    layer_names = {layer.name for layer in model.layers}
    for node in proto.graph.node:
        if node.op_type != "Constant":
            assert node.name.split("/")[0] in layer_names, node.name
            assert all(o.split("/")[0] in layer_names for o in node.output), node.output
    # learning phase 0: Dropout's training branch (its random mask) is not in the inference file
    assert not any(n.startswith("dropout_1/") for n in names)
    assert not any(i.name == "keras_learning_phase" for i in proto.graph.input)


def test_name_scope_names_onnx_nodes_of_any_function():
    x = K.placeholder((None, 3), name="x")
    with K.name_scope("block"):
        with K.name_scope("inner"):
            y = K.relu(K.dot(x, K.variable(np.ones((3, 2)))))
    z = y * 2.0
    proto = K.function([x], [z]).to_onnx()
    names = _node_names(proto)
    assert "block/inner/MatMul" in names and "block/inner/Relu" in names
    assert any(n.startswith("Mul") for n in names)  # made outside the scope: no prefix


def test_functional_lstm_model_with_two_outputs(tmp_path):
    tokens = layers.Input((None, 4), name="tokens")
    extra = layers.Input((2,), name="extra")
    seq = layers.LSTM(5, return_sequences=True, dropout=0.2)(tokens)
    last = layers.GRU(3)(seq)
    merged = layers.concatenate([last, extra])
    label = layers.Dense(2, activation="softmax", name="label")(merged)
    score = layers.Dense(1, name="score")(layers.Dropout(0.5)(merged))
    model = models.Model([tokens, extra], [label, score])
    path = kgraph.export_keras(model, tmp_path / "seq.onnx")
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["tokens", "extra"]
    assert [o.name for o in proto.graph.output] == ["label", "score"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_param, dims[2].dim_value) == ("batch", "tokens_dim1", 4)
    names = _node_names(proto)
    assert any(n.startswith("lstm_1/") for n in names) and any(n.startswith("gru_1/") for n in names)
    sess = _session(path)
    for batch, steps in ((1, 3), (7, 5)):
        feeds = {"tokens": _rng(steps).random((batch, steps, 4), dtype=np.float32),
                 "extra": _rng(batch).random((batch, 2), dtype=np.float32)}
        expected = model.predict([feeds["tokens"], feeds["extra"]])
        for got, want in zip(sess.run(None, feeds), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_normalization_exports_its_inference_form(tmp_path):
    model = models.Sequential([layers.Dense(6, input_shape=(4,)), layers.BatchNormalization(),
                               layers.Activation("relu"), layers.Dense(2)])
    model.compile("sgd", "mse")
    x = _rng(3).random((16, 4), dtype=np.float32)
    model.fit(x, _rng(4).random((16, 2), dtype=np.float32), epochs=2, batch_size=8, verbose=0)
    path = kgraph.export_keras(model, tmp_path / "bn.onnx")
    sess = _session(path)
    for batch in (1, 7):
        np.testing.assert_allclose(sess.run(None, {model.input_names[0]: x[:batch]})[0],
                                   model.predict(x[:batch]), rtol=1e-5, atol=1e-6)
    # the moving statistics are used, not the batch's: the batch-moment reductions are gone
    assert not any(n.op_type == "ReduceMean" for n in onnx.load(path).graph.node)


def test_training_export_steps_like_train_on_batch(tmp_path):
    model = _cnn()
    path = kgraph.export_keras(model, tmp_path / "step.onnx", training=True)
    proto = onnx.load(path)
    outputs = [o.name for o in proto.graph.output]
    assert outputs[:2] == model.metrics_names == ["loss", "accuracy"]
    x = _rng(5).random((7, 8, 8, 3), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(7) % 3]
    # fed: the data, targets and sample weights, and every weight and optimizer slot at its value
    # at export (the file's TrainingInfoProto initialization); the learning phase defaults to training
    feeds = {"conv2d_1_input": x, "dense_1_target": y, "dense_1_sample_weights": np.ones(7, np.float32),
             **kgraph.deploy.initial_state(proto)}
    got = dict(zip(outputs, _session(path).run(None, feeds)))
    loss, accuracy = model.train_on_batch(x, y)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], accuracy, rtol=1e-6)
    for weight in model.weights:
        np.testing.assert_allclose(got[f"{weight.name}:new"], K.get_value(weight), rtol=1e-4, atol=1e-6)


def test_opset_is_chosen_and_bad_opsets_are_refused(tmp_path):
    model = _cnn()
    proto = onnx.load(kgraph.export_keras(model, tmp_path / "m21.onnx", opset=21))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [21]
    with pytest.raises(ValueError, match="opset 9"):
        kgraph.export_keras(model, tmp_path / "m9.onnx", opset=9)
    assert not (tmp_path / "m9.onnx").exists()


def test_bad_models_are_refused_and_nothing_is_written(tmp_path):
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"the user's file")
    with pytest.raises(TypeError, match="expected a Keras model"):
        kgraph.export_keras(object(), target)
    uncompiled = models.Sequential([layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="not compiled"):
        kgraph.export_keras(uncompiled, target, training=True)
    with pytest.raises(ValueError, match="no inputs"):
        kgraph.export_keras(models.Sequential(), target)
    assert target.read_bytes() == b"the user's file"
    assert os.listdir(tmp_path) == ["keep.onnx"]  # no temporary file left behind


def test_import_kgraph_does_not_import_keras():
    code = "import sys, kgraph; kgraph.export_keras; assert 'keras' not in sys.modules, 'keras imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "KERAS_BACKEND": ""})


def test_keras_is_the_one_under_test():
    assert keras.__version__ == "2.3.1"
