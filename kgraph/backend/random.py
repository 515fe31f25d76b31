"""Random: seeded draws from kgraph's counter-based generator (see ``kgraph/ops/random.py``).

Keras 2.3.1 semantics: ``seed=None`` takes ``np.random.randint(10e6)`` from numpy's global
generator; ``shape`` is a tuple of ints and/or scalar int tensors, or a 1-D int tensor such as
``K.shape(x)``; results are ``value * scale + shift`` as TF computes them.  The same seed gives
the same values in every process and on every ONNX engine; each call of a compiled function
draws fresh values.
"""
import numbers

import numpy as np

from .. import dtypes
from ..graph import Constant, Tensor
from ..ops import elementwise as ew
from ..ops import random as rnd
from ..ops import shape as sh
from ._api import keras_api, to_tensor
from .config import floatx


def draw_seed(seed, where):
    """An int seed; None draws one from numpy's global generator, as Keras 2 does."""
    if seed is None:
        return int(np.random.randint(10e6))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{where}: seed must be an int or None, got {seed!r}")
    return int(seed)


def _dtype(dtype, where, floats_only=False):
    dtype = dtypes.normalize(floatx() if dtype is None else dtype, where)
    if floats_only and not dtypes.is_float(dtype):
        raise TypeError(f"{where}: dtype must be a float type (float16, float32, float64), got {dtype}")
    return dtype


def _static_dims_of(t):
    """The static values a 1-D int shape tensor is known to hold (None where unknown)."""
    node = t.node
    if isinstance(t, Constant):
        return tuple(int(v) for v in np.asarray(t.value).reshape(-1))
    if node is not None and node.primitive is ew.cast:
        return _static_dims_of(node.inputs[0])
    if node is not None and node.primitive is sh.shape_of:
        return node.inputs[0].shape
    return (None,) * t.shape[0]


def shape_argument(shape, where, like=None):
    """Keras shape forms → (static dims with None for run-time ones, int64 shape tensor or None).

    ``like``: a tensor whose dims fill ``None`` entries (dropout's noise_shape, as TF does)."""
    if isinstance(shape, Tensor):
        if not dtypes.is_int(shape.dtype) or shape.ndim != 1 or shape.shape[0] is None:
            raise ValueError(f"{where}: a shape tensor must be a 1-D int tensor of known length, "
                             f"got {shape.dtype} of shape {shape.shape}")
        static = _static_dims_of(shape)
        if None not in static:
            return _check_dims(static, where), None
        return static, ew.cast(shape, dtype="int64")
    if isinstance(shape, (numbers.Integral, np.integer)):
        shape = (shape,)
    if isinstance(shape, np.ndarray):
        shape = shape.tolist()
    if not isinstance(shape, (list, tuple)):
        raise TypeError(f"{where}: shape must be a tuple of ints or a 1-D int tensor, got {shape!r}")
    static, parts = [], []
    for i, d in enumerate(shape):
        if d is None and like is not None and i < like.ndim:
            static.append(like.shape[i])
            parts.append(None if like.shape[i] is not None else
                         sh.slice_(sh.shape_of(like), starts=(i,), ends=(i + 1,), axes=(0,), steps=(1,)))
        elif isinstance(d, Tensor):
            if not dtypes.is_int(d.dtype) or d.shape not in ((), (1,)):
                raise ValueError(f"{where}: shape entry {i} must be an int or a scalar int tensor, "
                                 f"got a {d.dtype} tensor of shape {d.shape}")
            static.append(None)
            d64 = ew.cast(d, dtype="int64")
            parts.append(sh.unsqueeze(d64, axes=(0,)) if d.shape == () else d64)
        elif isinstance(d, (numbers.Integral, np.integer)) and not isinstance(d, bool):
            static.append(int(d))
            parts.append(None)
        else:
            raise ValueError(f"{where}: shape entry {i} must be a non-negative int or a scalar int "
                             f"tensor, got {d!r} in shape {tuple(shape)}")
    _check_dims([d for d in static if d is not None], where)
    if all(p is None for p in parts):
        return tuple(static), None
    pieces = [p if p is not None else Constant(np.asarray([d], dtype=np.int64)) for p, d in zip(parts, static)]
    return tuple(static), sh.concat(*pieces, axis=0)


def _check_dims(dims, where):
    for d in dims:
        if d < 0:
            raise ValueError(f"{where}: shape dims must be non-negative, got {tuple(dims)}")
    return tuple(int(d) for d in dims)


def _affine(value, scale, shift, dtype):
    """value * scale + shift, skipping the identity parts TF would compute anyway."""
    if not (isinstance(scale, numbers.Real) and scale == 1):
        value = ew.mul(value, to_tensor(scale, dtype))
    if not (isinstance(shift, numbers.Real) and shift == 0):
        value = ew.add(value, to_tensor(shift, dtype))
    return value


def _value_check(x, where, name):
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.ndarray, list, tuple)):
        raise TypeError(f"{where}: {name} must be a number or a tensor, got {x!r}")
    return x


@keras_api
def random_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    where = "K.random_uniform"
    dtype = _dtype(dtype, where)
    minval, maxval = _value_check(minval, where, "minval"), _value_check(maxval, where, "maxval")
    seed = draw_seed(seed, where)
    static, shape_value = shape_argument(shape, where)
    if dtype == "bool" or not (dtypes.is_float(dtype) or dtypes.is_int(dtype)):
        raise TypeError(f"{where}: dtype must be a float or int type, got {dtype}")
    if dtypes.is_int(dtype):
        return _random_integers(static, shape_value, minval, maxval, dtype, seed, where)
    u = rnd.draw(rnd.random_uniform, "uniform", seed, static, shape_value, dtype=dtype)
    if isinstance(minval, numbers.Real) and isinstance(maxval, numbers.Real):
        return _affine(u, maxval - minval, minval, dtype)
    lo, hi = to_tensor(minval, dtype), to_tensor(maxval, dtype)
    return ew.add(ew.mul(u, ew.sub(hi, lo)), lo)


def _random_integers(static, shape_value, minval, maxval, dtype, seed, where):
    """Integers in [minval, maxval) as TF draws them: bits modulo the range."""
    if not all(isinstance(v, numbers.Integral) for v in (minval, maxval)):
        raise TypeError(f"{where}: integer dtype {dtype} needs int minval and maxval, got {minval!r}, {maxval!r}")
    info = np.iinfo(dtype)
    if not info.min <= minval < maxval <= info.max + 1:
        raise ValueError(f"{where}: need {info.min} <= minval < maxval <= {info.max + 1} for {dtype}, "
                         f"got minval={minval}, maxval={maxval}")
    span = int(maxval) - int(minval)
    if span >= 1 << 63:
        raise ValueError(f"{where}: the range maxval - minval must be below 2**63, got {span}")
    return rnd.draw(rnd.random_integers, "integers", seed, static, shape_value, dtype=dtype,
                    low=int(minval), span=span)


def _normal(kind, primitive, where, shape, mean, stddev, dtype, seed):
    dtype = _dtype(dtype, where, floats_only=True)
    mean, stddev = _value_check(mean, where, "mean"), _value_check(stddev, where, "stddev")
    seed = draw_seed(seed, where)
    static, shape_value = shape_argument(shape, where)
    z = rnd.draw(primitive, kind, seed, static, shape_value, dtype=dtype)
    return _affine(z, stddev, mean, dtype)


@keras_api
def random_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return _normal("normal", rnd.random_normal, "K.random_normal", shape, mean, stddev, dtype, seed)


@keras_api
def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Normal values within 2 std of the mean: values beyond are redrawn (not clipped), as TF."""
    return _normal("truncated_normal", rnd.random_truncated_normal, "K.truncated_normal",
                   shape, mean, stddev, dtype, seed)


@keras_api
def random_binomial(shape, p=0.0, dtype=None, seed=None):
    """1 with probability p, else 0.  TF compares ``uniform <= p``; kgraph uses ``uniform < p`` on
    its 2**-24 grid, which makes p = 0 and p = 1 exact (never / always 1); otherwise the two
    differ by at most 2**-24 in probability.  The stream is the uniform one: with the same seed,
    ``random_binomial == (random_uniform < p)``, as in TF."""
    where = "K.random_binomial"
    dtype = _dtype(dtype, where)
    p = _value_check(p, where, "p")
    if isinstance(p, numbers.Real) and not 0 <= p <= 1:
        raise ValueError(f"{where}: p must be in [0, 1], got {p}")
    seed = draw_seed(seed, where)
    static, shape_value = shape_argument(shape, where)
    work = dtype if dtypes.is_float(dtype) else floatx()
    u = rnd.draw(rnd.random_uniform, "uniform", seed, static, shape_value, dtype=work)
    hit = ew.less(u, to_tensor(p, work))
    return ew.cast(hit, dtype=dtype)
