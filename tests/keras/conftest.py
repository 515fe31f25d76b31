"""Keras 2.3.1 on kgraph: these tests import the real Keras, with kgraph as its backend and a
private KERAS_HOME (Keras writes keras.json there), set before anything imports Keras."""
import os
import shutil
import tempfile

_home = tempfile.mkdtemp(prefix="kgraph-keras-home-")
os.environ["KERAS_HOME"] = _home
os.environ["KERAS_BACKEND"] = "kgraph.backend"

import keras  # noqa: E402,F401  (imported here so that a failure shows once, at collection)
import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_keras():
    """Each test builds its layers from fresh names and a fresh learning phase."""
    import keras.backend as KB
    KB.clear_session()
    yield
    KB.clear_session()
