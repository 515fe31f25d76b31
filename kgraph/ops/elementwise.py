"""Elementwise primitives: unary maps, broadcasting binary ops, comparisons, casts, select."""
import numpy as np

from .. import dtypes
from .primitive import InferError, Primitive


def broadcast_shapes(*shapes, where="broadcast"):
    """numpy broadcasting on static shapes; ``None`` (unknown) broadcasts against anything."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise InferError(f"{where}: shapes {' and '.join(map(str, shapes))} cannot be broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _same_dtype(name, *xs):
    kinds = {x.dtype for x in xs}
    if len(kinds) != 1:
        raise InferError(f"{name}: operands have different dtypes {[x.dtype for x in xs]}")
    return xs[0].dtype


# -- unary ----------------------------------------------------------------------------------
def unary(name, onnx_op, *, floats_only=False, differentiable=True, out_dtype=None):
    prim = Primitive(name, differentiable=differentiable)

    @prim.infer
    def _(x):
        if floats_only and not dtypes.is_float(x.dtype):
            raise InferError(f"{name}: expects a float tensor, got {x.dtype}")
        return x.shape, out_dtype or x.dtype

    @prim.lower
    def _(ctx, node, x):
        return ctx.op(onnx_op, x)

    return prim


neg = unary("neg", "Neg")
abs_ = unary("abs", "Abs")
sign = unary("sign", "Sign", differentiable=False)
exp = unary("exp", "Exp", floats_only=True)
log = unary("log", "Log", floats_only=True)
sqrt = unary("sqrt", "Sqrt", floats_only=True)
sin = unary("sin", "Sin", floats_only=True)
cos = unary("cos", "Cos", floats_only=True)
tanh = unary("tanh", "Tanh", floats_only=True)
sigmoid = unary("sigmoid", "Sigmoid", floats_only=True)
softplus = unary("softplus", "Softplus", floats_only=True)
reciprocal = unary("reciprocal", "Reciprocal", floats_only=True)
floor = unary("floor", "Floor", floats_only=True, differentiable=False)
round_ = unary("round", "Round", floats_only=True, differentiable=False)  # half to even, as TF
logical_not = unary("logical_not", "Not", differentiable=False)


neg.vjp(lambda node, g: [neg(g)])
abs_.vjp(lambda node, g: [mul(g, sign(node.inputs[0]))])
exp.vjp(lambda node, g: [mul(g, node.outputs[0])])
log.vjp(lambda node, g: [div(g, node.inputs[0])])
sqrt.vjp(lambda node, g: [div(g, mul(node.outputs[0], scalar_like(2, node.outputs[0])))])
sin.vjp(lambda node, g: [mul(g, cos(node.inputs[0]))])
cos.vjp(lambda node, g: [neg(mul(g, sin(node.inputs[0])))])
tanh.vjp(lambda node, g: [mul(g, sub(scalar_like(1, g), square(node.outputs[0])))])
sigmoid.vjp(lambda node, g: [mul(g, mul(node.outputs[0], sub(scalar_like(1, g), node.outputs[0])))])
softplus.vjp(lambda node, g: [mul(g, sigmoid(node.inputs[0]))])
reciprocal.vjp(lambda node, g: [neg(mul(g, square(node.outputs[0])))])


# -- binary ---------------------------------------------------------------------------------
def binary(name, onnx_op, *, differentiable=True, compare=False, logical=False):
    prim = Primitive(name, differentiable=differentiable)

    @prim.infer
    def _(a, b):
        dtype = _same_dtype(name, a, b)
        if logical and dtype != "bool":
            raise InferError(f"{name}: expects bool operands, got {dtype}")
        return broadcast_shapes(a.shape, b.shape, where=name), "bool" if compare else dtype

    @prim.lower
    def _(ctx, node, a, b):
        return ctx.op(onnx_op, a, b)

    return prim


add = binary("add", "Add")
sub = binary("sub", "Sub")
mul = binary("mul", "Mul")
div = binary("div", "Div")  # integer operands: truncating, as ONNX Div; backend builds floordiv
pow_ = binary("pow", "Pow")
maximum = binary("maximum", "Max")
minimum = binary("minimum", "Min")
equal = binary("equal", "Equal", differentiable=False, compare=True)
less = binary("less", "Less", differentiable=False, compare=True)
less_equal = binary("less_equal", "LessOrEqual", differentiable=False, compare=True)
greater = binary("greater", "Greater", differentiable=False, compare=True)
greater_equal = binary("greater_equal", "GreaterOrEqual", differentiable=False, compare=True)
logical_and = binary("logical_and", "And", differentiable=False, compare=True, logical=True)
logical_or = binary("logical_or", "Or", differentiable=False, compare=True, logical=True)
logical_xor = binary("logical_xor", "Xor", differentiable=False, compare=True, logical=True)

mod = Primitive("mod")  # floored modulo (Python/numpy/TF floormod sign convention)


@mod.infer
def _(a, b):
    return broadcast_shapes(a.shape, b.shape, where="mod"), _same_dtype("mod", a, b)


@mod.lower
def _(ctx, node, a, b):
    if dtypes.is_float(node.outputs[0].dtype):  # ONNX Mod on floats is C fmod (truncated)
        return ctx.op("Sub", a, ctx.op("Mul", b, ctx.op("Floor", ctx.op("Div", a, b))))
    return ctx.op("Mod", a, b)


@mod.vjp
def _(node, g):
    a, b = node.inputs
    return [unbroadcast(g, a.shape), unbroadcast(neg(mul(g, floor(div(a, b)))), b.shape)]


def unbroadcast(g, shape):
    """Sum ``g`` down to ``shape``: the adjoint of broadcasting (static shapes decide the axes)."""
    from .reduce import reduce_sum
    from .shape import squeeze
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = list(range(lead))
    for i, d in enumerate(shape):
        if d == 1 and g.shape[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        g = reduce_sum(g, axes=tuple(axes), keepdims=True)
    if lead:
        g = squeeze(g, axes=tuple(range(lead)))
    return g


add.vjp(lambda node, g: [unbroadcast(g, node.inputs[0].shape), unbroadcast(g, node.inputs[1].shape)])
sub.vjp(lambda node, g: [unbroadcast(g, node.inputs[0].shape), unbroadcast(neg(g), node.inputs[1].shape)])


@mul.vjp
def _(node, g):
    a, b = node.inputs
    return [unbroadcast(mul(g, b), a.shape), unbroadcast(mul(g, a), b.shape)]


@div.vjp
def _(node, g):
    a, b = node.inputs
    ga = div(g, b)
    return [unbroadcast(ga, a.shape), unbroadcast(neg(mul(ga, node.outputs[0])), b.shape)]


@pow_.vjp
def _(node, g):
    a, b = node.inputs
    out = node.outputs[0]
    ga = mul(g, mul(b, pow_(a, sub(b, scalar_like(1, b)))))
    # d/db a**b = a**b log a; where a == 0 the limit is 0 (for b > 0), not nan
    safe_log = log(where(equal(a, scalar_like(0, a)), scalar_like(1, a), a))
    gb = mul(g, mul(out, safe_log))
    return [unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)]


def _minmax_vjp(pick_a):
    def rule(node, g):
        a, b = node.inputs
        # ties split evenly, so the gradient is the average of both one-sided choices
        ta = cast(pick_a(a, b), dtype=g.dtype)
        tie = cast(equal(a, b), dtype=g.dtype)
        wa = sub(ta, mul(tie, scalar_like(0.5, g)))
        wb = sub(scalar_like(1, g), wa)
        return [unbroadcast(mul(g, wa), a.shape), unbroadcast(mul(g, wb), b.shape)]
    return rule


maximum.vjp(_minmax_vjp(lambda a, b: greater_equal(a, b)))
minimum.vjp(_minmax_vjp(lambda a, b: less_equal(a, b)))


def square(x):
    return mul(x, x)


# -- cast and select ------------------------------------------------------------------------
cast = Primitive("cast")


@cast.infer
def _(x, dtype):
    return x.shape, dtypes.normalize(dtype, "cast")


@cast.lower
def _(ctx, node, x):
    if node.inputs[0].dtype == node.attrs["dtype"]:
        return ctx.op("Identity", x)
    return ctx.cast(x, node.attrs["dtype"])


@cast.vjp
def _(node, g):
    src = node.inputs[0].dtype
    return [cast(g, dtype=src) if dtypes.is_float(src) else None]


where = Primitive("where")


@where.infer
def _(c, a, b):
    if c.dtype != "bool":
        raise InferError(f"where: condition must be bool, got {c.dtype}")
    return broadcast_shapes(c.shape, a.shape, b.shape, where="where"), _same_dtype("where", a, b)


@where.lower
def _(ctx, node, c, a, b):
    return ctx.op("Where", c, a, b)


@where.vjp
def _(node, g):
    c, a, b = node.inputs
    zero = zeros_like_(g)
    return [None, unbroadcast(where(c, g, zero), a.shape), unbroadcast(where(c, zero, g), b.shape)]


# -- constants shaped like tensors -----------------------------------------------------------
def scalar_like(value, like):
    from ..graph import Constant
    return Constant(np.asarray(value, dtype=like.dtype))


zeros_like_ = Primitive("zeros_like", differentiable=False)


@zeros_like_.infer
def _(x):
    return x.shape, x.dtype


@zeros_like_.lower
def _(ctx, node, x):
    # Mul by 0 would turn inf/nan into nan; build from the shape instead
    zero = ctx.const(np.zeros((1,), dtype=node.outputs[0].dtype))
    return ctx.op("Expand", zero, ctx.op("Shape", x))
