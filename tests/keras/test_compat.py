"""kgraph.keras.compat: Keras 2.3.1 imports, saves and loads on today's Python and h5py."""
import collections
import io
import pickle

import h5py
import numpy as np
import pytest

import keras
import keras.backend as KB
from keras.layers import Dense
from keras.models import Sequential, load_model

import kgraph.backend as K


def _model():
    model = Sequential([Dense(5, activation="relu", input_shape=(3,)), Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    return model


def test_keras_loads_kgraph_as_its_backend():
    assert KB.backend() == "kgraph.backend"
    assert keras.backend.placeholder is K.placeholder
    assert collections.Iterable is collections.abc.Iterable


@pytest.mark.parametrize("name", ["clear_session", "get_session", "set_session",
                                  "manual_variable_initialization", "pattern_broadcast"])
def test_backend_names_keras_keeps_for_tensorflow_reach_keras_backend(name):
    assert getattr(keras.backend, name) is getattr(K, name)


def test_keras_set_floatx_is_kgraphs():
    KB.set_floatx("float64")
    try:
        assert K.floatx() == "float64" and KB.floatx() == "float64"
        assert KB.dtype(KB.variable(np.zeros(2))) == "float64"
    finally:
        KB.set_floatx("float32")
    K.set_epsilon(1e-5)
    try:
        assert KB.epsilon() == 1e-5
    finally:
        K.set_epsilon(1e-7)


def test_save_and_load_model_round_trip(tmp_path):
    x = np.random.default_rng(0).random((8, 3), dtype=np.float32)
    model = _model()
    model.fit(x, np.eye(2)[np.arange(8) % 2], epochs=1, verbose=0)
    path = str(tmp_path / "model.h5")
    model.save(path)
    with h5py.File(path, "r") as f:
        assert isinstance(f.attrs["keras_version"], (str, bytes))
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.optimizer.get_config() == model.optimizer.get_config()


def test_save_and_load_weights_round_trip(tmp_path):
    x = np.random.default_rng(1).random((4, 3), dtype=np.float32)
    model, other = _model(), _model()
    path = str(tmp_path / "weights.h5")
    model.save_weights(path)
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    other.load_weights(path, by_name=True)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))


def test_in_memory_h5_saving_round_trip():
    from keras.utils.io_utils import load_from_binary_h5py, save_to_binary_h5py
    stream = io.BytesIO()
    save_to_binary_h5py(lambda f: f.attrs.__setitem__("answer", 42), stream)
    stream.seek(0)
    assert load_from_binary_h5py(lambda f: int(f.attrs["answer"]), stream) == 42


def test_pickled_model_round_trip():
    x = np.random.default_rng(2).random((4, 3), dtype=np.float32)
    model = _model()
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
