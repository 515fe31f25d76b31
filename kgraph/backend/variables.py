"""Tensors and variables."""
import numpy as np

from .. import dtypes
from ..graph import Constant, Placeholder, Tensor, Variable
from ..ops import elementwise as ew
from ..ops import reduce as red
from ..ops import shape as sh
from ._api import keras_api, to_tensor
from .config import floatx, scoped_name


def _dtype(dtype, where):
    return dtypes.normalize(floatx() if dtype is None else dtype, where)


def _keras_attrs(t):
    t._keras_shape = t.shape
    t._uses_learning_phase = False
    return t


@keras_api
def placeholder(shape=None, ndim=None, dtype=None, sparse=False, name=None):
    if shape is None:
        if ndim is None:
            raise ValueError("K.placeholder: give either shape or ndim")
        shape = (None,) * int(ndim)
    elif isinstance(shape, int):
        shape = (shape,)
    shape = tuple(None if d is None or d == -1 else int(d) for d in shape)
    if sparse:
        from .sparse import sparse_placeholder  # fed as COO parts; see backend/sparse.py
        return _keras_attrs(sparse_placeholder(shape, _dtype(dtype, "K.placeholder"),
                                               name=scoped_name(name) if name else None))
    p = Placeholder(shape, _dtype(dtype, "K.placeholder"), name=scoped_name(name) if name else None, sparse=sparse)
    return _keras_attrs(p)


def is_placeholder(x):
    return isinstance(x, Placeholder)


@keras_api
def variable(value, dtype=None, name=None, constraint=None):
    if isinstance(value, Tensor):
        value = eval(value)
    if hasattr(value, "tocoo") and hasattr(value, "nnz"):  # scipy.sparse: a sparse tensor, as Keras' TF backend
        from .sparse import sparse_constant
        return sparse_constant(value, _dtype(dtype, "K.variable"))
    dtype = _dtype(dtype, "K.variable")
    v = Variable(np.array(value, dtype=dtype), dtype, name=scoped_name(name) if name else None, constraint=constraint)
    return _keras_attrs(v)


def is_variable(x):
    return isinstance(x, Variable)


@keras_api
def constant(value, dtype=None, shape=None, name=None):
    dtype = _dtype(dtype, "K.constant")
    arr = np.asarray(value, dtype=dtype)
    if shape is not None:
        shape = tuple(int(d) for d in shape)
        if arr.size == 1:
            arr = np.full(shape, arr.reshape(()), dtype=dtype)
        elif arr.size == int(np.prod(shape)):
            arr = arr.reshape(shape)
        else:
            raise ValueError(f"K.constant: {arr.size} values cannot fill shape {shape}")
    return _keras_attrs(Constant(arr, name=scoped_name(name) if name else None))


def is_tensor(x):
    return isinstance(x, Tensor)


def is_keras_tensor(x):
    if not isinstance(x, Tensor):
        raise ValueError(f"Unexpectedly found an instance of type `{type(x)}`. Expected a symbolic tensor instance.")
    return hasattr(x, "_keras_history")


def is_sparse(tensor):
    from .sparse import is_sparse as _is_sparse
    return _is_sparse(tensor)


@keras_api
def to_dense(tensor):
    from .sparse import to_dense as _to_dense
    return _to_dense(tensor)


@keras_api
def shape(x):
    return ew.cast(sh.shape_of(to_tensor(x)), dtype="int32")


def int_shape(x):
    if hasattr(x, "_keras_shape"):
        return x._keras_shape
    s = getattr(x, "shape", None)
    return tuple(s) if s is not None else None


def ndim(x):
    return len(int_shape(x))


@keras_api
def size(x, name=None):
    return ew.cast(red.size_of(to_tensor(x)), dtype="int32")


def dtype(x):
    d = getattr(x, "dtype", None)
    return d if isinstance(d, str) else np.dtype(d).name


def eval(x):
    """The value of ``x`` as a numpy array (compiled once per graph structure)."""
    if isinstance(x, Variable):
        return np.array(x.numpy())
    if isinstance(x, Constant):
        return np.array(x.value)
    if not isinstance(x, Tensor):
        return np.asarray(x)
    from .state import eval_applying_updates, updates_read_by
    updates = updates_read_by(x)
    if updates:
        return eval_applying_updates(x, updates)
    from .control import eval_tensor
    return eval_tensor(x)


def _filled_variable(value, shape, dtype, name, where):
    if isinstance(shape, int):
        shape = (shape,)
    if isinstance(shape, Tensor) or any(isinstance(d, Tensor) for d in shape):
        # a run-time shape (K.zeros((K.shape(x)[0], 8))): a tensor, not a variable, as TF's
        # backend gives when the shape is not fully static
        from ..ops import layout
        from .shaping import _int_vector
        vec, static = _int_vector(shape, where, "shape")
        ones = Constant(np.full((1,) * len(static), value, dtype=_dtype(dtype, where)))
        return sh.reshape_dynamic(layout.tile(ones, vec), vec, static=static)
    shape = tuple(int(d) for d in shape)
    return variable(np.full(shape, value, dtype=_dtype(dtype, where)), dtype=dtype, name=name)


def zeros(shape, dtype=None, name=None):
    return _filled_variable(0, shape, dtype, name, "K.zeros")


def ones(shape, dtype=None, name=None):
    return _filled_variable(1, shape, dtype, name, "K.ones")


def eye(size, dtype=None, name=None):
    if isinstance(size, (list, tuple)):
        n, m = size
    else:
        n = m = int(size)
    return variable(np.eye(n, m, dtype=_dtype(dtype, "K.eye")), dtype=dtype, name=name)


@keras_api
def zeros_like(x, dtype=None, name=None):
    x = to_tensor(x)
    z = ew.zeros_like_(x)
    return z if dtype is None or dtypes.normalize(dtype) == z.dtype else ew.cast(z, dtype=dtypes.normalize(dtype))


@keras_api
def ones_like(x, dtype=None, name=None):
    x = to_tensor(x)
    out_dtype = x.dtype if dtype is None else dtypes.normalize(dtype, "K.ones_like")
    return sh.expand_like(Constant(np.ones((), dtype=out_dtype)), x)


@keras_api
def identity(x, name=None):
    return sh.identity(to_tensor(x))


def random_uniform_variable(shape, low, high, dtype=None, name=None, seed=None):
    rng = np.random.RandomState(np.random.randint(10e8) if seed is None else seed)
    return variable(rng.uniform(low, high, size=shape), dtype=dtype, name=name)


def random_normal_variable(shape, mean, scale, dtype=None, name=None, seed=None):
    rng = np.random.RandomState(np.random.randint(10e8) if seed is None else seed)
    return variable(rng.normal(mean, scale, size=shape), dtype=dtype, name=name)


def count_params(x):
    return int(np.prod(int_shape(x)))


@keras_api
def cast(x, dtype):
    return ew.cast(to_tensor(x), dtype=dtypes.normalize(dtype, "K.cast"))


def get_variable_shape(x):
    return int_shape(x)
