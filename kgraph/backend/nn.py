"""Neural-network ops: activations, cross-entropies, dropout, normalization, bias_add.

Semantics are those of Keras 2.3.1's TensorFlow backend (which forwards the losses to
``tf.keras.backend`` of TF 1.14+/2.0):

* probability inputs to the cross-entropies are clipped to [epsilon, 1 - epsilon];
* when ``output`` is the direct result of ``K.softmax`` (same axis) or ``K.sigmoid`` and
  ``from_logits=False``, the loss is computed from the logits instead (TF does the same by
  looking at ``output.op``), which keeps it exact and its gradient finite for saturated outputs;
* the from-logits forms are the stable ones (log-softmax; max(x, 0) - x z + log(1 + e^-|x|)).
"""
import numbers

import numpy as np

from .. import dtypes
from ..graph import Tensor
from ..ops import elementwise as ew
from ..ops import nn as nn_ops
from ..ops import random as rnd
from ..ops import reduce as red
from ..ops import shape as sh
from ._api import check_data_format, keras_api, normalize_axis, normalize_one_axis, to_float_tensor, to_tensor
from .config import epsilon
from .random import draw_seed, shape_argument


def _number(value, where, name):
    """A Python float from a number or a 0-d array (Keras layers pass K.cast_to_floatx values)."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    return float(value)


def _c(value, like):
    return ew.scalar_like(value, like)


# -- activations ----------------------------------------------------------------------------------
@keras_api
def relu(x, alpha=0., max_value=None, threshold=0.):
    """TF backend's composition, step for step: with a threshold, x is zeroed at or below it
    (and may stay negative for negative thresholds); max_value clips the positive part; alpha
    scales the part below the threshold."""
    where = "K.relu"
    x = to_float_tensor(x, where)
    alpha, threshold = _number(alpha, where, "alpha"), _number(threshold, where, "threshold")
    if max_value is not None and not isinstance(max_value, Tensor):
        max_value = _number(max_value, where, "max_value")
    if alpha != 0 and max_value is None and threshold == 0:
        return nn_ops.leaky_relu(x, alpha=alpha)
    negative_part = None
    if alpha != 0:
        negative_part = nn_ops.relu(ew.sub(_c(threshold, x), x) if threshold != 0 else ew.neg(x))
    if threshold != 0:
        y = ew.mul(x, ew.cast(ew.greater(x, _c(threshold, x)), dtype=x.dtype))
    else:
        y = nn_ops.relu(x)
    if max_value is not None:  # clip_by_value(y, 0, max_value): minimum first, then maximum
        y = ew.maximum(ew.minimum(y, to_tensor(max_value, x.dtype)), _c(0, x))
    if negative_part is not None:
        y = ew.sub(y, ew.mul(_c(alpha, x), negative_part))
    return y


@keras_api
def elu(x, alpha=1.):
    x = to_float_tensor(x, "K.elu")
    return nn_ops.elu(x, alpha=_number(alpha, "K.elu", "alpha"))


@keras_api
def softmax(x, axis=-1):
    x = to_float_tensor(x, "K.softmax")
    if x.ndim == 0:
        raise ValueError("K.softmax: expects a tensor of rank >= 1, got a scalar")
    return nn_ops.softmax(x, axis=normalize_one_axis(axis, x.ndim, "K.softmax"))


@keras_api
def softplus(x):
    return ew.softplus(to_float_tensor(x, "K.softplus"))


@keras_api
def softsign(x):
    return nn_ops.softsign(to_float_tensor(x, "K.softsign"))


@keras_api
def sigmoid(x):
    return ew.sigmoid(to_float_tensor(x, "K.sigmoid"))


@keras_api
def hard_sigmoid(x):
    """clip(0.2 x + 0.5, 0, 1), as Keras 2.3.1."""
    return nn_ops.hard_sigmoid(to_float_tensor(x, "K.hard_sigmoid"), alpha=0.2, beta=0.5)


@keras_api
def tanh(x):
    return ew.tanh(to_float_tensor(x, "K.tanh"))


# -- cross-entropies ------------------------------------------------------------------------------
def _logits_of(output, primitive, axis=None):
    """The input of ``output`` if it is computed by ``primitive`` (through identities)."""
    t = output
    while t.node is not None and t.node.primitive is sh.identity:
        t = t.node.inputs[0]
    node = t.node
    if node is not None and node.primitive is primitive and (axis is None or node.attrs["axis"] == axis):
        return node.inputs[0]
    return None


def _target_like(target, output, where):
    target = to_tensor(target, where=where)
    if target.dtype != output.dtype:
        target = ew.cast(target, dtype=output.dtype)
    ew.broadcast_shapes(target.shape, output.shape, where=f"{where}: target and output")
    return target


def _clip_eps(p):
    eps = epsilon()
    return ew.minimum(ew.maximum(p, _c(eps, p)), _c(1. - eps, p))


@keras_api
def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    where = "K.categorical_crossentropy"
    output = to_float_tensor(output, where)
    target = _target_like(target, output, where)
    axis = normalize_one_axis(axis, output.ndim, where)
    if not from_logits:
        logits = _logits_of(output, nn_ops.softmax, axis)
        if logits is None:
            # scale so each distribution sums to 1, clip, then -sum(t log p)
            p = ew.div(output, red.reduce_sum(output, axes=(axis,), keepdims=True))
            return ew.neg(red.reduce_sum(ew.mul(target, ew.log(_clip_eps(p))), axes=(axis,)))
        output = logits
    log_p = nn_ops.log_softmax(output, axis=axis)
    return ew.neg(red.reduce_sum(ew.mul(target, log_p), axes=(axis,)))


def _without_axis_shape(output, axis):
    """The run-time shape of ``output`` with ``axis`` removed, as an int64 vector."""
    full = sh.shape_of(output)
    pieces = []
    if axis > 0:
        pieces.append(sh.slice_(full, starts=(0,), ends=(axis,), axes=(0,), steps=(1,)))
    if axis < output.ndim - 1:
        pieces.append(sh.slice_(full, starts=(axis + 1,), ends=(output.ndim,), axes=(0,), steps=(1,)))
    return pieces[0] if len(pieces) == 1 else sh.concat(*pieces, axis=0)


@keras_api
def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Integer targets.  As TF: targets whose rank is not output's rank - 1 (such as Keras's
    (batch, 1) label placeholders) are flattened to the shape of output without ``axis``."""
    where = "K.sparse_categorical_crossentropy"
    output = to_float_tensor(output, where)
    if output.ndim == 0:
        raise ValueError(f"{where}: output must have rank >= 1, got a scalar")
    axis = normalize_one_axis(axis, output.ndim, where)
    target = to_tensor(target, where=where)
    if not (dtypes.is_int(target.dtype) or dtypes.is_float(target.dtype)):
        raise TypeError(f"{where}: target must hold class indices (int or float), got {target.dtype}")
    target = ew.cast(target, dtype="int64")
    if not from_logits:
        logits = _logits_of(output, nn_ops.softmax, axis)
        output = ew.log(_clip_eps(output)) if logits is None else logits
    log_p = nn_ops.log_softmax(output, axis=axis)
    rest = output.shape[:axis] + output.shape[axis + 1:]
    same = target.ndim == len(rest) and all(a is None or b is None or a == b for a, b in zip(target.shape, rest))
    if not same:
        known = [d for d in target.shape if d is not None]
        if None not in rest and None not in target.shape and int(np.prod(known)) != int(np.prod(rest)):
            raise ValueError(f"{where}: target of shape {target.shape} does not hold one class index per "
                             f"entry of the output without its class axis {rest}")
        target = (sh.reshape(target, shape=rest) if None not in rest else
                  sh.reshape_dynamic(target, _without_axis_shape(output, axis), static=rest))
    return ew.neg(nn_ops.pick_along_axis(log_p, target, axis=axis))


@keras_api
def binary_crossentropy(target, output, from_logits=False):
    where = "K.binary_crossentropy"
    output = to_float_tensor(output, where)
    target = _target_like(target, output, where)
    if not from_logits:
        logits = _logits_of(output, ew.sigmoid)
        if logits is None:
            eps = epsilon()
            p = _clip_eps(output)
            bce = ew.add(ew.mul(target, ew.log(ew.add(p, _c(eps, p)))),
                         ew.mul(ew.sub(_c(1, target), target), ew.log(ew.add(ew.sub(_c(1, p), p), _c(eps, p)))))
            return ew.neg(bce)
        output = logits
    x, z = output, target
    # max(x, 0) - x z + log(1 + e^-|x|): no overflow for any x
    return ew.add(ew.sub(ew.maximum(x, _c(0, x)), ew.mul(x, z)), ew.softplus(ew.neg(ew.abs_(x))))


# -- dropout ----------------------------------------------------------------------------------------
@keras_api
def dropout(x, level, noise_shape=None, seed=None):
    """Zero entries with probability ``level`` and scale the rest by 1 / (1 - level), as
    ``tf.nn.dropout``.  ``noise_shape`` entries may be ints, None (take x's dim) or scalar int
    tensors (Keras's Dropout layer passes ``K.shape(x)[i]``).  A Python ``level`` is applied as a
    16-bit probability, round(level * 2**16) / 2**16 (within 2**-17 of it), decided from as few
    random bits as give it exactly (see ``ops/random.py``).  The gradient is the output gradient
    times the same mask."""
    where = "K.dropout"
    seed = draw_seed(seed, where)  # first, as Keras draws it before anything else
    x = to_tensor(x, where=where)
    if not dtypes.is_float(x.dtype):
        raise TypeError(f"{where}: x must be a float tensor (it is scaled), got {x.dtype}")
    if noise_shape is None:
        static, shape_value = x.shape, (sh.shape_of(x) if None in x.shape else None)
    else:
        static, shape_value = shape_argument(noise_shape, where, like=x)
        _check_noise_shape(static, x, where)
    if isinstance(level, Tensor):
        level = to_tensor(level, x.dtype)
        u = rnd.draw(rnd.random_uniform, "uniform", seed, static, shape_value, dtype=x.dtype)
        keep = ew.cast(ew.greater_equal(u, level), dtype=x.dtype)
        scale = ew.div(_c(1, level), ew.sub(_c(1, level), level))
        return ew.mul(ew.mul(x, scale), keep)
    level = _number(level, where, "level")
    if not 0 <= level < 1:
        raise ValueError(f"{where}: level must be a float in the range [0, 1), got {level}")
    if level == 0:
        return sh.identity(x)
    mask = rnd.draw(rnd.dropout_mask, "dropout", seed, static, shape_value, dtype=x.dtype,
                    threshold=rnd.dropout_threshold(level), scale=1.0 / (1.0 - level))
    return ew.mul(x, mask)


def _check_noise_shape(static, x, where):
    if len(static) > x.ndim:
        raise ValueError(f"{where}: noise_shape {static} has more dims than x {x.shape}")
    for n, d in zip(reversed(static), reversed(x.shape)):
        if n is not None and d is not None and n not in (1, d):
            raise ValueError(f"{where}: noise_shape {static} does not broadcast to the shape of x {x.shape}")


# -- normalization -----------------------------------------------------------------------------------
@keras_api
def l2_normalize(x, axis=None):
    """x / sqrt(max(sum(x**2), 1e-12)), as tf.nn.l2_normalize."""
    x = to_float_tensor(x, "K.l2_normalize")
    axes = normalize_axis(axis, x.ndim, "K.l2_normalize")
    square_sum = red.reduce_sum(ew.mul(x, x), axes=axes, keepdims=True)
    inv_norm = ew.reciprocal(ew.sqrt(ew.maximum(square_sum, _c(1e-12, x))))
    return ew.mul(x, inv_norm)


@keras_api
def in_top_k(predictions, targets, k):
    where = "K.in_top_k"
    predictions = to_float_tensor(predictions, where)
    targets = to_tensor(targets, where=where)
    if not dtypes.is_int(targets.dtype):
        raise TypeError(f"{where}: targets must be an int32 or int64 tensor, got {targets.dtype}")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"{where}: k must be a non-negative int, got {k!r}")
    return nn_ops.in_top_k(predictions, targets, k=int(k))


def _check_param_size(p, like, name, where):
    """``p`` must hold one value per entry of ``like`` (a keepdims statistic)."""
    size_p = None if None in p.shape else int(np.prod(p.shape))
    size_l = None if None in like.shape else int(np.prod(like.shape))
    if size_p is not None and size_l is not None and size_p != size_l:
        raise ValueError(f"{where}: {name} of shape {p.shape} does not match the normalized dims "
                         f"{tuple(d for d in like.shape if d != 1)}")


def _normalize(x, mean, var, beta, gamma, eps):
    """tf.nn.batch_normalization: x * inv + (beta - mean * inv), inv = gamma / sqrt(var + eps)."""
    inv = ew.reciprocal(ew.sqrt(ew.add(var, _c(eps, var))))
    if gamma is not None:
        inv = ew.mul(inv, gamma)
    shift = ew.neg(ew.mul(mean, inv)) if beta is None else ew.sub(beta, ew.mul(mean, inv))
    return ew.add(ew.mul(x, inv), shift)


@keras_api
def normalize_batch_in_training(x, gamma, beta, reduction_axes, epsilon=1e-3):
    """Batch moments over ``reduction_axes`` (the biased variance, as tf.nn.moments; float16
    inputs are reduced in float32), then batch normalization.  Returns (normed, mean, var) with
    the reduction axes removed from mean and var.  ``gamma``/``beta`` hold one value per
    normalized entry (any shape of that size, e.g. (C,)), or are None."""
    where = "K.normalize_batch_in_training"
    x = to_float_tensor(x, where)
    if isinstance(reduction_axes, numbers.Integral):
        reduction_axes = [reduction_axes]
    axes = normalize_axis(list(reduction_axes), x.ndim, where)
    if not axes:
        raise ValueError(f"{where}: reduction_axes must name at least one axis, got {reduction_axes!r}")
    eps = _number(epsilon, where, "epsilon")
    work = ew.cast(x, dtype="float32") if x.dtype == "float16" else x
    mean_kd = red.reduce_mean(work, axes=axes, keepdims=True)
    centered = ew.sub(work, sh.stop_gradient(mean_kd))
    var_kd = red.reduce_mean(ew.mul(centered, centered), axes=axes, keepdims=True)
    if work is not x:
        mean_kd, var_kd = ew.cast(mean_kd, dtype=x.dtype), ew.cast(var_kd, dtype=x.dtype)
    params = []
    for p, name in ((gamma, "gamma"), (beta, "beta")):
        if p is not None:
            p = to_tensor(p, x.dtype, where)
            _check_param_size(p, mean_kd, name, where)
            p = p if p.shape == mean_kd.shape else sh.reshape_like(p, mean_kd)
        params.append(p)
    normed = _normalize(x, mean_kd, var_kd, params[1], params[0], eps)
    return normed, sh.squeeze(mean_kd, axes=axes), sh.squeeze(var_kd, axes=axes)


@keras_api
def batch_normalization(x, mean, var, beta, gamma, axis=-1, epsilon=1e-3):
    """(x - mean) / sqrt(var + epsilon) * gamma + beta.  Parameters of x's rank (or fewer dims)
    broadcast as they are; 1-D parameters lie along ``axis`` (TF's fused path does this for 4-D
    inputs, kgraph for every rank).  ``beta`` and ``gamma`` may be None."""
    where = "K.batch_normalization"
    x = to_float_tensor(x, where)
    axis = normalize_one_axis(axis, x.ndim, where) if x.ndim else 0
    eps = _number(epsilon, where, "epsilon")
    aligned = []
    for p, name in ((mean, "mean"), (var, "var"), (beta, "beta"), (gamma, "gamma")):
        if p is None:
            if name in ("mean", "var"):
                raise TypeError(f"{where}: {name} is required, got None")
            aligned.append(None)
            continue
        p = to_tensor(p, x.dtype, where)
        if p.ndim > x.ndim:
            raise ValueError(f"{where}: {name} of shape {p.shape} has more dims than x {x.shape}")
        if p.ndim == 1 and x.ndim > 1 and axis != x.ndim - 1:
            if p.shape[0] not in (None, 1) and x.shape[axis] not in (None, p.shape[0]):
                raise ValueError(f"{where}: {name} has {p.shape[0]} values for axis {axis} of size "
                                 f"{x.shape[axis]}")
            p = sh.unsqueeze(p, axes=tuple(i for i in range(x.ndim) if i != axis))
        ew.broadcast_shapes(p.shape, x.shape, where=f"{where}: {name} and x")
        aligned.append(p)
    mean, var, beta, gamma = aligned
    return _normalize(x, mean, var, beta, gamma, eps)


# -- bias_add -----------------------------------------------------------------------------------------
def _channels_first_shape(shape):
    """Keras's transpose_shape: (1, d1, ..., dk, C) → (1, C, d1, ..., dk) (a reshape target:
    Keras reshapes, it does not transpose, a full-rank bias)."""
    return (shape[0], shape[-1]) + tuple(shape[1:-1])


@keras_api
def bias_add(x, bias, data_format=None):
    """Keras 2.3.1's rules: the bias is a vector over the channels, or has x's rank - 1 dims
    given in channels-last order; ranks 3-5 follow ``data_format``; other ranks add along the
    last axis (tf.nn.bias_add), where the bias must be a vector."""
    where = "K.bias_add"
    data_format = check_data_format(data_format, where)
    x = to_tensor(x, where=where)
    bias = to_tensor(bias, x.dtype, where)
    bias_shape = bias.shape
    if len(bias_shape) != 1 and len(bias_shape) != x.ndim - 1:
        raise ValueError(f"{where}: Unexpected bias dimensions {len(bias_shape)}, expect to be 1 or "
                         f"{x.ndim - 1} dimensions")
    if None in bias_shape:
        raise ValueError(f"{where}: the bias shape must be fully known, got {bias_shape}")
    if x.ndim in (3, 4, 5):
        if len(bias_shape) == 1:
            new_shape = (1,) * (x.ndim - 1) + bias_shape
        else:
            new_shape = (1,) + bias_shape
        if data_format == "channels_first":
            new_shape = _channels_first_shape(new_shape)
        # rank 4 channels_last with a vector is tf.nn.bias_add: the sizes must match exactly
        _check_bias(new_shape, x, where, exact=x.ndim == 4 and data_format == "channels_last" and len(bias_shape) == 1)
        return ew.add(x, sh.reshape(bias, shape=new_shape))
    if x.ndim < 2:
        raise ValueError(f"{where}: x must have rank >= 2, got shape {x.shape}")
    if len(bias_shape) != 1:
        raise ValueError(f"{where}: for a tensor of rank {x.ndim} the bias must be a vector, got shape {bias_shape}")
    _check_bias((1,) * (x.ndim - 1) + bias_shape, x, where, exact=True)
    return ew.add(x, bias)


def _check_bias(bias_shape, x, where, exact=False):
    for i, (b, d) in enumerate(zip(bias_shape, x.shape)):
        if exact and i == x.ndim - 1 and d is not None and b != d:
            raise ValueError(f"{where}: must provide as many biases as the last dimension of x: "
                             f"got {b} biases for x of shape {x.shape}")
        if b != 1 and d is not None and b != d:
            raise ValueError(f"{where}: a bias of shape {bias_shape} (as broadcast) does not match x of "
                             f"shape {x.shape}")
