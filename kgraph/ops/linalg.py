"""Matrix products."""
from .elementwise import broadcast_shapes, unbroadcast
from .primitive import InferError, Primitive
from .shape import transpose

matmul = Primitive("matmul")  # numpy matmul on rank >= 2 operands, batch dims broadcast


@matmul.infer
def _(a, b):
    if a.ndim < 2 or b.ndim < 2:
        raise InferError(f"matmul: operands must have rank >= 2, got shapes {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise InferError(f"matmul: dtypes differ: {a.dtype} and {b.dtype}")
    k1, k2 = a.shape[-1], b.shape[-2]
    if k1 is not None and k2 is not None and k1 != k2:
        raise InferError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2], where="matmul")
    return batch + (a.shape[-2], b.shape[-1]), a.dtype


@matmul.lower
def _(ctx, node, a, b):
    return ctx.op("MatMul", a, b)


def swap_last(x):
    perm = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return transpose(x, perm=perm)


@matmul.vjp
def _(node, g):
    a, b = node.inputs
    return [unbroadcast(matmul(g, swap_last(b)), a.shape), unbroadcast(matmul(swap_last(a), g), b.shape)]
