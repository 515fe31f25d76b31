"""Sparse (COO) primitives.

A sparse tensor is three dense tensors: ``indices`` (N, rank) int64, ``values`` (N,) and
``dense_shape`` (rank,) int64.  Indices may repeat; repeated entries add up (as in scipy's COO),
which is why densifying scatters with ``reduction="add"``.  The sparse-dense product gathers the
rows of the dense operand that the nonzeros select and scatter-adds them into the result: its
cost is O(nnz · columns), against O(rows · inner · columns) for a densified MatMul.
"""
import numpy as np

from .primitive import InferError, Primitive
from .shape import concat, shape_of, slice_


def _check_indices(indices, where, rank=None):
    if indices.ndim != 2 or indices.dtype != "int64" or (rank is not None and indices.shape[1] not in (rank, None)):
        raise InferError(f"{where}: indices must be an (nnz, {rank or 'rank'}) int64 tensor, got shape "
                         f"{indices.shape} dtype {indices.dtype}")


to_dense = Primitive("sparse_to_dense")  # (indices, values, dense_shape) → dense, static ``shape``


@to_dense.infer
def _(indices, values, dense_shape, shape):
    _check_indices(indices, "sparse_to_dense")
    if dense_shape.ndim != 1 or dense_shape.dtype != "int64" or dense_shape.shape[0] not in (len(shape), None):
        raise InferError(f"sparse_to_dense: dense_shape must be a ({len(shape)},) int64 tensor, got "
                         f"{dense_shape.shape} {dense_shape.dtype}")
    depth = indices.shape[1]
    if depth is not None and (depth > len(shape) or values.ndim != 1 + len(shape) - depth):
        raise InferError(f"sparse_to_dense: indices {indices.shape} and values {values.shape} do not fit "
                         f"a tensor of shape {shape}")
    return tuple(shape), values.dtype


@to_dense.lower
def _(ctx, node, indices, values, dense_shape):
    dtype = node.outputs[0].dtype
    zeros = ctx.op("ConstantOfShape", dense_shape, value=_zero_tensor(dtype))
    # bool has no addition; any other type sums repeated indices, as scipy does
    reduction = None if dtype == "bool" else "add"
    return ctx.op("ScatterND", zeros, indices, values, reduction=reduction)


@to_dense.vjp
def _(node, g):
    return [None, gather_nd(g, node.inputs[0]), None]


def _zero_tensor(dtype):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.zeros((1,), dtype=dtype), "zero")


gather_nd = Primitive("sparse_gather_nd")  # x[indices[n]] for each row n of (N, k) indices


@gather_nd.infer
def _(x, indices):
    _check_indices(indices, "gather_nd")
    depth = indices.shape[1]
    if depth is None:
        raise InferError("gather_nd: the index depth (indices.shape[1]) must be known")
    if depth > x.ndim:
        raise InferError(f"gather_nd: index depth {depth} exceeds the rank of {x.shape}")
    return (indices.shape[0],) + x.shape[depth:], x.dtype


@gather_nd.lower
def _(ctx, node, x, indices):
    return ctx.op("GatherND", x, indices)


@gather_nd.vjp
def _(node, g):
    x, indices = node.inputs
    return [to_dense(indices, g, shape_of(x), shape=x.shape), None]


nonzero_indices = Primitive("sparse_nonzero_indices", differentiable=False)  # (N, rank), row-major


@nonzero_indices.infer
def _(mask):
    if mask.dtype != "bool":
        raise InferError(f"nonzero_indices: expects a bool mask, got {mask.dtype}")
    return (None, mask.ndim), "int64"


@nonzero_indices.lower
def _(ctx, node, mask):
    return ctx.op("Transpose", ctx.op("NonZero", mask), perm=[1, 0])


dense_matmul = Primitive("sparse_dense_matmul")  # (M, K) sparse @ (K, P) dense → (M, P)


@dense_matmul.infer
def _(indices, values, dense_shape, y, rows, inner):
    _check_indices(indices, "dot", rank=2)
    if values.ndim != 1 or dense_shape.shape not in ((2,), (None,)) or y.ndim != 2:
        raise InferError(f"dot: a sparse (M, K) @ dense (K, P) product needs a rank-2 sparse operand and a "
                         f"rank-2 dense one, got values {values.shape} and {y.shape}")
    if values.dtype != y.dtype:
        raise InferError(f"dot: dtypes differ: sparse {values.dtype}, dense {y.dtype}")
    if inner is not None and y.shape[0] is not None and inner != y.shape[0]:
        raise InferError(f"dot: inner dimensions differ: sparse ({rows}, {inner}) @ dense {y.shape}")
    return (rows, y.shape[1]), y.dtype


@dense_matmul.lower
def _(ctx, node, indices, values, dense_shape, y):
    rows, cols = (ctx.op("Gather", indices, ctx.scalar(k, np.int64), axis=1) for k in (0, 1))
    contributions = ctx.op("Mul", ctx.op("Gather", y, cols, axis=0), ctx.op("Unsqueeze", values, ctx.int64s([1])))
    out_shape = ctx.op("Concat", ctx.op("Slice", dense_shape, ctx.int64s([0]), ctx.int64s([1])),
                       ctx.op("Slice", ctx.op("Shape", y), ctx.int64s([1]), ctx.int64s([2])), axis=0)
    zeros = ctx.op("ConstantOfShape", out_shape, value=_zero_tensor(node.outputs[0].dtype))
    return ctx.op("ScatterND", zeros, ctx.op("Unsqueeze", rows, ctx.int64s([1])), contributions, reduction="add")


@dense_matmul.vjp
def _(node, g):
    indices, values, dense_shape, y = node.inputs
    rows, inner = node.attrs["rows"], node.attrs["inner"]
    g_values = sampled_dot(indices, g, y)
    g_y = dense_matmul(swap_indices(indices), values, reverse(dense_shape), g, rows=y.shape[0] or inner,
                       inner=rows)
    return [None, g_values, None, g_y]


sampled_dot = Primitive("sparse_sampled_dot")  # out[n] = Σ_p a[row_n, p] · b[col_n, p]


@sampled_dot.infer
def _(indices, a, b):
    _check_indices(indices, "sampled_dot", rank=2)
    if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype:
        raise InferError(f"sampled_dot: expects two rank-2 tensors of one dtype, got {a.shape} {a.dtype} and "
                         f"{b.shape} {b.dtype}")
    return (indices.shape[0],), a.dtype


@sampled_dot.lower
def _(ctx, node, indices, a, b):
    rows, cols = (ctx.op("Gather", indices, ctx.scalar(k, np.int64), axis=1) for k in (0, 1))
    products = ctx.op("Mul", ctx.op("Gather", a, rows, axis=0), ctx.op("Gather", b, cols, axis=0))
    return ctx.reduce("ReduceSum", products, [1], keepdims=False)


@sampled_dot.vjp
def _(node, h):
    indices, a, b = node.inputs
    rows_of = lambda t: slice_(shape_of(t), starts=(0,), ends=(1,), axes=(0,), steps=(1,))  # noqa: E731
    g_a = dense_matmul(indices, h, concat(rows_of(a), rows_of(b), axis=0), b, rows=a.shape[0], inner=b.shape[0])
    g_b = dense_matmul(swap_indices(indices), h, concat(rows_of(b), rows_of(a), axis=0), a, rows=b.shape[0],
                       inner=a.shape[0])
    return [None, g_a, g_b]


def swap_indices(indices):
    """The indices of the transposed rank-2 sparse tensor."""
    column = lambda k: slice_(indices, starts=(k,), ends=(k + 1,), axes=(1,), steps=(1,))  # noqa: E731
    return concat(column(1), column(0), axis=1)


def reverse(vector):
    return slice_(vector, starts=(None,), ends=(None,), axes=(0,), steps=(-1,))


row_major_order = Primitive("sparse_row_major_order", differentiable=False)  # permutation sorting indices


@row_major_order.infer
def _(indices, dense_shape):
    _check_indices(indices, "sparse_row_major_order")
    if indices.shape[1] is None:
        raise InferError("sparse_row_major_order: the rank (indices.shape[1]) must be known")
    return (indices.shape[0],), "int64"


@row_major_order.lower
def _(ctx, node, indices, dense_shape):
    rank = node.inputs[0].shape[1]
    # the linear (row-major) position of each index: Σ_d index_d · Π_{e>d} shape_e
    strides, stride = [], ctx.int64s([1])
    for d in reversed(range(rank)):
        strides.append(stride)
        stride = ctx.op("Mul", stride, ctx.op("Slice", dense_shape, ctx.int64s([d]), ctx.int64s([d + 1])))
    stride_vector = ctx.op("Concat", *reversed(strides), axis=0)
    keys = ctx.reduce("ReduceSum", ctx.op("Mul", indices, stride_vector), [1], keepdims=False)
    count = ctx.op("Unsqueeze", ctx.op("Size", keys), ctx.int64s([0]))
    _, order = ctx.op("TopK", keys, count, axis=0, largest=0, sorted=1, outputs=2)
    return order
