"""Convolution and pooling, with Keras 2.3.1's argument forms and its TensorFlow backend's
semantics (SAME padding puts the odd cell at the end; average pooling does not count padding).

The primitives work channels-first with (O, C, *K) kernels, as ONNX does.  channels_last data is
transposed once on the way in and once on the way out; a conv whose input is the transposed-back
output of another conv/pool takes the channels-first tensor directly, so stacked layers do not
bounce between layouts.
"""
import itertools

import numpy as np

from .. import dtypes
from ..graph import Constant, Tensor
from ..ops import conv as cv
from ..ops import pool
from ..ops import elementwise as ew
from ..ops import linalg
from ..ops import shape as sh
from ._api import check_data_format, keras_api, to_tensor
from .shaping import known_ints


# -- argument forms -----------------------------------------------------------------------------
def _ints(value, n, where, arg, minimum=1):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    if not isinstance(value, (tuple, list)) or len(value) != n or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in value):
        raise ValueError(f"{where}: {arg} must be an int or a tuple of {n} ints >= {minimum}, got {value!r}")
    return tuple(int(v) for v in value)


def _padding(padding, where, allowed=("valid", "same")):
    if padding not in allowed:
        raise ValueError(f"{where}: padding must be one of {', '.join(map(repr, allowed))}, got {padding!r}")
    return padding


def _data(x, nd, where, arg="x"):
    x = to_tensor(x, where=where)
    if x.ndim != nd + 2:
        raise ValueError(f"{where}: {arg} must have rank {nd + 2} (batch, {nd} spatial dims and channels), "
                         f"got shape {x.shape}")
    if not dtypes.is_float(x.dtype):
        raise TypeError(f"{where}: {arg} must be a float tensor, got {x.dtype}")
    return x


def _kernel(kernel, rank, like, where, arg="kernel"):
    kernel = to_tensor(kernel, like.dtype if not isinstance(kernel, Tensor) else None, where=where)
    if kernel.ndim != rank or None in kernel.shape:
        raise ValueError(f"{where}: {arg} must have a static shape of rank {rank}, got {kernel.shape}")
    if kernel.dtype != like.dtype:
        raise TypeError(f"{where}: {arg} is {kernel.dtype} but the input is {like.dtype}")
    return kernel


def _check_channels(where, channels, expected, arg="kernel"):
    if channels is not None and channels != expected:
        raise ValueError(f"{where}: the input has {channels} channels but the {arg} expects {expected}")


# -- layout ---------------------------------------------------------------------------------------
def _to_last_perm(nd):
    return (0,) + tuple(range(2, nd + 2)) + (1,)


def _channels_first(x, nd, data_format):
    if data_format == "channels_first":
        return x
    node = x.node
    if node is not None and node.primitive is sh.transpose and tuple(node.attrs["perm"]) == _to_last_perm(nd):
        return node.inputs[0]  # undo our own transpose instead of stacking its inverse
    return sh.transpose(x, perm=(0, nd + 1) + tuple(range(1, nd + 1)))


def _restore(y, nd, data_format):
    return y if data_format == "channels_first" else sh.transpose(y, perm=_to_last_perm(nd))


def _channels(x, nd, data_format):
    return x.shape[1] if data_format == "channels_first" else x.shape[nd + 1]


def _onnx_kernel(kernel, nd):
    """(*K, in, out) → (out, in, *K); a transposed conv's (*K, out, in) → (in, out, *K) alike."""
    return sh.transpose(kernel, perm=(nd + 1, nd) + tuple(range(nd)))


# -- convolutions -------------------------------------------------------------------------------
def _conv(where, nd, x, kernel, strides, padding, data_format, dilation_rate, paddings=("valid", "same")):
    data_format = check_data_format(data_format, where)
    x = _data(x, nd, where)
    kernel = _kernel(kernel, nd + 2, x, where)
    strides = _ints(strides, nd, where, "strides")
    dilations = _ints(dilation_rate, nd, where, "dilation_rate")
    padding = _padding(padding, where, paddings)
    if padding == "causal" and data_format != "channels_last":
        raise ValueError(f"{where}: causal padding needs data_format='channels_last' (temporal data), "
                         f"got {data_format!r}")
    _check_channels(where, _channels(x, nd, data_format), kernel.shape[nd])
    xc = _channels_first(x, nd, data_format)
    pads = cv.resolve_pads(padding, xc.shape[2:], kernel.shape[:nd], strides, dilations)
    y = cv.conv(xc, _onnx_kernel(kernel, nd), strides=strides, dilations=dilations, pads=pads, group=1)
    return _restore(y, nd, data_format)


@keras_api
def conv1d(x, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    return _conv("K.conv1d", 1, x, kernel, strides, padding, data_format, dilation_rate,
                 paddings=("valid", "same", "causal"))


@keras_api
def conv2d(x, kernel, strides=(1, 1), padding="valid", data_format=None, dilation_rate=(1, 1)):
    return _conv("K.conv2d", 2, x, kernel, strides, padding, data_format, dilation_rate)


@keras_api
def conv3d(x, kernel, strides=(1, 1, 1), padding="valid", data_format=None, dilation_rate=(1, 1, 1)):
    return _conv("K.conv3d", 3, x, kernel, strides, padding, data_format, dilation_rate)


def _depthwise(where, nd, x, depthwise_kernel, strides, padding, data_format, dilation_rate):
    """The depthwise stage of depthwise/separable convs, channels-first; TF's channel order
    (input channel major, multiplier minor) is ONNX's group order."""
    x = _data(x, nd, where)
    dk = _kernel(depthwise_kernel, nd + 2, x, where, "depthwise_kernel")
    strides = _ints(strides, nd, where, "strides")
    dilations = _ints(dilation_rate, nd, where, "dilation_rate")
    padding = _padding(padding, where)
    channels, multiplier = dk.shape[nd], dk.shape[nd + 1]
    _check_channels(where, _channels(x, nd, data_format), channels, "depthwise_kernel")
    xc = _channels_first(x, nd, data_format)
    w = sh.transpose(dk, perm=(nd, nd + 1) + tuple(range(nd)))
    w = sh.reshape(w, shape=(channels * multiplier, 1) + dk.shape[:nd])
    pads = cv.resolve_pads(padding, xc.shape[2:], dk.shape[:nd], strides, dilations)
    return x, cv.conv(xc, w, strides=strides, dilations=dilations, pads=pads, group=channels)


@keras_api
def depthwise_conv2d(x, depthwise_kernel, strides=(1, 1), padding="valid", data_format=None,
                     dilation_rate=(1, 1)):
    where = "K.depthwise_conv2d"
    data_format = check_data_format(data_format, where)
    _, y = _depthwise(where, 2, x, depthwise_kernel, strides, padding, data_format, dilation_rate)
    return _restore(y, 2, data_format)


def _separable(where, nd, x, depthwise_kernel, pointwise_kernel, strides, padding, data_format,
               dilation_rate):
    data_format = check_data_format(data_format, where)
    x, y = _depthwise(where, nd, x, depthwise_kernel, strides, padding, data_format, dilation_rate)
    pk = _kernel(pointwise_kernel, nd + 2, x, where, "pointwise_kernel")
    if pk.shape[:nd] != (1,) * nd:
        raise ValueError(f"{where}: pointwise_kernel must be {(1,) * nd + ('in', 'out')}, got {pk.shape}")
    _check_channels(where, y.shape[1], pk.shape[nd], "pointwise_kernel")
    y = cv.conv(y, _onnx_kernel(pk, nd), strides=(1,) * nd, dilations=(1,) * nd, pads=(0,) * (2 * nd), group=1)
    return _restore(y, nd, data_format)


@keras_api
def separable_conv1d(x, depthwise_kernel, pointwise_kernel, strides=1, padding="valid", data_format=None,
                     dilation_rate=1):
    return _separable("K.separable_conv1d", 1, x, depthwise_kernel, pointwise_kernel, strides, padding,
                      data_format, dilation_rate)


@keras_api
def separable_conv2d(x, depthwise_kernel, pointwise_kernel, strides=(1, 1), padding="valid",
                     data_format=None, dilation_rate=(1, 1)):
    return _separable("K.separable_conv2d", 2, x, depthwise_kernel, pointwise_kernel, strides, padding,
                      data_format, dilation_rate)


# -- transposed convolutions -----------------------------------------------------------------------
_FOLDABLE = {
    "cast": lambda a, dtype: a.astype(dtype), "identity": lambda a: a, "stop_gradient": lambda a: a,
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
    "maximum": np.maximum, "minimum": np.minimum, "mod": np.mod,
    "div": lambda a, b: np.trunc(a / b).astype(a.dtype) if a.dtype.kind in "iu" else a / b,
    "squeeze": lambda a, axes: np.squeeze(a, axis=axes),
    "unsqueeze": lambda a, axes: np.expand_dims(a, axis=axes),
    "reshape": lambda a, shape: a.reshape(shape),
    "concat": lambda *xs, axis: np.concatenate(xs, axis=axis),
}


def _static_value(t, depth=0):
    """The value of a small shape-arithmetic tensor (what Keras layers build from K.shape and
    Python ints) when the static shapes decide it; None when it is only known at run time."""
    if isinstance(t, Constant):
        return np.asarray(t.value)
    node = t.node
    if node is None or depth > 64:
        return None
    name = node.primitive.name
    if name == "shape_of":
        shape = node.inputs[0].shape
        return None if None in shape else np.asarray(shape, dtype=np.int64)
    if name == "slice":
        a = _static_value(node.inputs[0], depth + 1)
        if a is None:
            return None
        index = [slice(None)] * a.ndim
        for s, e, ax, st in zip(node.attrs["starts"], node.attrs["ends"], node.attrs["axes"], node.attrs["steps"]):
            index[ax] = slice(s, e, st)
        return a[tuple(index)]
    fn = _FOLDABLE.get(name)
    if fn is None:
        return None
    args = [_static_value(i, depth + 1) for i in node.inputs]
    if any(a is None for a in args):
        return None
    return np.asarray(fn(*args, **node.attrs))


def _output_spatial(output_shape, nd, data_format, where):
    """The requested output's (channels, spatial sizes): ints where static, else an int64 vector
    (or scalars) for the spatial part."""
    lo = 1 if data_format == "channels_last" else 2
    channel_at = nd + 1 if data_format == "channels_last" else 1
    if isinstance(output_shape, Tensor):
        value = _static_value(output_shape)
        known = known_ints(output_shape)
        if value is not None:
            output_shape = tuple(int(v) for v in value.reshape(-1))
        elif known is not None and len(known) == nd + 2 and None not in known[lo:lo + nd]:
            # K.stack([K.shape(x)[0], 6, 8, 3]): the sizes the graph fixes, as TF reads them
            output_shape = known
        else:
            if output_shape.shape not in ((nd + 2,), (None,)) or not dtypes.is_int(output_shape.dtype):
                raise ValueError(f"{where}: output_shape must be {nd + 2} ints, got a tensor of shape "
                                 f"{output_shape.shape} and dtype {output_shape.dtype}")
            size = sh.slice_(ew.cast(output_shape, dtype="int64"), starts=(lo,), ends=(lo + nd,),
                             axes=(0,), steps=(1,))
            return None, size
    if not isinstance(output_shape, (tuple, list)) or len(output_shape) != nd + 2:
        raise ValueError(f"{where}: output_shape must be a tuple of {nd + 2} entries, got {output_shape!r}")
    entries = []
    for d in output_shape:
        if isinstance(d, Tensor):
            value = _static_value(d)
            d = int(value.reshape(-1)[0]) if value is not None and value.size == 1 else d
        elif d is not None:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
                raise ValueError(f"{where}: output_shape entries must be positive ints or scalar tensors, "
                                 f"got {output_shape!r}")
            d = int(d)
        entries.append(d)
    channels = entries[channel_at] if isinstance(entries[channel_at], int) else None
    spatial = entries[lo:lo + nd]
    if all(isinstance(d, int) for d in spatial):
        return channels, tuple(spatial)
    if any(d is None for d in spatial):
        raise ValueError(f"{where}: output_shape needs every spatial size, got {output_shape!r}")
    parts = [Constant(np.array([d], dtype=np.int64)) if isinstance(d, int)
             else sh.reshape(ew.cast(d, dtype="int64"), shape=(1,)) for d in spatial]
    return channels, sh.concat(*parts, axis=0)


def _conv_transpose(where, nd, x, kernel, output_shape, strides, padding, data_format, dilation_rate):
    data_format = check_data_format(data_format, where)
    x = _data(x, nd, where)
    kernel = _kernel(kernel, nd + 2, x, where)
    strides = _ints(strides, nd, where, "strides")
    dilations = _ints(dilation_rate, nd, where, "dilation_rate")
    padding = _padding(padding, where)
    ksize, out_channels = kernel.shape[:nd], kernel.shape[nd]
    _check_channels(where, _channels(x, nd, data_format), kernel.shape[nd + 1])
    channels, size = _output_spatial(output_shape, nd, data_format, where)
    if channels is not None and channels != out_channels:
        raise ValueError(f"{where}: output_shape asks for {channels} channels but the kernel {kernel.shape} "
                         f"(*kernel_size, out, in) makes {out_channels}")
    xc = _channels_first(x, nd, data_format)
    w = _onnx_kernel(kernel, nd)
    geometry = dict(strides=strides, dilations=dilations, group=1)
    if isinstance(size, tuple):
        pads = cv.resolve_pads(padding, size, ksize, strides, dilations)
        if None not in xc.shape[2:]:
            expected = cv.conv_output_spatial(where, size, ksize, strides, dilations, pads)
            if expected != xc.shape[2:]:
                raise ValueError(f"{where}: output_shape's spatial size {size} convolves (strides {strides}, "
                                 f"padding {padding!r}) to {expected}, not to the input's {xc.shape[2:]}")
            extra = tuple(s - ((n - 1) * st + cv.effective_kernel(k, d) - pads[i] - pads[nd + i])
                          for i, (s, n, k, st, d) in enumerate(zip(size, xc.shape[2:], ksize, strides, dilations)))
            y = cv.conv_transpose(xc, w, pads=pads, output_padding=extra, **geometry)
            return _restore(y, nd, data_format)
        size = Constant(np.asarray(size, dtype=np.int64))
    else:
        pads = cv.resolve_pads(padding, (None,) * nd, ksize, strides, dilations)
    y = cv.conv_transpose(xc, w, size, pads=pads, output_padding=None, **geometry)
    return _restore(y, nd, data_format)


@keras_api
def conv2d_transpose(x, kernel, output_shape, strides=(1, 1), padding="valid", data_format=None,
                     dilation_rate=(1, 1)):
    return _conv_transpose("K.conv2d_transpose", 2, x, kernel, output_shape, strides, padding, data_format,
                           dilation_rate)


@keras_api
def conv3d_transpose(x, kernel, output_shape, strides=(1, 1, 1), padding="valid", data_format=None):
    return _conv_transpose("K.conv3d_transpose", 3, x, kernel, output_shape, strides, padding, data_format,
                           (1, 1, 1))


# -- locally connected ------------------------------------------------------------------------------
def _local_conv(where, inputs, kernel, kernel_size, strides, output_shape, data_format):
    """Unshared weights: patches (in the data format's element order, as Keras flattens them)
    times one (features, filters) matrix per output position."""
    data_format = check_data_format(data_format, where)
    nd = len(output_shape)
    x = _data(inputs, nd, where, "inputs")
    kernel = _kernel(kernel, 3, x, where)
    kernel_size = _ints(kernel_size, nd, where, "kernel_size")
    strides = _ints(strides, nd, where, "strides")
    channels = _channels(x, nd, data_format)
    positions, features, filters = kernel.shape
    if positions != int(np.prod(output_shape)) or channels is not None and \
            features != channels * int(np.prod(kernel_size)):
        raise ValueError(f"{where}: kernel shape {kernel.shape} does not fit output_shape {output_shape}, "
                         f"kernel_size {kernel_size} and {channels} input channels")
    first = 2 if data_format == "channels_first" else 1
    spatial = x.shape[first:first + nd]
    for size, n, k, s in zip(spatial, output_shape, kernel_size, strides):
        if size is not None and (n - 1) * s + k > size:
            raise ValueError(f"{where}: output_shape {output_shape} needs more input than the spatial "
                             f"size {spatial} holds (kernel_size {kernel_size}, strides {strides})")
    axes = tuple(range(first, first + nd))
    windows = []
    for offset in itertools.product(*(range(k) for k in kernel_size)):
        ends = tuple(o + (n - 1) * s + 1 for o, n, s in zip(offset, output_shape, strides))
        windows.append(sh.unsqueeze(sh.slice_(x, starts=offset, ends=ends, axes=axes, steps=strides),
                                    axes=(first + nd if data_format == "channels_last" else first,)))
    if data_format == "channels_last":  # (N, *out, K, C): features ordered (*kernel, channel)
        patches = sh.concat(*windows, axis=first + nd)
        patches = sh.reshape(patches, shape=(-1, positions, features))
        patches = sh.transpose(patches, perm=(1, 0, 2))
    else:  # (N, C, K, *out): features ordered (channel, *kernel)
        patches = sh.concat(*windows, axis=first)
        patches = sh.reshape(patches, shape=(-1, features, positions))
        patches = sh.transpose(patches, perm=(2, 0, 1))
    y = linalg.matmul(patches, kernel)  # (positions, N, filters)
    y = sh.reshape(y, shape=tuple(output_shape) + (-1, filters))
    perm = (nd, nd + 1) + tuple(range(nd)) if data_format == "channels_first" else \
        (nd,) + tuple(range(nd)) + (nd + 1,)
    return sh.transpose(y, perm=perm)


@keras_api
def local_conv1d(inputs, kernel, kernel_size, strides, data_format=None):
    kernel = to_tensor(kernel, where="K.local_conv1d")
    if kernel.ndim != 3 or kernel.shape[0] is None:
        raise ValueError(f"K.local_conv1d: kernel must be (output_length, features, filters), got {kernel.shape}")
    return _local_conv("K.local_conv1d", inputs, kernel, kernel_size, strides, (kernel.shape[0],), data_format)


@keras_api
def local_conv2d(inputs, kernel, kernel_size, strides, output_shape, data_format=None):
    output_shape = _ints(output_shape, 2, "K.local_conv2d", "output_shape")
    return _local_conv("K.local_conv2d", inputs, kernel, kernel_size, strides, output_shape, data_format)


# -- pooling ---------------------------------------------------------------------------------------------
def _pool(where, nd, x, pool_size, strides, padding, data_format, pool_mode):
    data_format = check_data_format(data_format, where)
    x = _data(x, nd, where)
    pool_size = _ints(pool_size, nd, where, "pool_size")
    strides = _ints(strides, nd, where, "strides")
    padding = _padding(padding, where)
    if pool_mode not in ("max", "avg"):
        raise ValueError(f"{where}: pool_mode must be 'max' or 'avg', got {pool_mode!r}")
    xc = _channels_first(x, nd, data_format)
    pads = cv.resolve_pads(padding, xc.shape[2:], pool_size, strides, (1,) * nd)
    prim = pool.max_pool if pool_mode == "max" else pool.avg_pool
    return _restore(prim(xc, kernel_shape=pool_size, strides=strides, pads=pads), nd, data_format)


@keras_api
def pool2d(x, pool_size, strides=(1, 1), padding="valid", data_format=None, pool_mode="max"):
    return _pool("K.pool2d", 2, x, pool_size, strides, padding, data_format, pool_mode)


@keras_api
def pool3d(x, pool_size, strides=(1, 1, 1), padding="valid", data_format=None, pool_mode="max"):
    return _pool("K.pool3d", 3, x, pool_size, strides, padding, data_format, pool_mode)
