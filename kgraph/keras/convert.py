"""``kgraph.keras.convert``: a Keras 2 HDF5 model file (``model.save`` output of Keras 2.0-2.3,
TensorFlow-trained files included) as an ONNX file, with no TensorFlow anywhere.

The file is loaded with Keras 2.3.1 running on kgraph and written by the same code as
``kgraph.export_keras``.  The backend is chosen here, not by the user's shell: a shell usually has
no ``KERAS_BACKEND``, and a first ``import keras`` writes ``"backend": "tensorflow"`` into a new
``keras.json``.  So ``KERAS_BACKEND`` is set to ``kgraph.backend`` for the import; when this
process already imported Keras with another backend, the conversion runs in a fresh Python
process (``python -m kgraph convert``) instead.

Bad input (a missing file, a file that is not HDF5 or holds no Keras model, a custom object that
cannot be imported, an existing output without ``force``) raises ``ValueError`` or
``FileExistsError`` before anything is written; a missing Keras raises ``KerasNotInstalled``.
"""
import importlib
import importlib.util
import json
import os
import subprocess
import sys

from ..deploy.files import check_writable

KGRAPH_BACKEND = "kgraph.backend"
INSTALL_HINT = 'pip install "kgraph-onnx[keras]"'


class KerasNotInstalled(ImportError):
    """Keras 2.3.1 (or h5py) cannot be imported in this Python environment."""


def convert(h5_path, onnx_path, opset=None, training=False, custom_objects=None, force=False):
    """Convert the Keras HDF5 model file ``h5_path`` into the ONNX file ``onnx_path`` and return
    ``onnx_path``.

    * ``opset``: the ONNX opset (default: kgraph's, 18).
    * ``training``: export the compiled training step (the file must hold a training
      configuration: ``model.save`` of a compiled model) instead of the inference graph.
    * ``custom_objects``: ``{name: class or function}`` for custom layers, losses, metrics...,
      or ``"module:Name"`` strings naming them (as ``kgraph convert --custom`` takes them).
    * ``force``: replace an existing ``onnx_path``.
    """
    h5_path, onnx_path = os.fspath(h5_path), os.fspath(onnx_path)
    opset = _check_opset(opset)
    _check_input(h5_path)
    check_writable(onnx_path, force=force)
    keras = _import_keras()  # before the custom objects: their modules import Keras
    if keras is None:  # imported with another backend: convert in a fresh interpreter
        return _convert_in_subprocess(h5_path, onnx_path, opset, training, custom_objects, force)
    model = load(h5_path, custom_objects, training)

    from ..deploy.onnx_file import write_model
    from .export import inference_model, training_model
    proto = training_model(model, opset) if training else inference_model(model, opset)
    return write_model(proto, onnx_path, force=force)


def load(h5_path, custom_objects=None, compile=False):
    """The Keras model in ``h5_path``, loaded with Keras 2.3.1 on kgraph (compiled from the file's
    training configuration when ``compile``)."""
    h5_path = os.fspath(h5_path)
    _check_input(h5_path)
    keras = _import_keras()
    if keras is None:
        raise RuntimeError(f"kgraph.keras.convert: Keras was imported in this process with the "
                           f"{_loaded_backend()!r} backend; load {h5_path} with "
                           f"KERAS_BACKEND={KGRAPH_BACKEND} in a fresh process")
    custom_objects = resolve_custom_objects(custom_objects)
    has_training_config = _check_keras_file(h5_path)
    if compile and not has_training_config:
        raise ValueError(f"{h5_path} has no training configuration (it was saved from a model that "
                         f"was not compiled, or with include_optimizer=False): it cannot be "
                         f"exported as a training step")
    try:
        return keras.models.load_model(h5_path, custom_objects=custom_objects, compile=compile)
    except ValueError as error:
        hint = ""
        if str(error).startswith("Unknown"):  # Keras: "Unknown layer: MyLayer"
            hint = " (a custom object: pass it as --custom module:Name / custom_objects)"
        raise ValueError(f"{h5_path}: Keras cannot load the model: {error}{hint}") from None


def resolve_custom_objects(custom_objects):
    """``{name: object}`` from a dict, or from ``"module:Name"`` strings (``Name`` may be dotted,
    ``Outer.Inner``; the key is its last part, the name Keras saved in the file)."""
    if not custom_objects:
        return {}
    if isinstance(custom_objects, dict):
        return dict(custom_objects)
    if isinstance(custom_objects, str):
        custom_objects = [custom_objects]
    resolved = {}
    for spec in custom_objects:
        module_name, sep, qualname = str(spec).partition(":")
        if not sep or not module_name or not qualname:
            raise ValueError(f"custom object {spec!r}: expected module:Name (for example "
                             f"my_layers:Attention)")
        try:
            obj = importlib.import_module(module_name)
        except ImportError as error:
            if error.name == module_name:
                raise ValueError(f"custom object {spec!r}: cannot import module {module_name!r} "
                                 f"({error}); is it on PYTHONPATH?") from None
            raise ValueError(f"custom object {spec!r}: importing module {module_name!r} failed "
                             f"({type(error).__name__}: {error})") from None
        for part in qualname.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"custom object {spec!r}: module {module_name!r} has no "
                                 f"{qualname!r}")
            obj = getattr(obj, part)
        resolved[qualname.split(".")[-1]] = obj
    return resolved


# -- choosing the backend ---------------------------------------------------------------------
def _loaded_backend():
    load_backend = sys.modules.get("keras.backend.load_backend")
    return getattr(load_backend, "_BACKEND", None)


def keras_installed():
    """Whether a Keras package can be imported (a folder named keras on the path, such as a
    test directory, is a namespace package, not Keras)."""
    spec = importlib.util.find_spec("keras")
    return spec is not None and spec.origin is not None


def _import_keras():
    """Keras, imported on kgraph; ``None`` when this process already runs Keras on another
    backend (Keras picks its backend once, at import)."""
    if "keras" in sys.modules:
        return sys.modules["keras"] if _loaded_backend() == KGRAPH_BACKEND else None
    if not keras_installed():
        raise KerasNotInstalled(f"Keras 2.3.1 is not installed in this Python environment "
                                f"({sys.executable}); install it with: {INSTALL_HINT}")
    saved = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = KGRAPH_BACKEND
    try:
        import keras
    except Exception as error:  # e.g. Keras 2.3.1 under numpy 2 (np.bool, np.Inf are gone)
        raise KerasNotInstalled(f"Keras cannot be imported here ({type(error).__name__}: {error}); "
                                f"install a working one with: {INSTALL_HINT}") from None
    finally:  # Keras read it at import; this process's environment is left as it was
        if saved is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = saved
    if _loaded_backend() != KGRAPH_BACKEND:
        return None
    if not keras.__version__.startswith("2."):
        raise KerasNotInstalled(f"Keras {keras.__version__} is installed; kgraph runs Keras 2.3.1: "
                                f"{INSTALL_HINT}")
    return keras


def _convert_in_subprocess(h5_path, onnx_path, opset, training, custom_objects, force):
    # absolute paths: a relative name starting with "-" would read as an option
    command = [sys.executable, "-m", "kgraph", "convert", os.path.abspath(h5_path),
               "-o", os.path.abspath(onnx_path), "--opset", str(opset)]
    command += ["--training"] * bool(training) + ["--force"] * bool(force)
    if isinstance(custom_objects, str):
        custom_objects = [custom_objects]
    specs = [] if isinstance(custom_objects or {}, dict) else list(custom_objects)
    for name, obj in (custom_objects.items() if isinstance(custom_objects, dict) else ()):
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
        if not module or module == "__main__" or "<locals>" in qualname or qualname.split(".")[-1] != name:
            raise RuntimeError(
                f"kgraph.keras.convert: Keras runs here on the {_loaded_backend()!r} backend, so the "
                f"conversion runs in a fresh process, which cannot import custom object {name!r} "
                f"({module}.{qualname}); define it in an importable module, or convert in a process "
                f"that has not imported Keras")
        specs.append(f"{module}:{qualname}")
    if specs:
        command += ["--custom", *specs]
    # the child imports what this process imports: same search path (custom objects' modules)
    path = [os.getcwd() if p == "" else p for p in sys.path]
    env = {**os.environ, "KERAS_BACKEND": KGRAPH_BACKEND, "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        message = lines[-1] if lines else f"exit status {result.returncode}"
        if result.returncode == 2:
            raise ValueError(message.removeprefix("kgraph convert: error: "))
        raise RuntimeError(f"kgraph convert (in a fresh process) failed: {message}")
    return onnx_path


# -- checking the input -----------------------------------------------------------------------
def _check_opset(opset):
    from ..lower import DEFAULT_OPSET, SUPPORTED_OPSETS
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset!r} is not supported; expected one of "
                         f"{', '.join(map(str, SUPPORTED_OPSETS))}")
    return opset


def _check_input(h5_path):
    if not os.path.exists(h5_path):
        raise ValueError(f"{h5_path}: no such file (expected a Keras HDF5 model file, model.save output)")
    if os.path.isdir(h5_path):
        raise ValueError(f"{h5_path} is a directory (expected a Keras HDF5 model file; a TensorFlow "
                         f"SavedModel directory is not a Keras 2 file)")


def _check_keras_file(h5_path):
    """Raise unless ``h5_path`` is an HDF5 file holding a Keras model; return whether it holds a
    training configuration."""
    try:
        import h5py
    except ImportError:
        raise KerasNotInstalled(f"h5py is not installed; install it with: {INSTALL_HINT}") from None
    if not h5py.is_hdf5(h5_path):
        raise ValueError(f"{h5_path} is not an HDF5 file (expected a Keras HDF5 model file, "
                         f"model.save output)")
    try:
        with h5py.File(h5_path, "r") as f:
            attrs = f.attrs
            if "model_config" not in attrs:
                if "layer_names" in attrs:
                    raise ValueError(f"{h5_path} holds only weights (model.save_weights output), no "
                                     f"model: convert needs the file model.save writes")
                raise ValueError(f"{h5_path} is an HDF5 file without a Keras model (no "
                                 f"'model_config' attribute; expected model.save output)")
            config = attrs["model_config"]
            if "model_weights" not in f:
                raise ValueError(f"{h5_path} has a Keras model configuration but no weights "
                                 f"(no 'model_weights' group)")
            has_training_config = "training_config" in attrs
    except OSError as error:
        raise ValueError(f"{h5_path} cannot be read as HDF5 ({error})") from None
    try:
        json.loads(config.decode("utf8") if isinstance(config, bytes) else str(config))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{h5_path}: its 'model_config' attribute is not JSON ({error})") from None
    return has_training_config
