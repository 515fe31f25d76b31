"""Linear algebra and reductions."""
from .. import dtypes
from ..ops import elementwise as ew
from ..ops import reduce as red
from ._api import keras_api, normalize_axis, to_tensor


def _reduce(prim, x, axis, keepdims, where):
    x = to_tensor(x)
    axes = normalize_axis(axis, x.ndim, where)
    return prim(x, axes=axes, keepdims=bool(keepdims))


@keras_api
def sum(x, axis=None, keepdims=False):
    x = to_tensor(x)
    if x.dtype == "bool":
        x = ew.cast(x, dtype="int32")
    return _reduce(red.reduce_sum, x, axis, keepdims, "K.sum")


@keras_api
def mean(x, axis=None, keepdims=False):
    x = to_tensor(x)
    if not dtypes.is_float(x.dtype):
        from .config import floatx
        x = ew.cast(x, dtype=floatx())
    return _reduce(red.reduce_mean, x, axis, keepdims, "K.mean")


@keras_api
def max(x, axis=None, keepdims=False):
    return _reduce(red.reduce_max, x, axis, keepdims, "K.max")


@keras_api
def min(x, axis=None, keepdims=False):
    return _reduce(red.reduce_min, x, axis, keepdims, "K.min")
