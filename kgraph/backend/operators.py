"""Python operators on tensors (installed on ``Tensor`` by ``kgraph.backend``)."""
import numpy as np

from ..graph import Constant, Tensor
from ..ops import elementwise as ew
from ..ops import linalg
from ..ops import shape as sh
from ._api import binary_operands
from . import elementwise as kew


def _binary(prim, where):
    def op(x, y):
        return prim(*binary_operands(x, y, where))
    return op


add = _binary(ew.add, "+")
sub = _binary(ew.sub, "-")
mul = _binary(ew.mul, "*")
mod = _binary(ew.mod, "%")
pow = _binary(ew.pow_, "**")
and_ = _binary(ew.logical_and, "&")
or_ = _binary(ew.logical_or, "|")
xor = _binary(ew.logical_xor, "^")
lt, le, gt, ge = kew.less, kew.less_equal, kew.greater, kew.greater_equal
neg = ew.neg
abs = ew.abs_
invert = ew.logical_not


def pos(x):
    return x


def truediv(x, y):
    """True division; integer operands divide as floats (Python 3 and TF's ``/``)."""
    x, y = binary_operands(x, y, "/")
    if not x.dtype.startswith("float"):
        target = "float64" if x.dtype in ("int64", "int32", "uint32", "uint64") else "float32"
        x, y = ew.cast(x, dtype=target), ew.cast(y, dtype=target)
    return ew.div(x, y)


def floordiv(x, y):
    x, y = binary_operands(x, y, "//")
    if x.dtype.startswith("float"):
        return ew.floor(ew.div(x, y))
    # ONNX integer Div truncates toward zero; Python floors: step down where signs differ
    q = ew.div(x, y)
    inexact = ew.logical_not(ew.equal(ew.mul(q, y), x))
    negative = ew.logical_xor(ew.less(x, ew.scalar_like(0, x)), ew.less(y, ew.scalar_like(0, y)))
    return ew.sub(q, ew.cast(ew.logical_and(inexact, negative), dtype=q.dtype))


def matmul(x, y):
    x, y = binary_operands(x, y, "@")
    return linalg.matmul(x, y)


def getitem(x, key):
    """numpy basic indexing: ints, slices (any step), None and ``...``; an index or slice bound
    may be a scalar integer tensor (``x[i]``, ``x[i:j]``), as TF allows."""
    key = key if isinstance(key, tuple) else (key,)
    key = tuple(_index_entry(x, k) for k in key)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(k is not None and k is not Ellipsis for k in key)
    if used > x.ndim:
        raise IndexError(f"too many indices for tensor {x.name!r} of rank {x.ndim}")
    fill = (slice(None),) * (x.ndim - used)
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + fill + key[i + 1:]
    else:
        key = key + fill
    starts, ends, axes, steps, squeeze_axes, new_axes = [], [], [], [], [], []
    axis = out_axis = 0
    for k in key:
        if k is None:
            new_axes.append(out_axis)
            out_axis += 1
            continue
        if isinstance(k, Tensor):  # a run-time index: the one-element slice [k, k + 1)
            starts.append(k)
            ends.append(ew.where(ew.equal(k, ew.scalar_like(-1, k)), ew.scalar_like(_INT64_MAX, k),
                                 ew.add(k, ew.scalar_like(1, k))))
            steps.append(1)
            axes.append(axis)
            squeeze_axes.append(axis)
        elif isinstance(k, (int, np.integer)):
            k = int(k)
            dim = x.shape[axis]
            if dim is not None and not -dim <= k < dim:
                raise IndexError(f"index {k} is out of bounds for axis {axis} of size {dim}")
            starts.append(k)
            ends.append(k + 1 if k != -1 else None)
            steps.append(1)
            axes.append(axis)
            squeeze_axes.append(axis)
        elif isinstance(k, slice):
            if k != slice(None):
                starts.append(k.start)
                ends.append(k.stop)
                steps.append(1 if k.step is None else int(k.step))
                axes.append(axis)
            out_axis += 1
        else:
            raise TypeError(f"tensor {x.name!r}: unsupported index {k!r}")
        axis += 1
    out = x
    if axes:
        if any(isinstance(b, Tensor) for b in starts + ends):
            out = _runtime_slice(x, starts, ends, axes, steps, squeeze_axes)
        else:
            out = sh.slice_(out, starts=tuple(starts), ends=tuple(ends), axes=tuple(axes), steps=tuple(steps))
    if squeeze_axes:
        out = sh.squeeze(out, axes=tuple(squeeze_axes))
    if new_axes:
        out = sh.unsqueeze(out, axes=tuple(new_axes))
    return out


_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


def _index_entry(x, k):
    """One entry of an index, with scalar integer tensors as int64 scalars (also as slice bounds)."""
    if isinstance(k, slice):
        if isinstance(k.step, Tensor):
            raise TypeError(f"tensor {x.name!r}: a slice step must be a Python int, got a tensor")
        return slice(_scalar_index(x, k.start), _scalar_index(x, k.stop), k.step)
    return _scalar_index(x, k)


def _scalar_index(x, k):
    if isinstance(k, (list, np.ndarray)) or (isinstance(k, Tensor) and k.shape not in ((), (1,))):
        raise TypeError(f"tensor {x.name!r}: only ints, slices, None, ... and scalar integer tensors "
                        f"index a tensor; use K.gather for index tensors")
    if not isinstance(k, Tensor):
        return k
    if k.dtype not in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"):
        raise TypeError(f"tensor {x.name!r}: an index tensor must hold integers, got {k.dtype}")
    k = k if k.dtype == "int64" else ew.cast(k, dtype="int64")
    return k if k.ndim == 0 else sh.squeeze(k, axes=(0,))


def _runtime_slice(x, starts, ends, axes, steps, index_axes):
    """Slices some of whose bounds are tensors: Python bounds become int64 constants (None: the
    open end for the step's direction), static lengths survive where every bound is an int."""
    def bound(b, step, is_start):
        if b is None:
            b = (0 if step > 0 else _INT64_MAX) if is_start else (_INT64_MAX if step > 0 else _INT64_MIN)
        return b if isinstance(b, Tensor) else Constant(np.asarray(b, dtype=np.int64))
    lengths = []
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = x.shape[a]
        static = not isinstance(s, Tensor) and not isinstance(e, Tensor) and dim is not None
        lengths.append(1 if a in index_axes else len(range(*slice(s, e, st).indices(dim))) if static else None)
    start_vec = sh.concat(*[sh.unsqueeze(bound(s, st, True), axes=(0,)) for s, st in zip(starts, steps)], axis=0)
    end_vec = sh.concat(*[sh.unsqueeze(bound(e, st, False), axes=(0,)) for e, st in zip(ends, steps)], axis=0)
    return sh.slice_runtime(x, start_vec, end_vec, axes=tuple(axes), steps=tuple(steps), lengths=tuple(lengths))
