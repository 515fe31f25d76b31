"""examples/keras_*.py run as a user runs them: a shell without KERAS_BACKEND (each example picks
kgraph itself), a fresh KERAS_HOME; each must reach > 0.85 held-out accuracy, in Keras and in the
converted ONNX file on onnxruntime, and leave its files."""
import os
import re
import subprocess
import sys

import onnx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_example(name, tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path / "keras-home")
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), "--out", str(tmp_path / "out"),
                           *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def _accuracies(stdout):
    return {source: float(value) for source, value in
            re.findall(r"^held-out accuracy \((.*?)\): ([0-9.]+)$", stdout, flags=re.M)}


@pytest.mark.parametrize("name, epochs, files", [
    ("keras_image_classifier.py", 4, ["classifier.h5", "classifier.onnx", "classifier_train_step.onnx"]),
    ("keras_lstm_classifier.py", 6, ["lstm.h5", "lstm.onnx"]),
])
def test_example_trains_converts_and_runs_on_onnxruntime(tmp_path, name, epochs, files):
    result = _run_example(name, tmp_path, "--epochs", str(epochs))
    assert result.returncode == 0, result.stdout + result.stderr
    accuracy = _accuracies(result.stdout)
    onnx_source = os.path.join(str(tmp_path / "out"), files[1]) + " on onnxruntime"
    assert set(accuracy) == {"Keras on kgraph", onnx_source}, result.stdout
    assert accuracy["Keras on kgraph"] > 0.85 and accuracy[onnx_source] > 0.85, result.stdout
    assert abs(accuracy["Keras on kgraph"] - accuracy[onnx_source]) < 0.01, result.stdout
    assert sorted(os.listdir(tmp_path / "out")) == sorted(files)
    for f in files:
        if f.endswith(".onnx"):
            onnx.checker.check_model(onnx.load(str(tmp_path / "out" / f)), full_check=True)

    again = _run_example(name, tmp_path, "--epochs", "1")  # refused before training: files kept
    assert again.returncode == 1 and "already exists (use --force to overwrite it)" in again.stderr
    assert "Epoch" not in again.stdout
