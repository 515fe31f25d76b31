"""The repository's promises: the README's commands and example, and the API's completeness."""
import os
import re

import kgraph.backend as K

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"^    (pip install .*)$", _readme(), flags=re.M)
    assert len(commands) == 2, commands
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci_lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert commands[1] in ci_lines


def test_readme_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", _readme(), flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert os.path.exists("model.onnx") and os.path.exists("step.onnx")


def test_every_contract_name_is_implemented():
    assert len(K.ALL_NAMES) == 162
    assert not K.missing, f"backend functions missing: {K.missing}"
    assert all(callable(getattr(K, name)) for name in K.ALL_NAMES)


def test_the_wheel_ships_the_templates(tmp_path):
    import subprocess
    import sys
    import zipfile
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), ROOT], check=True, cwd=tmp_path)
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = zipfile.ZipFile(os.path.join(tmp_path, wheel)).namelist()
    for template in os.listdir(os.path.join(ROOT, "templates")):
        assert f"kgraph/templates/{template}" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_pyproject_lists_every_package():
    import setuptools
    found = set(setuptools.find_packages(ROOT, include=["kgraph*"]))
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        listed = set(re.findall(r'"(kgraph[\w.]*)"', f.read().split("[tool.setuptools.package-dir]")[0]))
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
