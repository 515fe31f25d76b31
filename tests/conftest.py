import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


# tests/<name>/ runs inside its own environment (tools/test_env.py): collected directly there,
# and from any other environment through tests/test_second_envs.py, which builds that environment
SECOND_ENVS = {"keras": ("keras", "2.3.1"), "serve": ("nvidia-pytriton", None)}  # name: (package, version)


def in_env(name):
    from importlib.metadata import PackageNotFoundError, version
    package, wanted = SECOND_ENVS[name]
    try:
        found = version(package)
    except PackageNotFoundError:
        return False
    return wanted is None or found == wanted


collect_ignore = [name for name in SECOND_ENVS if not in_env(name)]


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
