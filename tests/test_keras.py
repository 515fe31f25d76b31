"""Runs tests/keras/ inside the Keras 2.3.1 environment, one pytest process per file.

Keras 2.3.1 needs numpy < 1.24; this suite runs on any numpy.  tools/keras_env.py builds (once,
then reuses) ``.venv-keras/`` from the project's own ``keras`` extra.  Inside that environment
tests/keras/ is collected directly and this module has nothing to do.
"""
import os
import subprocess
import sys

import pytest

from conftest import _in_keras_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERAS_TESTS = os.path.join(ROOT, "tests", "keras")
FILES = sorted(f for f in os.listdir(KERAS_TESTS) if f.startswith("test_") and f.endswith(".py"))

pytestmark = pytest.mark.skipif(_in_keras_env(), reason="tests/keras/ is collected directly here")


@pytest.fixture(scope="session")
def keras_python():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import keras_env
    finally:
        sys.path.pop(0)
    return keras_env.ensure()


@pytest.mark.parametrize("name", FILES)
def test_keras_file(keras_python, name):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "PYTHON"))}
    result = subprocess.run(
        [keras_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
         os.path.join("tests", "keras", name)],
        cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"tests/keras/{name} failed in the Keras environment:\n"
                    f"{result.stdout[-12000:]}\n{result.stderr[-3000:]}", pytrace=False)
