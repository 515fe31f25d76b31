"""Layout primitives beyond ops/shape.py: padding, tiling, integer-factor resizing, axis
splitting, reversal, run-time slicing, flattening, ranges and one-hot.

Parameters fixed when the graph is built are attributes (tuples of ints).  Parameters that may
only be known at run time (tile counts, slice starts and sizes, range bounds) are int64 tensor
inputs; the shape rules read their values when they are ``Constant``s, so static shapes survive
wherever they can.
"""
import numpy as np

from .. import dtypes
from ..graph import Constant
from .elementwise import add, mul, scalar_like, sub, zeros_like_
from .primitive import InferError, Primitive
from .reduce import reduce_sum
from .shape import concat, reshape_like, shape_of, slice_

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def constant_ints(t):
    """The values of an integer ``Constant`` as a tuple, or None for a run-time tensor."""
    if isinstance(t, Constant):
        return tuple(int(v) for v in np.asarray(t.value).reshape(-1))
    return None


def _int64_vector(t, length, what):
    if t.dtype != "int64" or t.ndim != 1:
        raise InferError(f"{what} must be a 1-D int64 tensor, got shape {t.shape} of {t.dtype}")
    if t.shape[0] is not None and t.shape[0] != length:
        raise InferError(f"{what} has {t.shape[0]} entries for a tensor of rank {length}")


def shape_vector(ctx, x, static_shape, spec):
    """An int64 shape for Reshape.  ``spec`` has one entry per output axis: an int, or
    ``(axes, divisor)`` meaning the product of those axes of ``x`` divided by ``divisor``.
    Constant when the static shape decides every entry, else built from ``Shape`` at run time
    (exact for zero-sized dims, which -1 is not)."""
    known = []
    for item in spec:
        if isinstance(item, int):
            known.append(item)
        else:
            dims = [static_shape[a] for a in item[0]]
            known.append(None if None in dims else int(np.prod(dims, dtype=np.int64)) // item[1])
    if None not in known:
        return ctx.int64s(known)
    pieces = []
    for item, k in zip(spec, known):
        if k is not None:
            pieces.append(ctx.int64s([k]))
            continue
        axes, divisor = item
        value = None
        for a in axes:
            dim = ctx.op("Shape", x, start=a, end=a + 1)
            value = dim if value is None else ctx.op("Mul", value, dim)
        if divisor != 1:
            value = ctx.op("Div", value, ctx.int64s([divisor]))
        pieces.append(value)
    return ctx.op("Concat", *pieces, axis=0)


# -- pad ------------------------------------------------------------------------------------
pad = Primitive("pad")  # zeros around ``x``: ``pads`` = ((before, after), ...), one pair per axis


@pad.infer
def _(x, pads):
    if len(pads) != x.ndim or any(len(p) != 2 or min(p) < 0 for p in pads):
        raise InferError(f"pad: padding {pads} does not fit a tensor of rank {x.ndim} "
                         f"(expected one non-negative (before, after) pair per axis)")
    return tuple(None if d is None else d + b + a for d, (b, a) in zip(x.shape, pads)), x.dtype


@pad.lower
def _(ctx, node, x):
    pads = node.attrs["pads"]
    return ctx.op("Pad", x, ctx.int64s([b for b, _ in pads] + [a for _, a in pads]))


@pad.vjp
def _(node, g):
    pads = node.attrs["pads"]
    axes = tuple(i for i, p in enumerate(pads) if tuple(p) != (0, 0))
    if not axes:
        return [g]
    return [slice_(g, starts=tuple(pads[i][0] for i in axes),
                   ends=tuple(-pads[i][1] if pads[i][1] else None for i in axes),
                   axes=axes, steps=(1,) * len(axes))]


# -- tile -----------------------------------------------------------------------------------
tile = Primitive("tile")  # ``reps``: int64 vector, one count per axis


@tile.infer
def _(x, reps):
    _int64_vector(reps, x.ndim, "tile: the repeat counts")
    counts = constant_ints(reps)
    if counts is None:
        return (None,) * x.ndim, x.dtype
    if any(c < 0 for c in counts):
        raise InferError(f"tile: repeat counts must be non-negative, got {counts}")
    return tuple(None if d is None else d * c for d, c in zip(x.shape, counts)), x.dtype


@tile.lower
def _(ctx, node, x, reps):
    return ctx.op("Tile", x, reps)


@tile.vjp
def _(node, g):
    x, reps = node.inputs
    return [tile_grad(g, x, reps), None]


tile_grad = Primitive("tile_grad")  # the sum of the tiles of ``g``, shaped like ``like``


@tile_grad.infer
def _(g, like, reps):
    return like.shape, g.dtype


@tile_grad.lower
def _(ctx, node, g, like, reps):
    rank = node.inputs[1].ndim
    if rank == 0:
        return ctx.op("Identity", g)
    counts, dims = constant_ints(node.inputs[2]), node.inputs[1].shape
    if counts is not None and None not in dims:
        blocks_shape = ctx.int64s([v for c, d in zip(counts, dims) for v in (c, d)])
    else:  # interleave (count_i, dim_i) at run time
        one = ctx.int64s([1])
        pairs = ctx.op("Concat", ctx.op("Unsqueeze", reps, one), ctx.op("Unsqueeze", ctx.op("Shape", like), one),
                       axis=1)
        blocks_shape = ctx.op("Reshape", pairs, ctx.int64s([-1]))
    blocks = ctx.op("Reshape", g, blocks_shape, allowzero=1)
    return ctx.reduce("ReduceSum", blocks, range(0, 2 * rank, 2), keepdims=False)


@tile_grad.vjp
def _(node, g):
    return [tile(g, node.inputs[2]), None, None]


# -- split one axis in two ----------------------------------------------------------------------
split_axis = Primitive("split_axis")  # an axis of size n * factor → two axes (n, factor)


@split_axis.infer
def _(x, axis, factor):
    if not 0 <= axis < x.ndim or factor < 1:
        raise InferError(f"split_axis: invalid axis {axis} or factor {factor} for shape {x.shape}")
    d = x.shape[axis]
    if d is not None and d % factor:
        raise InferError(f"split_axis: axis {axis} of shape {x.shape} is not a multiple of {factor}")
    return x.shape[:axis] + (None if d is None else d // factor, factor) + x.shape[axis + 1:], x.dtype


@split_axis.lower
def _(ctx, node, x):
    axis, factor = node.attrs["axis"], node.attrs["factor"]
    src = node.inputs[0]
    spec = ([((i,), 1) for i in range(axis)] + [((axis,), factor), factor]
            + [((i,), 1) for i in range(axis + 1, src.ndim)])
    return ctx.op("Reshape", x, shape_vector(ctx, x, src.shape, spec), allowzero=1)


@split_axis.vjp
def _(node, g):
    return [reshape_like(g, node.inputs[0])]


# -- resize by integer factors --------------------------------------------------------------
resize = Primitive("resize")  # ``factors``: one integer per axis; ``mode``: "nearest" | "linear"

# element types ONNX Runtime's Resize kernels take on both its CPU and CUDA providers; other
# types lower to an equivalent decomposition
_NATIVE_RESIZE = {"nearest": ("float32", "float16", "int32", "uint8"), "linear": ("float32", "float16")}


@resize.infer
def _(x, factors, mode):
    if mode not in _NATIVE_RESIZE:
        raise InferError(f"resize: unknown interpolation mode {mode!r}")
    if len(factors) != x.ndim or any(not isinstance(f, int) or f < 1 for f in factors):
        raise InferError(f"resize: factors {factors} must be one positive integer per axis of {x.shape}")
    if mode == "linear" and not dtypes.is_float(x.dtype):
        raise InferError(f"resize: linear interpolation needs a float tensor, got {x.dtype}")
    return tuple(None if d is None else d * f for d, f in zip(x.shape, factors)), x.dtype


def _resize_native(ctx, x, factors, mode):
    attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric"}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"  # floor(i / f): the source pixel of TF's legacy nearest
    scales = ctx.const(np.asarray(factors, dtype=np.float32), hint="scales")
    return ctx.op("Resize", x, "", scales, **attrs)


def _resize_linear_native(ctx, x, factors):
    """ONNX Runtime's CUDA kernel interpolates the last two axes whatever the scales say (its
    CPU kernel also takes NHWC), so move the scaled axes last and back: portable, and on CPU as
    fast as NHWC (measured)."""
    scaled = [i for i, f in enumerate(factors) if f != 1]
    perm = [i for i in range(len(factors)) if i not in scaled] + scaled
    if perm == sorted(perm):
        return _resize_native(ctx, x, factors, "linear")
    moved = ctx.op("Transpose", x, perm=perm)
    out = _resize_native(ctx, moved, [factors[p] for p in perm], "linear")
    return ctx.op("Transpose", out, perm=[int(i) for i in np.argsort(perm)])


def _repeat_axis(ctx, x, axis, factor, rank):
    """``x`` with each element repeated ``factor`` times along ``axis`` (np.repeat)."""
    wide = ctx.op("Unsqueeze", x, ctx.int64s([axis + 1]))
    wide = ctx.op("Expand", wide, ctx.int64s([factor if i == axis + 1 else 1 for i in range(rank + 1)]))
    target = ctx.op("Mul", ctx.op("Shape", x), ctx.int64s([factor if i == axis else 1 for i in range(rank)]))
    return ctx.op("Reshape", wide, target, allowzero=1)


def _lerp_axis(ctx, x, axis, factor, rank, dtype):
    """Linear interpolation at source positions i / factor along ``axis``, the last source
    element repeated past the end (TF1 resize_bilinear, align_corners=False)."""
    ax = ctx.int64s([axis])
    nxt = ctx.op("Concat", ctx.op("Slice", x, ctx.int64s([1]), ctx.int64s([INT64_MAX]), ax),
                 ctx.op("Slice", x, ctx.int64s([-1]), ctx.int64s([INT64_MAX]), ax), axis=axis)
    at = ctx.int64s([axis + 1])
    lo, hi = ctx.op("Unsqueeze", x, at), ctx.op("Unsqueeze", nxt, at)
    w = ctx.const((np.arange(factor) / factor).astype(dtype).reshape(
        [factor if i == axis + 1 else 1 for i in range(rank + 1)]), hint="lerp_weights")
    out = ctx.op("Add", lo, ctx.op("Mul", ctx.op("Sub", hi, lo), w))
    target = ctx.op("Mul", ctx.op("Shape", x), ctx.int64s([factor if i == axis else 1 for i in range(rank)]))
    return ctx.op("Reshape", out, target, allowzero=1)


@resize.lower
def _(ctx, node, x):
    factors, mode = node.attrs["factors"], node.attrs["mode"]
    src = node.inputs[0]
    if all(f == 1 for f in factors):
        return ctx.op("Identity", x)
    if src.dtype in _NATIVE_RESIZE[mode]:
        if mode == "nearest":
            return _resize_native(ctx, x, factors, mode)
        if src.ndim == 4 and sum(f != 1 for f in factors) <= 2:
            return _resize_linear_native(ctx, x, factors)
    for axis, f in enumerate(factors):
        if f != 1:
            x = (_repeat_axis(ctx, x, axis, f, src.ndim) if mode == "nearest"
                 else _lerp_axis(ctx, x, axis, f, src.ndim, src.dtype))
    return x


def _lerp_axis_grad(g, axis, factor):
    """The adjoint of ``_lerp_axis``: each output block (i, k) gave weight 1 - k/f to source i
    and k/f to source min(i + 1, n - 1)."""
    blocks = split_axis(g, axis=axis, factor=factor)
    shape = [factor if i == axis + 1 else 1 for i in range(blocks.ndim)]
    w = Constant((np.arange(factor) / factor).astype(g.dtype).reshape(shape))
    to_lo = reduce_sum(mul(blocks, sub(scalar_like(1, w), w)), axes=(axis + 1,))
    to_hi = reduce_sum(mul(blocks, w), axes=(axis + 1,))

    def part(start, end):
        return slice_(to_hi, starts=(start,), ends=(end,), axes=(axis,), steps=(1,))
    shifted = concat(zeros_like_(part(0, 1)), part(0, -1), axis=axis)  # source i + 1 for i < n - 1
    clamped = concat(zeros_like_(part(0, -1)), part(-1, None), axis=axis)  # the edge reads itself
    return add(to_lo, add(shifted, clamped))


@resize.vjp
def _(node, g):
    factors, mode = node.attrs["factors"], node.attrs["mode"]
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        if mode == "nearest":  # sum pooling over each f-block
            g = reduce_sum(split_axis(g, axis=axis, factor=f), axes=(axis + 1,))
        else:
            g = _lerp_axis_grad(g, axis, f)
    return [g]


# -- reverse --------------------------------------------------------------------------------
reverse = Primitive("reverse")


@reverse.infer
def _(x, axes):
    if any(not 0 <= a < x.ndim for a in axes) or len(set(axes)) != len(axes):
        raise InferError(f"reverse: invalid axes {axes} for a tensor of rank {x.ndim}")
    return x.shape, x.dtype


@reverse.lower
def _(ctx, node, x):
    axes = node.attrs["axes"]
    if not axes:
        return ctx.op("Identity", x)
    k = len(axes)
    return ctx.op("Slice", x, ctx.int64s([-1] * k), ctx.int64s([INT64_MIN] * k), ctx.int64s(axes),
                  ctx.int64s([-1] * k))


reverse.vjp(lambda node, g: [reverse(g, axes=node.attrs["axes"])])


# -- slice with run-time starts and sizes -----------------------------------------------------
slice_dynamic = Primitive("slice_dynamic")  # tf.slice: int64 ``starts`` and ``sizes`` (-1: to the end)


@slice_dynamic.infer
def _(x, starts, sizes):
    _int64_vector(starts, x.ndim, "slice: start")
    _int64_vector(sizes, x.ndim, "slice: size")
    s, z = constant_ints(starts), constant_ints(sizes)
    out = []
    for i, d in enumerate(x.shape):
        si, zi = (s[i] if s else None), (z[i] if z else None)
        if (si is not None and si < 0) or (zi is not None and zi < -1) or (
                None not in (d, si, zi) and si + max(zi, 0) > d):
            raise InferError(f"slice: start {s} and size {z} do not fit shape {x.shape} (axis {i})")
        if zi is not None and zi >= 0:
            out.append(zi)
        elif zi == -1 and None not in (d, si):
            out.append(d - si)
        else:
            out.append(None)
    return tuple(out), x.dtype


@slice_dynamic.lower
def _(ctx, node, x, starts, sizes):
    s, z = constant_ints(node.inputs[1]), constant_ints(node.inputs[2])
    if s is not None and z is not None:
        ends = ctx.int64s([INT64_MAX if zi == -1 else si + zi for si, zi in zip(s, z)])
    else:
        to_end = ctx.op("Less", sizes, ctx.int64s([0]))
        ends = ctx.op("Where", to_end, ctx.int64s([INT64_MAX]), ctx.op("Add", starts, sizes))
    return ctx.op("Slice", x, starts, ends)


@slice_dynamic.vjp
def _(node, g):
    x, starts, _ = node.inputs
    return [slice_dynamic_grad(g, x, starts), None, None]


slice_dynamic_grad = Primitive("slice_dynamic_grad")  # ``g`` zero-padded back to ``like``'s shape


@slice_dynamic_grad.infer
def _(g, like, starts):
    return like.shape, g.dtype


@slice_dynamic_grad.lower
def _(ctx, node, g, like, starts):
    after = ctx.op("Sub", ctx.op("Sub", ctx.op("Shape", like), starts), ctx.op("Shape", g))
    return ctx.op("Pad", g, ctx.op("Concat", starts, after, axis=0))


@slice_dynamic_grad.vjp
def _(node, g):
    inner, _, starts = node.inputs
    return [slice_dynamic(g, starts, shape_of(inner)), None, None]


# -- flatten to two axes ----------------------------------------------------------------------
flatten_2d = Primitive("flatten_2d")  # (d0..d[axis-1], d[axis]..): ONNX Flatten


@flatten_2d.infer
def _(x, axis):
    if not 0 <= axis <= x.ndim:
        raise InferError(f"flatten: axis {axis} out of range for rank {x.ndim}")

    def product(dims):
        return None if None in dims else int(np.prod(dims, dtype=np.int64))
    return (product(x.shape[:axis]), product(x.shape[axis:])), x.dtype


@flatten_2d.lower
def _(ctx, node, x):
    return ctx.op("Flatten", x, axis=node.attrs["axis"])


flatten_2d.vjp(lambda node, g: [reshape_like(g, node.inputs[0])])


# -- range ----------------------------------------------------------------------------------
range_ = Primitive("range", differentiable=False)  # scalar start, limit, delta of one dtype

_RANGE_DTYPES = ("int16", "int32", "int64", "float32", "float64")


@range_.infer
def _(start, limit, delta):
    if any(t.ndim != 0 for t in (start, limit, delta)):
        raise InferError(f"arange: start, stop and step must be scalars, got shapes "
                         f"{start.shape}, {limit.shape}, {delta.shape}")
    if len({start.dtype, limit.dtype, delta.dtype}) != 1 or start.dtype not in _RANGE_DTYPES:
        raise InferError(f"arange: start, stop and step must share one of the dtypes {_RANGE_DTYPES}, "
                         f"got {start.dtype}, {limit.dtype}, {delta.dtype}")
    length = None
    if all(isinstance(t, Constant) for t in (start, limit, delta)):
        s, e, d = (t.value.item() for t in (start, limit, delta))
        if d == 0:
            raise InferError("arange: step must not be zero")
        # float lengths depend on the engine's rounding of (stop - start) / step: leave them open
        if dtypes.is_int(start.dtype):
            length = max(-((s - e) // d), 0)
    return (length,), start.dtype


@range_.lower
def _(ctx, node, start, limit, delta):
    return ctx.op("Range", start, limit, delta)


# -- one-hot --------------------------------------------------------------------------------
one_hot = Primitive("one_hot", differentiable=False)  # out-of-range indices give all zeros, as TF


@one_hot.infer
def _(indices, depth, dtype):
    if not dtypes.is_int(indices.dtype):
        raise InferError(f"one_hot: indices must be an integer tensor, got {indices.dtype}")
    if depth < 1:
        raise InferError(f"one_hot: the number of classes must be positive, got {depth}")
    return indices.shape + (depth,), dtypes.normalize(dtype, "one_hot")


@one_hot.lower
def _(ctx, node, indices):
    # Equal against 0..depth-1 rather than ONNX OneHot, which wraps negative indices around
    depth, rank = node.attrs["depth"], node.inputs[0].ndim
    index_dtype = node.inputs[0].dtype
    if index_dtype not in ("int32", "int64"):
        indices, index_dtype = ctx.cast(indices, "int64"), "int64"
    classes = ctx.const(np.arange(depth, dtype=index_dtype), hint="classes")
    hit = ctx.op("Equal", ctx.op("Unsqueeze", indices, ctx.int64s([rank])), classes)
    return ctx.cast(hit, node.outputs[0].dtype)
