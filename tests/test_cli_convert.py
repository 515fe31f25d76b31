"""``kgraph convert`` where Keras is not installed (this suite's environment, numpy 2): a clear
install hint and exit 2, nothing written.  The conversions themselves are tested in
tests/keras/test_convert.py, inside the Keras environment."""
import os
import subprocess
import sys

import pytest

from kgraph.keras.convert import keras_installed

pytestmark = pytest.mark.skipif(keras_installed(),
                                reason="Keras is importable here: tests/keras/test_convert.py covers convert")


def _convert(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    return subprocess.run([sys.executable, "-m", "kgraph", "convert", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd)


def test_convert_without_keras_exits_2_with_the_install_hint(tmp_path):
    model = tmp_path / "model.h5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # what the file holds is never reached
    result = _convert(model, "-o", tmp_path / "model.onnx", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("kgraph convert: error: Keras 2.3.1 is not installed")
    assert 'pip install "kgraph-onnx[keras]"' in line
    assert sorted(os.listdir(tmp_path)) == ["model.h5"]


def test_library_convert_without_keras_raises_the_hint(tmp_path):
    from kgraph.keras.convert import KerasNotInstalled, convert
    model = tmp_path / "model.h5"
    model.write_bytes(b"not read")
    with pytest.raises(KerasNotInstalled, match=r'pip install "kgraph-onnx\[keras\]"'):
        convert(model, tmp_path / "model.onnx")
    assert "keras" not in sys.modules
    assert sorted(os.listdir(tmp_path)) == ["model.h5"]
