"""Shape primitives: reshape, transpose, (un)squeeze, broadcast, concat, slice, shape_of.

Attributes are static (tuples of ints); shapes only known at run time travel as int64 tensors
(``shape_of``) into the ``*_like``/``*_dynamic`` forms.
"""
import numpy as np

from .primitive import InferError, Primitive


def _normalize_reshape(in_shape, target, where="reshape"):
    target = tuple(int(d) for d in target)
    if sum(d == -1 for d in target) > 1 or any(d < -1 for d in target):
        raise InferError(f"{where}: invalid target shape {target}")
    known = int(np.prod([d for d in in_shape if d is not None])) if None not in in_shape else None
    if -1 in target:
        rest = int(np.prod([d for d in target if d != -1]))
        if known is not None and rest and known % rest:
            raise InferError(f"{where}: cannot reshape {in_shape} into {target}")
        fill = known // rest if known is not None and rest else None
        return tuple(fill if d == -1 else d for d in target)
    if known is not None and known != int(np.prod(target)):
        raise InferError(f"{where}: cannot reshape {in_shape} ({known} values) into {target}")
    return target


identity = Primitive("identity")


@identity.infer
def _(x):
    return x.shape, x.dtype


@identity.lower
def _(ctx, node, x):
    return ctx.op("Identity", x)


identity.vjp(lambda node, g: [g])

stop_gradient = Primitive("stop_gradient", differentiable=False)  # identity that blocks gradients
stop_gradient.infer(identity.infer_rule)
stop_gradient.lower(identity.lower_rule)

reshape = Primitive("reshape")


@reshape.infer
def _(x, shape):
    return _normalize_reshape(x.shape, shape), x.dtype


@reshape.lower
def _(ctx, node, x):
    # a 0 in the target is a zero-sized dim (numpy), not ONNX's default "copy the input dim"
    allowzero = 1 if 0 in node.attrs["shape"] else None
    return ctx.op("Reshape", x, ctx.int64s(node.attrs["shape"]), allowzero=allowzero)


@reshape.vjp
def _(node, g):
    return [reshape_like(g, node.inputs[0])]


reshape_like = Primitive("reshape_like")  # reshape ``x`` to the run-time shape of ``like``


@reshape_like.infer
def _(x, like):
    return like.shape, x.dtype


@reshape_like.lower
def _(ctx, node, x, like):
    return ctx.op("Reshape", x, ctx.op("Shape", like))


@reshape_like.vjp
def _(node, g):
    return [reshape_like(g, node.inputs[0]), None]


reshape_dynamic = Primitive("reshape_dynamic")  # target shape as an int64 tensor


@reshape_dynamic.infer
def _(x, shape, static=None):
    if shape.ndim != 1 or shape.shape[0] is None:
        raise InferError(f"reshape: the target shape must be a 1-D tensor of known length, got {shape.shape}")
    return (static or (None,) * shape.shape[0]), x.dtype


@reshape_dynamic.lower
def _(ctx, node, x, shape):
    return ctx.op("Reshape", x, shape)


@reshape_dynamic.vjp
def _(node, g):
    return [reshape_like(g, node.inputs[0]), None]


transpose = Primitive("transpose")


@transpose.infer
def _(x, perm):
    if sorted(perm) != list(range(x.ndim)):
        raise InferError(f"transpose: pattern {perm} is not a permutation of the {x.ndim} axes")
    return tuple(x.shape[p] for p in perm), x.dtype


@transpose.lower
def _(ctx, node, x):
    return ctx.op("Transpose", x, perm=list(node.attrs["perm"]))


@transpose.vjp
def _(node, g):
    perm = node.attrs["perm"]
    return [transpose(g, perm=tuple(int(i) for i in np.argsort(perm)))]


squeeze = Primitive("squeeze")


@squeeze.infer
def _(x, axes):
    for a in axes:
        if not 0 <= a < x.ndim or x.shape[a] not in (1, None):
            raise InferError(f"squeeze: cannot squeeze axis {a} of shape {x.shape}")
    return tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype


@squeeze.lower
def _(ctx, node, x):
    return ctx.op("Squeeze", x, ctx.int64s(node.attrs["axes"]))


@squeeze.vjp
def _(node, g):
    return [unsqueeze(g, axes=node.attrs["axes"])]


unsqueeze = Primitive("unsqueeze")  # ``axes`` index the output


@unsqueeze.infer
def _(x, axes):
    rank = x.ndim + len(axes)
    if any(not 0 <= a < rank for a in axes) or len(set(axes)) != len(axes):
        raise InferError(f"expand_dims: invalid axes {axes} for rank {x.ndim}")
    dims = iter(x.shape)
    return tuple(1 if i in axes else next(dims) for i in range(rank)), x.dtype


@unsqueeze.lower
def _(ctx, node, x):
    return ctx.op("Unsqueeze", x, ctx.int64s(node.attrs["axes"]))


@unsqueeze.vjp
def _(node, g):
    return [squeeze(g, axes=node.attrs["axes"])]


expand_like = Primitive("expand_like")  # broadcast ``x`` to the run-time shape of ``like``


@expand_like.infer
def _(x, like):
    from .elementwise import broadcast_shapes
    return broadcast_shapes(x.shape, like.shape, where="broadcast"), x.dtype


@expand_like.lower
def _(ctx, node, x, like):
    return ctx.op("Expand", x, ctx.op("Shape", like))


@expand_like.vjp
def _(node, g):
    from .elementwise import unbroadcast
    return [unbroadcast(g, node.inputs[0].shape), None]


broadcast_to = Primitive("broadcast_to")  # static target shape


@broadcast_to.infer
def _(x, shape):
    from .elementwise import broadcast_shapes
    out = broadcast_shapes(x.shape, shape, where="broadcast_to")
    return out, x.dtype


@broadcast_to.lower
def _(ctx, node, x):
    return ctx.op("Expand", x, ctx.int64s([1 if d is None else d for d in node.attrs["shape"]]))


@broadcast_to.vjp
def _(node, g):
    from .elementwise import unbroadcast
    return [unbroadcast(g, node.inputs[0].shape)]


shape_of = Primitive("shape_of", differentiable=False)


@shape_of.infer
def _(x):
    return (x.ndim,), "int64"


@shape_of.lower
def _(ctx, node, x):
    return ctx.op("Shape", x)


concat = Primitive("concat")


@concat.infer
def _(*xs, axis):
    if not xs:
        raise InferError("concatenate: needs at least one tensor")
    rank = xs[0].ndim
    if any(x.ndim != rank for x in xs) or not 0 <= axis < rank:
        raise InferError(f"concatenate: ranks {[x.ndim for x in xs]} / axis {axis} do not match")
    if len({x.dtype for x in xs}) != 1:
        raise InferError(f"concatenate: dtypes differ: {[x.dtype for x in xs]}")
    out = []
    for i in range(rank):
        dims = [x.shape[i] for x in xs]
        if i == axis:
            out.append(None if None in dims else sum(dims))
        else:
            known = {d for d in dims if d is not None}
            if len(known) > 1:
                raise InferError(f"concatenate: shapes {[x.shape for x in xs]} differ off axis {axis}")
            out.append(known.pop() if known else None)
    return tuple(out), xs[0].dtype


@concat.lower
def _(ctx, node, *xs):
    return ctx.op("Concat", *xs, axis=node.attrs["axis"])


@concat.vjp
def _(node, g):
    return list(split_like(g, *node.inputs, axis=node.attrs["axis"]))


split_like = Primitive("split_like", num_outputs=None)  # split ``g`` into pieces sized like ``likes``


@split_like.infer
def _(g, *likes, axis):
    return [(tuple(d if i != axis else like.shape[axis] for i, d in enumerate(g.shape)), g.dtype)
            for like in likes]


@split_like.lower
def _(ctx, node, g, *likes):
    axis = node.attrs["axis"]
    sizes = [ctx.op("Slice", ctx.op("Shape", like), ctx.int64s([axis]), ctx.int64s([axis + 1])) for like in likes]
    return ctx.op("Split", g, ctx.op("Concat", *sizes, axis=0), axis=axis, outputs=len(likes))


@split_like.vjp
def _(node, *gs):
    from .elementwise import zeros_like_
    gs = [zeros_like_(o) if g is None else g for g, o in zip(gs, node.outputs)]
    return [concat(*gs, axis=node.attrs["axis"])] + [None] * (len(node.inputs) - 1)


slice_ = Primitive("slice")  # numpy-style static slicing on some axes


def _slice_len(dim, start, end, step):
    if dim is None:
        return None
    return len(range(*slice(start, end, step).indices(dim)))


@slice_.infer
def _(x, starts, ends, axes, steps):
    out = list(x.shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        if not 0 <= a < x.ndim or st == 0:
            raise InferError(f"slice: invalid axis {a} or step {st} for shape {x.shape}")
        out[a] = _slice_len(x.shape[a], s, e, st)
    return tuple(out), x.dtype


@slice_.lower
def _(ctx, node, x):
    a = node.attrs
    starts, ends, steps = onnx_slice_bounds(node.inputs[0].shape, a)
    return ctx.op("Slice", x, ctx.int64s(starts), ctx.int64s(ends), ctx.int64s(a["axes"]), ctx.int64s(steps))


def onnx_slice_bounds(shape, attrs):
    """Python slice bounds → ONNX Slice bounds.  The two clamp differently (ONNX clamps a
    negative-step start below -dim to 0, Python makes the slice empty), so where the dim is known
    the bounds are resolved here exactly as Python does."""
    big = np.iinfo(np.int64).max
    starts, ends, steps = [], [], []
    for s, e, st, axis in zip(attrs["starts"], attrs["ends"], attrs["steps"], attrs["axes"]):
        dim = shape[axis]
        if dim is not None:
            s, e, st = slice(s, e, st).indices(dim)
            if not len(range(s, e, st)):
                s, e, st = 0, 0, 1
            elif e < 0:  # "before index 0" for a negative step; ONNX reads -1 as the last index
                e = -big
        else:
            e = (big if st > 0 else -big) if e is None else e
            s = (0 if st > 0 else big) if s is None else s
        starts.append(s)
        ends.append(e)
        steps.append(st)
    return starts, ends, steps


@slice_.vjp
def _(node, g):
    return [slice_grad(g, node.inputs[0], **node.attrs)]


slice_grad = Primitive("slice_grad")  # scatter ``g`` into zeros shaped like ``like`` at the slice


@slice_grad.infer
def _(g, like, starts, ends, axes, steps):
    return like.shape, g.dtype


@slice_grad.lower
def _(ctx, node, g, like):
    a = node.attrs
    in_shape = node.inputs[1].shape
    starts, ends, steps = onnx_slice_bounds(in_shape, a)
    if all(in_shape[axis] is not None and st == 1 for axis, st in zip(a["axes"], steps)):
        # a unit-step slice of known dims: its adjoint is a zero Pad (cheap, and fuses)
        rank = len(in_shape)
        pads = [0] * (2 * rank)
        for axis, s0, e0 in zip(a["axes"], starts, ends):
            pads[axis], pads[rank + axis] = s0, in_shape[axis] - e0
        return ctx.op("Pad", g, ctx.int64s(pads))
    return _scatter_into_slice(ctx, g, like, node.outputs[0].dtype, lambda grid: ctx.op(
        "Slice", grid, ctx.int64s(starts), ctx.int64s(ends), ctx.int64s(a["axes"]), ctx.int64s(steps)))


def _scatter_into_slice(ctx, g, like, dtype, take_slice):
    """The adjoint of any slice: slice an index grid shaped like ``like`` the same way, then
    scatter ``g`` into zeros at the indices picked."""
    shape = ctx.op("Shape", like)
    zeros = ctx.op("Expand", ctx.const(np.zeros((1,), dtype)), shape)
    size = ctx.op("ReduceProd", shape, keepdims=0)
    flat = ctx.op("Range", ctx.scalar(0, np.int64), size, ctx.scalar(1, np.int64))
    grid = ctx.op("Reshape", flat, shape)
    picked = take_slice(grid)
    flat_zeros = ctx.op("Reshape", zeros, ctx.int64s([-1]))
    idx = ctx.op("Reshape", picked, ctx.int64s([-1]))
    upd = ctx.op("Reshape", g, ctx.int64s([-1]))
    # a slice never repeats an element, so ScatterElements without reduction is exact
    out = ctx.op("ScatterElements", flat_zeros, idx, upd, axis=0)
    return ctx.op("Reshape", out, shape)


@slice_grad.vjp
def _(node, g):
    a = node.attrs
    return [slice_(g, starts=a["starts"], ends=a["ends"], axes=a["axes"], steps=a["steps"]), None]


def merge_slice_adjoints(parts):
    """Gradient contributions ``parts`` (to be summed) with the ``slice_grad``s of adjacent
    unit-step slices of one tensor along one axis joined into one: the four gate slices of an
    LSTM's ``z[:, k*units:(k+1)*units]`` give back one Concat instead of four zero Pads and three
    Adds over the whole of ``z``.  Pieces that cover the axis are the Concat itself."""
    groups, rest = {}, []
    for p in parts:
        node = p.node
        if node is None or node.primitive is not slice_grad or len(node.attrs["axes"]) != 1:
            rest.append(p)
            continue
        g, like = node.inputs
        axis = node.attrs["axes"][0]
        dim = like.shape[axis]
        if dim is None or node.attrs["steps"] != (1,):
            rest.append(p)
            continue
        (start,), (end,), _ = onnx_slice_bounds(like.shape, node.attrs)
        groups.setdefault((id(like), axis), []).append((start, end, g, like, p))
    for (_, axis), pieces in groups.items():
        pieces.sort(key=lambda piece: piece[0])
        run = [pieces[0]]
        for piece in pieces[1:] + [None]:
            if piece is not None and piece[0] == run[-1][1]:
                run.append(piece)
                continue
            rest.append(_joined(run, axis))
            run = [piece]
    return rest


def _joined(run, axis):
    if len(run) == 1:
        return run[0][4]
    start, end, like = run[0][0], run[-1][1], run[0][3]
    joined = concat(*[piece[2] for piece in run], axis=axis)
    if start == 0 and end == like.shape[axis] and joined.shape == like.shape:
        return joined
    return slice_grad(joined, like, starts=(start,), ends=(end,), axes=(axis,), steps=(1,))


slice_runtime = Primitive("slice_runtime")  # numpy slicing with run-time int64 ``starts``/``ends``


@slice_runtime.infer
def _(x, starts, ends, axes, steps, lengths):
    """``lengths``: the static length of each sliced axis, None where only run time knows it."""
    for name, t in (("starts", starts), ("ends", ends)):
        if t.dtype != "int64" or t.shape != (len(axes),):
            raise InferError(f"slice: {name} must be an int64 vector of {len(axes)} entries, got "
                             f"{t.dtype} of shape {t.shape}")
    out = list(x.shape)
    for a, st, n in zip(axes, steps, lengths):
        if not 0 <= a < x.ndim or st == 0:
            raise InferError(f"slice: invalid axis {a} or step {st} for shape {x.shape}")
        out[a] = n
    return tuple(out), x.dtype


@slice_runtime.lower
def _(ctx, node, x, starts, ends):
    a = node.attrs
    return ctx.op("Slice", x, starts, ends, ctx.int64s(a["axes"]), ctx.int64s(a["steps"]))


@slice_runtime.vjp
def _(node, g):
    x, starts, ends = node.inputs
    return [slice_runtime_grad(g, x, starts, ends, axes=node.attrs["axes"], steps=node.attrs["steps"]),
            None, None]


slice_runtime_grad = Primitive("slice_runtime_grad")  # ``g`` scattered into zeros like ``like``


@slice_runtime_grad.infer
def _(g, like, starts, ends, axes, steps):
    return like.shape, g.dtype


@slice_runtime_grad.lower
def _(ctx, node, g, like, starts, ends):
    a = node.attrs
    return _scatter_into_slice(ctx, g, like, node.outputs[0].dtype, lambda grid: ctx.op(
        "Slice", grid, starts, ends, ctx.int64s(a["axes"]), ctx.int64s(a["steps"])))


@slice_runtime_grad.vjp
def _(node, g):
    inner, like, starts, ends = node.inputs
    lengths = tuple(inner.shape[a] for a in node.attrs["axes"])
    return [slice_runtime(g, starts, ends, lengths=lengths, **node.attrs), None, None, None]
