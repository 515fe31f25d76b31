"""What Keras 2.3.1 needs from today's Python, h5py and an external backend, patched at Keras's
own call sites when Keras loads kgraph as its backend — and nowhere else.

Each patch names the Keras file and line it serves, and does nothing when it is not needed (an
alias that exists, an h5py that still returns bytes).  ``install(backend)`` runs when
``kgraph.backend`` is imported; Keras modules loaded later are patched right after they execute,
through a finder that watches only the module names in ``_AFTER_IMPORT``.
"""
import collections
import collections.abc
import importlib.abc
import importlib.machinery
import sys

KGRAPH_BACKEND = "kgraph.backend"


_backend = None  # kgraph.backend, handed over by install(): this module never imports it


def install(backend):
    """Patch what Keras has imported so far; patch the rest as it is imported.  ``backend`` is
    the kgraph.backend module, which calls this at the end of its import."""
    global _backend
    _backend = backend
    if not any(isinstance(f, _AfterImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImportFinder())
    for name, patch in _AFTER_IMPORT.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)


def keras_uses_kgraph():
    load_backend = sys.modules.get("keras.backend.load_backend")
    return getattr(load_backend, "_BACKEND", None) == KGRAPH_BACKEND


# -- keras/backend/load_backend.py ----------------------------------------------------------------
def _patch_backend(load_backend):
    if getattr(load_backend, "_BACKEND", None) != KGRAPH_BACKEND or getattr(load_backend, "_kgraph", False):
        return
    load_backend._kgraph = True
    K = _backend
    _add_abc_aliases()
    # load_backend.py:7-15 imports floatx/epsilon/image_data_format from keras/backend/common.py and
    # keeps them over the backend's own (load_backend.py:104), so keras.backend.set_floatx would set
    # a value kgraph never reads: both names now mean kgraph's setting.
    from keras.backend import common
    for name in ("epsilon", "set_epsilon", "floatx", "set_floatx", "cast_to_floatx",
                 "image_data_format", "set_image_data_format", "normalize_data_format"):
        setattr(common, name, getattr(K, name))
        setattr(load_backend, name, getattr(K, name))
    # keras/backend/__init__.py:158-167 re-exports these only for TensorFlow, CNTK and Theano;
    # keras.backend.clear_session() is what every Keras user calls between models.
    keras_backend = sys.modules["keras.backend"]
    for name in ("clear_session", "get_session", "set_session", "manual_variable_initialization",
                 "pattern_broadcast"):
        setattr(keras_backend, name, getattr(K, name))
        setattr(load_backend, name, getattr(K, name))


def _add_abc_aliases():
    # keras/callbacks/callbacks.py:19 (`from collections import Iterable`) and
    # keras/engine/training_utils.py:639-927 (`collections.Mapping`, `.Sequence`, `.Container`):
    # the aliases left `collections` in Python 3.10.
    for name in ("Iterable", "Mapping", "Sequence", "Container"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


# -- keras/utils/io_utils.py ----------------------------------------------------------------------
def _patch_io_utils(io_utils):
    if not keras_uses_kgraph() or getattr(io_utils, "_kgraph", False):
        return
    io_utils._kgraph = True
    import h5py

    # io_utils.py:276-283: H5Dict hands back h5py attributes, which h5py 3 reads as str where
    # Keras calls .decode() (saving.py:273, 278, 282, 345, 377)
    original_getitem = io_utils.H5Dict.__getitem__

    def getitem(self, attr):
        value = original_getitem(self, attr)
        return _text_as_bytes(value) if isinstance(self.data, h5py.Group) else value
    io_utils.H5Dict.__getitem__ = getitem

    # io_utils.py:416-420: an in-memory file opened without a mode (read-only in h5py 3) and
    # File.fid (gone in h5py 3; File.id is the same FileID)
    def save_to_binary_h5py(save_function, stream):
        with h5py.File("in-memory-h5py", mode="w", driver="core", backing_store=False) as h5file:
            return_value = save_function(h5file)
            h5file.flush()
            binary_data = h5file.id.get_file_image()
        stream.write(binary_data)
        return return_value
    io_utils.save_to_binary_h5py = save_to_binary_h5py


# -- keras/engine/saving.py -----------------------------------------------------------------------
def _patch_saving(saving):
    if not keras_uses_kgraph() or getattr(saving, "_kgraph", False):
        return
    saving._kgraph = True
    # saving.py:1183-1187, 1262-1266 (f.attrs['keras_version'].decode) and 722-728 (names read
    # through load_attributes_from_hdf5_group): the group reads its text attributes as bytes
    for name in ("load_weights_from_hdf5_group", "load_weights_from_hdf5_group_by_name"):
        original = getattr(saving, name)

        def load(f, *args, _original=original, **kwargs):
            return _original(_BytesTextGroup(f), *args, **kwargs)
        load.__name__, load.__doc__ = original.__name__, original.__doc__
        setattr(saving, name, load)


# -- keras/layers/core.py -------------------------------------------------------------------------
def _patch_core_layers(core):
    if not keras_uses_kgraph() or getattr(core, "_kgraph", False):
        return
    core._kgraph = True
    original = core.Lambda.compute_output_shape

    # core.py:667-691: a Lambda without output_shape infers its shape by calling itself on
    # placeholders only for TensorFlow and CNTK, and otherwise assumes the input's shape (wrong
    # for keras_applications/resnet_common.py:233, whose Reshape then fails).  kgraph tensors
    # have static shapes too, so it takes the same path.
    def compute_output_shape(self, input_shape):
        if self._output_shape is not None:
            return original(self, input_shape)
        K = _backend
        if isinstance(input_shape, list):
            dtypes = self._input_dtypes or [None] * len(input_shape)
            x = self.call([K.placeholder(shape=s, dtype=d) for s, d in zip(input_shape, dtypes)])
        else:
            x = self.call(K.placeholder(shape=input_shape, dtype=self._input_dtypes))
        return [K.int_shape(e) for e in x] if isinstance(x, list) else K.int_shape(x)
    compute_output_shape.__doc__ = original.__doc__
    core.Lambda.compute_output_shape = compute_output_shape


def _text_as_bytes(value):
    """h5py 2's reading of a text attribute: bytes, and arrays of bytes."""
    if isinstance(value, str):
        return value.encode("utf8")
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return [v.encode("utf8") for v in value]
    dtype = getattr(value, "dtype", None)
    if dtype is not None and dtype == object and value.size and isinstance(value.flat[0], str):
        import numpy as np
        return np.array([v.encode("utf8") for v in value.flat]).reshape(value.shape)
    return value


class _BytesTextGroup:
    """An h5py group whose text attributes read as bytes (subgroups too); all else is the group's."""

    def __init__(self, group):
        self._group = group

    @property
    def attrs(self):
        return _BytesTextAttrs(self._group.attrs)

    def __getitem__(self, key):
        item = self._group[key]
        return _BytesTextGroup(item) if hasattr(item, "keys") and hasattr(item, "attrs") else item

    def __contains__(self, key):
        return key in self._group

    def __iter__(self):
        return iter(self._group)

    def __len__(self):
        return len(self._group)

    def __getattr__(self, name):
        return getattr(self._group, name)


class _BytesTextAttrs:
    def __init__(self, attrs):
        self._attrs = attrs

    def __getitem__(self, key):
        return _text_as_bytes(self._attrs[key])

    def get(self, key, default=None):
        return _text_as_bytes(self._attrs[key]) if key in self._attrs else default

    def __contains__(self, key):
        return key in self._attrs

    def __iter__(self):
        return iter(self._attrs)

    def keys(self):
        return self._attrs.keys()


_AFTER_IMPORT = {
    "keras.backend.load_backend": _patch_backend,
    "keras.utils.io_utils": _patch_io_utils,
    "keras.engine.saving": _patch_saving,
    "keras.layers.core": _patch_core_layers,
}


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the Keras modules above it wraps the normal loader so that the
    patch runs right after the module executes."""

    def find_spec(self, fullname, path=None, target=None):
        patch = _AFTER_IMPORT.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, patch):
        self.loader = loader
        self.patch = patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.patch(module)
