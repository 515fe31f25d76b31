"""``kgraph check`` end to end in subprocesses, on models kgraph exported (an MLP, an RNN Loop, a CTC
local function): every engine's reported difference is recomputed here by running onnxruntime,
onnx.reference and OpenVINO directly."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import openvino
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from deploy_models import kgraph_cli, models  # noqa: F401  (a fixture)
from kgraph.deploy.engines import random_feeds


def _ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _openvino(model, feeds):
    # OpenVINO reads no model-local functions and infers in bf16/f16 unless told f32
    core = openvino.Core()
    plain = onnx.inliner.inline_local_functions(model)
    compiled = core.compile_model(core.read_model(plain.SerializeToString()), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled(feeds)
    return [results[compiled.output(o.name)] for o in model.graph.output]


def _largest_difference(expected, actual):
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    agree = (expected == actual) | (np.isnan(expected) & np.isnan(actual))  # inf == inf counts as agreeing
    with np.errstate(invalid="ignore"):
        return float(np.where(agree, 0.0, np.abs(expected - actual)).max())


@pytest.mark.parametrize("name", ["mlp", "rnn", "ctc"])
def test_check_passes_on_ort_reference_and_openvino(models, name):
    exported = models[name]
    result = kgraph_cli("check", exported.path, "--engines", "ort,reference,openvino", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["checker"] == "ok" and list(report["engines"]) == ["ort", "reference", "openvino"]

    model = onnx.load(exported.path)
    feeds = random_feeds(model, batch=2, seed=0)  # what the command fed: seed 0, symbolic dims 2
    assert report["inputs"] == {n: {"dtype": v.dtype.name, "shape": list(v.shape)} for n, v in feeds.items()}
    for n, v in feeds.items():
        assert v.shape[0] == 2 and v.dtype == exported.feeds[n].dtype and v.shape[1:] == exported.feeds[n].shape[1:]
    expected = _ort(model, feeds)
    # ORT on the file is kgraph's own compiled function on the same inputs
    np.testing.assert_allclose(expected[0], exported.fn([feeds[n] for n in exported.feeds])[0], rtol=1e-6)
    with np.errstate(all="ignore"):
        others = {"reference": ReferenceEvaluator(model).run(None, feeds), "openvino": _openvino(model, feeds)}
    output = model.graph.output[0].name
    for engine, outputs in others.items():
        reported = report["engines"][engine]["outputs"][output]
        assert reported["ok"] and reported["shape"] == list(expected[0].shape)
        assert reported["max_abs_diff"] == pytest.approx(_largest_difference(expected[0], outputs[0]), abs=1e-12)
        assert reported["max_abs_diff"] < 1e-5


def test_check_on_given_inputs_compares_finite_ctc_losses(models, tmp_path):
    """Random labels and lengths often cannot fit (CTC's loss is then +inf on every engine); the
    fixture's inputs give finite losses, so the engines' numbers themselves are compared."""
    exported = models["ctc"]
    np.savez(tmp_path / "feeds.npz", **exported.feeds)
    result = kgraph_cli("check", exported.path, "--inputs", tmp_path / "feeds.npz", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert np.all(np.isfinite(exported.outputs[0])) and report["seed"] is None
    for engine in ("reference", "openvino"):
        loss = report["engines"][engine]["outputs"]["loss"]
        assert loss["ok"] and loss["nonfinite"] == 0 and loss["size"] == 2


def _random_normal_model(path):
    """``x + RandomNormalLike(x, seed=3)``: seeded, but every engine has its own generator, so
    the engines honestly disagree (the reason kgraph draws its own random numbers)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph([helper.make_node("RandomNormalLike", ["x"], ["noise"], seed=3.0),
                               helper.make_node("Add", ["x", "noise"], ["y"])], "noisy", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return model


def test_engines_that_disagree_fail_the_check(tmp_path):
    model = _random_normal_model(tmp_path / "noisy.onnx")
    result = kgraph_cli("check", tmp_path / "noisy.onnx", "--engines", "ort,reference", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    feeds = random_feeds(model, seed=0)
    largest = _largest_difference(_ort(model, feeds)[0], ReferenceEvaluator(model).run(None, feeds)[0])
    reported = report["engines"]["reference"]["outputs"]["y"]
    assert largest > 0.1 and not reported["ok"] and not report["ok"]
    assert reported["max_abs_diff"] == pytest.approx(largest, abs=1e-12)
    text = kgraph_cli("check", tmp_path / "noisy.onnx", "--engines", "reference")
    assert text.returncode == 1 and "FAIL" in text.stdout and "FAILED" in text.stdout


def test_a_corrupted_model_fails_the_check(models, tmp_path):
    model = onnx.load(models["mlp"].path)
    del model.graph.node[0]  # a value that nothing computes any more
    onnx.save(model, tmp_path / "broken.onnx")
    result = kgraph_cli("check", tmp_path / "broken.onnx")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "onnx.checker (full check): ValidationError" in result.stdout
    assert "ort        failed:" in result.stdout and "Traceback" not in result.stderr


def test_a_tolerance_of_zero_is_a_real_bound(models):
    """With --atol 0 --rtol 0 the verdict is exactly whether the engines agree bit for bit; the
    command's verdict agrees with the differences recomputed here."""
    result = kgraph_cli("check", models["rnn"].path, "--engines", "openvino", "--atol", 0, "--rtol", 0, "--json")
    model = onnx.load(models["rnn"].path)
    feeds = random_feeds(model, seed=0)
    largest = _largest_difference(_ort(model, feeds)[0], _openvino(model, feeds)[0])
    assert result.returncode == (1 if largest > 0 else 0), result.stdout + result.stderr
    assert json.loads(result.stdout)["engines"]["openvino"]["outputs"]["last_state"]["max_abs_diff"] == \
        pytest.approx(largest, abs=1e-12)


def test_bad_inputs_exit_2_with_clear_messages(models, tmp_path):
    missing = kgraph_cli("check", tmp_path / "nope.onnx")
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "notes.txt").write_text("not a model")
    not_onnx = kgraph_cli("check", tmp_path / "notes.txt")
    assert not_onnx.returncode == 2 and "is not an ONNX model" in not_onnx.stderr
    unknown = kgraph_cli("check", models["mlp"].path, "--engines", "ort,tensorrt")
    assert unknown.returncode == 2 and "unknown engine 'tensorrt'" in unknown.stderr and "openvino" in unknown.stderr
    np.savez(tmp_path / "wrong.npz", features=np.zeros((2, 5), np.float32))
    wrong = kgraph_cli("check", models["mlp"].path, "--inputs", tmp_path / "wrong.npz")
    assert wrong.returncode == 2 and "'features' is float32 (2, 5)" in wrong.stderr and "(features_dim0, 4)" in wrong.stderr
    bad_dim = kgraph_cli("check", models["mlp"].path, "--dim", "seq=4")
    assert bad_dim.returncode == 2 and "seq" in bad_dim.stderr and "features_dim0" in bad_dim.stderr
    threads = subprocess.run([sys.executable, "-m", "kgraph", "check", models["mlp"].path], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "KGRAPH_NUM_THREADS": "many"})
    assert threads.returncode == 2 and "KGRAPH_NUM_THREADS" in threads.stderr and "'many'" in threads.stderr


def test_an_engine_that_is_not_installed_names_its_extra(models):
    # a None entry in sys.modules makes `import openvino` fail exactly as when it is not installed
    code = ("import sys; sys.modules['openvino'] = None; from kgraph.cli import main; "
            f"sys.exit(main(['check', {models['mlp'].path!r}, '--engines', 'ort,openvino']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pip install 'kgraph-onnx[openvino]'" in result.stderr
