"""The generated predict.py (``kgraph codegen``) with ``.npy`` files for one-input models: it
reproduces kgraph's outputs, and wrong dtypes, shapes or file kinds are refused with what the
model expects.  (The .npz path and a wrong input name are in test_cli_deploy.py.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

import kgraph
import kgraph.backend as K

from deploy_models import kgraph_cli, models  # noqa: F401  (a fixture)


def _codegen(model_path, script):
    result = kgraph_cli("codegen", model_path, "-o", script)
    assert result.returncode == 0, result.stderr
    return script


def _run(script, *args, cwd=None):
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def embedding(tmp_path_factory):
    """A one-input model whose input is int32: (batch, 3) token ids → (batch, 3, 2) vectors."""
    folder = tmp_path_factory.mktemp("embedding")
    ids = K.placeholder((None, 3), dtype="int32", name="ids")
    table = K.variable(np.arange(10, dtype="float32").reshape(5, 2), name="table")
    vectors = K.gather(table, ids)
    vectors.name = "vectors"
    fn = K.function([ids], [vectors])
    return fn, kgraph.export(fn, folder / "embedding.onnx")


def test_npy_in_npy_out_reproduces_kgraph(models, tmp_path):
    mlp = models["mlp"]
    script = _codegen(mlp.path, tmp_path / "predict.py")
    np.save(tmp_path / "x.npy", mlp.feeds["features"])
    # from another folder: the script finds the model relative to itself
    run = _run(script, tmp_path / "x.npy", "-o", tmp_path / "y.npy", cwd=os.path.dirname(mlp.path))
    assert run.returncode == 0, run.stderr
    assert "probabilities float32[5, 3]" in run.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), mlp.outputs[0], rtol=1e-6)
    assert oct(os.stat(tmp_path / "y.npy").st_mode & 0o777) == "0o644"


def test_npy_of_an_int_model_casts_an_int64_feed_within_its_kind(embedding, tmp_path):
    fn, path = embedding
    script = _codegen(path, tmp_path / "predict.py")
    ids = np.array([[0, 4, 2], [1, 1, 3]], np.int64)  # numpy's default int: cast to int32
    np.save(tmp_path / "ids.npy", ids)
    run = _run(script, tmp_path / "ids.npy", "-o", tmp_path / "out.npz")
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["vectors"],
                                  np.arange(10, dtype="float32").reshape(5, 2)[ids])
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["vectors"], fn([ids.astype("int32")])[0])


def test_wrong_dtype_and_shape_name_what_the_model_expects(models, embedding, tmp_path):
    _, path = embedding
    script = _codegen(path, tmp_path / "predict.py")
    np.save(tmp_path / "floats.npy", np.zeros((2, 3), np.float32))
    bad_dtype = _run(script, tmp_path / "floats.npy", "-o", tmp_path / "out.npy")
    assert bad_dtype.returncode == 2, bad_dtype.stderr
    assert "input 'ids' is float32, the model expects int32 of shape (ids_dim0, 3)" in bad_dtype.stderr

    mlp_script = _codegen(models["mlp"].path, tmp_path / "predict_mlp.py")
    np.save(tmp_path / "wide.npy", np.zeros((2, 5), np.float32))
    bad_size = _run(mlp_script, tmp_path / "wide.npy", "-o", tmp_path / "out.npy")
    assert bad_size.returncode == 2
    assert "input 'features' has size 5 on axis 1, the model expects float32 of shape (features_dim0, 4)" \
        in bad_size.stderr
    np.save(tmp_path / "flat.npy", np.zeros(4, np.float32))
    bad_rank = _run(mlp_script, tmp_path / "flat.npy", "-o", tmp_path / "out.npy")
    assert bad_rank.returncode == 2 and "has 1 dims (4,), the model expects float32 of shape" in bad_rank.stderr
    for run in (bad_dtype, bad_size, bad_rank):
        assert "Traceback" not in run.stderr
    assert not (tmp_path / "out.npy").exists()


def test_npy_for_a_model_with_several_inputs_is_refused(models, tmp_path):
    ctc = models["ctc"]
    script = _codegen(ctc.path, tmp_path / "predict.py")
    np.save(tmp_path / "frames.npy", ctc.feeds["frames"])
    run = _run(script, tmp_path / "frames.npy", "-o", tmp_path / "out.npy")
    assert run.returncode == 2
    assert "a .npy file holds one array, but the model has 4 inputs ('frames', 'labels', 'input_length', " \
           "'label_length'): pass an .npz" in run.stderr
    assert not (tmp_path / "out.npy").exists()


def test_an_existing_output_needs_force(models, tmp_path):
    mlp = models["mlp"]
    script = _codegen(mlp.path, tmp_path / "predict.py")
    np.save(tmp_path / "x.npy", mlp.feeds["features"])
    (tmp_path / "y.npy").write_bytes(b"keep me")
    refused = _run(script, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert refused.returncode == 2 and "already exists (use --force to overwrite it)" in refused.stderr
    assert (tmp_path / "y.npy").read_bytes() == b"keep me"
    forced = _run(script, tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--force")
    assert forced.returncode == 0, forced.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), mlp.outputs[0], rtol=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["predict.py", "x.npy", "y.npy"]
