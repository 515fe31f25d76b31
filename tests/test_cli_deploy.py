"""``kgraph inspect``, ``deploy triton``, ``codegen`` and ``card`` end to end in subprocesses,
on models kgraph exported (an MLP, an RNN Loop, a CTC local function)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deploy_models import kgraph_cli, models  # noqa: F401  (a fixture)


def test_inspect_json_describes_the_ctc_model(models):
    result = kgraph_cli("inspect", models["ctc"].path, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [i["name"] for i in summary["inputs"]] == ["frames", "labels", "input_length", "label_length"]
    assert summary["inputs"][0]["shape"] == ["frames_dim0", 5, 3] and summary["inputs"][1]["dtype"] == "int32"
    assert summary["producer"] == {"name": "kgraph", "version": "0.1.0"}
    assert summary["ops"]["ai.kgraph::CTCLoss"] == 1 and summary["functions"][0]["name"] == "CTCLoss"
    assert summary["parameters"] == 12 and summary["parameter_bytes"] == 48


@pytest.mark.parametrize("name", ["mlp", "rnn", "ctc"])
def test_triton_config_parses_with_tritons_protobuf(models, name, tmp_path):
    result = kgraph_cli("deploy", "triton", models[name].path, "--repo", tmp_path, "--max-batch-size", 4,
                        "--dynamic-batching", "--instances", 2)
    assert result.returncode == 0, result.stderr
    config = text_format.Parse((tmp_path / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    assert config.instance_group[0].count == 2 and config.HasField("dynamic_batching")
    for inp in config.input:  # dims are the model's, batch dim dropped
        assert list(inp.dims) == list(models[name].feeds[inp.name].shape[1:])
    assert (tmp_path / name / "1" / "model.onnx").read_bytes() == open(models[name].path, "rb").read()
    assert oct(os.stat(tmp_path / name / "config.pbtxt").st_mode & 0o777) == "0o644"


def test_triton_refuses_a_fixed_batch_dim_and_writes_nothing(tmp_path):
    import kgraph
    import kgraph.backend as K
    x = K.placeholder((2, 3), name="x")
    path = kgraph.export(K.function([x], [x * 2.0]), tmp_path / "fixed.onnx")
    result = kgraph_cli("deploy", "triton", path, "--repo", tmp_path / "repo", "--max-batch-size", 8)
    assert result.returncode == 2 and "fixed first dim 2" in result.stderr and "symbolic" in result.stderr
    assert not (tmp_path / "repo").exists()


def test_bad_inputs_are_clear_errors(models, tmp_path):
    missing = kgraph_cli("inspect", tmp_path / "nope.onnx")
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "notes.txt").write_text("not a model")
    not_onnx = kgraph_cli("card", tmp_path / "notes.txt", "-o", tmp_path / "card.md")
    assert not_onnx.returncode == 2 and "is not an ONNX model" in not_onnx.stderr
    (tmp_path / "card.md").write_text("mine")
    exists = kgraph_cli("card", models["mlp"].path, "-o", tmp_path / "card.md")
    assert exists.returncode == 2 and "already exists" in exists.stderr and "--force" in exists.stderr
    assert (tmp_path / "card.md").read_text() == "mine"
    forced = kgraph_cli("card", models["mlp"].path, "-o", tmp_path / "card.md", "--force")
    assert forced.returncode == 0 and "`features`" in (tmp_path / "card.md").read_text()
    assert sorted(os.listdir(tmp_path)) == ["card.md", "notes.txt"]  # no temp files left


def test_codegen_reproduces_kgraph_and_rejects_a_wrong_name(models, tmp_path):
    ctc = models["ctc"]
    script = tmp_path / "predict.py"
    assert kgraph_cli("codegen", ctc.path, "-o", script).returncode == 0
    np.savez(tmp_path / "in.npz", **ctc.feeds)
    run = subprocess.run([sys.executable, script, tmp_path / "in.npz", "-o", tmp_path / "out.npz"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["loss"], ctc.outputs[0], rtol=1e-6)
    np.savez(tmp_path / "bad.npz", **{("frame" if k == "frames" else k): v for k, v in ctc.feeds.items()})
    bad = subprocess.run([sys.executable, script, tmp_path / "bad.npz", "-o", tmp_path / "o.npz"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown input(s) 'frame'" in bad.stderr and "'frames' (float32" in bad.stderr
