"""Configuration, session and naming; keras.json / KERAS_HOME / KGRAPH_DEVICE handling."""
import json

import numpy as np
import pytest

import kgraph.backend as K
from kgraph.config import Settings
from kcheck import evaluate


def test_backend_name_and_defaults():
    assert K.backend() == "kgraph"
    assert K.floatx() == "float32"
    assert K.epsilon() == pytest.approx(1e-7)
    assert K.image_data_format() == "channels_last"
    assert K.image_dim_ordering() == "tf"


def test_setters_validate_and_apply():
    K.set_floatx("float64")
    assert K.floatx() == "float64"
    assert K.cast_to_floatx([1, 2]).dtype == np.float64
    assert K.placeholder((2,)).dtype == "float64"
    with pytest.raises(ValueError, match="floatx"):
        K.set_floatx("float8")
    K.set_epsilon(1e-5)
    assert K.epsilon() == 1e-5
    with pytest.raises(ValueError, match="epsilon"):
        K.set_epsilon(-1)
    K.set_image_data_format("channels_first")
    assert K.image_data_format() == "channels_first" and K.image_dim_ordering() == "th"
    K.set_image_dim_ordering("tf")
    assert K.image_data_format() == "channels_last"
    with pytest.raises(ValueError, match="data_format"):
        K.set_image_data_format("NHWC")
    with pytest.raises(ValueError, match="dim_ordering"):
        K.set_image_dim_ordering("xx")


def test_normalize_data_format():
    assert K.normalize_data_format(None) == "channels_last"
    assert K.normalize_data_format("Channels_First") == "channels_first"
    with pytest.raises(ValueError, match="K.normalize_data_format"):
        K.normalize_data_format("nchw")


def test_keras_json_is_read(tmp_path, monkeypatch):
    (tmp_path / "keras.json").write_text(json.dumps({
        "floatx": "float64", "epsilon": 1e-4, "image_data_format": "channels_first",
        "backend": "kgraph.backend", "kgraph_device": "cpu"}))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KGRAPH_DEVICE", raising=False)
    s = Settings().load()
    assert (s.floatx, s.epsilon, s.image_data_format, s.device) == ("float64", 1e-4, "channels_first", "cpu")


@pytest.mark.parametrize("key,value", [("floatx", "float8"), ("epsilon", "small"),
                                       ("image_data_format", "NHWC"), ("kgraph_device", "tpu")])
def test_bad_keras_json_value_names_file_and_key(tmp_path, monkeypatch, key, value):
    path = tmp_path / "keras.json"
    path.write_text(json.dumps({key: value}))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ValueError) as e:
        Settings().load()
    assert str(path) in str(e.value) and key in str(e.value)


def test_unreadable_keras_json(tmp_path, monkeypatch):
    (tmp_path / "keras.json").write_text("{not json")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="keras.json"):
        Settings().load()


def test_kgraph_device_env_overrides(tmp_path, monkeypatch):
    (tmp_path / "keras.json").write_text(json.dumps({"kgraph_device": "cpu"}))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("KGRAPH_DEVICE", "cuda:1")
    assert Settings().load().device == "cuda:1"
    monkeypatch.setenv("KGRAPH_DEVICE", "gpu")
    with pytest.raises(ValueError, match="KGRAPH_DEVICE"):
        Settings().load()


def test_learning_phase_is_a_bool_placeholder_fed_false_by_default():
    lp = K.learning_phase()
    assert K.is_placeholder(lp) and lp.dtype == "bool" and lp.shape == ()
    assert K.learning_phase() is lp
    x = K.placeholder((3,))
    y = K.in_train_phase(x * 2, x * 3)
    assert y._uses_learning_phase
    a = np.arange(3, dtype="float32")
    np.testing.assert_allclose(K.function([x], [y])([a])[0], a * 3)
    np.testing.assert_allclose(K.function([x, lp], [y])([a, 1])[0], a * 2)
    np.testing.assert_allclose(K.function([x, lp], [K.in_test_phase(x * 2, x * 3)])([a, 1])[0], a * 3)


def test_set_learning_phase_fixes_the_branch():
    K.set_learning_phase(1)
    assert K.learning_phase() == 1
    x = K.placeholder((2,))
    y = K.in_train_phase(x + 1, x - 1)
    np.testing.assert_allclose(evaluate(y, {x: np.zeros(2, "float32")}), [1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        K.set_learning_phase(2)
    K.clear_session()
    assert K.is_placeholder(K.learning_phase())


def test_in_train_phase_with_explicit_training_and_callables():
    x = K.placeholder((2,))
    assert K.in_train_phase(lambda: x, lambda: x * 2, training=1) is x
    t = K.placeholder((), dtype="bool")
    y = K.in_train_phase(x, x * 2, training=t)
    f = K.function([x, t], [y])
    np.testing.assert_allclose(f([np.ones(2), True])[0], [1, 1])
    np.testing.assert_allclose(f([np.ones(2), False])[0], [2, 2])


def test_uids_and_session():
    assert K.get_uid("dense") == 1
    assert K.get_uid("dense") == 2
    assert K.get_uid("conv") == 1
    K.reset_uids()
    assert K.get_uid("dense") == 1
    s = K.get_session()
    K.set_session(s)
    with pytest.raises(TypeError, match="K.set_session"):
        K.set_session(object())


def test_name_scope_prefixes_names():
    with K.name_scope("block1"):
        with K.name_scope("dense"):
            v = K.variable(np.zeros(2), name="kernel")
    assert v.name == "block1/dense/kernel"
    with pytest.raises(TypeError, match="name_scope"):
        with K.name_scope(3):
            pass


def test_decorators_pass_through_and_control_dependencies_order_reads_after_updates():
    def f(x):
        return x + 1
    assert K.symbolic(f) is f and K.eager(f) is f
    v = K.variable(np.zeros(2))
    with K.control_dependencies([K.update_add(v, np.ones(2, "float32"))]):
        y = K.identity(v)
    np.testing.assert_allclose(K.eval(y), [1, 1])  # TF: the read runs after the update
    K.manual_variable_initialization(True)
