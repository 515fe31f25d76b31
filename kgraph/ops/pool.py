"""Pooling primitives in ONNX's layout, (N, C, *spatial), with the geometry and padding rules of
``conv.py`` (explicit TF SAME pads, or ``"same"`` resolved at run time).

    max_pool(x)               windows' maxima; max_pool_grad(g, x) routes each window's g to its
                              first maximal cell (TF's MaxPoolGrad), max_pool_select(t, x) reads t
                              there (the gradient's own gradient)
    avg_pool(x)               windows' means over the cells inside x; avg_pool_grad(g, x) its adjoint
"""
import numpy as np

from .conv import (NATIVE_DTYPES, _arith, _check_geometry, _concat_dims, _emit_transpose, _pad, _pads_of,
                   _spatial_of, _vec, _windows, conv_output_spatial)
from .primitive import InferError, Primitive


def _pool_infer(name):
    def rule(x, *rest, kernel_shape, strides, pads):
        nd = len(kernel_shape)
        _check_geometry(name, x, nd, strides, (1,) * nd, pads)
        if min(kernel_shape) < 1:
            raise InferError(f"{name}: pool size {kernel_shape} must be positive")
        return x.shape[:2] + conv_output_spatial(name, x.shape[2:], kernel_shape, strides, (1,) * nd, pads)
    return rule


def _pool_primitive(name, shape_of_input):
    """``shape_of_input``: the primitive's output is shaped like its last input (a gradient)
    rather than like the pooled output."""
    prim = Primitive(name)
    pooled = _pool_infer(name)

    @prim.infer
    def _(*inputs, kernel_shape, strides, pads):
        x = inputs[-1]
        if shape_of_input:
            pooled(x, kernel_shape=kernel_shape, strides=strides, pads=pads)
            return x.shape, inputs[0].dtype
        return pooled(x, kernel_shape=kernel_shape, strides=strides, pads=pads), x.dtype
    return prim


max_pool = _pool_primitive("max_pool", False)            # (x)
max_pool_grad = _pool_primitive("max_pool_grad", True)   # (g, x): g scattered to x's argmaxes
max_pool_select = _pool_primitive("max_pool_select", False)  # (t, x): t read at x's argmaxes
avg_pool = _pool_primitive("avg_pool", False)            # (x); padded cells are not counted
avg_pool_grad = _pool_primitive("avg_pool_grad", True)   # (g, x): the adjoint of avg_pool

max_pool.vjp(lambda node, g: [max_pool_grad(g, node.inputs[0], **node.attrs)])
max_pool_grad.vjp(lambda node, g: [max_pool_select(g, node.inputs[1], **node.attrs), None])
max_pool_select.vjp(lambda node, g: [max_pool_grad(g, node.inputs[1], **node.attrs), None])
avg_pool.vjp(lambda node, g: [avg_pool_grad(g, node.inputs[0], **node.attrs)])
avg_pool_grad.vjp(lambda node, g: [avg_pool(g, **node.attrs), None])


# == lowering ==================================================================================
def _pool_attrs(node):
    a = node.attrs
    return tuple(a["kernel_shape"]), tuple(a["strides"])


@max_pool.lower
def _(ctx, node, x):
    kernel, strides = _pool_attrs(node)
    xt = node.inputs[0]
    begin, end = _pads_of(ctx, node, x, xt.shape, kernel, (1,) * len(kernel))
    if not isinstance(begin, tuple):
        x = _pad(ctx, x, begin, end, ctx.const(np.array(-np.inf, dtype=xt.dtype)))
        begin = end = (0,) * len(kernel)
    return ctx.op("MaxPool", x, kernel_shape=list(kernel), strides=list(strides), pads=list(begin + end))


def _tiled_argmax(ctx, x, dtype, xshape, grid, kernel, strides, begin):
    """The flat index into x (N, C, *S) of each window's first maximum in row-major window order
    (the cell TF's MaxPoolGrad routes a window's gradient to), shaped like the pooled output; None
    unless the windows tile x from its origin (stride = kernel, no begin padding, static sizes).

    ORT's MaxPool with an Indices output runs a scalar loop, ~10x its plain MaxPool; the window
    cells moved onto one axis (SpaceToDepth, else a Transpose) and an ArgMax over it cost a third
    of that, and ArgMax picks the first of tied maxima as TF does."""
    nd = len(kernel)
    spatial, grid = tuple(xshape[2:]), tuple(grid)
    if tuple(strides) != tuple(kernel) or not isinstance(begin, tuple) or any(begin) or \
            None in spatial + grid:
        return None
    cover = tuple(n * k for n, k in zip(grid, kernel))
    lead = tuple(xshape[:2])
    lead_dims = ctx.op("Slice", ctx.op("Shape", x), ctx.int64s([0]), ctx.int64s([2])) if None in lead else None
    # SAME's end padding as -inf: every window's first cell lies inside x, so a padding cell is
    # never a window's first maximum; VALID's tail that no window reaches is cut off
    short = tuple(max(0, c - s) for c, s in zip(cover, spatial))
    if any(short):
        x = _pad(ctx, x, (0,) * nd, short, ctx.const(np.array(-np.inf, dtype=dtype)))
    if any(c < s for c, s in zip(cover, spatial)):
        x = ctx.op("Slice", x, ctx.int64s([0] * nd), ctx.int64s(cover), ctx.int64s(range(2, 2 + nd)))
    taps = int(np.prod(kernel))
    if nd == 2 and kernel[0] == kernel[1]:
        cells = ctx.op("SpaceToDepth", x, blocksize=kernel[0])  # (N, K·C, *grid), window cell major
    else:
        split = ctx.op("Reshape", x, ctx.int64s([0, 0] + [d for n, k in zip(grid, kernel) for d in (n, k)]))
        cells = ctx.op("Transpose", split, perm=[0] + [3 + 2 * i for i in range(nd)] + [1] +
                       [2 + 2 * i for i in range(nd)])  # (N, *kernel, C, *grid)
    cells = ctx.op("Reshape", cells, ctx.int64s([0, taps, -1]))
    first = ctx.op("ArgMax", cells, axis=1, keepdims=0)  # (N, C·grid): the cell within its window
    # the cell's offset from its window's origin in x: its row-major digits times x's strides
    x_strides = [int(np.prod(spatial[i + 1:])) for i in range(nd)]
    k_strides = [int(np.prod(kernel[i + 1:])) for i in range(nd)]
    offset = first
    for i in range(nd - 1):
        if i == 0 and kernel[0] == 2:  # a comparison: ORT's int64 Div costs 3x as much
            digit = ctx.cast(ctx.op("Greater", first, ctx.scalar(k_strides[0] - 1, np.int64)), "int64")
        else:
            digit = ctx.op("Div", first, ctx.scalar(k_strides[i], np.int64))
        if i:
            digit = ctx.op("Mod", digit, ctx.scalar(kernel[i], np.int64))
        offset = ctx.op("Add", offset, ctx.op("Mul", digit, ctx.scalar(x_strides[i] - k_strides[i], np.int64)))
    # each window's origin: (n·C + c)·|S| + Σ gridᵢ·kᵢ·strideᵢ (constant-folded when N and C are known)
    if lead_dims is not None:
        planes = ctx.reduce("ReduceProd", lead_dims, [0], False)
        pooled_shape = ctx.op("Concat", lead_dims, ctx.int64s(grid), axis=0)
        plane_shape = ctx.op("Concat", lead_dims, ctx.int64s([1] * nd), axis=0)
    else:
        planes = ctx.scalar(lead[0] * lead[1], np.int64)
        pooled_shape = ctx.int64s(lead + grid)
        plane_shape = ctx.int64s(lead + (1,) * nd)
    plane = ctx.op("Range", ctx.scalar(0, np.int64), planes, ctx.scalar(1, np.int64))
    plane = ctx.op("Mul", ctx.op("Reshape", plane, plane_shape), ctx.scalar(int(np.prod(spatial)), np.int64))
    origin = np.zeros((1, 1) + grid, dtype=np.int64)
    for i in range(nd):
        origin += (np.arange(grid[i]) * kernel[i] * x_strides[i]).reshape((-1,) + (1,) * (nd - 1 - i))
    return ctx.op("Add", ctx.op("Add", plane, ctx.const(origin)), ctx.op("Reshape", offset, pooled_shape))


@max_pool_grad.lower
def _(ctx, node, g, x):
    kernel, strides = _pool_attrs(node)
    gt, xt = node.inputs
    nd = len(kernel)
    spatial_axes = ctx.int64s(range(2, 2 + nd))
    begin, end = _pads_of(ctx, node, x, xt.shape, kernel, (1,) * nd)
    # ORT scatters (MaxUnpool, ScatterElements with add) no float16: scatter in float32
    work = "float32" if xt.dtype == "float16" else xt.dtype
    idx = _tiled_argmax(ctx, x, xt.dtype, xt.shape, gt.shape[2:], kernel, strides, begin)
    if idx is not None:
        if work != xt.dtype:
            g = ctx.cast(g, work)
        if work == "float32":
            # MaxUnpool's attributes only size its output: these make that x's shape, the layout
            # the indices address (ORT reads an output_shape input so, onnx.reference does not)
            dx = ctx.op("MaxUnpool", g, idx, kernel_shape=[s - n + 1 for s, n in zip(xt.shape[2:], gt.shape[2:])],
                        strides=[1] * nd, pads=[0] * (2 * nd))
        else:  # one index per window, all distinct: a plain scatter
            zeros = ctx.op("Expand", ctx.const(np.zeros((1,), dtype=work)),
                           ctx.op("Reshape", ctx.op("Size", x), ctx.int64s([1])))
            flat = ctx.op("ScatterElements", zeros, ctx.op("Reshape", idx, ctx.int64s([-1])),
                          ctx.op("Reshape", g, ctx.int64s([-1])), axis=0)
            dx = ctx.op("Reshape", flat, ctx.op("Shape", x))
        return dx if work == xt.dtype else ctx.cast(dx, xt.dtype)
    crop = None
    if not isinstance(begin, tuple):  # run-time SAME: pad with -inf, then cut the padding off dx
        crop = (begin, _arith(ctx, "Add", begin, _spatial_of(ctx, x, xt.shape)))
        x = _pad(ctx, x, begin, end, ctx.const(np.array(-np.inf, dtype=xt.dtype)))
        begin = end = (0,) * nd
    size = _spatial_of(ctx, x, xt.shape if crop is None else (None,) * xt.ndim)
    if work != xt.dtype:
        g = ctx.cast(g, work)
    if all(s >= k for s, k in zip(strides, kernel)) and work == "float32":
        # windows that do not overlap but that _tiled_argmax leaves (gaps between windows, begin
        # padding, run-time sizes): every argmax is hit once, and MaxUnpool (float32 only in ORT)
        # scatters g there, ~7x faster than ScatterElements.  Its output size is the span the
        # windows cover, so cut the input to that span first (the flat indices must index the
        # same layout) and pad the uncovered tail with zeros after.
        grid = _spatial_of(ctx, g, gt.shape)
        cover = _arith(ctx, "Add", _arith(ctx, "Mul", _arith(ctx, "Sub", grid, (1,) * nd), strides),
                       tuple(k - b - e for k, b, e in zip(kernel, begin, end)))
        if isinstance(size, tuple) and isinstance(cover, tuple) and all(
                c == sz or (st == k and e == 0) for c, sz, st, k, e in zip(cover, size, strides, kernel, end)):
            # tiling windows with a tail too short for one: pool one more window, reaching
            # into end padding (its argmax is a tail cell, and its g a zero), so the unpooled
            # size is the input's with no crop of x nor pad of dx
            tail = tuple(sz - c for sz, c in zip(size, cover))
            end = tuple(e + (st - t if t else 0) for e, st, t in zip(end, strides, tail))
            g = _pad(ctx, g, (0,) * nd, tuple(1 if t else 0 for t in tail))
            cover = size
        if cover != size:
            x = ctx.op("Slice", x, ctx.int64s([0] * nd), _vec(ctx, cover), spatial_axes)
        attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(begin + end))
        _, idx = ctx.op("MaxPool", x, outputs=2, **attrs)
        dx = ctx.op("MaxUnpool", g, idx, **attrs)
        dx = _pad(ctx, dx, (0,) * nd, _arith(ctx, "Sub", size, cover))
    else:
        _, idx = ctx.op("MaxPool", x, outputs=2, kernel_shape=list(kernel), strides=list(strides),
                        pads=list(begin + end))
        zeros = ctx.op("Expand", ctx.const(np.zeros((1,), dtype=work)),
                       ctx.op("Reshape", ctx.op("Size", x), ctx.int64s([1])))
        flat = ctx.op("ScatterElements", zeros, ctx.op("Reshape", idx, ctx.int64s([-1])),
                      ctx.op("Reshape", g, ctx.int64s([-1])), axis=0, reduction="add")
        dx = ctx.op("Reshape", flat, ctx.op("Shape", x))
    if work != xt.dtype:
        dx = ctx.cast(dx, xt.dtype)
    if crop is None:
        return dx
    return ctx.op("Slice", dx, _vec(ctx, crop[0]), _vec(ctx, crop[1]), spatial_axes)


@max_pool_select.lower
def _(ctx, node, t, x):
    kernel, strides = _pool_attrs(node)
    xt = node.inputs[1]
    begin, end = _pads_of(ctx, node, x, xt.shape, kernel, (1,) * len(kernel))
    idx = _tiled_argmax(ctx, x, xt.dtype, xt.shape, node.outputs[0].shape[2:], kernel, strides, begin)
    if idx is None:
        if not isinstance(begin, tuple):  # indices then point into the padded input: pad t alike
            x = _pad(ctx, x, begin, end, ctx.const(np.array(-np.inf, dtype=xt.dtype)))
            t = _pad(ctx, t, begin, end)
            begin = end = (0,) * len(kernel)
        _, idx = ctx.op("MaxPool", x, outputs=2, kernel_shape=list(kernel), strides=list(strides),
                        pads=list(begin + end))
    # Gather, not GatherElements: onnx.reference 1.23 evaluates the latter with np.choose, which
    # takes at most 64 choices along the axis
    return ctx.op("Gather", ctx.op("Reshape", t, ctx.int64s([-1])), idx, axis=0)


def _window_total(ctx, xp, dtype, kernel, strides):
    """A quantity proportional to each window's sum (its mean natively, else the sum)."""
    if dtype in NATIVE_DTYPES:
        return ctx.op("AveragePool", xp, kernel_shape=list(kernel), strides=list(strides))
    wins = _windows(ctx, xp, kernel, strides, (1,) * len(kernel))
    return wins[0] if len(wins) == 1 else ctx.op("Sum", *wins)


def _ones_spatial(ctx, x, xt):
    spatial = _spatial_of(ctx, x, xt.shape)
    if isinstance(spatial, tuple):
        return ctx.const(np.ones((1, 1) + spatial, dtype=xt.dtype))
    return ctx.op("Expand", ctx.const(np.ones((1,), dtype=xt.dtype)), _concat_dims(ctx, (1, 1), spatial))


@avg_pool.lower
def _(ctx, node, x):
    kernel, strides = _pool_attrs(node)
    xt = node.inputs[0]
    begin, end = _pads_of(ctx, node, x, xt.shape, kernel, (1,) * len(kernel))
    if isinstance(begin, tuple) and xt.dtype in NATIVE_DTYPES:
        return ctx.op("AveragePool", x, kernel_shape=list(kernel), strides=list(strides),
                      pads=list(begin + end), count_include_pad=0)
    # the sum over the cells inside the input divided by their count
    total = _window_total(ctx, _pad(ctx, x, begin, end), xt.dtype, kernel, strides)
    count = _window_total(ctx, _pad(ctx, _ones_spatial(ctx, x, xt), begin, end), xt.dtype, kernel, strides)
    return ctx.op("Div", total, count)


def _static_window_counts(spatial, kernel, strides, begin, out):
    """How many cells of each window lie inside the input, as a (1, 1, *out) array."""
    counts = np.ones((), dtype=np.int64)
    for size, k, s, b, n in zip(spatial, kernel, strides, begin, out):
        start = np.arange(n) * s - b
        axis = np.minimum(start + k, size) - np.maximum(start, 0)
        counts = np.multiply.outer(counts, axis)
    return counts[None, None]


@avg_pool_grad.lower
def _(ctx, node, g, x):
    kernel, strides = _pool_attrs(node)
    gt, xt = node.inputs
    nd = len(kernel)
    dtype = xt.dtype
    spatial = _spatial_of(ctx, x, xt.shape)
    out_spatial = _spatial_of(ctx, g, gt.shape)
    begin, end = _pads_of(ctx, node, x, xt.shape, kernel, (1,) * nd)
    if all(isinstance(v, tuple) for v in (spatial, out_spatial, begin)):
        count = ctx.const(_static_window_counts(spatial, kernel, strides, begin, out_spatial).astype(dtype))
    else:
        count = _window_total(ctx, _pad(ctx, _ones_spatial(ctx, x, xt), begin, end), dtype, kernel, strides)
        if dtype in NATIVE_DTYPES:
            count = ctx.op("Mul", count, ctx.const(np.array(np.prod(kernel), dtype=dtype)))
    share = ctx.op("Reshape", ctx.op("Div", g, count), _concat_dims(ctx, (-1, 1), out_spatial))
    ones = ctx.const(np.ones((1, 1) + kernel, dtype=dtype))
    dx = _emit_transpose(ctx, share, ones, dtype, (1, 1) + kernel, out_spatial, strides, (1,) * nd, 1,
                         begin, spatial)
    return ctx.op("Reshape", dx, ctx.op("Shape", x))
