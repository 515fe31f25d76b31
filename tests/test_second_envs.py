"""Runs tests/keras/ and tests/serve/ inside their own environments, one pytest process per file.

Keras 2.3.1 needs numpy < 1.24 and nvidia-pytriton numpy < 2; this suite runs on any numpy.
tools/test_env.py builds (once, then reuses) ``.venv-keras/`` and ``.venv-serve/`` from the
project's own ``keras`` and ``serve`` extras.  Inside such an environment its folder is collected
directly and its files here skip.
"""
import os
import sys

import pytest

from conftest import SECOND_ENVS, in_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import test_env  # noqa: E402

sys.path.pop(0)

CASES = [(name, f) for name in SECOND_ENVS if os.path.isdir(os.path.join(ROOT, "tests", name))
         for f in sorted(os.listdir(os.path.join(ROOT, "tests", name)))
         if f.startswith("test_") and f.endswith(".py")]


@pytest.mark.parametrize("name, test_file", CASES, ids=[f"{n}/{f}" for n, f in CASES])
def test_file_in_its_environment(name, test_file):
    if in_env(name):
        pytest.skip(f"tests/{name}/ is collected directly here")
    result = test_env.run_tests_in(name, test_file)
    if result.returncode != 0:
        pytest.fail(f"tests/{name}/{test_file} failed in the {name} environment:\n"
                    f"{result.stdout[-12000:]}\n{result.stderr[-3000:]}", pytrace=False)
