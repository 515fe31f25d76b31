"""``kgraph serve`` where the serve extra is not installed (kgraph's own environment): a clear
install hint, exit 2, before anything starts.  The server itself is tested in tests/serve/."""
import importlib.util

import pytest

from deploy_models import kgraph_cli, models  # noqa: F401  (models: the session fixture)


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="the serve extra is installed here")
def test_serve_without_pytriton_names_the_extra(models):  # noqa: F811
    result = kgraph_cli("serve", models["mlp"].path, "--http-port", "0", "--grpc-port", "0")
    assert result.returncode == 2, result.stderr
    assert "pip install 'kgraph-onnx[serve]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_checks_the_model_before_the_extra(models):  # noqa: F811
    result = kgraph_cli("serve", models["mlp"].path + ".missing")
    assert result.returncode == 2 and "no such file" in result.stderr
