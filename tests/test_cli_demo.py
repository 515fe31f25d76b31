"""``kgraph demo``'s errors come before any training, as one clear line and exit status 2."""
import os

from deploy_models import kgraph_cli


def test_negative_seed_is_refused(tmp_path):
    result = kgraph_cli("demo", "--out", tmp_path / "out", "--seed", "-1")
    assert result.returncode == 2 and "--seed: expected an integer >= 0, got -1" in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_before_training(tmp_path):
    (tmp_path / "mlp.onnx").write_bytes(b"mine")
    result = kgraph_cli("demo", "--out", tmp_path)
    assert result.returncode == 2 and "mlp.onnx already exists" in result.stderr and "--force" in result.stderr
    assert "epoch" not in result.stdout and "Traceback" not in result.stderr
    assert (tmp_path / "mlp.onnx").read_bytes() == b"mine" and os.listdir(tmp_path) == ["mlp.onnx"]


def test_unwritable_output_is_refused_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    result = kgraph_cli("demo", "--out", tmp_path / "file")
    assert result.returncode == 2 and "is a file, expected a folder" in result.stderr
    nested = kgraph_cli("demo", "--out", tmp_path / "file" / "sub")
    assert nested.returncode == 2 and "cannot create the output folder" in nested.stderr
    assert "epoch" not in result.stdout + nested.stdout
