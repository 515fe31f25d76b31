import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def _in_keras_env():
    try:
        from importlib.metadata import version
        return version("keras") == "2.3.1"
    except Exception:
        return False


# tests/keras/ runs inside the Keras 2.3.1 environment (numpy < 1.24): collected directly there,
# and from any other environment through tests/test_keras.py, which builds that environment
collect_ignore = [] if _in_keras_env() else ["keras"]


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts from default settings and a clean session."""
    import kgraph.backend as K
    from kgraph.config import settings
    saved = (settings.floatx, settings.epsilon, settings.image_data_format)
    yield
    settings.floatx, settings.epsilon, settings.image_data_format = saved
    K.clear_session()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
