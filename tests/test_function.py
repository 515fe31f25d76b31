"""K.function: feeds, updates, session caching, variable placement, devices, errors."""
import numpy as np
import pytest

import kgraph.backend as K
from kgraph.ops import Primitive
from kgraph.runtime import Device, Function, resolve_device
from kgraph.runtime import function as runtime_function
from kgraph.runtime import session as sessions


def test_inputs_outputs_and_float_casting():
    x = K.placeholder((None, 2))
    f = K.function([x], [x * 2, K.sum(x)])
    a = np.arange(6, dtype=np.float64).reshape(3, 2)  # float64 is cast to the float32 placeholder
    out = f([a])
    assert out[0].dtype == np.float32
    np.testing.assert_allclose(out[0], a * 2)
    np.testing.assert_allclose(out[1], a.sum())
    np.testing.assert_allclose(f([[[1, 2]]])[0], [[2, 4]])  # lists and ints are accepted too


def test_wrong_shape_names_input_and_shapes():
    x = K.placeholder((None, 2), name="features")
    f = K.function([x], [x + 1])
    with pytest.raises(ValueError, match=r"'features'.*\(None, 2\).*\(3, 3\)"):
        f([np.zeros((3, 3), "float32")])
    with pytest.raises(ValueError, match=r"'features'.*\(None, 2\).*\(2,\)"):
        f([np.zeros(2, "float32")])


def test_incompatible_dtype_is_an_error():
    i = K.placeholder((2,), dtype="int32", name="ids")
    f = K.function([i], [i + 1])
    np.testing.assert_array_equal(f([np.array([1, 2], np.int64)])[0], [2, 3])
    with pytest.raises(ValueError, match=r"'ids'.*int32.*float"):
        f([np.array([1.5, 2.0])])
    with pytest.raises(ValueError, match="could not be read"):
        f([[[1], [2, 3]]])


def test_argument_errors():
    x = K.placeholder((2,))
    with pytest.raises(ValueError, match="unknown keyword arguments"):
        K.function([x], [x], fetches=[])
    with pytest.raises(TypeError, match="placeholder"):
        K.function([x + 1], [x])
    with pytest.raises(ValueError, match="expected 1 inputs"):
        K.function([x], [x])([])
    y = K.placeholder((2,), name="forgotten")
    with pytest.raises(ValueError, match="forgotten"):
        K.function([x], [x + y])


def test_updates_are_computed_from_start_values():
    v = K.variable(np.array([1.0, 2.0]))
    x = K.placeholder((2,))
    # the output reads v; the update changes v: the output sees the old value
    f = K.function([x], [v * x], updates=[K.update(v, v + x)])
    out = f([np.array([10.0, 10.0])])[0]
    np.testing.assert_allclose(out, [10, 20])
    np.testing.assert_allclose(K.get_value(v), [11, 12])


def test_several_updates_of_one_variable_apply_in_order():
    v = K.variable(np.zeros(2))
    f = K.function([], [], updates=[K.update_add(v, np.ones(2, "float32")),
                                    K.update_add(v, 2 * np.ones(2, "float32")),
                                    K.update_sub(v, 0.5 * np.ones(2, "float32"))])
    f([])
    np.testing.assert_allclose(K.get_value(v), [2.5, 2.5])
    g = K.function([], [], updates=[K.update_add(v, np.ones(2, "float32")), (v, v * 10)])
    g([])
    np.testing.assert_allclose(K.get_value(v), [25, 25])  # the assignment reads the start value


def test_updates_of_two_variables_see_each_others_start_values():
    a, b = K.variable(1.0), K.variable(2.0)
    f = K.function([], [], updates=[(a, b), (b, a)])  # a swap
    f([])
    assert (K.get_value(a), K.get_value(b)) == (2.0, 1.0)


def test_moving_average_update():
    v = K.variable(np.array([1.0, 1.0]))
    f = K.function([], [], updates=[K.moving_average_update(v, np.array([3.0, 5.0], "float32"), 0.9)])
    f([])
    np.testing.assert_allclose(K.get_value(v), [1 * 0.9 + 3 * 0.1, 1 * 0.9 + 5 * 0.1], rtol=1e-6)


def test_bad_update_forms():
    v = K.variable(np.zeros(2))
    with pytest.raises(TypeError, match="updates must be"):
        K.function([], [], updates=["v"])
    with pytest.raises(ValueError, match="does not match"):
        K.function([], [], updates=[(v, np.zeros(3, "float32"))])
    with pytest.raises(TypeError, match="variable"):
        K.update(K.constant(1.0), 2.0)


def test_structurally_equal_functions_share_one_session():
    before = sessions.stats["compiled"]
    fs = []
    for _ in range(3):
        x = K.placeholder((None, 4))
        v = K.variable(np.ones(4))
        fs.append(K.function([x], [x * 3.0 + 1.0], updates=[K.update_add(v, K.sum(x, axis=0))]))
    assert sessions.stats["compiled"] - before == 1
    x = np.ones((2, 4), "float32")
    assert all(np.allclose(f([x])[0], 4) for f in fs)


def test_eval_of_the_same_tensor_compiles_once():
    t = K.exp(K.constant([1.0, 2.0])) * 2
    before = sessions.stats["compiled"]
    first = K.eval(t)
    second = K.eval(t)
    assert sessions.stats["compiled"] - before == 1
    np.testing.assert_allclose(first, np.exp([1.0, 2.0]) * 2, rtol=1e-6)
    np.testing.assert_array_equal(first, second)


def test_frozen_prediction_function_sees_new_variable_values():
    w = K.variable(np.ones((3, 2)))
    x = K.placeholder((None, 3))
    f = K.function([x], [K.dot(x, w)])
    assert f.mode == "frozen"
    a = np.ones((1, 3), "float32")
    np.testing.assert_allclose(f([a])[0], [[3, 3]])
    K.set_value(w, 2 * np.ones((3, 2)))
    np.testing.assert_allclose(f([a])[0], [[6, 6]])


def test_frozen_function_goes_fed_when_variables_change_every_call():
    w = K.variable(np.ones(3))
    x = K.placeholder((3,))
    predict = K.function([x], [x * w])
    step = K.function([], [], updates=[K.update_add(w, np.ones(3, "float32"))])
    assert predict.mode == "frozen"
    for i in range(4):
        step([])
        np.testing.assert_allclose(predict([np.ones(3)])[0], np.full(3, 2 + i))
    assert predict.mode == "fed"


def test_resident_executor_runs_updates_with_double_buffers():
    """The CUDA path (IOBinding, device OrtValues, swapped buffers), exercised on the CPU device."""
    v = K.variable(np.zeros(3))
    x = K.placeholder((3,))
    f = Function([x], [v * 1.0 + x], updates=[(v, v + x)], mode="resident")
    ones = np.ones(3, "float32")
    for step in range(3):
        out = f([ones])[0]
        np.testing.assert_allclose(out, np.full(3, step + 1.0))
    np.testing.assert_allclose(K.get_value(v), [3, 3, 3])
    K.set_value(v, np.full(3, 10.0))  # a host write is uploaded before the next run
    np.testing.assert_allclose(f([ones])[0], np.full(3, 11.0))


def test_device_resolution():
    assert resolve_device("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == Device("cpu")
    assert resolve_device("auto", ["CPUExecutionProvider"]) == Device("cpu")
    assert resolve_device("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == Device("cuda", 0)
    assert resolve_device("cuda:2", ["CUDAExecutionProvider"]) == Device("cuda", 2)
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider"):
        resolve_device("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu0", ["CPUExecutionProvider"])
    cuda = Device("cuda", 1)
    assert cuda.providers[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert cuda.keeps_variables_resident and not Device("cpu").keeps_variables_resident


def test_cuda_device_selects_the_resident_executor(monkeypatch):
    """Selection logic only: pretend CUDA resolves, and check which executor a function takes."""
    monkeypatch.setattr(runtime_function, "resolve_device", lambda spec=None: Device("cuda", 0))
    monkeypatch.setattr(sessions, "create_session", lambda model, device: _CpuSession(model))
    monkeypatch.setattr(sessions, "cached_session", lambda key, build, device: _CpuSession(build()))
    v = K.variable(np.zeros(2))
    f = Function([], [v + 1.0], updates=[(v, v + 1.0)])
    assert f.mode == "resident" and isinstance(f._executor, runtime_function.ResidentExecutor)
    assert f._executor.device == "cuda"


class _CpuSession:
    def __init__(self, model):
        import onnxruntime as ort
        self._s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def __getattr__(self, name):
        return getattr(self._s, name)


def test_print_tensor_prints_each_run(capsys):
    x = K.placeholder((2,))
    y = K.print_tensor(x * 2, message="doubled:")
    f = K.function([x], [y + 1])
    np.testing.assert_allclose(f([np.ones(2)])[0], [3, 3])
    assert "doubled: [2. 2.]" in capsys.readouterr().out


def test_primitive_without_lowering_names_itself_and_the_opset():
    p = Primitive("test_only_unlowerable")
    p.infer(lambda x: (x.shape, x.dtype))
    x = K.placeholder((2,))
    with pytest.raises(NotImplementedError, match="test_only_unlowerable.*opset 18"):
        K.function([x], [p(x)])
    del Primitive.registry["test_only_unlowerable"]


def test_unsupported_opset_is_a_clear_error():
    x = K.placeholder((2,))
    with pytest.raises(ValueError, match="opset 12"):
        Function([x], [x + 1], opset=12)


def test_dict_feeds_and_single_output():
    x = K.placeholder((2,))
    f = K.function([x], x * 3)
    np.testing.assert_allclose(f({x: np.ones(2)})[0], [3, 3])


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv("KGRAPH_NUM_THREADS", "1")
    assert sessions.session_options().intra_op_num_threads == 1
    monkeypatch.setenv("KGRAPH_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="KGRAPH_NUM_THREADS"):
        sessions.session_options()
