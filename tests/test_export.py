"""Export: frozen inference models, names, symbolic dims, atomic writes, external data, opsets."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kgraph
import kgraph.backend as K
from kgraph.deploy import onnx_file as kexport


def _small_function():
    x = K.placeholder((None, 3), name="features")
    w = K.variable(np.arange(6, dtype="float32").reshape(3, 2) / 10, name="kernel")
    y = K.exp(x @ w) * 2.0
    y.name = "scores"
    return K.function([x], [y]), x, w


def test_to_onnx_freezes_variables_and_names_io():
    f, _, w = _small_function()
    model = f.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["scores"]
    assert "kernel" in {i.name for i in model.graph.initializer}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "features_dim0" and dims[1].dim_value == 3
    assert model.opset_import[0].version == 18


def test_export_round_trip_in_a_fresh_session(tmp_path):
    f, x, w = _small_function()
    path = tmp_path / "m.onnx"
    assert kgraph.export(f, path) == str(path)
    a = np.random.default_rng(0).standard_normal((5, 3)).astype("float32")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"features": a})[0], f([a])[0], rtol=1e-6)


@pytest.mark.parametrize("opset", [17, 18, 19, 20, 21])
def test_opsets(opset, tmp_path):
    x = K.placeholder((None, 4))
    f = K.function([x], [K.max(x, axis=1) + K.sum(x * x, axis=0, keepdims=True).__getitem__((0, 0))])
    model = f.to_onnx(opset=opset)
    assert model.opset_import[0].version == opset
    onnx.checker.check_model(model, full_check=True)
    a = np.arange(8, dtype="float32").reshape(2, 4)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {model.graph.input[0].name: a})[0],
                               a.max(1) + (a * a).sum(0)[0])


def test_bad_opset_is_a_clear_error():
    f, _, _ = _small_function()
    with pytest.raises(ValueError, match="opset 11"):
        f.to_onnx(opset=11)


def test_failed_export_leaves_the_existing_file_intact(tmp_path, monkeypatch):
    f, _, _ = _small_function()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the good old model")

    def broken_save(*args, **kwargs):
        with open(args[1], "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        kgraph.export(f, path)
    assert path.read_bytes() == b"the good old model"
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temp file left behind


def test_large_models_use_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(kexport, "TWO_GB", 1 << 20)  # treat > ~0 MB as "over 2 GB"
    x = K.placeholder((None, 256))
    w = K.variable(np.ones((256, 256), "float32"))
    f = K.function([x], [x @ w])
    path = tmp_path / "big.onnx"
    kgraph.export(f, path)
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    assert os.path.getsize(path) < 100_000
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a = np.ones((2, 256), "float32")
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: a})[0], np.full((2, 256), 256.0))


def test_learning_phase_exports_as_an_overridable_default(tmp_path):
    x = K.placeholder((2,), name="x")
    y = K.in_train_phase(x * 2, x * 3)
    f = K.function([x], [y])
    model = f.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.ones(2, "float32")
    np.testing.assert_allclose(sess.run(None, {"x": a})[0], [3, 3])  # inference by default
    np.testing.assert_allclose(sess.run(None, {"x": a, "keras_learning_phase": np.array(True)})[0], [2, 2])


def test_training_export_steps_like_kgraph():
    x = K.placeholder((None, 2), name="x")
    w = K.variable(np.array([1.0, -1.0]), name="w")
    loss = K.sum((x * w - 1.0) ** 2)
    (g,) = K.gradients(loss, [w])
    f = K.function([x], [loss], updates=[K.update_sub(w, 0.1 * g)])
    model = f.to_onnx(training=True)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output][-1] == "w:new"
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.array([[1.0, 2.0]], "float32")
    w_value = K.get_value(w)
    for _ in range(3):
        loss_ort, w_value = sess.run(None, {"x": a, "w": w_value})
        (loss_k,) = f([a])
        np.testing.assert_allclose(loss_ort, loss_k, rtol=1e-6)
        np.testing.assert_allclose(w_value, K.get_value(w), rtol=1e-6)


def test_model_cards_describe_inference_and_training_exports(tmp_path):
    f, _, _ = _small_function()
    card = kgraph.model_card(f.to_onnx(), filename="m.onnx", name="scorer", description="A test model.")
    assert card.startswith("# scorer\n\nA test model.")
    assert "**inference**" in card and "| input | `features` | float32 | (features_dim0, 3) |" in card
    assert "| output | `scores` | float32 | (?, 2) |" in card and "6 parameters in 1 initializers" in card
    x = K.placeholder((None, 2), name="x")
    w = K.variable(np.ones(2), name="w")
    loss = K.sum(x * w)
    step = K.function([x], [loss], updates=[K.update_sub(w, K.gradients(loss, [w])[0])])
    path = tmp_path / "step.md"
    from kgraph.deploy import write_model_card
    write_model_card(step.to_onnx(training=True), path, "step.onnx")
    text = path.read_text()
    assert "**training step**" in text and "| input | `w` |" in text and "| output | `w:new` |" in text
    assert 'ort.InferenceSession("step.onnx"' in text
    assert os.listdir(tmp_path) == ["step.md"]
