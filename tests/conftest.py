import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


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
