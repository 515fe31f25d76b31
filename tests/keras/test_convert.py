"""``kgraph convert`` / ``kgraph.keras.convert``: Keras 2 HDF5 model files as ONNX files.

Files come from two sources: ``model.save`` of Keras 2.3.1 on kgraph (converted in a fresh
process whose shell has no KERAS_BACKEND and whose keras.json says "tensorflow", compared with
``model.predict``), and files written here with h5py exactly as Keras 2.1-2.3 on TensorFlow wrote
them (byte-string or str attributes, ``dense_1/kernel:0`` weight names, TF layer configs), with
weights set from numpy and the ONNX output compared with a numpy forward pass of those weights.
"""
import json
import re
import os
import subprocess
import sys

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import keras
from keras import layers, models

import kgraph
from kgraph.cli import main as kgraph_main
from kgraph.keras.convert import convert

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rng(seed):
    return np.random.default_rng(seed)


def _run_onnx(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _checked(path):
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    return proto


@pytest.fixture
def user_shell(tmp_path):
    """A user's shell: no KERAS_BACKEND, a keras.json that says "tensorflow" (what Keras writes
    into a new one), kgraph importable from the checkout."""
    home = tmp_path / "keras-home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps({"floatx": "float32", "epsilon": 1e-07, "backend": "tensorflow",
                                                 "image_data_format": "channels_last"}))
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    env["KERAS_HOME"] = str(home)

    def run(*args, pythonpath=None):
        run_env = dict(env, PYTHONPATH=str(pythonpath)) if pythonpath else env
        return subprocess.run([sys.executable, "-m", "kgraph", "convert", *map(str, args)],
                              capture_output=True, text=True, env=run_env, cwd=tmp_path)
    return run


def _saved_cnn(path, dropout=0.2):
    model = models.Sequential([
        layers.Conv2D(4, 3, activation="relu", input_shape=(6, 6, 2)),
        layers.BatchNormalization(),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(dropout),
        layers.Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    x = _rng(0).random((24, 6, 6, 2), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(24) % 3]
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.save(str(path))
    return model


# -- round trip through the command ----------------------------------------------------------
def test_round_trip_in_a_users_shell_reproduces_predict(tmp_path, user_shell):
    model = _saved_cnn(tmp_path / "cnn.h5")
    result = user_shell("cnn.h5", "-o", "cnn.onnx", "--opset", "21")
    assert result.returncode == 0, result.stderr
    assert "wrote cnn.onnx" in result.stdout
    assert "TensorFlow" not in result.stderr and "tensorflow" not in sys.modules
    proto = _checked(tmp_path / "cnn.onnx")
    assert [o.version for o in proto.opset_import if o.domain == ""] == [21]
    assert [i.name for i in proto.graph.input] == model.input_names
    for batch in (1, 7):
        x = _rng(batch).random((batch, 6, 6, 2), dtype=np.float32)
        np.testing.assert_allclose(_run_onnx(tmp_path / "cnn.onnx", x), model.predict(x), rtol=1e-5, atol=1e-6)
    # the user's keras.json is left as it was: kgraph chose its backend through the environment
    assert json.loads((tmp_path / "keras-home" / "keras.json").read_text())["backend"] == "tensorflow"


def test_training_file_steps_like_train_on_batch(tmp_path, user_shell):
    # no Dropout here: its mask's seed is drawn when a process builds the graph, so the file's
    # masks and this process's differ (each is right on its own)
    _saved_cnn(tmp_path / "cnn.h5", dropout=0.0)
    result = user_shell("cnn.h5", "-o", "step.onnx", "--training")
    assert result.returncode == 0, result.stderr
    proto = _checked(tmp_path / "step.onnx")
    outputs = [o.name for o in proto.graph.output]
    loaded = keras.models.load_model(str(tmp_path / "cnn.h5"))  # weights and Adam slots from the file
    assert outputs[:2] == loaded.metrics_names == ["loss", "accuracy"]
    x = _rng(9).random((7, 6, 6, 2), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(7) % 3]
    feeds = {"conv2d_1_input": x, "dense_1_target": y, "dense_1_sample_weights": np.ones(7, np.float32),
             **kgraph.deploy.initial_state(proto)}
    sess = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}}
    got = dict(zip(outputs, sess.run(None, feeds)))
    loss, accuracy = loaded.train_on_batch(x, y)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], accuracy, rtol=1e-6)
    # Adam's first step moves each weight by about lr * g / (|g| + eps): where g is near 0 the
    # step amplifies float32 rounding differences of the two sessions (up to ~5e-6 was seen, lr
    # is 1e-3), so the weights are compared to 1% of a step
    for weight in loaded.weights:
        np.testing.assert_allclose(got[f"{weight.name}:new"], keras.backend.get_value(weight), rtol=1e-4, atol=1e-5)


# -- files as Keras 2.1-2.3 on TensorFlow wrote them -----------------------------------------
def _attr(value, style):
    """A text attribute as it was stored: "bytes" is h5py 2 (fixed-length byte strings, read back
    as numpy.bytes_), "str" is h5py 3 with TF-Keras (variable-length strings, read back as str)."""
    return np.bytes_(value.encode()) if style == "bytes" else value


def _write_tf_keras_file(path, model_config, weights, keras_version, style, training_config=None):
    """``weights``: [(layer_name, [(weight_name, array)])] for every layer, in model order."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = _attr(keras_version, style)
        f.attrs["backend"] = _attr("tensorflow", style)
        f.attrs["model_config"] = _attr(json.dumps(model_config), style)
        if training_config is not None:
            f.attrs["training_config"] = _attr(json.dumps(training_config), style)
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([name.encode() for name, _ in weights])
        group.attrs["backend"] = np.bytes_(b"tensorflow")
        group.attrs["keras_version"] = np.bytes_(keras_version.encode())
        for layer_name, layer_weights in weights:
            g = group.create_group(layer_name)
            # Keras saves np.asarray(names): an empty float64 array for a layer without weights
            g.attrs["weight_names"] = np.asarray([n.encode() for n, _ in layer_weights])
            for name, value in layer_weights:
                g.create_dataset(name, data=value)  # "dense_1/kernel:0": a subgroup and a dataset


_GLOROT = {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg",
                                                       "distribution": "uniform", "seed": None}}
_ZEROS = {"class_name": "Zeros", "config": {}}
_NO_EXTRAS = {"kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
              "kernel_constraint": None, "bias_constraint": None}


def _dense_config(name, units, activation, **extra):
    return {"class_name": "Dense", "config": {
        "name": name, "trainable": True, "units": units, "activation": activation, "use_bias": True,
        "kernel_initializer": _GLOROT, "bias_initializer": _ZEROS, **_NO_EXTRAS, **extra}}


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("keras_version, style", [("2.1.6", "bytes"), ("2.2.4", "bytes"), ("2.3.1", "str")])
def test_tf_trained_dense_file_matches_numpy(tmp_path, keras_version, style):
    rng = _rng(1)
    w1, b1 = rng.normal(0, 0.5, (4, 5)).astype("float32"), rng.normal(0, 0.1, 5).astype("float32")
    w2, b2 = rng.normal(0, 0.5, (5, 3)).astype("float32"), rng.normal(0, 0.1, 3).astype("float32")
    layer_configs = [_dense_config("dense_1", 5, "relu", batch_input_shape=[None, 4], dtype="float32"),
                     _dense_config("dense_2", 3, "softmax")]
    if keras_version.startswith("2.1"):  # Keras 2.0-2.1 saved a Sequential as its list of layers
        config = {"class_name": "Sequential", "config": layer_configs}
    else:
        config = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": layer_configs}}
    training = {"optimizer_config": {"class_name": "SGD", "config": {"lr": 0.01, "momentum": 0.0, "decay": 0.0,
                                                                     "nesterov": False}},
                "loss": "categorical_crossentropy", "metrics": ["accuracy"], "sample_weight_mode": None,
                "loss_weights": None}
    _write_tf_keras_file(tmp_path / "dense.h5", config,
                         [("dense_1", [("dense_1/kernel:0", w1), ("dense_1/bias:0", b1)]),
                          ("dense_2", [("dense_2/kernel:0", w2), ("dense_2/bias:0", b2)])],
                         keras_version, style, training_config=training)
    assert convert(tmp_path / "dense.h5", tmp_path / "dense.onnx") == str(tmp_path / "dense.onnx")
    _checked(tmp_path / "dense.onnx")
    for batch in (1, 7):
        x = _rng(batch).normal(size=(batch, 4)).astype("float32")
        expected = _softmax(np.maximum(x @ w1 + b1, 0) @ w2 + b2)
        np.testing.assert_allclose(_run_onnx(tmp_path / "dense.onnx", x), expected, rtol=1e-5, atol=1e-6)


def _conv_bn_config():
    conv = {"name": "conv2d_1", "trainable": True, "filters": 3, "kernel_size": [3, 3], "strides": [1, 1],
            "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "activation": "linear",
            "use_bias": True, "kernel_initializer": _GLOROT, "bias_initializer": _ZEROS, **_NO_EXTRAS}
    bn = {"name": "batch_normalization_1", "trainable": True, "axis": -1, "momentum": 0.99, "epsilon": 0.001,
          "center": True, "scale": True, "beta_initializer": _ZEROS, "gamma_initializer": {"class_name": "Ones", "config": {}},
          "moving_mean_initializer": _ZEROS, "moving_variance_initializer": {"class_name": "Ones", "config": {}},
          "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None}

    def node(class_name, config, inbound):
        return {"name": config["name"], "class_name": class_name, "config": config,
                "inbound_nodes": [[[inbound, 0, 0, {}]]] if inbound else []}
    stack = [
        node("InputLayer", {"batch_input_shape": [None, 5, 5, 2], "dtype": "float32", "sparse": False,
                            "name": "input_1"}, None),
        node("Conv2D", conv, "input_1"),
        node("BatchNormalization", bn, "conv2d_1"),
        node("Activation", {"name": "activation_1", "trainable": True, "activation": "relu"}, "batch_normalization_1"),
        node("Flatten", {"name": "flatten_1", "trainable": True, "data_format": "channels_last"}, "activation_1"),
        node("Dense", _dense_config("dense_1", 2, "softmax")["config"], "flatten_1")]
    return {"class_name": "Model", "config": {"name": "model_1", "layers": stack,
                                              "input_layers": [["input_1", 0, 0]],
                                              "output_layers": [["dense_1", 0, 0]]}}


def _conv_valid(x, kernel):
    """Cross-correlation, as TensorFlow computes Conv2D (NHWC input, HWIO kernel)."""
    kh, kw = kernel.shape[:2]
    out = np.zeros((x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1, kernel.shape[3]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = np.einsum("nhwc,hwco->no", x[:, i:i + kh, j:j + kw], kernel)
    return out


@pytest.mark.parametrize("keras_version, style", [("2.2.4", "bytes"), ("2.3.1", "str")])
def test_tf_trained_conv_batchnorm_file_matches_numpy(tmp_path, keras_version, style):
    rng = _rng(2)
    kernel, bias = rng.normal(0, 0.4, (3, 3, 2, 3)).astype("float32"), rng.normal(0, 0.1, 3).astype("float32")
    gamma, beta = rng.uniform(0.5, 1.5, 3).astype("float32"), rng.normal(0, 0.1, 3).astype("float32")
    mean, var = rng.normal(0, 0.2, 3).astype("float32"), rng.uniform(0.5, 2.0, 3).astype("float32")
    w, b = rng.normal(0, 0.5, (27, 2)).astype("float32"), rng.normal(0, 0.1, 2).astype("float32")
    bn = "batch_normalization_1"
    _write_tf_keras_file(tmp_path / "cnn.h5", _conv_bn_config(), [
        ("input_1", []),
        ("conv2d_1", [("conv2d_1/kernel:0", kernel), ("conv2d_1/bias:0", bias)]),
        (bn, [(f"{bn}/gamma:0", gamma), (f"{bn}/beta:0", beta), (f"{bn}/moving_mean:0", mean),
              (f"{bn}/moving_variance:0", var)]),
        ("activation_1", []), ("flatten_1", []),
        ("dense_1", [("dense_1/kernel:0", w), ("dense_1/bias:0", b)])], keras_version, style)
    assert kgraph_main(["convert", str(tmp_path / "cnn.h5"), "-o", str(tmp_path / "cnn.onnx")]) == 0
    _checked(tmp_path / "cnn.onnx")
    for batch in (1, 7):
        x = _rng(10 + batch).normal(size=(batch, 5, 5, 2)).astype("float32")
        h = _conv_valid(x.astype("float64"), kernel) + bias
        h = np.maximum(gamma * (h - mean) / np.sqrt(var + 0.001) + beta, 0)
        expected = _softmax(h.reshape(batch, -1) @ w + b)
        np.testing.assert_allclose(_run_onnx(tmp_path / "cnn.onnx", x), expected, rtol=1e-4, atol=1e-5)


# -- custom layers -----------------------------------------------------------------------------
CUSTOM_MODULE = '''
"""A custom layer, as a user keeps it in a module of their own."""
from keras import backend as K
from keras.layers import Layer


class Scale(Layer):
    """x * w + 1, with one weight per feature."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="ones")
        super().build(input_shape)

    def call(self, x):
        return x * self.w + 1.0
'''


def test_custom_layer_from_a_module_on_pythonpath(tmp_path, user_shell, monkeypatch):
    (tmp_path / "user_layers.py").write_text(CUSTOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_layers
    model = models.Sequential([layers.Dense(3, input_shape=(4,)), user_layers.Scale()])
    keras.backend.set_value(model.layers[1].w, np.array([2.0, -1.0, 0.5], np.float32))
    model.save(str(tmp_path / "custom.h5"))

    result = user_shell("custom.h5", "-o", "custom.onnx")  # Keras cannot build the unknown layer
    assert result.returncode == 2
    assert "Unknown layer: Scale" in result.stderr and "--custom module:Name" in result.stderr
    assert not (tmp_path / "custom.onnx").exists()

    result = user_shell("custom.h5", "-o", "custom.onnx", "--custom", "user_layers:Scale", pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    _checked(tmp_path / "custom.onnx")
    for batch in (1, 7):
        x = _rng(batch).normal(size=(batch, 4)).astype("float32")
        np.testing.assert_allclose(_run_onnx(tmp_path / "custom.onnx", x), model.predict(x), rtol=1e-5, atol=1e-6)
        kernel, bias = model.layers[0].get_weights()
        np.testing.assert_allclose(model.predict(x), (x @ kernel + bias) * [2.0, -1.0, 0.5] + 1.0, rtol=1e-5, atol=1e-6)

    for spec, message in (("user_layers", "expected module:Name"),
                          ("no_such_module:Scale", "cannot import module 'no_such_module'"),
                          ("user_layers:Missing", "module 'user_layers' has no 'Missing'")):
        result = user_shell("custom.h5", "-o", "other.onnx", "--custom", spec, pythonpath=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (spec, result.stderr)
    assert not (tmp_path / "other.onnx").exists()


# -- bad input: exit 2, a message naming the file, nothing written -----------------------------
def _bad_inputs(tmp_path):
    (tmp_path / "text.h5").write_text("not an HDF5 file\n")
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    weights_only = models.Sequential([layers.Dense(2, input_shape=(3,))])
    weights_only.save_weights(str(tmp_path / "weights.h5"))
    (tmp_path / "folder.h5").mkdir()
    return [("missing.h5", "missing.h5: no such file"),
            ("text.h5", "text.h5 is not an HDF5 file"),
            ("data.h5", "data.h5 is an HDF5 file without a Keras model"),
            ("weights.h5", "weights.h5 holds only weights (model.save_weights output)"),
            ("folder.h5", "folder.h5 is a directory")]


def test_bad_files_exit_2_and_write_nothing(tmp_path, capsys):
    for name, message in _bad_inputs(tmp_path):
        assert kgraph_main(["convert", str(tmp_path / name), "-o", str(tmp_path / "out.onnx")]) == 2, name
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("kgraph convert: error: ") and message in line, (name, line)
        with pytest.raises(ValueError, match=re.escape(message)):
            convert(tmp_path / name, tmp_path / "out.onnx")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".onnx") or p.endswith(".tmp")]


def test_existing_output_needs_force_and_bad_options_are_refused(tmp_path, capsys):
    model = models.Sequential([layers.Dense(2, input_shape=(3,))])
    model.save(str(tmp_path / "m.h5"))  # not compiled: no training configuration
    target = tmp_path / "m.onnx"
    target.write_bytes(b"the user's file")
    argv = ["convert", str(tmp_path / "m.h5"), "-o", str(target)]
    assert kgraph_main(argv) == 2
    assert "m.onnx already exists (use --force to overwrite it)" in capsys.readouterr().err
    assert kgraph_main(argv + ["--opset", "9"]) == 2
    assert "opset 9 is not supported" in capsys.readouterr().err
    assert kgraph_main(argv + ["--force", "--training"]) == 2
    assert "m.h5 has no training configuration" in capsys.readouterr().err
    assert target.read_bytes() == b"the user's file"
    assert kgraph_main(argv + ["--force"]) == 0
    x = _rng(3).random((7, 3), dtype=np.float32)
    np.testing.assert_allclose(_run_onnx(target, x), model.predict(x), rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["m.h5", "m.onnx"]


# -- a process whose Keras already runs on another backend --------------------------------------
OTHER_BACKEND = '''
"""Another Keras backend: kgraph's functions under another module name (Keras picks a backend
once, at import, so kgraph cannot load a model in this process)."""
import collections
import collections.abc

for _name in ("Iterable", "Mapping", "Sequence", "Container"):
    setattr(collections, _name, getattr(collections.abc, _name))
import kgraph.backend as _kgraph_backend

globals().update({k: v for k, v in vars(_kgraph_backend).items() if not k.startswith("__")})
'''

OTHER_PROCESS = '''
import sys
import keras
from keras.layers import Layer
from kgraph.keras.convert import convert

assert sys.modules["keras.backend.load_backend"]._BACKEND == "other_backend"


class Local(Layer):
    pass


try:
    convert("dense.h5", "refused.onnx", custom_objects={"Local": Local})
except RuntimeError as error:
    print("refused:", error)
print("wrote", convert("dense.h5", "dense.onnx"))
'''


def test_a_process_with_keras_on_another_backend_converts_in_a_fresh_one(tmp_path):
    rng = _rng(4)
    w, b = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")
    config = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": [
        _dense_config("dense_1", 3, "softmax", batch_input_shape=[None, 4], dtype="float32")]}}
    _write_tf_keras_file(tmp_path / "dense.h5", config, [("dense_1", [("dense_1/kernel:0", w), ("dense_1/bias:0", b)])],
                         "2.2.4", "bytes")
    (tmp_path / "other_backend.py").write_text(OTHER_BACKEND)
    (tmp_path / "other_process.py").write_text(OTHER_PROCESS)
    env = {**os.environ, "KERAS_BACKEND": "other_backend", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "other_process.py"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "refused: " in result.stdout and "cannot import custom object 'Local'" in result.stdout
    assert "wrote dense.onnx" in result.stdout and not (tmp_path / "refused.onnx").exists()
    _checked(tmp_path / "dense.onnx")
    x = _rng(5).normal(size=(7, 4)).astype("float32")
    np.testing.assert_allclose(_run_onnx(tmp_path / "dense.onnx", x), _softmax(x @ w + b), rtol=1e-5, atol=1e-6)
