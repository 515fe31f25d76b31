"""Convolution primitives in ONNX's layout: (N, C, *spatial) data and (O, C/group, *K)
kernels.  The backend transposes Keras' channels_last data and (*K, C, O) kernels at its boundary.

Padding is explicit: ``pads`` is (begin..., end...), computed by ``resolve_pads`` with TF's SAME
rule (the odd cell goes at the end).  Only an unknown spatial size with stride > 1 leaves it the
string ``"same"``; the lowering then computes the pads at run time and emits a ``Pad``.  Never
``auto_pad``: engines disagree on SAME_UPPER where the needed padding would be negative.

The conv family is closed under differentiation, so gradients of any order lower the same way:

    conv(x, w)                y = x ⋆ w
    conv_transpose(g, w)      the adjoint of conv in x: its input gradient, and conv2d_transpose
    conv_kernel_grad(x, g)    the adjoint of conv in w: its kernel gradient

ONNX Runtime's CPU Conv/ConvTranspose/AveragePool run float32/float16 only; float64 lowers to
strided window slices + Einsum, which every engine runs.  Pooling (``pool.py``) shares the
geometry and padding helpers here.
"""
import itertools
import operator

import numpy as np

from .. import dtypes
from .primitive import InferError, Primitive

INT_MAX = int(np.iinfo(np.int64).max)
NATIVE_DTYPES = ("float32", "float16")


def effective_kernel(k, d):
    return (k - 1) * d + 1


def resolve_pads(padding, spatial, kernel, strides, dilations):
    """Keras ``padding`` ('valid', 'same', 'causal') → the ``pads`` attribute."""
    nd = len(kernel)
    if padding == "valid":
        return (0,) * (2 * nd)
    if padding == "causal":
        return tuple(effective_kernel(k, d) - 1 for k, d in zip(kernel, dilations)) + (0,) * nd
    if padding != "same":
        raise ValueError(f"unknown padding {padding!r}")
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        keff = effective_kernel(k, d)
        if s == 1:
            total = keff - 1  # independent of the size
        elif size is None:
            return "same"
        else:
            total = max(0, (-(-size // s) - 1) * s + keff - size)
        begin.append(total // 2)
        end.append(total - total // 2)
    return tuple(begin) + tuple(end)


def conv_output_spatial(where, spatial, kernel, strides, dilations, pads):
    nd = len(kernel)
    out = []
    for i, (size, k, s, d) in enumerate(zip(spatial, kernel, strides, dilations)):
        if size is None:
            out.append(None)
        elif pads == "same":
            out.append(-(-size // s))
        else:
            n = (size + pads[i] + pads[nd + i] - effective_kernel(k, d)) // s + 1
            if n < 1:
                raise InferError(f"{where}: the input's spatial size {tuple(spatial)} is smaller than the "
                                 f"window {tuple(kernel)} (dilation {tuple(dilations)}, pads {pads})")
            out.append(n)
    return tuple(out)


def _check_geometry(where, x, nd, strides, dilations, pads):
    if x.ndim != nd + 2:
        raise InferError(f"{where}: expected a rank-{nd + 2} input (batch, channels, {nd} spatial), "
                         f"got shape {x.shape}")
    if not dtypes.is_float(x.dtype):
        raise InferError(f"{where}: expects a float tensor, got {x.dtype}")
    if len(strides) != nd or len(dilations) != nd or min(strides + dilations) < 1:
        raise InferError(f"{where}: strides {strides} and dilations {dilations} must be {nd} positive ints")
    if pads != "same" and (len(pads) != 2 * nd or min(pads) < 0):
        raise InferError(f"{where}: pads {pads} must be {2 * nd} non-negative ints")


def _check_kernel(where, x, w, group):
    nd = w.ndim - 2
    if w.ndim < 3 or None in w.shape:
        raise InferError(f"{where}: the kernel needs a static shape of rank >= 3, got {w.shape}")
    if w.dtype != x.dtype:
        raise InferError(f"{where}: the input is {x.dtype} but the kernel is {w.dtype}")
    if group < 1 or w.shape[0] % group:
        raise InferError(f"{where}: {w.shape[0]} kernel channels do not split into {group} groups")
    return nd


# -- conv -------------------------------------------------------------------------------------
conv = Primitive("conv")


@conv.infer
def _(x, w, strides, dilations, pads, group=1):
    nd = _check_kernel("conv", x, w, group)
    _check_geometry("conv", x, nd, strides, dilations, pads)
    if x.shape[1] is not None and x.shape[1] != w.shape[1] * group:
        raise InferError(f"conv: the input has {x.shape[1]} channels but the kernel expects "
                         f"{w.shape[1] * group}")
    spatial = conv_output_spatial("conv", x.shape[2:], w.shape[2:], strides, dilations, pads)
    return (x.shape[0], w.shape[0]) + spatial, x.dtype


def _geometry(attrs):
    return {k: attrs[k] for k in ("strides", "dilations", "pads", "group")}


def spatial_size(x):
    """The run-time spatial sizes of a (N, C, *spatial) tensor, an int64 vector."""
    from .shape import shape_of, slice_
    return slice_(shape_of(x), starts=(2,), ends=(None,), axes=(0,), steps=(1,))


def input_adjoint(g, w, like, attrs):
    """conv_transpose(g, w) sized like ``like`` (the conv's input): static pads and output
    padding where the sizes are known, else the run-time size of ``like``."""
    a = _geometry(attrs)
    spatial, gspatial = like.shape[2:], g.shape[2:]
    if a["pads"] != "same" and None not in spatial and None not in gspatial:
        nd = len(spatial)
        extra = tuple(size - ((n - 1) * s + effective_kernel(k, d) - a["pads"][i] - a["pads"][nd + i])
                      for i, (size, n, k, s, d) in enumerate(zip(spatial, gspatial, w.shape[2:],
                                                                 a["strides"], a["dilations"])))
        return conv_transpose(g, w, output_padding=extra, **a)
    return conv_transpose(g, w, spatial_size(like), output_padding=None, **a)


@conv.vjp
def _(node, g):
    x, w = node.inputs
    return [input_adjoint(g, w, x, node.attrs),
            conv_kernel_grad(x, g, kernel_shape=w.shape, **_geometry(node.attrs))]


# -- conv_transpose: (N, O, *G) ⋆ᵀ (O, C/group, *K) → (N, C, *S) --------------------------------
conv_transpose = Primitive("conv_transpose")


@conv_transpose.infer
def _(x, w, *size, strides, dilations, pads, group=1, output_padding=None):
    nd = _check_kernel("conv_transpose", x, w, group)
    _check_geometry("conv_transpose", x, nd, strides, dilations, pads)
    if x.shape[1] is not None and x.shape[1] != w.shape[0]:
        raise InferError(f"conv_transpose: the input has {x.shape[1]} channels but the kernel expects "
                         f"{w.shape[0]}")
    lead = (x.shape[0], w.shape[1] * group)
    if size:  # the output's spatial size is a run-time value
        if size[0].shape not in ((nd,), (None,)) or size[0].dtype != "int64":
            raise InferError(f"conv_transpose: the output size must be an int64 vector of {nd}, "
                             f"got {size[0].shape} {size[0].dtype}")
        return lead + (None,) * nd, x.dtype
    if pads == "same" or output_padding is None or None in x.shape[2:]:
        raise InferError("conv_transpose: without a run-time output size the input's spatial size, "
                         "explicit pads and output_padding must be known")
    spatial = tuple((n - 1) * s + effective_kernel(k, d) - pads[i] - pads[nd + i] + output_padding[i]
                    for i, (n, k, s, d) in enumerate(zip(x.shape[2:], w.shape[2:], strides, dilations)))
    if min(spatial) < 1:
        raise InferError(f"conv_transpose: pads {pads} leave no output")
    return lead + spatial, x.dtype


@conv_transpose.vjp
def _(node, gy):
    x, w = node.inputs[:2]
    a = _geometry(node.attrs)
    return [conv(gy, w, **a), conv_kernel_grad(gy, x, kernel_shape=w.shape, **a)] + \
        [None] * (len(node.inputs) - 2)


# -- conv_kernel_grad: Σ_n,p g[n, o, p] · x[n, c, p·s + k·d] → (O, C/group, *K) -------------------
conv_kernel_grad = Primitive("conv_kernel_grad")


@conv_kernel_grad.infer
def _(x, g, kernel_shape, strides, dilations, pads, group=1):
    nd = len(kernel_shape) - 2
    _check_geometry("conv_kernel_grad", x, nd, strides, dilations, pads)
    if g.dtype != x.dtype or g.ndim != x.ndim:
        raise InferError(f"conv_kernel_grad: operands {x.shape} {x.dtype} and {g.shape} {g.dtype} differ")
    if x.shape[1] is not None and x.shape[1] != kernel_shape[1] * group or \
            g.shape[1] is not None and g.shape[1] != kernel_shape[0]:
        raise InferError(f"conv_kernel_grad: channels of {x.shape} and {g.shape} do not fit kernel "
                         f"{kernel_shape} with {group} groups")
    return tuple(kernel_shape), x.dtype


@conv_kernel_grad.vjp
def _(node, gw):
    x, g = node.inputs
    a = node.attrs
    return [input_adjoint(g, gw, x, a), conv(x, gw, **_geometry(a))]


# == lowering ==================================================================================
# Sizes inside the lowering are tuples of ints when static, else int64 vector values.
_PY = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.floordiv, "Max": max}


def _vec(ctx, v):
    return ctx.int64s(v) if isinstance(v, tuple) else v


def _arith(ctx, op, a, b):
    if isinstance(a, tuple) and isinstance(b, tuple):
        return tuple(_PY[op](p, q) for p, q in zip(a, b))
    return ctx.op(op, _vec(ctx, a), _vec(ctx, b))


def _spatial_of(ctx, name, shape):
    if None not in shape[2:]:
        return tuple(shape[2:])
    return ctx.op("Slice", ctx.op("Shape", name), ctx.int64s([2]), ctx.int64s([INT_MAX]))


def _concat_dims(ctx, *parts):
    """A shape vector from tuples and int64 vectors."""
    if all(isinstance(p, tuple) for p in parts):
        return ctx.int64s(sum(parts, ()))
    return ctx.op("Concat", *[_vec(ctx, p) for p in parts if p != ()], axis=0)


def _same_pads(ctx, size, kernel, strides, dilations):
    """TF's SAME padding for spatial ``size``: (begin, end)."""
    nd = len(kernel)
    keff = tuple(effective_kernel(k, d) for k, d in zip(kernel, dilations))
    out = _arith(ctx, "Div", _arith(ctx, "Add", size, tuple(s - 1 for s in strides)), tuple(strides))
    reach = _arith(ctx, "Add", _arith(ctx, "Mul", _arith(ctx, "Sub", out, (1,) * nd), tuple(strides)), keff)
    total = _arith(ctx, "Max", _arith(ctx, "Sub", reach, size), (0,) * nd)
    begin = _arith(ctx, "Div", total, (2,) * nd)
    return begin, _arith(ctx, "Sub", total, begin)


def _pads_of(ctx, node, x, xshape, kernel, dilations):
    """(begin, end) of the node's padding, computing TF SAME at run time where needed."""
    pads, nd = node.attrs["pads"], len(kernel)
    if pads == "same":
        return _same_pads(ctx, _spatial_of(ctx, x, xshape), kernel, node.attrs["strides"], dilations)
    return tuple(pads[:nd]), tuple(pads[nd:])


def _pad(ctx, x, begin, end, value=None):
    if isinstance(begin, tuple) and isinstance(end, tuple) and not any(begin + end):
        return x
    pads = _concat_dims(ctx, (0, 0), begin, (0, 0), end)
    return ctx.op("Pad", x, pads, *([value] if value is not None else []))


def _windows(ctx, xp, kernel, strides, dilations):
    """One strided slice of the padded input per kernel offset, row-major: each (N, C, *out)."""
    axes = ctx.int64s(range(2, 2 + len(kernel)))
    steps = ctx.int64s(strides)
    out = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        starts = [o * d for o, d in zip(offset, dilations)]
        tails = [effective_kernel(k, d) - 1 - st for k, d, st in zip(kernel, dilations, starts)]
        ends = [-t if t else INT_MAX for t in tails]
        out.append(ctx.op("Slice", xp, ctx.int64s(starts), ctx.int64s(ends), axes, steps))
    return out


def _conv_by_windows(ctx, x, w, wshape, out_spatial, strides, dilations, begin, end, group):
    """Conv as window slices + Einsum: runs in every dtype (ORT has no float64 Conv)."""
    o, cg, kernel = wshape[0], wshape[1], tuple(wshape[2:])
    wins = _windows(ctx, _pad(ctx, x, begin, end), kernel, strides, dilations)
    stacked = ctx.op("Concat", *[ctx.op("Unsqueeze", s, ctx.int64s([0])) for s in wins], axis=0)
    patches = ctx.op("Reshape", stacked, ctx.int64s([len(wins), 0, group, cg, -1]))  # (K, N, group, Cg, G)
    kern = ctx.op("Reshape", w, ctx.int64s([group, o // group, cg, len(wins)]))
    y = ctx.op("Einsum", patches, kern, equation="kngcf,gock->ngof")
    spatial = tuple(out_spatial) if None not in out_spatial else \
        _spatial_of(ctx, wins[0], (None,) * (len(kernel) + 2))
    return ctx.op("Reshape", y, _concat_dims(ctx, (0, o), spatial))


def _emit_conv(ctx, x, w, dtype, wshape, out_spatial, strides, dilations, begin, end, group):
    if dtype in NATIVE_DTYPES:
        x = x if isinstance(begin, tuple) else _pad(ctx, x, begin, end)
        pads = list(begin + end) if isinstance(begin, tuple) else [0] * (2 * len(strides))
        return ctx.op("Conv", x, w, kernel_shape=list(wshape[2:]), strides=list(strides),
                      dilations=list(dilations), pads=pads, group=group)
    return _conv_by_windows(ctx, x, w, wshape, out_spatial, strides, dilations, begin, end, group)


def _upsample(ctx, x, rank, strides):
    """s - 1 zeros between neighbours on each spatial axis: size n → (n - 1)·s + 1."""
    for i, s in enumerate(strides):
        if s == 1:
            continue
        axis = 2 + i
        t = ctx.op("Unsqueeze", x, ctx.int64s([axis + 1]))
        pads = [0] * (2 * (rank + 1))
        pads[rank + 1 + axis + 1] = s - 1
        t = ctx.op("Pad", t, ctx.int64s(pads))
        shape = ctx.op("Shape", t)
        merged = ctx.op("Concat", ctx.op("Slice", shape, ctx.int64s([0]), ctx.int64s([axis])),
                        ctx.op("ReduceProd", ctx.op("Slice", shape, ctx.int64s([axis]), ctx.int64s([axis + 2])),
                               keepdims=1),
                        ctx.op("Slice", shape, ctx.int64s([axis + 2]), ctx.int64s([INT_MAX])), axis=0)
        t = ctx.op("Reshape", t, merged)
        x = ctx.op("Slice", t, ctx.int64s([0]), ctx.int64s([-(s - 1)]), ctx.int64s([axis]))
    return x


def _full_transpose(ctx, x, w, dtype, wshape, strides, dilations, group):
    """The transposed conv with no padding: spatial n → (n - 1)·s + effective kernel."""
    kernel = tuple(wshape[2:])
    nd = len(kernel)
    if dtype in NATIVE_DTYPES:
        return ctx.op("ConvTranspose", x, w, kernel_shape=list(kernel), strides=list(strides),
                      dilations=list(dilations), group=group)
    # as a conv of the zero-upsampled input with the flipped kernel, in/out channels swapped
    o, cg = wshape[:2]
    wr = ctx.op("Reshape", w, ctx.int64s([group, o // group, cg] + list(kernel)))
    wr = ctx.op("Transpose", wr, perm=[0, 2, 1] + list(range(3, 3 + nd)))
    wr = ctx.op("Reshape", wr, ctx.int64s([group * cg, o // group] + list(kernel)))
    wr = ctx.op("Slice", wr, ctx.int64s([-1] * nd), ctx.int64s([-INT_MAX] * nd),
                ctx.int64s(range(2, 2 + nd)), ctx.int64s([-1] * nd))
    xu = _upsample(ctx, x, nd + 2, strides)
    reach = tuple(effective_kernel(k, d) - 1 for k, d in zip(kernel, dilations))
    return _conv_by_windows(ctx, xu, wr, (group * cg, o // group) + kernel, (None,) * nd,
                            (1,) * nd, dilations, reach, reach, group)


def _emit_transpose(ctx, x, w, dtype, wshape, in_spatial, strides, dilations, group, begin, size):
    """The transposed conv's output cells [begin, begin + size) of the unpadded result (cells
    past its end are zeros)."""
    kernel = tuple(wshape[2:])
    nd = len(kernel)
    full = tuple(effective_kernel(k, d) for k, d in zip(kernel, dilations))
    full = _arith(ctx, "Add", _arith(ctx, "Mul", _arith(ctx, "Sub", in_spatial, (1,) * nd), tuple(strides)), full)
    static = all(isinstance(v, tuple) for v in (begin, size, full))
    if static and dtype in NATIVE_DTYPES:
        end = tuple(max(0, f - b - s) for f, b, s in zip(full, begin, size))
        extra = tuple(max(0, b + s - f) for f, b, s in zip(full, begin, size))
        if dtype == "float32" and ctx.opset >= 18 and set(dilations) == {1}:
            # the GEMM of ConvTranspose then its col2im, as separate ops: ORT's ConvTranspose
            # runs single-threaded, its MatMul does not (2 ms against 3 ms here on 2 threads).
            # ORT 1.31's Col2Im misplaces cells when dilated (onnx.reference agrees with numpy)
            o, cg = wshape[:2]
            taps = int(np.prod(kernel))
            wt = ctx.op("Transpose", ctx.op("Reshape", w, ctx.int64s([group, o // group, cg * taps])), perm=[0, 2, 1])
            cols = ctx.op("MatMul", wt, ctx.op("Reshape", x, ctx.int64s([0, group, o // group, -1])))
            cols = ctx.op("Reshape", cols, ctx.int64s([0, group * cg * taps, -1]))   # (N, C·K, cells)
            return ctx.op("Col2Im", cols, ctx.int64s(size), ctx.int64s(kernel), strides=list(strides),
                          dilations=list(dilations), pads=list(begin + end))
        return ctx.op("ConvTranspose", x, w, kernel_shape=list(kernel), strides=list(strides),
                      dilations=list(dilations), group=group, pads=list(begin + end),
                      output_padding=list(extra) if any(extra) else None)
    y = _full_transpose(ctx, x, w, dtype, wshape, strides, dilations, group)
    stop = _arith(ctx, "Add", begin, size)
    y = _pad(ctx, y, (0,) * nd, _arith(ctx, "Max", _arith(ctx, "Sub", stop, full), (0,) * nd))
    if static and not any(begin) and stop == full:
        return y
    return ctx.op("Slice", y, _vec(ctx, begin), _vec(ctx, stop), ctx.int64s(range(2, 2 + nd)))


@conv.lower
def _(ctx, node, x, w):
    xt, wt = node.inputs
    a = node.attrs
    begin, end = _pads_of(ctx, node, x, xt.shape, wt.shape[2:], a["dilations"])
    return _emit_conv(ctx, x, w, xt.dtype, wt.shape, node.outputs[0].shape[2:], a["strides"],
                      a["dilations"], begin, end, a["group"])


@conv_transpose.lower
def _(ctx, node, x, w, size=None):
    xt, wt = node.inputs[:2]
    a = node.attrs
    nd = xt.ndim - 2
    in_spatial = _spatial_of(ctx, x, xt.shape)
    if size is None:
        size = tuple(node.outputs[0].shape[2:])
    if a["pads"] == "same":  # TF: the padding a conv of the output's size would have had
        keff = tuple(effective_kernel(k, d) for k, d in zip(wt.shape[2:], a["dilations"]))
        reach = _arith(ctx, "Add", _arith(ctx, "Mul", _arith(ctx, "Sub", in_spatial, (1,) * nd),
                                          tuple(a["strides"])), keff)
        total = _arith(ctx, "Max", _arith(ctx, "Sub", reach, size), (0,) * nd)
        begin = _arith(ctx, "Div", total, (2,) * nd)
    else:
        begin = tuple(a["pads"][:nd])
    return _emit_transpose(ctx, x, w, xt.dtype, wt.shape, in_spatial, a["strides"], a["dilations"],
                           a["group"], begin, size)


@conv_kernel_grad.lower
def _(ctx, node, x, g):
    # im2col: the patches, one row per (input channel, kernel offset), times g, summed over the
    # batch and the output cells.  (A Conv with g as its kernel computes the same, but as a GEMM
    # with one column per kernel offset: 2-3x slower on ORT's CPU.)
    xt = node.inputs[0]
    a = node.attrs
    o, cg, *kernel = a["kernel_shape"]
    kernel = tuple(kernel)
    nd, group = len(kernel), a["group"]
    channels, taps = cg * group, int(np.prod(kernel))
    begin, end = _pads_of(ctx, node, x, xt.shape, kernel, a["dilations"])
    if xt.dtype in NATIVE_DTYPES:
        # patches by a depthwise Conv with one-hot kernels: ORT runs it multi-threaded, where
        # strided Slices are single-threaded copies
        onehot = np.eye(taps, dtype=xt.dtype).reshape((taps, 1) + kernel)
        static = isinstance(begin, tuple)
        patches = ctx.op("Conv", x if static else _pad(ctx, x, begin, end),
                         ctx.const(np.tile(onehot, (channels,) + (1,) * (nd + 1))),
                         kernel_shape=list(kernel), strides=list(a["strides"]), dilations=list(a["dilations"]),
                         pads=list(begin + end) if static else [0] * (2 * nd), group=channels)
        patches = ctx.op("Reshape", patches, ctx.int64s([0, group, cg * taps, -1]))  # (N, group, Cg·K, G)
        patches = ctx.op("Transpose", patches, perm=[0, 1, 3, 2])  # ORT folds it into the MatMul
        gs = ctx.op("Reshape", g, ctx.int64s([0, group, o // group, -1]))             # (N, group, Og, G)
        dw = ctx.reduce("ReduceSum", ctx.op("MatMul", gs, patches), [0], False)      # (group, Og, Cg·K)
        return ctx.op("Reshape", dw, ctx.int64s([o, cg] + list(kernel)))
    # every dtype: the patches as strided slices of x with the batch moved behind the channels
    spatial_axes = list(range(2, 2 + nd))
    xs = ctx.op("Transpose", _pad(ctx, x, begin, end), perm=[1, 0] + spatial_axes)  # (C, N, *S)
    wins = _windows(ctx, xs, kernel, a["strides"], a["dilations"])                 # each (C, N, *G)
    patches = ctx.op("Concat", *[ctx.op("Unsqueeze", w, ctx.int64s([1])) for w in wins], axis=1)
    patches = ctx.op("Reshape", patches, ctx.int64s([group, cg * taps, -1]))       # (group, Cg·K, N·G)
    gs = ctx.op("Reshape", g, ctx.int64s([0, group, o // group, -1]))
    gs = ctx.op("Reshape", ctx.op("Transpose", gs, perm=[1, 0, 3, 2]), ctx.int64s([group, -1, o // group]))
    dw = ctx.op("Transpose", ctx.op("MatMul", patches, gs), perm=[0, 2, 1])       # (group, Og, Cg·K)
    return ctx.op("Reshape", dw, ctx.int64s([o, cg] + list(kernel)))
