"""``kgraph bench`` end to end in subprocesses on models kgraph exported, and the pieces it shares
with ``kgraph check``: random inputs from the signature and ONNX Runtime's device choice."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from deploy_models import kgraph_cli, models  # noqa: F401  (a fixture)
from kgraph.deploy.engines import EngineError, int_range, ort_providers, random_feeds

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.parametrize("name, engine", [("mlp", "ort"), ("rnn", "openvino"), ("ctc", "ort")])
def test_bench_json_reports_ordered_percentiles_and_throughput(models, name, engine):
    result = kgraph_cli("bench", models[name].path, "--engine", engine, "--batch", 3, "--iters", 25,
                        "--warmup", 2, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert report["engine"] == engine and report["batch"] == 3 and report["iters"] == 25
    # samples per second over the timed runs: batch / mean latency
    assert report["throughput_samples_per_s"] == pytest.approx(3 / (lat["mean"] / 1e3), rel=1e-9)
    for input_name, given in models[name].feeds.items():
        assert report["inputs"][input_name] == {"dtype": given.dtype.name, "shape": [3, *given.shape[1:]]}


def test_bench_text_output(models):
    result = kgraph_cli("bench", models["mlp"].path, "--iters", 5)
    assert result.returncode == 0, result.stderr
    assert "latency ms: p50" in result.stdout and "samples/s" in result.stdout


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA: the missing-CUDA error cannot happen")
def test_cuda_without_a_cuda_provider_is_a_clear_error(models):
    result = kgraph_cli("bench", models["mlp"].path, "--device", "cuda")
    assert result.returncode == 2 and "no CUDAExecutionProvider" in result.stderr
    assert "onnxruntime-gpu" in result.stderr and "Traceback" not in result.stderr


def test_device_choice_follows_kgraph_runtime():
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers("cuda", available=with_cuda) == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert ort_providers("cpu", available=with_cuda) == ["CPUExecutionProvider"]
    with pytest.raises(EngineError, match="offers no CUDAExecutionProvider .*available: CPUExecutionProvider"):
        ort_providers("cuda", available=["CPUExecutionProvider"])


def test_bad_inputs_exit_2(models, tmp_path):
    missing = kgraph_cli("bench", tmp_path / "nope.onnx")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (tmp_path / "notes.txt").write_text("not a model")
    not_onnx = kgraph_cli("bench", tmp_path / "notes.txt")
    assert not_onnx.returncode == 2 and "is not an ONNX model" in not_onnx.stderr
    unknown = kgraph_cli("bench", models["mlp"].path, "--engine", "tensorrt")
    assert unknown.returncode == 2 and "invalid choice: 'tensorrt'" in unknown.stderr
    openvino_cuda = kgraph_cli("bench", models["mlp"].path, "--engine", "openvino", "--device", "cuda")
    assert openvino_cuda.returncode == 2 and "engine 'openvino' runs on cpu, not 'cuda'" in openvino_cuda.stderr
    zero = kgraph_cli("bench", models["mlp"].path, "--iters", 0)
    assert zero.returncode == 2 and "expected a positive integer, got 0" in zero.stderr


def test_random_inputs_match_the_signature(models):
    model = onnx.load(models["ctc"].path)
    feeds = random_feeds(model, batch=4, seed=7)
    assert {n: (v.shape, v.dtype) for n, v in feeds.items()} == {
        "frames": ((4, 5, 3), np.float32), "labels": ((4, 2), np.int32),
        "input_length": ((4, 1), np.int32), "label_length": ((4, 1), np.int32)}
    # integers: 1 .. the shortest axis > 1 (the 2 labels), valid as class ids (4 classes, blank 3),
    # label lengths (<= 2) and input lengths (<= 5 frames)
    assert int_range({n: v.shape for n, v in feeds.items()}) == (1, 2)
    for name in ("labels", "input_length", "label_length"):
        assert feeds[name].min() >= 1 and feeds[name].max() <= 2
    again = random_feeds(model, batch=4, seed=7)
    assert all(np.array_equal(feeds[n], again[n]) for n in feeds)  # seeded


def test_named_symbolic_dims(tmp_path):
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(model, tmp_path / "seq.onnx")
    assert random_feeds(model, batch=5)["x"].shape == (5, 2, 3)  # other symbolic dims: 2
    assert random_feeds(model, batch=5, dims={"time": 7})["x"].shape == (5, 7, 3)
    result = kgraph_cli("bench", tmp_path / "seq.onnx", "--dim", "time=7", "--iters", 3, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["inputs"]["x"]["shape"] == [1, 7, 3]
    bad = kgraph_cli("bench", tmp_path / "seq.onnx", "--dim", "time")
    assert bad.returncode == 2 and "expected NAME=SIZE" in bad.stderr
