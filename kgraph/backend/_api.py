"""What every K function shares: argument checking with the K function's name in the message,
turning Python values into tensors, and axis normalization."""
import functools

import numpy as np

from .. import dtypes
from ..config import settings
from ..graph import Constant, Tensor
from ..ops import InferError
from ..ops import elementwise as ew
from ..ops import shape as sh


def keras_api(fn):
    """Shape/dtype rule failures inside ``fn`` surface as ``ValueError('K.<fn>: ...')``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InferError as e:
            raise ValueError(f"K.{fn.__name__}: {e}") from None
    return wrapper


def is_tensor_like(x):
    return isinstance(x, Tensor)


def to_tensor(x, dtype=None, where="argument"):
    """What TF's ``convert_to_tensor`` accepts, as a Tensor: a Tensor as is (cast if ``dtype``
    differs); Python/numpy values as constants of ``dtype`` (floatx for Python floats when no
    dtype is given); nested lists/tuples holding tensors (``K.prod([K.shape(x)[0], 2])``) stacked
    along a new leading axis, their Python numbers taking the tensors' dtype."""
    if isinstance(x, Tensor):
        return x if dtype is None or x.dtype == dtype else ew.cast(x, dtype=dtype)
    if isinstance(x, (list, tuple)) and _holds_tensor(x):
        return _pack(x, dtype, where)
    if hasattr(x, "toarray") and hasattr(x, "nnz"):  # scipy.sparse
        x = x.toarray()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{where}: cannot convert {type(x).__name__} to a tensor")
    if dtype is None:
        if arr.dtype.kind == "f" and not isinstance(x, np.ndarray):
            dtype = settings.floatx
        elif arr.dtype == np.int64 and not isinstance(x, np.ndarray):
            dtype = "int32"
        else:
            dtype = dtypes.normalize(arr.dtype, where)
    return Constant(arr.astype(dtype))


def _holds_tensor(x):
    return any(isinstance(v, Tensor) or (isinstance(v, (list, tuple)) and _holds_tensor(v)) for v in x)


def _tensor_dtypes(x):
    for v in x:
        if isinstance(v, Tensor):
            yield v.dtype
        elif isinstance(v, (list, tuple)):
            yield from _tensor_dtypes(v)


def _pack(values, dtype, where):
    """TF's auto-packing of a (nested) list that holds tensors: every entry converted to one dtype
    (the tensors' common dtype unless ``dtype`` is given), then stacked."""
    if not values:
        raise TypeError(f"{where}: cannot convert an empty nested list to a tensor")
    if dtype is None:
        dtype = dtypes.result_type(*_tensor_dtypes(values))
    parts = [to_tensor(v, dtype, where) for v in values]
    rank = parts[0].ndim
    merged = []
    for dims in zip(*(p.shape for p in parts)):
        known = {d for d in dims if d is not None}
        if len(known) > 1:
            break
        merged.append(known.pop() if known else None)
    if any(p.ndim != rank for p in parts) or len(merged) != rank:
        raise ValueError(f"{where}: cannot stack a list of tensors of shapes "
                         f"{[p.shape for p in parts]} into one tensor; they must share a shape")
    parts = [sh.unsqueeze(p, axes=(0,)) for p in parts]
    return parts[0] if len(parts) == 1 else sh.concat(*parts, axis=0)


def to_float_tensor(x, where="argument"):
    """A tensor for a function defined on floats: integer and bool values are cast to floatx."""
    x = to_tensor(x, where=where)
    if not dtypes.is_float(x.dtype):
        x = ew.cast(x, dtype=settings.floatx)
    return x


def binary_operands(x, y, where):
    """Two operands with one dtype: a Python/numpy value takes its tensor partner's dtype (as TF's
    operators convert scalars); two tensors of different dtypes promote as numpy does."""
    x_t, y_t = isinstance(x, Tensor), isinstance(y, Tensor)
    if x_t and not y_t:
        return x, to_tensor(y, x.dtype, where)
    if y_t and not x_t:
        return to_tensor(x, y.dtype, where), y
    if not x_t:
        x = to_tensor(x, where=where)
        y = to_tensor(y, x.dtype, where)
        return x, y
    if x.dtype != y.dtype:
        common = dtypes.result_type(x.dtype, y.dtype)
        return to_tensor(x, common), to_tensor(y, common)
    return x, y


def normalize_axis(axis, ndim, where):
    """Keras axis forms (int, negative int, list/tuple, None) → sorted tuple of non-negative ints, or None."""
    if axis is None:
        return None
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    out = []
    for a in axes:
        if isinstance(a, Tensor) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{where}: axis must be an int or a list of ints, got {a!r}")
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"{where}: axis {a} is out of range for a tensor of rank {ndim}")
        out.append(int(a) % max(ndim, 1))
    return tuple(sorted(set(out)))


def normalize_one_axis(axis, ndim, where):
    axes = normalize_axis(axis, ndim, where)
    if axes is None or len(axes) != 1:
        raise ValueError(f"{where}: expected a single axis, got {axis!r}")
    return axes[0]


def check_data_format(data_format, where):
    from ..config import check_data_format as check
    return check(settings.image_data_format if data_format is None else data_format, where=where)


def floatx():
    return settings.floatx
