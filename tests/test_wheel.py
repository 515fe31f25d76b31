"""The wheel, installed with its dependencies in a fresh virtual environment outside the checkout,
carries the templates: ``kgraph --help`` works and ``kgraph codegen`` / ``kgraph card`` render
from the installed copies on a model exported there."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the model the installed kgraph exports: scores = tanh(features @ W), W fixed here
EXPORT = """
import json, sys
import numpy as np
import kgraph, kgraph.backend as K
from kgraph.deploy.templates import template_dir
x = K.placeholder((None, 3), name="features")
w = K.variable(np.arange(6, dtype="float32").reshape(3, 2) / 10, name="kernel")
y = K.tanh(K.dot(x, w))
y.name = "scores"
kgraph.export(K.function([x], [y]), "scorer.onnx")
print(json.dumps({"kgraph": kgraph.__file__, "templates": template_dir()}))
"""


def _run(cmd, cwd, env, timeout=300):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def test_installed_wheel_renders_from_its_own_templates(tmp_path):
    # nothing may lead back to the checkout: not the working folder, not PYTHONPATH
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT], cwd=work, env=env)
    (wheel,) = wheels.glob("kgraph_onnx-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("kgraph/templates/")}
    expected = {f"kgraph/templates/{t}" for t in os.listdir(os.path.join(ROOT, "templates")) if t.endswith(".j2")}
    assert expected and expected <= shipped

    # a fresh environment (no system site-packages); the wheel's own dependencies come from
    # pip's index/cache, so its metadata is what is tested too
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work, env=env)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel], cwd=work, env=env)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    where = json.loads(_run([python, "-c", EXPORT], cwd=work, env=env).stdout.strip().splitlines()[-1])
    site = str(venv / "lib")
    assert where["kgraph"].startswith(site) and where["templates"].startswith(site), where
    assert where["templates"].endswith(os.path.join("kgraph", "templates"))
    assert sorted(os.listdir(where["templates"])) == sorted(os.path.basename(t) for t in expected)

    help_text = _run([bin_dir / "kgraph", "--help"], cwd=work, env=env).stdout
    for subcommand in ("inspect", "codegen", "card", "deploy"):
        assert subcommand in help_text

    _run([bin_dir / "kgraph", "codegen", "scorer.onnx", "-o", "predict.py"], cwd=work, env=env)
    _run([bin_dir / "kgraph", "card", "scorer.onnx", "-o", "scorer.md"], cwd=work, env=env)
    card = (work / "scorer.md").read_text()
    assert "`features`" in card and "`scores`" in card and "predict.py" in card
    script = (work / "predict.py").read_text()
    assert "\"features\": (\"float32\", ('features_dim0', 3))" in script  # the signature, baked in

    features = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    np.savez(work / "in.npz", features=features)
    _run([python, "predict.py", "in.npz", "-o", "out.npz"], cwd=work, env=env)
    kernel = np.arange(6, dtype="float32").reshape(3, 2) / 10
    np.testing.assert_allclose(np.load(work / "out.npz")["scores"], np.tanh(features @ kernel), rtol=1e-5)
