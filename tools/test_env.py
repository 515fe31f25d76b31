"""The second virtual environments some tests run in: ``.venv-<name>/``, one per entry of ``ENVS``.

Keras 2.3.1 needs numpy < 1.24 and nvidia-pytriton numpy < 2, while kgraph's own suite runs on
whatever numpy the machine has; so those tests live in environments of their own, each built from
this project's own extras (``pip install -e ".[<extras>]" pytest``) and reused while the
requirements it installs and the Python version stay the same.  kgraph is installed editable, so
an environment always runs the checkout's code.

    python tools/test_env.py keras           # build or reuse; prints the environment's python
    python tools/test_env.py serve --rebuild
"""
import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python 3.10: the whole file is the key
    tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVS = {  # name: the extras it installs (besides kgraph's own dependencies and pytest)
    "keras": ["keras"],
    "serve": ["serve"],
}
EXTRA_PACKAGES = ["pytest>=7"]
STAMP = "kgraph-test-env.json"  # written last: an environment without it is incomplete


def env_dir(name):
    return os.path.join(ROOT, f".venv-{name}")


def env_python(name):
    return os.path.join(env_dir(name), "bin", "python")


def _key(name, base_python):
    """Changes when what the environment installs changes, not on every pyproject edit."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        pyproject = f.read()
    if tomllib is None:
        wanted = {"pyproject": pyproject.decode(), "packages": EXTRA_PACKAGES}
    else:
        project = tomllib.loads(pyproject.decode())["project"]
        wanted = {"dependencies": project.get("dependencies", []),
                  "extras": {e: project.get("optional-dependencies", {}).get(e) for e in ENVS[name]},
                  "packages": EXTRA_PACKAGES}
    version = subprocess.run([base_python, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return hashlib.sha256((json.dumps(wanted, sort_keys=True) + version).encode()).hexdigest()


def ensure(name, base_python=sys.executable, rebuild=False, log=sys.stderr):
    """The python of the ready environment ``name``, built first if it is missing or stale."""
    if name not in ENVS:
        raise ValueError(f"unknown test environment {name!r}; expected one of {sorted(ENVS)}")
    directory = env_dir(name)
    with open(directory + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse it
        key = _key(name, base_python)
        stamp = os.path.join(directory, STAMP)
        if not rebuild and os.path.exists(stamp):
            with open(stamp) as f:
                if json.load(f).get("key") == key and os.path.exists(env_python(name)):
                    return env_python(name)
        print(f"building the {name} test environment in {directory} (once) ...", file=log, flush=True)
        shutil.rmtree(directory, ignore_errors=True)
        subprocess.run([base_python, "-m", "venv", directory], check=True)
        pip = [env_python(name), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        extras = ",".join(ENVS[name])
        result = subprocess.run(pip + ["-e", f"{ROOT}[{extras}]"] + EXTRA_PACKAGES,
                                capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"installing the {extras} extra failed:\n{result.stdout[-4000:]}\n"
                               f"{result.stderr[-4000:]}")
        with open(stamp, "w") as f:
            json.dump({"key": key}, f)
        return env_python(name)


def run_tests_in(name, test_file, root=ROOT):
    """Run one test file of ``tests/<name>/`` in environment ``name``; returns the
    ``CompletedProcess``.  The caller's KERAS_* and PYTHON* settings stay out of it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "PYTHON"))}
    return subprocess.run(
        [ensure(name), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
         os.path.join("tests", name, test_file)],
        cwd=root, env=env, capture_output=True, text=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(ENVS))
    parser.add_argument("--rebuild", action="store_true", help="build anew even if it is current")
    args = parser.parse_args(argv)
    print(ensure(args.name, rebuild=args.rebuild))


if __name__ == "__main__":
    main()
