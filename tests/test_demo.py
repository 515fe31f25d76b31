"""The main job: ``kgraph demo`` trains, exports and reloads; the CLI and the example run."""
import os
import runpy

import numpy as np
import onnx
import pytest

from kgraph import cli, demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_trains_and_the_exported_model_agrees(tmp_path):
    lines = []
    result = demo.run(out_dir=str(tmp_path), epochs=3, n_train=512, n_test=256, log=lines.append)
    losses = result["losses"]
    assert losses[-1] < 0.7 * losses[0], losses  # before training vs the last epoch
    assert result["accuracy"] > 0.6
    assert result["max_difference"] < 1e-5 and result["agreement"] == 1.0
    assert result["exported_accuracy"] == result["accuracy"]
    np.testing.assert_allclose(result["step_loss"], result["kgraph_loss"], rtol=1e-5)
    for path in (result["model_path"], result["step_path"]):
        onnx.checker.check_model(onnx.load(path), full_check=True)
    step = onnx.load(result["step_path"])
    assert sum(o.name.endswith(":new") for o in step.graph.output) == 1 + 3 * 6  # iterations, m, v, params
    assert any("loss" in line for line in lines) and any("agree" in line for line in lines)


def test_teacher_blobs_are_seeded_and_one_hot():
    a, ya = demo.teacher_blobs(100, seed=4)
    b, yb = demo.teacher_blobs(100, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert a.dtype == np.float32 and ya.shape == (100, 3)
    np.testing.assert_array_equal(ya.sum(1), 1)
    assert len(np.unique(ya.argmax(1))) == 3  # every class occurs


def test_cli_demo(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "epoch   2/2" in out and "mlp.onnx" in out
    assert (tmp_path / "mlp.onnx").exists() and (tmp_path / "mlp_train_step.onnx").exists()


def test_cli_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--epochs", "zero"])
    assert exit_info.value.code == 2
    assert "positive integer" in capsys.readouterr().err
    assert cli.main([]) == 2  # no command: the help, and a usage exit status


def test_example_script_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(os.path.join(ROOT, "examples", "train_mlp.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "mlp.onnx on onnxruntime" in out
    assert (tmp_path / "mlp.onnx").exists() and (tmp_path / "mlp_train_step.onnx").exists()
