"""Linear algebra and reductions."""
import builtins  # this module defines K.any/all/sum/max/min, which shadow the builtins

import numpy as np

from .. import dtypes
from ..graph import Constant, Tensor
from ..ops import elementwise as ew
from ..ops import linalg
from ..ops import reduce as red
from ..ops import shape as sh
from ._api import binary_operands, keras_api, normalize_axis, normalize_one_axis, to_float_tensor, to_tensor




def _axes(x, axis, where):
    return normalize_axis(axis, x.ndim, where)


def _reduce(prim, x, axes, keepdims):
    # An empty axis list reduces nothing (as in TF); ONNX Reduce* would read it as "all axes".
    if axes == ():
        return sh.identity(x)
    return prim(x, axes=axes, keepdims=bool(keepdims))


# -- reductions ---------------------------------------------------------------------------------
def _numeric_reduce(prim, x, axis, keepdims, where):
    """sum/prod: bool tensors count as int32 0/1, as TF's reduce_sum of a cast mask."""
    x = to_tensor(x)
    if x.dtype == "bool":
        x = ew.cast(x, dtype="int32")
    return _reduce(prim, x, _axes(x, axis, where), keepdims)


@keras_api
def sum(x, axis=None, keepdims=False):
    return _numeric_reduce(red.reduce_sum, x, axis, keepdims, "K.sum")


@keras_api
def prod(x, axis=None, keepdims=False):
    return _numeric_reduce(red.reduce_prod, x, axis, keepdims, "K.prod")


@keras_api
def mean(x, axis=None, keepdims=False):
    # TF would take an integer mean of integer tensors; a Keras user means the real mean.
    x = to_float_tensor(x)
    return _reduce(red.reduce_mean, x, _axes(x, axis, "K.mean"), keepdims)


@keras_api
def max(x, axis=None, keepdims=False):
    x = to_tensor(x)
    if x.dtype == "bool":  # ReduceMax takes bool only from opset 20
        return any(x, axis=axis, keepdims=keepdims)
    return _reduce(red.reduce_max, x, _axes(x, axis, "K.max"), keepdims)


@keras_api
def min(x, axis=None, keepdims=False):
    x = to_tensor(x)
    if x.dtype == "bool":
        return all(x, axis=axis, keepdims=keepdims)
    return _reduce(red.reduce_min, x, _axes(x, axis, "K.min"), keepdims)


@keras_api
def var(x, axis=None, keepdims=False):
    """Population variance (divides by N), as Keras: mean of squared deviations from the mean."""
    x = to_float_tensor(x)
    axes = _axes(x, axis, "K.var")
    if axes == ():
        deviation = ew.sub(x, x)  # 0, or nan where x is inf/nan, as TF's reduction over no axes
        return ew.mul(deviation, deviation)
    deviation = ew.sub(x, red.reduce_mean(x, axes=axes, keepdims=True))
    return red.reduce_mean(ew.mul(deviation, deviation), axes=axes, keepdims=bool(keepdims))


@keras_api
def std(x, axis=None, keepdims=False):
    x = to_float_tensor(x)
    _axes(x, axis, "K.std")  # errors name K.std, not K.var
    return ew.sqrt(var(x, axis=axis, keepdims=keepdims))


def _bool_reduce(prim, x, axis, keepdims, where):
    """any/all: nonzero is true; reduced as int32 0/1 (ONNX ReduceMax/Min take no bool before 20)."""
    x = to_tensor(x)
    axes = _axes(x, axis, where)
    truth = x if x.dtype == "bool" else ew.cast(x, dtype="bool")
    if axes == ():
        return sh.identity(truth)
    reduced = prim(ew.cast(truth, dtype="int32"), axes=axes, keepdims=bool(keepdims))
    return ew.cast(reduced, dtype="bool")


@keras_api
def any(x, axis=None, keepdims=False):
    return _bool_reduce(red.reduce_max, x, axis, keepdims, "K.any")


@keras_api
def all(x, axis=None, keepdims=False):
    return _bool_reduce(red.reduce_min, x, axis, keepdims, "K.all")


def _arg_reduce(prim, x, axis, where):
    x = to_tensor(x)
    if x.dtype == "bool":
        x = ew.cast(x, dtype="int32")
    # tf.argmax reads axis=None as axis 0
    axis = normalize_one_axis(0 if axis is None else axis, x.ndim, where)
    return prim(x, axis=axis)


@keras_api
def argmax(x, axis=-1):
    """Index (int64, as TF) of the first maximum along ``axis``."""
    return _arg_reduce(red.argmax, x, axis, "K.argmax")


@keras_api
def argmin(x, axis=-1):
    return _arg_reduce(red.argmin, x, axis, "K.argmin")


@keras_api
def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))), shifted by the maximum so large inputs do not overflow.  As TF, the shift
    is a constant for the gradient and is 0 where the maximum is not finite (all -inf lanes give
    -inf, +inf lanes +inf)."""
    x = to_float_tensor(x)
    axes = _axes(x, axis, "K.logsumexp")
    if axes == ():
        return sh.identity(x)
    zero = ew.scalar_like(0, x)
    peak = red.reduce_max(x, axes=axes, keepdims=True)
    finite = ew.equal(ew.sub(peak, peak), zero)  # inf - inf and nan - nan are nan
    shift = sh.stop_gradient(ew.where(finite, peak, zero))
    total = red.reduce_sum(ew.exp(ew.sub(x, shift)), axes=axes, keepdims=bool(keepdims))
    if not keepdims and x.ndim:
        shift = sh.squeeze(shift, axes=tuple(range(x.ndim)) if axes is None else axes)
    return ew.add(ew.log(total), shift)


def _scan(prim, x, axis, where):
    x = to_tensor(x)
    if x.dtype == "bool":
        x = ew.cast(x, dtype="int32")
    return prim(x, axis=normalize_one_axis(axis, x.ndim, where))


@keras_api
def cumsum(x, axis=0):
    return _scan(red.cumsum, x, axis, "K.cumsum")


@keras_api
def cumprod(x, axis=0):
    return _scan(red.cumprod, x, axis, "K.cumprod")


# -- products -----------------------------------------------------------------------------------
def _dims(x):
    """Each dim of ``x``: its static size, or a 1-element int64 tensor read at run time."""
    shape, out = None, []
    for i, d in enumerate(x.shape):
        if d is None:
            shape = sh.shape_of(x) if shape is None else shape
            out.append(sh.slice_(shape, starts=(i,), ends=(i + 1,), axes=(0,), steps=(1,)))
        else:
            out.append(d)
    return out


def _reshape(x, dims):
    """Reshape to ``dims`` (ints, at most one -1, or run-time dims from ``_dims``); static when
    at most one dim is unknown, since -1 then stands for it."""
    unknown = [i for i, d in enumerate(dims) if isinstance(d, Tensor)]
    if len(unknown) == 1 and -1 not in dims:
        dims = list(dims)
        dims[unknown[0]] = -1
        unknown = []
    if not unknown:
        return sh.reshape(x, shape=tuple(int(d) for d in dims))
    parts = [d if isinstance(d, Tensor) else Constant(np.array([d], dtype=np.int64)) for d in dims]
    static = tuple(None if isinstance(d, Tensor) or d == -1 else int(d) for d in dims)
    return sh.reshape_dynamic(x, sh.concat(*parts, axis=0), static=static)


def _check_numeric(x, where):
    if x.dtype == "bool":
        raise TypeError(f"{where}: operands must be numeric, got bool")


@keras_api
def dot(x, y):
    """Matrix product; N-D operands follow Theano's dot (as Keras' TF backend does):
    (..., k) . (B..., k, n) has shape x.shape[:-1] + y.shape[:-2] + y.shape[-1:].  Rank-1
    operands act as numpy's dot.  Sparse operands go to the sparse backend."""
    if getattr(x, "sparse", False) or getattr(y, "sparse", False):
        from . import sparse
        return sparse.dot(x, y)
    x, y = binary_operands(x, y, "K.dot")
    _check_numeric(x, "K.dot")
    if x.ndim < 1 or y.ndim < 1:
        raise ValueError(f"K.dot: operands must have rank >= 1, got shapes {x.shape} and {y.shape}")
    kx, ky = x.shape[-1], y.shape[-2 if y.ndim >= 2 else 0]
    if kx is not None and ky is not None and kx != ky:
        raise ValueError(f"K.dot: x.shape[-1] must equal y.shape[{-2 if y.ndim >= 2 else 0}], "
                         f"got shapes {x.shape} and {y.shape}")
    if y.ndim <= 2:
        # ONNX MatMul broadcasts an N-D x against a matrix: the TF reshape dance is not needed
        x2 = sh.unsqueeze(x, axes=(0,)) if x.ndim == 1 else x
        y2 = sh.unsqueeze(y, axes=(1,)) if y.ndim == 1 else y
        out = linalg.matmul(x2, y2)
        drop = ((out.ndim - 2,) if x.ndim == 1 else ()) + ((out.ndim - 1,) if y.ndim == 1 else ())
        return sh.squeeze(out, axes=drop) if drop else out
    xd, yd = _dims(x), _dims(y)
    k = xd[-1] if not isinstance(xd[-1], Tensor) else yd[-2]
    # y's contracted axis first, then flatten: (P, k) @ (k, B*n), reshaped to X + B + (n,)
    perm = (y.ndim - 2,) + tuple(range(y.ndim - 2)) + (y.ndim - 1,)
    x2 = _reshape(x, [-1, k])
    y2 = _reshape(sh.transpose(y, perm=perm), [k, -1])
    return _reshape(linalg.matmul(x2, y2), xd[:-1] + yd[:-2] + yd[-1:])


def _batch_dot_axes(axes, x_ndim, y_ndim, shapes):
    if axes is None:
        return [x_ndim - 1, y_ndim - 1] if y_ndim == 2 else [x_ndim - 1, y_ndim - 2]
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = [axes, axes]
    if not isinstance(axes, (list, tuple)) or len(axes) != 2:
        raise ValueError(f"K.batch_dot: axes must be None, an int or a pair of ints, got {axes!r}")
    if builtins.any(isinstance(a, (list, tuple)) for a in axes):
        raise ValueError(f"K.batch_dot: multiple target dimensions are not supported; "
                         f"expected None, int or (int, int), got {axes!r}")
    if not builtins.all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
        raise TypeError(f"K.batch_dot: axes must be ints, got {axes!r}")
    axes = [int(axes[0]), int(axes[1])]
    for i, ndim in ((0, x_ndim), (1, y_ndim)):
        if not -ndim <= axes[i] < ndim:
            raise ValueError(f"K.batch_dot: axes[{i}]={axes[i]} is out of range for "
                             f"{'xy'[i]} of rank {ndim} (shapes {shapes[0]} and {shapes[1]})")
        axes[i] %= ndim
    return axes


@keras_api
def batch_dot(x, y, axes=None):
    """Keras 2.3.1's batch_dot: contract ``x`` axis axes[0] with ``y`` axis axes[1], sample by
    sample.  Output: x's dims without the batch and contracted dims' order kept, then y's without
    batch and contracted dims; 2-D x 2-D gives (batch, 1)."""
    x, y = binary_operands(x, y, "K.batch_dot")
    _check_numeric(x, "K.batch_dot")
    x_ndim, y_ndim = x.ndim, y.ndim
    if x_ndim < 2 or y_ndim < 2:
        raise ValueError(f"K.batch_dot: inputs must have rank >= 2, got shapes {x.shape} and {y.shape}")
    bx, by = x.shape[0], y.shape[0]
    if bx is not None and by is not None and bx != by:
        raise ValueError(f"K.batch_dot: inputs have different batch sizes, shapes {x.shape} and {y.shape}")
    a0, a1 = _batch_dot_axes(axes, x_ndim, y_ndim, (x.shape, y.shape))
    if a0 == 0 or a1 == 0:
        raise ValueError("K.batch_dot: cannot contract over axis 0 (the batch axis); add a dummy "
                         "batch dimension with K.expand_dims(x, 0) if the inputs are not batched")
    d1, d2 = x.shape[a0], y.shape[a1]
    if d1 is not None and d2 is not None and d1 != d2:
        raise ValueError(f"K.batch_dot: x.shape[{a0}] != y.shape[{a1}] ({d1} != {d2}) for shapes "
                         f"{x.shape} and {y.shape} with axes=({a0}, {a1})")
    orig_x_ndim, orig_y_ndim = x_ndim, y_ndim
    if x_ndim == 2:
        x, a0, x_ndim = sh.unsqueeze(x, axes=(1,)), a0 + 1, 3
    if y_ndim == 2:
        y, y_ndim = sh.unsqueeze(y, axes=(2,)), 3
    if a0 != x_ndim - 1:  # contracted axis of x last, others in order
        x = sh.transpose(x, perm=tuple(i for i in range(x_ndim) if i != a0) + (a0,))
    if a1 != 1:  # contracted axis of y second, others in order
        y = sh.transpose(y, perm=(0, a1) + tuple(i for i in range(1, y_ndim) if i != a1))
    x_mid = y_trail = None
    if x_ndim > 3:
        xd = _dims(x)
        x_mid = xd[1:-1]
        x = _reshape(x, [xd[0], -1, xd[-1]])
    if y_ndim > 3:
        yd = _dims(y)
        y_trail = yd[2:]
        y = _reshape(y, [yd[0], yd[1], -1])
    result = linalg.matmul(x, y)
    if x_mid is not None or y_trail is not None:
        rd = _dims(result)
        result = _reshape(result, rd[:1] + (x_mid if x_mid is not None else rd[1:2]) +
                          (y_trail if y_trail is not None else rd[2:]))
    if orig_x_ndim == 2:
        result = sh.squeeze(result, axes=(1,))
    elif orig_y_ndim == 2:
        result = sh.squeeze(result, axes=(result.ndim - 1,))
    return result


@keras_api
def transpose(x):
    """Reverses the axes (tf.transpose's default)."""
    x = to_tensor(x)
    if x.ndim < 2:
        return sh.identity(x)
    return sh.transpose(x, perm=tuple(reversed(range(x.ndim))))


@keras_api
def gather(reference, indices):
    """``reference[indices]`` along axis 0, for int indices of any shape (negatives count from
    the end); the gradient scatter-adds into the rows read."""
    reference = to_tensor(reference)
    indices = to_tensor(indices)
    if reference.ndim < 1:
        raise ValueError(f"K.gather: reference must have rank >= 1, got shape {reference.shape}")
    if not dtypes.is_int(indices.dtype):
        raise TypeError(f"K.gather: indices must be an integer tensor, got dtype {indices.dtype}")
    if indices.dtype not in ("int32", "int64"):
        indices = ew.cast(indices, dtype="int64")
    rows = reference.shape[0]
    if isinstance(indices, Constant) and rows is not None and indices.value.size:
        lo, hi = int(indices.value.min()), int(indices.value.max())
        if lo < -rows or hi >= rows:
            raise ValueError(f"K.gather: indices must lie in [{-rows}, {rows}) for reference of shape "
                             f"{reference.shape}, got values from {lo} to {hi}")
    return linalg.gather(reference, indices)
