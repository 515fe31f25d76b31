"""Reductions over static axes (normalized, non-negative, sorted by the backend), and scans."""
import numpy as np
from onnx import TensorProto, helper

from .. import dtypes
from .elementwise import cast, div, equal, mul
from .primitive import InferError, Primitive
from .shape import expand_like


def reduced_shape(shape, axes, keepdims):
    axes = range(len(shape)) if axes is None else axes
    return tuple((1 if keepdims else None) if i in axes else d for i, d in enumerate(shape)
                 if keepdims or i not in axes)


def reduction(name, onnx_op, *, differentiable=True):
    prim = Primitive(name, differentiable=differentiable)

    @prim.infer
    def _(x, axes=None, keepdims=False):
        if axes is not None and any(not 0 <= a < x.ndim for a in axes):
            raise InferError(f"{name}: axes {axes} out of range for rank {x.ndim}")
        if onnx_op in ("ReduceSum", "ReduceMean", "ReduceProd") and x.dtype == "bool":
            raise InferError(f"{name}: expects a numeric tensor, got bool")
        return reduced_shape(x.shape, axes, keepdims), x.dtype

    @prim.lower
    def _(ctx, node, x):
        return ctx.reduce(onnx_op, x, node.attrs.get("axes"), node.attrs.get("keepdims", False))

    return prim


reduce_sum = reduction("reduce_sum", "ReduceSum")
reduce_mean = reduction("reduce_mean", "ReduceMean")
reduce_max = reduction("reduce_max", "ReduceMax")
reduce_min = reduction("reduce_min", "ReduceMin")
reduce_prod = reduction("reduce_prod", "ReduceProd")


def keepdims_grad(node, g):
    """``g`` reshaped to the keepdims form of the reduction and broadcast back to the input."""
    x = node.inputs[0]
    if not node.attrs.get("keepdims", False):
        g = reshape_like_keepdims(g, x, node.attrs.get("axes"))
    return expand_like(g, x)


def reshape_like_keepdims(g, x, axes):
    from .shape import unsqueeze
    axes = tuple(range(x.ndim)) if axes is None else tuple(axes)
    return unsqueeze(g, axes=axes) if axes else g


@reduce_sum.vjp
def _(node, g):
    return [keepdims_grad(node, g)]


@reduce_mean.vjp
def _(node, g):
    x = node.inputs[0]
    y = node.outputs[0]
    # count = size(x) / size(y), computed at run time so unknown dims work
    count = div(cast(size_of(x), dtype=g.dtype), cast(size_of(y), dtype=g.dtype))
    return [keepdims_grad(node, div(g, count))]


def _extremum_vjp(node, g):
    x, y = node.inputs[0], node.outputs[0]
    axes, keep = node.attrs.get("axes"), node.attrs.get("keepdims", False)
    y_full = expand_like(y if keep else reshape_like_keepdims(y, x, axes), x)
    hit = cast(equal(x, y_full), dtype=g.dtype)
    # ties share the gradient equally
    ties = reduce_sum(hit, axes=axes, keepdims=True)
    return [mul(hit, div(keepdims_grad(node, g), expand_like(ties, x)))]


reduce_max.vjp(_extremum_vjp)
reduce_min.vjp(_extremum_vjp)


@reduce_prod.vjp
def _(node, g):
    # d prod / d x_j is the product of the others; y / x_j is that only where no x is 0.  Exact
    # everywhere: lanes without zeros use y / x, a lane with one zero sends the product of its
    # nonzero entries to that zero only, lanes with two or more zeros have zero gradient.
    from .elementwise import logical_and, scalar_like, where
    x = node.inputs[0]
    axes = node.attrs.get("axes")
    zero, one = scalar_like(0, x), scalar_like(1, x)
    is_zero = equal(x, zero)
    zero_count = reduce_sum(cast(is_zero, dtype=x.dtype), axes=axes, keepdims=True)
    safe = where(is_zero, one, x)
    nonzero_product = reduce_prod(safe, axes=axes, keepdims=True)
    grad = where(equal(zero_count, zero), div(nonzero_product, safe),
                 where(logical_and(is_zero, equal(zero_count, one)), nonzero_product, zero))
    return [mul(keepdims_grad(node, g), grad)]


size_of = Primitive("size_of", differentiable=False)


@size_of.infer
def _(x):
    return (), "int64"


@size_of.lower
def _(ctx, node, x):
    return ctx.op("Size", x)


argmax = Primitive("argmax", differentiable=False)
argmin = Primitive("argmin", differentiable=False)


def _arg_infer(x, axis, keepdims=False):
    if not 0 <= axis < x.ndim:
        raise InferError(f"argmax/argmin: axis {axis} out of range for rank {x.ndim}")
    return reduced_shape(x.shape, (axis,), keepdims), "int64"


for _prim, _op in ((argmax, "ArgMax"), (argmin, "ArgMin")):
    _prim.infer(_arg_infer)
    _prim.lower(lambda ctx, node, x, _op=_op: ctx.op(_op, x, axis=node.attrs["axis"],
                                                    keepdims=int(node.attrs.get("keepdims", False))))


# -- scans ----------------------------------------------------------------------------------------
cumsum = Primitive("cumsum")  # inclusive running sum along ``axis``; ``reverse`` runs from the end
cumprod = Primitive("cumprod")  # inclusive running product along ``axis``


def _scan_infer(name):
    def rule(x, axis, reverse=False):
        if not 0 <= axis < x.ndim:
            raise InferError(f"{name}: axis {axis} out of range for rank {x.ndim}")
        if x.dtype == "bool":
            raise InferError(f"{name}: expects a numeric tensor, got bool")
        return x.shape, x.dtype
    return rule


cumsum.infer(_scan_infer("cumsum"))
cumprod.infer(_scan_infer("cumprod"))


@cumsum.lower
def _(ctx, node, x):
    return ctx.op("CumSum", x, ctx.scalar(node.attrs["axis"], np.int64),
                  reverse=int(bool(node.attrs.get("reverse", False))))


@cumsum.vjp
def _(node, g):
    return [cumsum(g, axis=node.attrs["axis"], reverse=not node.attrs.get("reverse", False))]


@cumprod.lower
def _(ctx, node, x):
    # ONNX has no CumProd (up to opset 21).  Hillis-Steele scan: ceil(log2 n) steps of
    # y *= (y shifted by s along the axis, ones in front), s = 1, 2, 4, ...; after the step with
    # shift s each y[i] is the product of x[i-2s+1 .. i].  Exact for integers, n log n work.
    t = node.inputs[0]
    axis, n = node.attrs["axis"], t.shape[node.attrs["axis"]]
    if n is None:
        return _cumprod_loop(ctx, x, t, axis)
    y, shift = ctx.op("Identity", x), 1
    while shift < n:  # known length: the steps unrolled
        y = _times_shifted(ctx, y, t, axis, ctx.int64s(_shift_pads(t.ndim, axis, shift)), ctx.int64s([n]))
        shift *= 2
    return y


def _shift_pads(rank, axis, shift):
    return [shift if i == axis else 0 for i in range(2 * rank)]


def _times_shifted(ctx, y, t, axis, pads, length):
    """``y * (y shifted along axis by the leading pad, ones shifted in)``; ``t`` (the IR input)
    gives the dtype, ``length`` ([1] int64) the length of the axis."""
    shifted = ctx.op("Pad", y, pads, ctx.scalar(1, t.dtype))
    shifted = ctx.op("Slice", shifted, ctx.int64s([0]), length, ctx.int64s([axis]))
    return ctx.op("Mul", y, shifted)


def _cumprod_loop(ctx, x, t, axis):
    """Unknown length: the same steps in an ONNX Loop that runs while the shift is below it."""
    body = ctx.child()
    body.current = ctx.current  # names body nodes after the primitive
    step, cond_in, y_in, shift_in = (body.fresh(h) for h in ("step", "cond", "y", "shift"))
    length = body.op("Slice", body.op("Shape", y_in), body.int64s([axis]), body.int64s([axis + 1]))
    # the pads vector with the run-time shift at the axis's leading position
    pads = body.op("Mul", body.int64s(_shift_pads(t.ndim, axis, 1)), shift_in)
    y_out = _times_shifted(body, y_in, t, axis, pads, length)
    shift_out = body.op("Add", shift_in, shift_in)
    cond_out = body.op("Squeeze", body.op("Less", shift_out, length))
    elem = dtypes.to_onnx(t.dtype)
    graph = helper.make_graph(
        body.nodes, body.fresh("cumprod_body"),
        [helper.make_tensor_value_info(step, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
         helper.make_tensor_value_info(y_in, elem, [None] * t.ndim),
         helper.make_tensor_value_info(shift_in, TensorProto.INT64, [1])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(y_out, elem, [None] * t.ndim),
         helper.make_tensor_value_info(shift_out, TensorProto.INT64, [1])])
    length = ctx.op("Slice", ctx.op("Shape", x), ctx.int64s([axis]), ctx.int64s([axis + 1]))
    first = ctx.int64s([1])
    start = ctx.op("Squeeze", ctx.op("Less", first, length))
    y, _ = ctx.op("Loop", "", start, x, first, body=graph, outputs=2)
    return y


@cumprod.vjp
def _(node, g):
    # d out[i] / d x[j] (j <= i) is the product of x[0..i] without x[j].  Before the first zero of
    # a lane that is out[i] / x[j]; at the first zero it is the running product with that zero
    # read as 1; after it, 0 (every such product holds the first zero).  Exact with zeros, unlike
    # the usual reverse-cumsum(g * out) / x.
    from .elementwise import logical_and, scalar_like, where
    x, out = node.inputs[0], node.outputs[0]
    axis = node.attrs["axis"]
    zero, one = scalar_like(0, x), scalar_like(1, x)
    is_zero = equal(x, zero)
    zeros_so_far = cumsum(cast(is_zero, dtype=x.dtype), axis=axis)
    before_first_zero = equal(zeros_so_far, zero)
    first_zero = logical_and(is_zero, equal(zeros_so_far, one))
    grad_before = div(cumsum(mul(g, out), axis=axis, reverse=True), where(is_zero, one, x))
    skipping_first_zero = cumprod(where(first_zero, one, x), axis=axis)
    grad_at_first = cumsum(mul(g, skipping_first_zero), axis=axis, reverse=True)
    return [where(before_first_zero, grad_before, where(first_zero, grad_at_first, zero))]
