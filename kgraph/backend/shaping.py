"""Shape manipulation: concatenation, reshaping, permutation, resizing, repetition, padding,
stacking, one-hot, reversal and slicing (Keras 2.3.1, TensorFlow backend semantics)."""
import builtins  # K.slice shadows slice here

import numpy as np

from .. import dtypes
from ..graph import Constant, Tensor
from ..ops import elementwise as ew
from ..ops import layout
from ..ops import shape as sh
from ._api import check_data_format, floatx, keras_api, normalize_axis, normalize_one_axis, to_tensor


# -- argument helpers -------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _tensor_list(tensors, where):
    """A non-empty list of tensors; Python/numpy values take the first tensor's dtype."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"{where}: expected a non-empty list of tensors, got {tensors!r}")
    dtype = next((t.dtype for t in tensors if isinstance(t, Tensor)), None)
    return [t if isinstance(t, Tensor) else to_tensor(t, dtype, where=where) for t in tensors]


def _factor(value, where, name):
    """A positive integer factor; integral floats (2.0) are accepted, as TF's int32 cast does."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or value != int(value) or value < 1:
        raise ValueError(f"{where}: `{name}` must be a positive integer, got {value!r}")
    return int(value)


def _scalar_int64(t, where, name):
    if t.ndim != 0 and t.shape != (1,):
        raise ValueError(f"{where}: `{name}` entries must be scalars, got a tensor of shape {t.shape}")
    if not dtypes.is_int(t.dtype):
        raise TypeError(f"{where}: `{name}` must hold integers, got a {t.dtype} tensor")
    t = t if t.dtype == "int64" else ew.cast(t, dtype="int64")
    return t if t.ndim == 1 else sh.unsqueeze(t, axes=(0,))


def known_ints(t, depth=0):
    """The entries of a 1-D (or scalar) integer tensor that the graph fixes, None elsewhere, as
    TF's constant_value_as_shape reads them: Keras builds shapes as K.stack([K.shape(x)[0], 12])
    and K.concatenate of K.shape slices, and a reshape to them keeps the known dims.  As in TF, a
    stacked scalar counts only when it is a constant (K.shape(x)[1] in a stack stays unknown).
    None when even the length is unknown."""
    n = 1 if t.ndim == 0 else t.shape[0]
    if t.ndim > 1 or n is None:
        return None
    node = t.node
    if isinstance(t, Constant):
        return tuple(int(v) for v in np.asarray(t.value).reshape(-1))
    unknown = (None,) * n
    if node is None or depth > 16 or not dtypes.is_int(t.dtype):
        return unknown
    name, inputs, attrs = node.primitive.name, node.inputs, node.attrs
    if name == "shape_of":
        return tuple(inputs[0].shape)
    if name == "cast" or (name == "unsqueeze" and isinstance(inputs[0], Constant)):
        known = known_ints(inputs[0], depth + 1)
        return known if known is not None and len(known) == n else unknown
    if name == "concat" and attrs.get("axis") == 0:
        parts = [known_ints(i, depth + 1) for i in inputs]
        return unknown if any(p is None for p in parts) else tuple(v for p in parts for v in p)
    if name == "slice" and tuple(attrs.get("axes", ())) == (0,):
        known = known_ints(inputs[0], depth + 1)
        if known is not None:
            part = known[builtins.slice(attrs["starts"][0], attrs["ends"][0], attrs["steps"][0])]
            return part if len(part) == n else unknown
    return unknown


def _int_vector(values, where, name):
    """A Keras integer-vector argument — a list/tuple of ints and scalar integer tensors (as
    ``(-1, K.shape(x)[1])``), or a 1-D integer tensor — as ``(int64 tensor, static values)``.
    ``static`` has None where only run time knows the entry, and is None when even the length is
    unknown."""
    if isinstance(values, Tensor):
        if values.ndim != 1:
            raise ValueError(f"{where}: `{name}` must be a 1-D tensor, got shape {values.shape}")
        if not dtypes.is_int(values.dtype):
            raise TypeError(f"{where}: `{name}` must be an integer tensor, got {values.dtype}")
        if isinstance(values, Constant):  # stays a Constant so the shape rules can read it
            return Constant(values.value.astype(np.int64)), layout.constant_ints(values)
        vec = values if values.dtype == "int64" else ew.cast(values, dtype="int64")
        return vec, known_ints(values)
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{where}: `{name}` must be a list/tuple of integers or an integer tensor, "
                        f"got {type(values).__name__}")
    static = []
    for v in values:
        if isinstance(v, Tensor):
            static.append(int(np.asarray(v.value).reshape(-1)[0]) if isinstance(v, Constant) and v.ndim <= 1
                          and v.value.size == 1 and dtypes.is_int(v.dtype) else None)
        elif _is_int(v):
            static.append(int(v))
        else:
            raise TypeError(f"{where}: `{name}` entries must be integers or scalar integer tensors, got {v!r}")
    if None not in static:
        return Constant(np.asarray(static, dtype=np.int64).reshape(-1)), tuple(static)
    pieces, run = [], []
    for v, s in zip(values, static):
        if s is not None:
            run.append(s)
            continue
        if run:
            pieces.append(Constant(np.asarray(run, dtype=np.int64)))
            run = []
        pieces.append(_scalar_int64(v, where, name))
    if run:
        pieces.append(Constant(np.asarray(run, dtype=np.int64)))
    return sh.concat(*pieces, axis=0) if len(pieces) > 1 else pieces[0], tuple(static)


def _padding_pairs(padding, count, where):
    """``count`` (before, after) pairs of non-negative ints."""
    ok = isinstance(padding, (list, tuple)) and len(padding) == count and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p) for p in padding)
    if not ok:
        raise ValueError(f"{where}: `padding` must be {count} pairs of non-negative integers, got {padding!r}")
    return tuple((int(b), int(a)) for b, a in padding)


def _need_rank(x, rank, where):
    if x.ndim != rank:
        raise ValueError(f"{where}: expects a {rank}D tensor, got shape {x.shape}")


# -- the API ----------------------------------------------------------------------------------
@keras_api
def concatenate(tensors, axis=-1):
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"K.concatenate: expected a non-empty list of tensors, got {tensors!r}")
    if not _is_int(axis):
        raise TypeError(f"K.concatenate: axis must be an int, got {axis!r}")
    rank = len(getattr(tensors[0], "shape", np.shape(tensors[0])))
    if axis < 0:  # Keras normalizes against the first tensor's rank
        axis = axis % rank if rank else 0
    if any(getattr(t, "sparse", False) for t in tensors):
        from . import sparse
        return sparse.concatenate(tensors, axis)
    tensors = _tensor_list(tensors, "K.concatenate")
    if rank == 0:
        raise ValueError("K.concatenate: cannot concatenate scalars (rank 0); use K.stack")
    return sh.concat(*tensors, axis=int(axis))


@keras_api
def reshape(x, shape):
    x = to_tensor(x)
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    vec, static = _int_vector(shape, "K.reshape", "shape")
    if static is None:
        raise ValueError(f"K.reshape: a shape tensor needs a static length, got shape {vec.shape}")
    known = [d for d in static if d is not None]
    if any(d < -1 for d in known) or known.count(-1) > 1:
        raise ValueError(f"K.reshape: `shape` may hold one -1 and otherwise non-negative sizes, got {static}")
    if None not in static:
        return sh.reshape(x, shape=static)
    out = tuple(None if d is None or d == -1 else d for d in static)
    return sh.reshape_dynamic(x, vec, static=out)


@keras_api
def permute_dimensions(x, pattern):
    x = to_tensor(x)
    if not isinstance(pattern, (list, tuple, np.ndarray)) or not all(_is_int(p) for p in pattern):
        raise TypeError(f"K.permute_dimensions: `pattern` must be a list/tuple of ints, got {pattern!r}")
    perm = tuple(int(p) + x.ndim if -x.ndim <= p < 0 else int(p) for p in pattern)
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"K.permute_dimensions: `pattern` {tuple(pattern)} is not a permutation of the "
                         f"{x.ndim} axes of a tensor of shape {x.shape}")
    return sh.transpose(x, perm=perm)


@keras_api
def resize_images(x, height_factor, width_factor, data_format, interpolation='nearest'):
    where = "K.resize_images"
    x = to_tensor(x)
    data_format = check_data_format(data_format, where)
    _need_rank(x, 4, where)
    factors = [1, 1, 1, 1]
    rows = 2 if data_format == "channels_first" else 1
    factors[rows] = _factor(height_factor, where, "height_factor")
    factors[rows + 1] = _factor(width_factor, where, "width_factor")
    if interpolation == "nearest":
        return layout.resize(x, factors=tuple(factors), mode="nearest")
    if interpolation == "bilinear":
        if not dtypes.is_float(x.dtype):  # TF's resize_bilinear returns float32 for integer images
            x = ew.cast(x, dtype="float32")
        return layout.resize(x, factors=tuple(factors), mode="linear")
    raise ValueError(f'{where}: interpolation should be one of "nearest" or "bilinear", got {interpolation!r}')


@keras_api
def resize_volumes(x, depth_factor, height_factor, width_factor, data_format):
    where = "K.resize_volumes"
    x = to_tensor(x)
    data_format = check_data_format(data_format, where)
    _need_rank(x, 5, where)
    first = 2 if data_format == "channels_first" else 1
    factors = [1] * 5
    for i, (name, f) in enumerate((("depth_factor", depth_factor), ("height_factor", height_factor),
                                   ("width_factor", width_factor))):
        factors[first + i] = _factor(f, where, name)
    return layout.resize(x, factors=tuple(factors), mode="nearest")


@keras_api
def repeat_elements(x, rep, axis):
    x = to_tensor(x)
    axis = normalize_one_axis(axis, x.ndim, "K.repeat_elements")
    if not _is_int(rep) or rep < 1:
        raise ValueError(f"K.repeat_elements: `rep` must be a positive integer, got {rep!r}")
    factors = tuple(int(rep) if i == axis else 1 for i in range(x.ndim))
    return layout.resize(x, factors=factors, mode="nearest")


@keras_api
def repeat(x, n):
    x = to_tensor(x)
    _need_rank(x, 2, "K.repeat")
    if _is_int(n) and n < 0:
        raise ValueError(f"K.repeat: `n` must be a non-negative integer, got {n!r}")
    reps, _ = _int_vector([1, n, 1], "K.repeat", "n")
    return layout.tile(sh.unsqueeze(x, axes=(1,)), reps)


_RANGE_ORDER = ("int32", "int64", "float32", "float64")  # tf.range's dtype inference


@keras_api
def arange(start, stop=None, step=1, dtype='int32'):
    where = "K.arange"
    dtype = dtypes.normalize(dtype, where)
    if stop is None:
        # Keras: a negative single argument gives an empty range, as numpy and Theano do
        if isinstance(start, Tensor):
            start = ew.maximum(start, ew.scalar_like(0, start))
        elif start < 0:
            start = 0
        start, stop = 0, start
    args = [start, stop, step]
    for name, v in zip(("start", "stop", "step"), args):
        if isinstance(v, Tensor):
            if v.ndim != 0:
                raise ValueError(f"{where}: `{name}` must be a scalar, got a tensor of shape {v.shape}")
            if v.dtype not in _RANGE_ORDER:
                raise TypeError(f"{where}: `{name}` has dtype {v.dtype}; expected one of {_RANGE_ORDER}")
        elif isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{where}: `{name}` must be a number or a scalar tensor, got {v!r}")
    if not isinstance(step, Tensor) and step == 0:
        raise ValueError(f"{where}: `step` must not be zero")
    kinds = [v.dtype if isinstance(v, Tensor) else "int32" if _is_int(v) else "float32" for v in args]
    common = max(kinds, key=_RANGE_ORDER.index)
    result = layout.range_(*[to_tensor(v, common, where=where) for v in args])
    # Keras casts only when dtype differs from 'int32', so float bounds give float32 by default
    return result if dtype == "int32" or dtype == result.dtype else ew.cast(result, dtype=dtype)


@keras_api
def tile(x, n):
    x = to_tensor(x)
    if _is_int(n):
        n = (n,)
    if not isinstance(n, Tensor):
        if not isinstance(n, (list, tuple, np.ndarray)):
            raise TypeError(f"K.tile: `n` must be an int, a list of ints or an integer tensor, got {n!r}")
        n = list(n.tolist() if isinstance(n, np.ndarray) else n)
        if len(n) > x.ndim:
            raise ValueError(f"K.tile: `n` has {len(n)} entries for a tensor of rank {x.ndim}")
        n = [1] * (x.ndim - len(n)) + n  # Keras pads missing leading counts with 1
    reps, static = _int_vector(n, "K.tile", "n")
    if static is not None and len(static) != x.ndim:
        raise ValueError(f"K.tile: `n` has {len(static)} entries for a tensor of rank {x.ndim}")
    if static is not None and any(c is not None and c < 0 for c in static):
        raise ValueError(f"K.tile: repeat counts must be non-negative, got {static}")
    return layout.tile(x, reps)


@keras_api
def flatten(x):
    return sh.reshape(to_tensor(x), shape=(-1,))


@keras_api
def batch_flatten(x):
    x = to_tensor(x)
    if x.ndim == 0:  # TF: reshape to (-1, prod of no dims) = (1, 1)
        return sh.reshape(x, shape=(1, 1))
    return layout.flatten_2d(x, axis=1)


@keras_api
def expand_dims(x, axis=-1):
    x = to_tensor(x)
    if not _is_int(axis):
        raise TypeError(f"K.expand_dims: axis must be an int, got {axis!r}")
    if not -x.ndim - 1 <= axis <= x.ndim:
        raise ValueError(f"K.expand_dims: axis {axis} is out of range for a tensor of rank {x.ndim} "
                         f"(expected {-x.ndim - 1} to {x.ndim})")
    return sh.unsqueeze(x, axes=(int(axis) % (x.ndim + 1),))


@keras_api
def squeeze(x, axis):
    x = to_tensor(x)
    axis = normalize_one_axis(axis, x.ndim, "K.squeeze")
    if x.shape[axis] not in (1, None):
        raise ValueError(f"K.squeeze: cannot squeeze axis {axis} of size {x.shape[axis]} (shape {x.shape})")
    return sh.squeeze(x, axes=(axis,))


@keras_api
def temporal_padding(x, padding=(1, 1)):
    x = to_tensor(x)
    (pair,) = _padding_pairs([padding], 1, "K.temporal_padding")
    _need_rank(x, 3, "K.temporal_padding")
    return layout.pad(x, pads=((0, 0), pair, (0, 0)))


def _spatial_padding(x, padding, data_format, count, where):
    x = to_tensor(x)
    pairs = _padding_pairs(padding, count, where)
    data_format = check_data_format(data_format, where)
    _need_rank(x, count + 2, where)
    none = ((0, 0),)
    pads = none * 2 + pairs if data_format == "channels_first" else none + pairs + none
    return layout.pad(x, pads=pads)


@keras_api
def spatial_2d_padding(x, padding=((1, 1), (1, 1)), data_format=None):
    return _spatial_padding(x, padding, data_format, 2, "K.spatial_2d_padding")


@keras_api
def spatial_3d_padding(x, padding=((1, 1), (1, 1), (1, 1)), data_format=None):
    return _spatial_padding(x, padding, data_format, 3, "K.spatial_3d_padding")


@keras_api
def stack(x, axis=0):
    tensors = _tensor_list(x, "K.stack")
    rank = tensors[0].ndim
    if not _is_int(axis):
        raise TypeError(f"K.stack: axis must be an int, got {axis!r}")
    if not -rank - 1 <= axis <= rank:
        raise ValueError(f"K.stack: axis {axis} is out of range for stacking tensors of rank {rank}")
    if any(t.ndim != rank for t in tensors):
        raise ValueError(f"K.stack: all tensors must have the same rank, got shapes {[t.shape for t in tensors]}")
    axis = int(axis) % (rank + 1)
    parts = [sh.unsqueeze(t, axes=(axis,)) for t in tensors]
    return parts[0] if len(parts) == 1 else sh.concat(*parts, axis=axis)


@keras_api
def one_hot(indices, num_classes):
    indices = to_tensor(indices)
    if not dtypes.is_int(indices.dtype):
        raise TypeError(f"K.one_hot: `indices` must be an integer tensor, got {indices.dtype}")
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"K.one_hot: `num_classes` must be a positive integer, got {num_classes!r}")
    return layout.one_hot(indices, depth=int(num_classes), dtype=floatx())


@keras_api
def reverse(x, axes):
    x = to_tensor(x)
    if _is_int(axes):
        axes = [axes]
    if not isinstance(axes, (list, tuple)):
        raise TypeError(f"K.reverse: `axes` must be an int or a list of ints, got {axes!r}")
    normalized = normalize_axis(list(axes), x.ndim, "K.reverse") if axes else ()
    if len(normalized) != len(axes):
        raise ValueError(f"K.reverse: `axes` {tuple(axes)} names an axis twice")
    return layout.reverse(x, axes=normalized)


@keras_api
def slice(x, start, size):
    x = to_tensor(x)
    starts, s_static = _int_vector(start, "K.slice", "start")
    sizes, z_static = _int_vector(size, "K.slice", "size")
    lengths = [x.ndim] + [len(s) for s in (s_static, z_static) if s is not None]
    if len(set(lengths)) != 1:
        raise ValueError(f"K.slice: the dimension and the size of indices should match: x has rank {x.ndim}, "
                         f"start {start!r}, size {size!r}")
    for i, (s, z) in enumerate(zip(s_static or (None,) * x.ndim, z_static or (None,) * x.ndim)):
        d = x.shape[i]
        if (s is not None and s < 0) or (z is not None and z < -1):
            raise ValueError(f"K.slice: start must be >= 0 and size >= -1, got start {s} and size {z} on axis {i}")
        if None not in (s, z, d) and s + max(z, 0) > d:
            raise ValueError(f"K.slice: start {s} + size {z} exceeds dimension {i} of size {d}")
    return layout.slice_dynamic(x, starts, sizes)


@keras_api
def pattern_broadcast(x, broadcastable):
    """Theano's patternbroadcast: axes marked True must have size 1 and become statically 1."""
    x = to_tensor(x)
    if not isinstance(broadcastable, (list, tuple)) or len(broadcastable) != x.ndim:
        raise ValueError(f"K.pattern_broadcast: `broadcastable` must be {x.ndim} booleans, got {broadcastable!r}")
    marked = tuple(i for i, b in enumerate(broadcastable) if b)
    for i in marked:
        if x.shape[i] not in (1, None):
            raise ValueError(f"K.pattern_broadcast: axis {i} of shape {x.shape} has size {x.shape[i]}, "
                             f"so it cannot be broadcastable")
    unknown = tuple(i for i in marked if x.shape[i] is None)
    if not unknown:
        return sh.identity(x)
    # Squeeze checks the size at run time; Unsqueeze gives the static 1
    return sh.unsqueeze(sh.squeeze(x, axes=unknown), axes=unknown)
