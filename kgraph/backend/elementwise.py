"""Elementwise functions."""
import numpy as np

from .. import dtypes
from ..graph import Tensor
from ..ops import elementwise as ew
from ._api import binary_operands, keras_api, to_float_tensor, to_tensor




@keras_api
def square(x):
    x = to_tensor(x)
    return ew.mul(x, x)


@keras_api
def abs(x):
    return ew.abs_(to_tensor(x))


@keras_api
def sqrt(x):
    """sqrt of max(x, 0): negative inputs give 0, as Keras' TF backend clips them."""
    x = to_float_tensor(x, "K.sqrt")
    zero = ew.scalar_like(0, x)
    # a select, not maximum(x, 0): the gradient at negative x must be 0 (as TF's clip_by_value),
    # and maximum's would be 0 * inf = nan there
    return ew.sqrt(ew.where(ew.less(x, zero), zero, x))


@keras_api
def exp(x):
    return ew.exp(to_float_tensor(x, "K.exp"))


@keras_api
def log(x):
    return ew.log(to_float_tensor(x, "K.log"))


@keras_api
def round(x):
    """Half to even, as tf.round; integer tensors are already round and keep their dtype."""
    x = to_tensor(x)
    if dtypes.is_int(x.dtype):
        return ew.cast(x, dtype=x.dtype)
    return ew.round_(to_float_tensor(x, "K.round"))


@keras_api
def sign(x):
    return ew.sign(to_tensor(x))


@keras_api
def pow(x, a):
    # a fractional Python exponent would be truncated to the integer tensor's dtype: go float
    if isinstance(a, float) and not a.is_integer() and isinstance(x, Tensor) and not dtypes.is_float(x.dtype):
        x = to_float_tensor(x, "K.pow")
    x, a = binary_operands(x, a, "K.pow")
    return ew.pow_(x, a)


@keras_api
def clip(x, min_value, max_value):
    x = to_tensor(x)
    # Keras' TF backend: an empty interval clips to min_value.  Only Python numbers are compared
    # here; tensor and array bounds are taken as given, as tf.clip_by_value does.
    if isinstance(min_value, (int, float)) and isinstance(max_value, (int, float)) and max_value < min_value:
        max_value = min_value
    if min_value is None:
        min_value = -float("inf") if dtypes.is_float(x.dtype) else int(np.iinfo(x.dtype).min)
    if max_value is None:
        max_value = float("inf") if dtypes.is_float(x.dtype) else int(np.iinfo(x.dtype).max)
    lo = to_tensor(min_value, x.dtype)
    hi = to_tensor(max_value, x.dtype)
    return ew.minimum(ew.maximum(x, lo), hi)


@keras_api
def equal(x, y):
    return ew.equal(*binary_operands(x, y, "K.equal"))


@keras_api
def greater(x, y):
    return ew.greater(*binary_operands(x, y, "K.greater"))


@keras_api
def greater_equal(x, y):
    return ew.greater_equal(*binary_operands(x, y, "K.greater_equal"))


@keras_api
def less(x, y):
    return ew.less(*binary_operands(x, y, "K.less"))


@keras_api
def less_equal(x, y):
    return ew.less_equal(*binary_operands(x, y, "K.less_equal"))


@keras_api
def not_equal(x, y):
    x, y = binary_operands(x, y, "K.not_equal")
    return ew.logical_not(ew.equal(x, y))


@keras_api
def maximum(x, y):
    x, y = binary_operands(x, y, "K.maximum")
    return ew.maximum(x, y)


@keras_api
def minimum(x, y):
    x, y = binary_operands(x, y, "K.minimum")
    return ew.minimum(x, y)


@keras_api
def sin(x):
    return ew.sin(to_float_tensor(x, "K.sin"))


@keras_api
def cos(x):
    return ew.cos(to_float_tensor(x, "K.cos"))
