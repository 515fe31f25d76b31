"""The Keras 2.3.1 environment the Keras tests and benchmarks run in: ``.venv-keras/``.

Keras 2.3.1 needs numpy < 1.24 while kgraph's own suite runs on whatever numpy the machine has, so
the Keras side lives in a second virtual environment, built from this project's own ``keras``
extra (``pip install -e ".[keras]" pytest``) and reused while ``pyproject.toml``'s requirements and
the Python version stay the same.  kgraph itself is installed editable, so the environment always
runs the checkout's code.

    python tools/keras_env.py           # build or reuse; prints the environment's python
    python tools/keras_env.py --rebuild
"""
import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_DIR = os.path.join(ROOT, ".venv-keras")
STAMP = "kgraph-keras-env.json"  # written last: an environment without it is incomplete
EXTRA_PACKAGES = ["pytest>=7"]


def _key(base_python):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        pyproject = f.read()
    version = subprocess.run([base_python, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return hashlib.sha256(pyproject + version.encode() + repr(EXTRA_PACKAGES).encode()).hexdigest()


def env_python(env_dir=ENV_DIR):
    return os.path.join(env_dir, "bin", "python")


def ensure(base_python=sys.executable, rebuild=False, log=sys.stderr):
    """The python of a ready Keras environment, built first if it is missing or stale."""
    os.makedirs(os.path.dirname(ENV_DIR), exist_ok=True)
    with open(ENV_DIR + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse it
        key = _key(base_python)
        stamp = os.path.join(ENV_DIR, STAMP)
        if not rebuild and os.path.exists(stamp):
            with open(stamp) as f:
                if json.load(f).get("key") == key and os.path.exists(env_python()):
                    return env_python()
        print(f"building the Keras 2.3.1 environment in {ENV_DIR} (once) ...", file=log, flush=True)
        shutil.rmtree(ENV_DIR, ignore_errors=True)
        subprocess.run([base_python, "-m", "venv", ENV_DIR], check=True)
        pip = [env_python(), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        result = subprocess.run(pip + ["-e", f"{ROOT}[keras]"] + EXTRA_PACKAGES,
                                capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(ENV_DIR, ignore_errors=True)
            raise RuntimeError(f"installing the keras extra failed:\n{result.stdout[-4000:]}\n"
                               f"{result.stderr[-4000:]}")
        with open(stamp, "w") as f:
            json.dump({"key": key}, f)
        return env_python()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="build anew even if it is current")
    args = parser.parse_args(argv)
    print(ensure(rebuild=args.rebuild))


if __name__ == "__main__":
    main()
