"""Python operators on tensors (installed on ``Tensor`` by ``kgraph.backend``)."""
import numpy as np

from ..graph import Tensor
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
    """numpy basic indexing: ints, slices (any step), None and ``...``."""
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if isinstance(k, (Tensor, list, np.ndarray)):
            raise TypeError(f"tensor {x.name!r}: only ints, slices, None and ... index a tensor; "
                            f"use K.gather for index tensors")
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
        if isinstance(k, (int, np.integer)):
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
        out = sh.slice_(out, starts=tuple(starts), ends=tuple(ends), axes=tuple(axes), steps=tuple(steps))
    if squeeze_axes:
        out = sh.squeeze(out, axes=tuple(squeeze_axes))
    if new_axes:
        out = sh.unsqueeze(out, axes=tuple(new_axes))
    return out

