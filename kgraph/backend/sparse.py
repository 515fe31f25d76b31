"""Sparse tensors: how kgraph represents them, and the K functions that accept them.

Representation.  A sparse tensor is a kgraph ``Tensor`` whose *value is its dense form* — the
output of a ``sparse_to_dense`` node over its COO parts — and which carries those parts:
``t.indices`` (nnz, rank) int64, ``t.values`` (nnz,), ``t.dense_shape`` (rank,) int64, with
``t.sparse = True``.  So:

* sparse-aware functions (``dot``, ``concatenate``, ``to_dense``) work on the parts and never
  densify: a sparse-dense ``dot`` costs O(nnz · columns);
* any other K function sees an ordinary dense tensor and works unchanged; the graph densifies
  (one ``ScatterND``) only where such a use exists, since unused nodes are pruned;
* ``K.eval`` and ``K.function`` outputs of a sparse tensor give its dense value (Keras' own
  ``eval`` densifies too).

``placeholder(sparse=True)`` makes three placeholders for the parts, and the user-visible
placeholder is the dense value built from them.  ``K.function`` feeds the parts: it accepts a
``scipy.sparse`` matrix (any format), a ``(indices, values, dense_shape)`` triple, or a dense
array for such an input, and converts it on the host (see ``runtime.function.SparseFeedSpec``).
"""
import numpy as np

from .. import dtypes
from ..graph import Constant, Node, Placeholder, Tensor
from ..ops import elementwise as ew
from ..ops import linalg as linalg_ops
from ..ops import shape as sh
from ..ops import sparse as sparse_ops
from ._api import keras_api, to_tensor


def _mark(t, indices, values, dense_shape):
    t.sparse = True
    t.sparse_parts = (indices, values, dense_shape)
    t.indices, t.values, t.dense_shape = indices, values, dense_shape
    t._keras_shape = t.shape
    t._uses_learning_phase = False
    return t


def make_sparse(indices, values, dense_shape, shape):
    """A sparse tensor of static ``shape`` from its COO parts."""
    dense = sparse_ops.to_dense(indices, values, dense_shape, shape=tuple(shape))
    return _mark(dense, indices, values, dense_shape)


def sparse_placeholder(shape, dtype, name=None):
    """A placeholder fed with sparse values: its parts are the placeholders K.function feeds."""
    shape = tuple(shape)
    p = Placeholder(shape, dtype, name=name, sparse=True)
    indices = Placeholder((None, len(shape)), "int64", name=f"{p.name}/indices")
    values = Placeholder((None,), dtype, name=f"{p.name}/values")
    dense_shape = Placeholder((len(shape),), "int64", name=f"{p.name}/dense_shape")
    # The placeholder object itself (what Keras holds, K.function takes as an input and
    # K.is_placeholder recognizes) becomes the output of the densifying node, so a dense use of
    # it reads the fed parts.
    attrs = {"shape": shape}
    sparse_ops.to_dense.infer_rule(indices, values, dense_shape, **attrs)
    node = Node(sparse_ops.to_dense, (indices, values, dense_shape), attrs)
    node.outputs = (p,)
    p.node, p.index = node, 0
    return _mark(p, indices, values, dense_shape)


def sparse_constant(matrix, dtype):
    """A sparse tensor holding a ``scipy.sparse`` value (what ``K.variable`` makes of one)."""
    coo = matrix.tocoo(copy=True)
    coo.sum_duplicates()
    coords = getattr(coo, "coords", None)
    coords = (coo.row, coo.col) if coords is None else coords
    indices = np.stack([np.asarray(c, dtype=np.int64) for c in coords], axis=1)
    return make_sparse(Constant(indices), Constant(coo.data.astype(dtype)),
                       Constant(np.asarray(coo.shape, dtype=np.int64)), coo.shape)


def is_sparse(tensor):
    return bool(getattr(tensor, "sparse", False)) and getattr(tensor, "sparse_parts", None) is not None


def sparse_parts(x):
    return x.sparse_parts


@keras_api
def to_dense(tensor):
    """The dense tensor: a sparse tensor's value already is its dense form; the result is a new,
    non-sparse tensor, as ``tf.sparse_tensor_to_dense`` gives."""
    if is_sparse(tensor):
        return sh.identity(tensor)
    return tensor


def _dense(x, where):
    return to_dense(x) if is_sparse(x) else to_tensor(x, where=where)


@keras_api
def dot(x, y):
    """``K.dot`` with a sparse operand.  A rank-2 sparse times a rank-2 dense operand (either
    side) multiplies sparsely, as ``tf.sparse_tensor_dense_matmul``; other ranks, and two sparse
    operands, densify the sparse side(s) and take the dense path."""
    where = "K.dot"
    x_sparse, y_sparse = is_sparse(x), is_sparse(y)
    if x_sparse and not y_sparse:
        y = to_tensor(y, x.dtype, where=where)
    elif y_sparse and not x_sparse:
        x = to_tensor(x, y.dtype, where=where)
    if x_sparse and not y_sparse and x.ndim == 2 and y.ndim == 2:
        y = _same_dtype(y, x.dtype, where)
        indices, values, dense_shape = x.sparse_parts
        return sparse_ops.dense_matmul(indices, values, dense_shape, y, rows=x.shape[0], inner=x.shape[1])
    if y_sparse and not x_sparse and x.ndim == 2 and y.ndim == 2:
        x = _same_dtype(x, y.dtype, where)
        indices, values, dense_shape = y.sparse_parts
        # x @ y = (yᵀ @ xᵀ)ᵀ, and yᵀ is y's parts with the index columns swapped
        product = sparse_ops.dense_matmul(sparse_ops.swap_indices(indices), values, sparse_ops.reverse(dense_shape),
                                          sh.transpose(x, perm=(1, 0)), rows=y.shape[1], inner=y.shape[0])
        return sh.transpose(product, perm=(1, 0))
    from .linalg import dot as dense_dot
    return dense_dot(_dense(x, where), _dense(y, where))


def _concatenated_shape(shapes, axis, where):
    out = []
    for i, dims in enumerate(zip(*shapes)):
        if i == axis:
            out.append(None if None in dims else sum(dims))
            continue
        known = {d for d in dims if d is not None}
        if len(known) > 1:
            raise ValueError(f"{where}: shapes {shapes} differ off the concatenation axis {axis}")
        out.append(known.pop() if known else None)
    return tuple(out)


def _same_dtype(t, dtype, where):
    if t.dtype == dtype:
        return t
    if not (dtypes.is_float(dtype) or dtypes.is_int(dtype)):
        raise TypeError(f"{where}: cannot multiply a sparse tensor of dtype {dtype}")
    return ew.cast(t, dtype=dtype)


@keras_api
def concatenate(tensors, axis=-1):
    """``K.concatenate`` with sparse operands: all sparse gives a sparse result (indices in
    row-major order, as ``tf.sparse_concat``), otherwise the operands are densified."""
    where = "K.concatenate"
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{where}: needs at least one tensor")
    rank = tensors[0].ndim if isinstance(tensors[0], Tensor) else np.ndim(tensors[0])
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{where}: axis must be an int, got {axis!r}")
    if axis < 0:
        axis = axis % rank if rank else 0
    if not all(is_sparse(t) for t in tensors):
        from .shaping import concatenate as dense_concatenate
        return dense_concatenate([_dense(t, where) for t in tensors], axis=axis)
    if any(t.ndim != rank for t in tensors) or not 0 <= axis < rank:
        raise ValueError(f"{where}: cannot concatenate sparse tensors of shapes {[t.shape for t in tensors]} "
                         f"along axis {axis}")
    shape = _concatenated_shape([t.shape for t in tensors], axis, where)
    common = dtypes.result_type(*[t.dtype for t in tensors])
    one_hot = Constant(np.eye(rank, dtype=np.int64)[axis])
    offset = Constant(np.zeros((1,), np.int64))
    all_indices, all_values = [], []
    for t in tensors:
        indices, values, dense_shape = t.sparse_parts
        all_indices.append(ew.add(indices, ew.mul(one_hot, offset)))
        all_values.append(values if values.dtype == common else ew.cast(values, dtype=common))
        offset = ew.add(offset, sh.slice_(dense_shape, starts=(axis,), ends=(axis + 1,), axes=(0,), steps=(1,)))
    first_shape = tensors[0].sparse_parts[2]
    dense_shape = ew.add(ew.mul(first_shape, Constant(1 - one_hot.value)), ew.mul(one_hot, offset))
    indices = sh.concat(*all_indices, axis=0)
    values = sh.concat(*all_values, axis=0)
    if axis != 0:  # blocks along axis 0 stay in row-major order as they are
        order = sparse_ops.row_major_order(indices, dense_shape)
        indices, values = linalg_ops.gather(indices, order), linalg_ops.gather(values, order)
    return make_sparse(indices, values, dense_shape, shape)
