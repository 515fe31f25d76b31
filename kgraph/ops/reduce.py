"""Reductions over static axes (normalized, non-negative, sorted by the backend)."""
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
    x, y = node.inputs[0], node.outputs[0]
    axes, keep = node.attrs.get("axes"), node.attrs.get("keepdims", False)
    y_full = expand_like(y if keep else reshape_like_keepdims(y, x, axes), x)
    return [mul(keepdims_grad(node, g), div(y_full, x))]


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

