"""Matrix products and indexing along axis 0."""
import numpy as np

from .elementwise import broadcast_shapes, unbroadcast
from .primitive import InferError, Primitive
from .shape import reshape, transpose

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
    if b.ndim == 2 and a.ndim > 2 and a.shape[-1] is not None and b.shape[-1] is not None:
        # (..., m, k) @ (k, n): the batch dims are more rows, so b's gradient is one product over
        # all of them, not one per batch entry summed afterwards
        rows_a, rows_g = reshape(a, shape=(-1, a.shape[-1])), reshape(g, shape=(-1, b.shape[-1]))
        return [matmul(g, swap_last(b)), matmul(swap_last(rows_a), rows_g)]
    return [unbroadcast(matmul(g, swap_last(b)), a.shape), unbroadcast(matmul(swap_last(a), g), b.shape)]


# -- indexing along axis 0 --------------------------------------------------------------------
gather = Primitive("gather")  # reference[indices] along axis 0; indices of any shape, negatives wrap


@gather.infer
def _(reference, indices):
    if reference.ndim < 1:
        raise InferError(f"gather: reference must have rank >= 1, got shape {reference.shape}")
    if indices.dtype not in ("int32", "int64"):
        raise InferError(f"gather: indices must be int32 or int64, got {indices.dtype}")
    return indices.shape + reference.shape[1:], reference.dtype


@gather.lower
def _(ctx, node, reference, indices):
    return ctx.op("Gather", reference, indices, axis=0)


@gather.vjp
def _(node, g):
    reference, indices = node.inputs
    return [gather_grad(g, reference, indices), None]


gather_grad = Primitive("gather_grad")  # scatter-add ``g`` into zeros shaped like ``like``


@gather_grad.infer
def _(g, like, indices):
    return like.shape, g.dtype


@gather_grad.lower
def _(ctx, node, g, like, indices):
    shape = ctx.op("Shape", like)
    zeros = ctx.op("Expand", ctx.const(np.zeros((1,), node.outputs[0].dtype)), shape)
    # ScatterND wants in-range indices: wrap negatives the way Gather read them
    idx = ctx.cast(indices, "int64") if node.inputs[2].dtype != "int64" else indices
    zero = ctx.scalar(0, np.int64)
    rows = ctx.op("Gather", shape, zero, axis=0)
    idx = ctx.op("Where", ctx.op("Less", idx, zero), ctx.op("Add", idx, rows), idx)
    idx = ctx.op("Unsqueeze", idx, ctx.int64s([-1]))
    # repeated indices must accumulate, hence reduction="add" (ScatterND has it from opset 16)
    return ctx.op("ScatterND", zeros, idx, g, reduction="add")


@gather_grad.vjp
def _(node, g):
    return [gather(g, node.inputs[2]), None, None]
