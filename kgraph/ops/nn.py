"""Neural-network primitives: activations with native ONNX ops, (log-)softmax, picking along an
axis (sparse cross-entropy) and in_top_k.  Losses, normalization and bias_add are compositions
in the backend."""
import numpy as np

from .. import dtypes
from .elementwise import add, div, greater, mul, scalar_like, square, sub, where, zeros_like_
from .pool import max_pool, max_pool_grad
from .primitive import InferError, Primitive
from .reduce import reduce_sum
from .shape import transpose


def _float_unary(name, onnx_op, float_attrs=(), lower=None):
    prim = Primitive(name)

    @prim.infer
    def _(x, **attrs):
        if not dtypes.is_float(x.dtype):
            raise InferError(f"{name}: expects a float tensor, got {x.dtype}")
        return x.shape, x.dtype

    @prim.lower
    def _(ctx, node, x):
        if lower is not None:
            return lower(ctx, node, x)
        return ctx.op(onnx_op, x, **{k: float(node.attrs[k]) for k in float_attrs})

    return prim


def _lower_elu(ctx, node, x):
    # ONNX Runtime's Elu takes exp(x) - 1 in float32 with its own exp: up to 1597 ulps off next to
    # 0 (cancellation) and 1 ulp off elsewhere, so Keras's selu (scale * K.elu(x, alpha)) missed
    # its float32 value by 2 ulps.  The negative branch is expm1 in float64 through Kahan's
    # (u - 1) * x / log(u), u = e^x (exact to float32 rounding), then alpha times it in x's dtype:
    # TF's K.elu is where(x > 0, elu(x), alpha * elu(x)), in that order.
    from onnx import TensorProto
    dtype = node.inputs[0].dtype
    wide = x if dtype == "float64" else ctx.op("Cast", x, to=TensorProto.DOUBLE)
    # below -40 expm1 is -1 in float64 already; the clip keeps e^x from underflowing to 0, where
    # Kahan's form would give -0, and from overflowing on the positive side that Where drops
    negative = ctx.op("Clip", wide, ctx.scalar(-40.0, "float64"), ctx.scalar(0.0, "float64"))
    u = ctx.op("Exp", negative)
    one = ctx.scalar(1.0, "float64")
    kahan = ctx.op("Div", ctx.op("Mul", ctx.op("Sub", u, one), negative), ctx.op("Log", u))
    expm1 = ctx.op("Where", ctx.op("Equal", u, one), negative, kahan)  # |x| < 2^-53: expm1(x) = x
    if dtype != "float64":
        expm1 = ctx.op("Cast", expm1, to=dtypes.to_onnx(dtype))
    alpha = float(node.attrs["alpha"])
    if alpha != 1.0:
        expm1 = ctx.op("Mul", expm1, ctx.scalar(alpha, dtype))
    return ctx.op("Where", ctx.op("Greater", x, ctx.scalar(0.0, dtype)), x, expm1)


def _lower_hard_sigmoid(ctx, node, x):
    alpha, beta = float(node.attrs["alpha"]), float(node.attrs["beta"])
    dtype = node.inputs[0].dtype
    if dtype != "float64":
        return ctx.op("HardSigmoid", x, alpha=alpha, beta=beta)
    # HardSigmoid's attributes are float32 (0.2 is then 2.98e-9 off); Keras's TF backend computes
    # clip(0.2 x + 0.5, 0, 1) in x's dtype
    y = ctx.op("Add", ctx.op("Mul", x, ctx.scalar(alpha, dtype)), ctx.scalar(beta, dtype))
    return ctx.op("Clip", y, ctx.scalar(0.0, dtype), ctx.scalar(1.0, dtype))


relu = _float_unary("relu", "Relu")
leaky_relu = _float_unary("leaky_relu", "LeakyRelu", ("alpha",))  # x > 0 ? x : alpha x
elu = _float_unary("elu", "Elu", ("alpha",), _lower_elu)        # x > 0 ? x : alpha (e^x - 1)
softsign = _float_unary("softsign", "Softsign")                   # x / (1 + |x|)
hard_sigmoid = _float_unary("hard_sigmoid", "HardSigmoid", ("alpha", "beta"), _lower_hard_sigmoid)


def _positive(x):
    return greater(x, scalar_like(0, x))


def _max_pool_grad_of(y, g):
    """(max_pool_grad node, perm) when ``g`` is max_pool_grad(gp, y) — or, in channels_last,
    transpose(max_pool_grad(gp, transpose(y)), perm) with the inverse perm — else None."""
    src, perm = g.node, None
    if src is not None and src.primitive is transpose:
        perm, src = tuple(src.attrs["perm"]), src.inputs[0].node
    if src is None or src.primitive is not max_pool_grad:
        return None
    pooled = src.inputs[1]
    if perm is None:
        return (src, None) if pooled is y else None
    inner = pooled.node
    if inner is None or inner.primitive is not transpose or inner.inputs[0] is not y or \
            tuple(inner.attrs["perm"][p] for p in perm) != tuple(range(y.ndim)):
        return None
    return src, perm


@relu.vjp
def _(node, g):
    # g * (x > 0), as TF's ReluGrad: ORT's Mul runs ~1.8x faster than a Where select
    from .elementwise import cast
    x, y = node.inputs[0], node.outputs[0]
    routed = _max_pool_grad_of(y, g)
    if routed is not None:
        # relu → max pool: the pool's gradient lands only on cells equal to their window's max,
        # so the mask is read on the pooled output (the forward's, shared) before the scatter:
        # the same products, ties and all, on a window's size times fewer cells
        src, perm = routed
        gp, pooled = src.inputs
        mask = cast(_positive(max_pool(pooled, **src.attrs)), dtype=gp.dtype)
        dx = max_pool_grad(mul(gp, mask), pooled, **src.attrs)
        return [dx if perm is None else transpose(dx, perm=perm)]
    return [mul(g, cast(_positive(x), dtype=g.dtype))]


@leaky_relu.vjp
def _(node, g):
    # TF's LeakyReluGrad: x > 0 ? g : alpha g
    x = node.inputs[0]
    return [where(_positive(x), g, mul(g, scalar_like(node.attrs["alpha"], g)))]


@elu.vjp
def _(node, g):
    # for x <= 0, d/dx alpha (e^x - 1) = alpha e^x = y + alpha
    x, y = node.inputs[0], node.outputs[0]
    return [where(_positive(x), g, mul(g, add(y, scalar_like(node.attrs["alpha"], y))))]


@softsign.vjp
def _(node, g):
    from .elementwise import abs_
    x = node.inputs[0]
    return [div(g, square(add(scalar_like(1, x), abs_(x))))]


@hard_sigmoid.vjp
def _(node, g):
    # slope alpha inside [0, 1] (boundaries included, as TF's clip_by_value passes them)
    from .elementwise import greater_equal, less_equal, logical_and
    x = node.inputs[0]
    a, b = node.attrs["alpha"], node.attrs["beta"]
    z = add(mul(x, scalar_like(a, x)), scalar_like(b, x))
    inside = logical_and(greater_equal(z, scalar_like(0, z)), less_equal(z, scalar_like(1, z)))
    return [where(inside, mul(g, scalar_like(a, g)), zeros_like_(g))]


def _axis_infer(name):
    def rule(x, axis):
        if not dtypes.is_float(x.dtype):
            raise InferError(f"{name}: expects a float tensor, got {x.dtype}")
        if not 0 <= axis < x.ndim:
            raise InferError(f"{name}: axis {axis} is out of range for a tensor of rank {x.ndim}")
        return x.shape, x.dtype
    return rule


softmax = Primitive("softmax")
log_softmax = Primitive("log_softmax")
softmax.infer(_axis_infer("softmax"))
log_softmax.infer(_axis_infer("log_softmax"))


@softmax.lower
def _(ctx, node, x):
    return ctx.op("Softmax", x, axis=node.attrs["axis"])


@log_softmax.lower
def _(ctx, node, x):
    # x - max - log(sum(exp(x - max))) written out: onnx.reference evaluates LogSoftmax as
    # log(softmax(x)), which is -inf for saturated logits; this form is finite on every engine
    axes = [node.attrs["axis"]]
    shifted = ctx.op("Sub", x, ctx.reduce("ReduceMax", x, axes, keepdims=True))
    return ctx.op("Sub", shifted, ctx.op("Log", ctx.reduce("ReduceSum", ctx.op("Exp", shifted), axes, keepdims=True)))


@softmax.vjp
def _(node, g):
    y, axis = node.outputs[0], node.attrs["axis"]
    return [mul(y, sub(g, reduce_sum(mul(g, y), axes=(axis,), keepdims=True)))]


@log_softmax.vjp
def _(node, g):
    from .elementwise import exp
    y, axis = node.outputs[0], node.attrs["axis"]
    return [sub(g, mul(exp(y), reduce_sum(g, axes=(axis,), keepdims=True)))]


# -- picking one entry along an axis (sparse categorical cross-entropy) -------------------------
pick_along_axis = Primitive("pick_along_axis")      # out[..] = x[.., indices[..], ..]
scatter_along_axis = Primitive("scatter_along_axis")  # the adjoint: zeros like x, g at the picks


def _picked_shape(x, indices, axis, where_):
    if not 0 <= axis < x.ndim:
        raise InferError(f"{where_}: axis {axis} is out of range for a tensor of rank {x.ndim}")
    if not dtypes.is_int(indices.dtype):
        raise InferError(f"{where_}: indices must be an int tensor, got {indices.dtype}")
    rest = x.shape[:axis] + x.shape[axis + 1:]
    if indices.ndim != len(rest) or any(a is not None and b is not None and a != b
                                         for a, b in zip(indices.shape, rest)):
        raise InferError(f"{where_}: indices of shape {indices.shape} do not match {rest}, the shape "
                         f"of the output {x.shape} without axis {axis}")
    return tuple(a if a is not None else b for a, b in zip(indices.shape, rest))


@pick_along_axis.infer
def _(x, indices, axis):
    return _picked_shape(x, indices, axis, "pick_along_axis"), x.dtype


@pick_along_axis.lower
def _(ctx, node, x, indices):
    axis = node.attrs["axis"]
    idx = ctx.op("Unsqueeze", ctx.cast(indices, "int64"), ctx.int64s([axis]))
    picked = ctx.op("GatherElements", x, idx, axis=axis)
    return ctx.op("Squeeze", picked, ctx.int64s([axis]))


@pick_along_axis.vjp
def _(node, g):
    x, indices = node.inputs
    return [scatter_along_axis(g, indices, x, axis=node.attrs["axis"]), None]


@scatter_along_axis.infer
def _(g, indices, like, axis):
    _picked_shape(like, indices, axis, "scatter_along_axis")
    return like.shape, g.dtype


@scatter_along_axis.lower
def _(ctx, node, g, indices, like):
    axis = node.attrs["axis"]
    zeros = ctx.op("Expand", ctx.const(np.zeros((1,), dtype=node.outputs[0].dtype)), ctx.op("Shape", like))
    idx = ctx.op("Unsqueeze", ctx.cast(indices, "int64"), ctx.int64s([axis]))
    upd = ctx.op("Unsqueeze", g, ctx.int64s([axis]))
    # one pick per position along the axis, so no two updates meet: no reduction needed
    return ctx.op("ScatterElements", zeros, idx, upd, axis=axis)


@scatter_along_axis.vjp
def _(node, g):
    _, indices, _ = node.inputs
    return [pick_along_axis(g, indices, axis=node.attrs["axis"]), None, None]


# -- in_top_k ------------------------------------------------------------------------------------
in_top_k = Primitive("in_top_k", differentiable=False)


@in_top_k.infer
def _(predictions, targets, k):
    if predictions.ndim != 2 or not dtypes.is_float(predictions.dtype):
        raise InferError(f"in_top_k: predictions must be a 2-D float tensor, got {predictions.dtype} "
                         f"of shape {predictions.shape}")
    if targets.ndim != 1 or not dtypes.is_int(targets.dtype):
        raise InferError(f"in_top_k: targets must be a 1-D int tensor, got {targets.dtype} of shape "
                         f"{targets.shape}")
    n0, n1 = predictions.shape[0], targets.shape[0]
    if n0 is not None and n1 is not None and n0 != n1:
        raise InferError(f"in_top_k: {n1} targets for {n0} rows of predictions")
    return (n0 if n0 is not None else n1,), "bool"


@in_top_k.lower
def _(ctx, node, predictions, targets):
    """TF's rule: target t of row r is in the top k iff fewer than k predictions of the row are
    strictly greater than predictions[r, t] (so ties at the boundary all count as in), and the
    answer is False when t is out of range or any prediction of the row is not finite."""
    k = node.attrs["k"]
    dtype = node.inputs[0].dtype
    t = ctx.cast(targets, "int64")
    classes = ctx.op("Slice", ctx.op("Shape", predictions), ctx.int64s([1]), ctx.int64s([2]))
    zero = ctx.scalar(0, np.int64)
    valid = ctx.op("And", ctx.op("GreaterOrEqual", t, zero), ctx.op("Less", t, classes))
    safe = ctx.op("Unsqueeze", ctx.op("Where", valid, t, zero), ctx.int64s([1]))
    target_pred = ctx.op("GatherElements", predictions, safe, axis=1)
    greater_count = ctx.reduce("ReduceSum", ctx.cast(ctx.op("Greater", predictions, target_pred), "int64"),
                               [1], keepdims=False)
    # x - x is 0 for finite x and NaN for inf/NaN: a row is finite iff that sums to 0 (not NaN)
    diff_sum = ctx.reduce("ReduceSum", ctx.op("Sub", predictions, predictions), [1], keepdims=False)
    finite = ctx.op("Equal", diff_sum, ctx.const(np.zeros((), dtype=dtype)))
    in_top = ctx.op("Less", greater_count, ctx.scalar(k, np.int64))
    return ctx.op("And", ctx.op("And", valid, finite), in_top)

