"""Convolution and pooling against direct numpy loops (TF-backend semantics), on ONNX Runtime and
onnx.reference, plus finite-difference gradients in float64."""
import itertools

import numpy as np
import pytest

import kcheck
import kgraph.backend as K


# -- independent numpy references (channels_last inside; Keras kernels (*K, in, out)) -------------
def tf_pads(size, k, s, d, padding):
    keff = (k - 1) * d + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return keff - 1, 0
    out = -(-size // s)
    total = max((out - 1) * s + keff - size, 0)
    return total // 2, total - total // 2


def to_last(x, data_format):
    return np.moveaxis(x, 1, -1) if data_format == "channels_first" else x


def from_last(y, data_format):
    return np.moveaxis(y, -1, 1) if data_format == "channels_first" else y


def np_conv(x, w, strides, padding, dilation, data_format="channels_last"):
    x = to_last(x, data_format)
    nd = w.ndim - 2
    pads = [tf_pads(x.shape[1 + i], w.shape[i], strides[i], dilation[i], padding) for i in range(nd)]
    xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    keff = [(w.shape[i] - 1) * dilation[i] + 1 for i in range(nd)]
    sizes = [(xp.shape[1 + i] - keff[i]) // strides[i] + 1 for i in range(nd)]
    y = np.zeros((x.shape[0], *sizes, w.shape[-1]), dtype=np.float64)
    for pos in itertools.product(*map(range, sizes)):
        idx = tuple(slice(p * s, p * s + ke, d) for p, s, ke, d in zip(pos, strides, keff, dilation))
        window = xp[(slice(None),) + idx]
        y[(slice(None),) + pos] = np.tensordot(window, w, axes=(list(range(1, nd + 2)), list(range(nd + 1))))
    return from_last(y, data_format)


def np_conv_transpose(x, w, out_spatial, strides, padding, dilation, data_format="channels_last"):
    """The adjoint of np_conv: every input cell spreads over its window; w is (*K, out, in)."""
    x = to_last(x, data_format)
    nd = w.ndim - 2
    pads = [tf_pads(out_spatial[i], w.shape[i], strides[i], dilation[i], padding) for i in range(nd)]
    keff = [(w.shape[i] - 1) * dilation[i] + 1 for i in range(nd)]
    grid = x.shape[1:1 + nd]
    full = [max(out_spatial[i] + sum(pads[i]), (grid[i] - 1) * strides[i] + keff[i]) for i in range(nd)]
    y = np.zeros((x.shape[0], *full, w.shape[-2]))
    for pos in itertools.product(*map(range, grid)):
        for off in itertools.product(*map(range, w.shape[:nd])):
            q = tuple(p * s + o * d for p, s, o, d in zip(pos, strides, off, dilation))
            y[(slice(None),) + q] += x[(slice(None),) + pos] @ w[off].T
    crop = tuple(slice(p[0], p[0] + n) for p, n in zip(pads, out_spatial))
    return from_last(y[(slice(None),) + crop], data_format)


def np_depthwise(x, dk, strides, padding, dilation, data_format="channels_last"):
    x = to_last(x, data_format)
    nd = dk.ndim - 2
    outs = [np_conv(x[..., c:c + 1], dk[..., c:c + 1, m:m + 1], strides, padding, dilation)
            for c in range(dk.shape[nd]) for m in range(dk.shape[nd + 1])]
    return from_last(np.concatenate(outs, axis=-1), data_format)


def np_pool(x, pool, strides, padding, mode, data_format="channels_last"):
    x = to_last(x, data_format)
    nd = len(pool)
    spatial = x.shape[1:1 + nd]
    pads = [tf_pads(spatial[i], pool[i], strides[i], 1, padding) for i in range(nd)]
    sizes = [(spatial[i] + sum(pads[i]) - pool[i]) // strides[i] + 1 for i in range(nd)]
    y = np.zeros((x.shape[0], *sizes, x.shape[-1]))
    for pos in itertools.product(*map(range, sizes)):
        idx = []
        for p, s, k, (b, _), n in zip(pos, strides, pool, pads, spatial):
            start = p * s - b
            idx.append(slice(max(start, 0), min(start + k, n)))
        window = x[(slice(None),) + tuple(idx)]
        axes = tuple(range(1, nd + 1))
        y[(slice(None),) + pos] = window.max(axis=axes) if mode == "max" else window.mean(axis=axes)
    return from_last(y, data_format)


def np_max_pool_first_cells(x, pool, strides, padding):
    """Per window (channels_last), the position of the first of its maximal cells in row-major order
    — the cell TF's MaxPoolGrad routes the window's gradient to; padding cells never count.
    Returns (window position, index arrays of the chosen cells) pairs."""
    nd = len(pool)
    spatial = x.shape[1:1 + nd]
    pads = [tf_pads(spatial[i], pool[i], strides[i], 1, padding) for i in range(nd)]
    sizes = [(spatial[i] + sum(pads[i]) - pool[i]) // strides[i] + 1 for i in range(nd)]
    n, c = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[-1]), indexing="ij")
    for pos in itertools.product(*map(range, sizes)):
        ranges = [range(max(p * s - b, 0), min(p * s - b + k, size))
                  for p, s, k, (b, _), size in zip(pos, strides, pool, pads, spatial)]
        cells = list(itertools.product(*ranges))  # row-major
        values = np.stack([x[(slice(None),) + cell] for cell in cells], axis=1)  # (N, cells, C)
        first = np.argmax(values, axis=1)  # numpy's argmax: the first of equal maxima
        chosen = np.array(cells)[first]  # (N, C, nd)
        yield pos, (n,) + tuple(chosen[..., i] for i in range(nd)) + (c,)


def np_max_pool_grad(x, g, pool, strides, padding):
    dx = np.zeros(x.shape)
    for pos, cell in np_max_pool_first_cells(x, pool, strides, padding):
        np.add.at(dx, cell, g[(slice(None),) + pos])
    return dx


def np_max_pool_select(x, t, pool, strides, padding):
    """t read at each window's first maximal cell: the adjoint of np_max_pool_grad in g."""
    out = [t[cell] for _, cell in np_max_pool_first_cells(x, pool, strides, padding)]
    sizes = [(size + sum(tf_pads(size, k, s, 1, padding)) - k) // s + 1
             for size, k, s in zip(x.shape[1:-1], pool, strides)]
    return np.stack(out, axis=1).reshape((x.shape[0], *sizes, x.shape[-1]))


def np_local_conv(x, kernel, kernel_size, strides, output_shape, data_format):
    """Keras 2.3.1's feature order: the patch flattened in the data format's own layout."""
    n = x.shape[0]
    y = np.zeros((n, *output_shape, kernel.shape[-1]))
    for i, pos in enumerate(itertools.product(*map(range, output_shape))):
        window = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, strides, kernel_size))
        if data_format == "channels_last":
            patch = x[(slice(None),) + window + (slice(None),)]
        else:
            patch = x[(slice(None), slice(None)) + window]
        y[(slice(None),) + pos] = patch.reshape(n, -1) @ kernel[i]
    return np.moveaxis(y, -1, 1) if data_format == "channels_first" else y


@pytest.fixture
def r():
    return np.random.default_rng(1)


def rand(r, *shape):
    return r.standard_normal(shape).astype(np.float32)


def data_shape(n, spatial, c, data_format):
    return (n, c) + tuple(spatial) if data_format == "channels_first" else (n,) + tuple(spatial) + (c,)


# -- forward -----------------------------------------------------------------------------------
# Keras rejects causal padding for channels_first (test_argument_errors): causal runs channels_last only
CONV1D_CASES = [(data_format, padding, strides, dilation)
                for data_format in ("channels_last", "channels_first")
                for padding, strides, dilation in [("valid", 1, 1), ("same", 1, 1), ("same", 2, 1), ("valid", 2, 1),
                                                   ("same", 1, 2), ("valid", 3, 2), ("causal", 1, 1), ("causal", 2, 2)]
                if padding != "causal" or data_format == "channels_last"]


@pytest.mark.parametrize("data_format,padding,strides,dilation", CONV1D_CASES)
def test_conv1d(r, data_format, padding, strides, dilation):
    x = rand(r, *data_shape(2, (9,), 3, data_format))
    w = rand(r, 3, 3, 4)
    ph = K.placeholder((None,) + x.shape[1:])
    y = K.conv1d(ph, K.constant(w), strides=strides, padding=padding, data_format=data_format,
                 dilation_rate=dilation)
    kcheck.check(y, {ph: x}, np_conv(x, w, (strides,), padding, (dilation,), data_format), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding,strides,dilation", [
    ("valid", (1, 1), (1, 1)), ("same", (1, 1), (1, 1)), ("same", (2, 2), (1, 1)), ("same", (2, 3), (1, 1)),
    ("valid", (2, 1), (1, 1)), ("same", (1, 1), (2, 2)), ("valid", (1, 1), (2, 1)), ("same", (3, 2), (1, 2))])
def test_conv2d(r, data_format, padding, strides, dilation):
    x = rand(r, *data_shape(2, (7, 6), 3, data_format))  # odd: SAME pads more at the end
    w = rand(r, 3, 2, 3, 4)
    ph = K.placeholder(x.shape)
    y = K.conv2d(ph, K.constant(w), strides=strides, padding=padding, data_format=data_format,
                 dilation_rate=dilation)
    kcheck.check(y, {ph: x}, np_conv(x, w, strides, padding, dilation, data_format), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding,strides,dilation", [
    ("valid", (1, 1, 1), (1, 1, 1)), ("same", (2, 1, 2), (1, 1, 1)), ("same", (1, 1, 1), (1, 2, 1))])
def test_conv3d(r, data_format, padding, strides, dilation):
    x = rand(r, *data_shape(2, (5, 4, 5), 2, data_format))
    w = rand(r, 2, 3, 2, 2, 3)
    ph = K.placeholder(x.shape)
    y = K.conv3d(ph, K.constant(w), strides=strides, padding=padding, data_format=data_format,
                 dilation_rate=dilation)
    kcheck.check(y, {ph: x}, np_conv(x, w, strides, padding, dilation, data_format), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strides,padding", [((2, 2), "same"), ((3, 1), "same"), ((1, 1), "same"),
                                              ((2, 2), "valid")])
def test_conv2d_unknown_spatial_size(r, strides, padding):
    """Pads computed at run time (stride > 1, SAME, sizes unknown until fed)."""
    w = rand(r, 3, 3, 2, 3)
    ph = K.placeholder((None, None, None, 2))
    y = K.conv2d(ph, K.constant(w), strides=strides, padding=padding)
    f = K.function([ph], [y])
    for size in [(7, 6), (8, 5)]:
        x = rand(r, 2, *size, 2)
        np.testing.assert_allclose(f([x])[0], np_conv(x, w, strides, padding, (1, 1)), rtol=1e-4, atol=1e-5)
    x = rand(r, 1, 7, 5, 2)
    kcheck.check(y, {ph: x}, np_conv(x, w, strides, padding, (1, 1)), rtol=1e-4, atol=1e-5)


def test_conv_float64(r):
    """float64 takes the window-slices lowering (ONNX Runtime's Conv is float32 only)."""
    x = r.standard_normal((2, 3, 7, 6))
    w = r.standard_normal((3, 2, 3, 4))
    ph = K.placeholder(x.shape, dtype="float64")
    y = K.conv2d(ph, K.constant(w, dtype="float64"), strides=(2, 1), padding="same",
                 data_format="channels_first", dilation_rate=(1, 1))
    kcheck.check(y, {ph: x}, np_conv(x, w, (2, 1), "same", (1, 1), "channels_first"), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding,strides,dilation,out", [
    ("valid", (2, 2), (1, 1), (8, 7)), ("same", (2, 2), (1, 1), (7, 8)), ("same", (1, 1), (1, 1), (4, 3)),
    ("valid", (1, 1), (2, 2), (8, 7)), ("same", (3, 2), (1, 1), (9, 6))])
def test_conv2d_transpose(r, data_format, padding, strides, dilation, out):
    # the input is what a conv of the output's size would produce
    grid = [(o - ((3 - 1) * d + 1)) // s + 1 if padding == "valid" else -(-o // s)
            for o, s, d in zip(out, strides, dilation)]
    x = rand(r, *data_shape(2, grid, 3, data_format))
    w = rand(r, 3, 3, 2, 3)  # (*K, out, in)
    ph = K.placeholder((None,) + x.shape[1:])
    output_shape = data_shape(2, out, 2, data_format)
    y = K.conv2d_transpose(ph, K.constant(w), output_shape, strides=strides, padding=padding,
                           data_format=data_format, dilation_rate=dilation)
    assert K.int_shape(y)[1:] == output_shape[1:]
    kcheck.check(y, {ph: x}, np_conv_transpose(x, w, out, strides, padding, dilation, data_format),
                 rtol=1e-4, atol=1e-5)


def test_conv2d_transpose_output_shape_forms(r):
    """Keras' Conv2DTranspose passes (K.shape(x)[0], h * stride, ...): tensors that fold to ints
    where shapes are static; a fed output shape works at run time."""
    x = rand(r, 2, 3, 4, 3)
    w = rand(r, 3, 3, 2, 3)
    expected = np_conv_transpose(x, w, (6, 8), (2, 2), "same", (1, 1))
    ph = K.placeholder(x.shape)
    shape = K.shape(ph)
    y = K.conv2d_transpose(ph, K.constant(w), (shape[0], shape[1] * 2, shape[2] * 2, 2), strides=(2, 2),
                           padding="same")
    assert K.int_shape(y) == (2, 6, 8, 2)
    kcheck.check(y, {ph: x}, expected, rtol=1e-4, atol=1e-5)
    y = K.conv2d_transpose(ph, K.constant(w), K.constant(np.array([2, 6, 8, 2]), dtype="int32"),
                           strides=(2, 2), padding="same")
    kcheck.check(y, {ph: x}, expected, rtol=1e-4, atol=1e-5)
    y = K.conv2d_transpose(ph, K.constant(w), (None, 6, 8, 2), strides=(2, 2), padding="same")
    kcheck.check(y, {ph: x}, expected, rtol=1e-4, atol=1e-5)
    # run-time sizes: unknown input spatial size and a fed output shape
    dyn = K.placeholder((None, None, None, 3))
    out_ph = K.placeholder((4,), dtype="int32")
    y = K.conv2d_transpose(dyn, K.constant(w), out_ph, strides=(2, 2), padding="same")
    assert K.int_shape(y) == (None, None, None, 2)
    for out in [(6, 8), (5, 7)]:
        got = kcheck.evaluate(y, {dyn: x, out_ph: np.array((2,) + out + (2,), dtype=np.int32)}, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, np_conv_transpose(x, w, out, (2, 2), "same", (1, 1)), rtol=1e-4, atol=1e-5)
    y = K.conv2d_transpose(dyn, K.constant(w), out_ph, strides=(2, 2), padding="valid")
    got = kcheck.evaluate(y, {dyn: x, out_ph: np.array([2, 8, 10, 2], dtype=np.int32)}, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, np_conv_transpose(x, w, (8, 10), (2, 2), "valid", (1, 1)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding,strides,out", [("valid", (2, 1, 2), (5, 4, 6)), ("same", (2, 2, 1), (5, 4, 3))])
def test_conv3d_transpose(r, data_format, padding, strides, out):
    grid = [(o - 2) // s + 1 if padding == "valid" else -(-o // s) for o, s in zip(out, strides)]
    x = rand(r, *data_shape(2, grid, 2, data_format))
    w = rand(r, 2, 2, 2, 3, 2)
    ph = K.placeholder(x.shape)
    y = K.conv3d_transpose(ph, K.constant(w), data_shape(2, out, 3, data_format), strides=strides,
                           padding=padding, data_format=data_format)
    kcheck.check(y, {ph: x}, np_conv_transpose(x, w, out, strides, padding, (1, 1, 1), data_format),
                 rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding,strides,dilation", [("valid", (1, 1), (1, 1)), ("same", (2, 2), (1, 1)),
                                                      ("same", (1, 1), (2, 1))])
def test_depthwise_and_separable_conv2d(r, data_format, padding, strides, dilation):
    x = rand(r, *data_shape(2, (7, 6), 3, data_format))
    dk = rand(r, 3, 2, 3, 2)  # depth multiplier 2
    pk = rand(r, 1, 1, 6, 4)
    ph = K.placeholder(x.shape)
    depthwise = np_depthwise(x, dk, strides, padding, dilation, data_format)
    y = K.depthwise_conv2d(ph, K.constant(dk), strides=strides, padding=padding, data_format=data_format,
                           dilation_rate=dilation)
    kcheck.check(y, {ph: x}, depthwise, rtol=1e-4, atol=1e-5)
    y = K.separable_conv2d(ph, K.constant(dk), K.constant(pk), strides=strides, padding=padding,
                           data_format=data_format, dilation_rate=dilation)
    expected = from_last(np_conv(to_last(depthwise, data_format), pk, (1, 1), "valid", (1, 1)), data_format)
    kcheck.check(y, {ph: x}, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding,strides,dilation", [("valid", 1, 1), ("same", 2, 1), ("same", 1, 2)])
def test_separable_conv1d(r, data_format, padding, strides, dilation):
    x = rand(r, *data_shape(2, (9,), 2, data_format))
    dk = rand(r, 3, 2, 3)
    pk = rand(r, 1, 6, 4)
    ph = K.placeholder(x.shape)
    y = K.separable_conv1d(ph, K.constant(dk), K.constant(pk), strides=strides, padding=padding,
                           data_format=data_format, dilation_rate=dilation)
    depthwise = np_depthwise(to_last(x, data_format), dk, (strides,), padding, (dilation,))
    expected = from_last(np_conv(depthwise, pk, (1,), "valid", (1,)), data_format)
    kcheck.check(y, {ph: x}, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_local_conv(r, data_format):
    x = rand(r, *data_shape(2, (7,), 3, data_format))
    kernel = rand(r, 3, 2 * 3, 4)  # output_length 3 = (7 - 2) // 2 + 1
    ph = K.placeholder((None,) + x.shape[1:])
    y = K.local_conv1d(ph, K.constant(kernel), (2,), (2,), data_format=data_format)
    kcheck.check(y, {ph: x}, np_local_conv(x, kernel, (2,), (2,), (3,), data_format), rtol=1e-4, atol=1e-5)
    x = rand(r, *data_shape(2, (5, 6), 3, data_format))
    kernel = rand(r, 2 * 2, 3 * 2 * 3, 4)  # output (2, 2) for kernel (3, 2), strides (2, 3)
    ph = K.placeholder((None,) + x.shape[1:])
    y = K.local_conv2d(ph, K.constant(kernel), (3, 2), (2, 3), (2, 2), data_format=data_format)
    kcheck.check(y, {ph: x}, np_local_conv(x, kernel, (3, 2), (2, 3), (2, 2), data_format), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("padding,pool,strides", [("valid", (2, 2), (2, 2)), ("same", (2, 2), (2, 2)),
                                                  ("same", (3, 3), (2, 1)), ("valid", (3, 2), (1, 2)),
                                                  ("same", (2, 3), (3, 3))])
def test_pool2d(r, data_format, mode, padding, pool, strides):
    x = rand(r, *data_shape(2, (7, 5), 3, data_format))
    ph = K.placeholder((None,) + x.shape[1:])
    y = K.pool2d(ph, pool, strides=strides, padding=padding, data_format=data_format, pool_mode=mode)
    kcheck.check(y, {ph: x}, np_pool(x, pool, strides, padding, mode, data_format), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("padding,strides", [("valid", (1, 2, 2)), ("same", (2, 2, 1))])
def test_pool3d(r, data_format, mode, padding, strides):
    x = rand(r, *data_shape(2, (5, 4, 3), 2, data_format))
    ph = K.placeholder(x.shape)
    y = K.pool3d(ph, (2, 3, 2), strides=strides, padding=padding, data_format=data_format, pool_mode=mode)
    kcheck.check(y, {ph: x}, np_pool(x, (2, 3, 2), strides, padding, mode, data_format), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pool_unknown_spatial_size(r, mode, dtype):
    ph = K.placeholder((None, None, None, 2), dtype=dtype)
    y = K.pool2d(ph, (3, 2), strides=(2, 2), padding="same", pool_mode=mode)
    for size in [(7, 5), (6, 6)]:
        x = r.standard_normal((2,) + size + (2,)).astype(dtype)
        kcheck.check(y, {ph: x}, np_pool(x, (3, 2), (2, 2), "same", mode), rtol=1e-5, atol=1e-6)


def test_channels_last_stack_transposes_once(r):
    """conv → pool → conv in channels_last: one transpose in, one out, none between."""
    ph = K.placeholder((None, 8, 8, 1))
    y = K.conv2d(ph, K.constant(rand(r, 3, 3, 1, 4)))
    y = K.pool2d(y, (2, 2), strides=(2, 2))
    y = K.conv2d(y, K.constant(rand(r, 3, 3, 4, 5)))
    from kgraph.graph import Graph
    perms = [n.attrs["perm"] for n in Graph([y]).nodes if n.primitive.name == "transpose" and n.inputs[0].ndim == 4]
    data_perms = [p for p in perms if p in ((0, 3, 1, 2), (0, 2, 3, 1))]
    assert data_perms == [(0, 3, 1, 2), (0, 2, 3, 1)], perms


# -- errors ------------------------------------------------------------------------------------------
def test_argument_errors(r):
    x = K.placeholder((None, 6, 6, 3))
    w = K.constant(rand(r, 3, 3, 3, 4))
    with pytest.raises(ValueError, match="K.conv2d: padding"):
        K.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="K.conv2d: strides"):
        K.conv2d(x, w, strides=(1, 0))
    with pytest.raises(ValueError, match="K.conv2d: the input has 3 channels"):
        K.conv2d(x, K.constant(rand(r, 3, 3, 2, 4)))
    with pytest.raises(ValueError, match="K.conv2d: x must have rank 4"):
        K.conv2d(K.placeholder((None, 6, 3)), w)
    with pytest.raises(ValueError, match="K.conv1d: causal padding"):
        K.conv1d(K.placeholder((None, 3, 6)), K.constant(rand(r, 2, 3, 4)), padding="causal",
                 data_format="channels_first")
    with pytest.raises(ValueError, match="K.conv2d: .*smaller than the window"):
        K.conv2d(K.placeholder((None, 2, 2, 3)), w)
    with pytest.raises(ValueError, match="K.pool2d: pool_mode"):
        K.pool2d(x, (2, 2), pool_mode="min")
    with pytest.raises(ValueError, match="K.conv2d: unknown data_format|data_format"):
        K.conv2d(x, w, data_format="NHWC")
    with pytest.raises(ValueError, match="K.conv2d_transpose: output_shape's spatial size"):
        K.conv2d_transpose(K.placeholder((None, 3, 3, 4)), w, (1, 9, 9, 3), strides=(2, 2), padding="same")
    with pytest.raises(ValueError, match="K.conv2d_transpose: output_shape asks for 5 channels"):
        K.conv2d_transpose(K.placeholder((None, 3, 3, 4)), w, (1, 6, 6, 5), strides=(2, 2), padding="same")
    with pytest.raises(ValueError, match="K.local_conv2d: kernel shape"):
        K.local_conv2d(x, K.constant(rand(r, 4, 5, 2)), (2, 2), (2, 2), (2, 2))


# -- gradients (float64 finite differences) ------------------------------------------------------------
def grad_arrays(r, *shapes):
    return [r.standard_normal(s) for s in shapes]


@pytest.mark.parametrize("padding,strides,dilation", [("causal", 1, 2), ("same", 2, 1), ("valid", 2, 1)])
def test_conv1d_grad(r, padding, strides, dilation):
    kcheck.check_grad(lambda x, w: K.conv1d(x, w, strides=strides, padding=padding, dilation_rate=dilation),
                      grad_arrays(r, (2, 7, 2), (3, 2, 3)))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding,strides,dilation", [("same", (2, 2), (1, 1)), ("valid", (2, 1), (1, 2)),
                                                      ("same", (1, 1), (2, 2))])
def test_conv2d_grad(r, data_format, padding, strides, dilation):
    kcheck.check_grad(lambda x, w: K.conv2d(x, w, strides=strides, padding=padding, data_format=data_format,
                                            dilation_rate=dilation),
                      grad_arrays(r, data_shape(2, (5, 6), 2, data_format), (2, 3, 2, 3)))


def test_conv3d_grad(r):
    kcheck.check_grad(lambda x, w: K.conv3d(x, w, strides=(2, 1, 1), padding="same"),
                      grad_arrays(r, (1, 3, 3, 2, 2), (2, 2, 1, 2, 2)))


@pytest.mark.parametrize("padding,strides,out", [("same", (2, 2), (5, 4)), ("valid", (2, 1), (6, 4))])
def test_conv2d_transpose_grad(r, padding, strides, out):
    grid = [(o - 3) // s + 1 if padding == "valid" else -(-o // s) for o, s in zip(out, strides)]
    kcheck.check_grad(lambda x, w: K.conv2d_transpose(x, w, (1,) + out + (2,), strides=strides, padding=padding),
                      grad_arrays(r, (1,) + tuple(grid) + (3,), (3, 3, 2, 3)))


def test_conv3d_transpose_grad(r):
    kcheck.check_grad(lambda x, w: K.conv3d_transpose(x, w, (1, 3, 4, 2, 2), strides=(2, 2, 1), padding="same",
                                                      data_format="channels_last"),
                      grad_arrays(r, (1, 2, 2, 2, 2), (2, 2, 1, 2, 2)))


def test_depthwise_separable_grad(r):
    kcheck.check_grad(lambda x, d: K.depthwise_conv2d(x, d, strides=(2, 2), padding="same",
                                                      data_format="channels_first"),
                      grad_arrays(r, (1, 2, 5, 4), (3, 2, 2, 2)))
    kcheck.check_grad(lambda x, d, p: K.separable_conv2d(x, d, p, padding="same"),
                      grad_arrays(r, (1, 4, 3, 2), (2, 2, 2, 2), (1, 1, 4, 3)))
    kcheck.check_grad(lambda x, d, p: K.separable_conv1d(x, d, p, strides=2, padding="same"),
                      grad_arrays(r, (2, 5, 2), (3, 2, 1), (1, 2, 2)))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_local_conv_grad(r, data_format):
    kcheck.check_grad(lambda x, k: K.local_conv2d(x, k, (2, 2), (1, 2), (2, 2), data_format=data_format),
                      grad_arrays(r, data_shape(2, (3, 4), 2, data_format), (4, 8, 3)))
    kcheck.check_grad(lambda x, k: K.local_conv1d(x, k, (3,), (2,), data_format=data_format),
                      grad_arrays(r, data_shape(2, (7,), 2, data_format), (3, 6, 2)))


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("padding,pool,strides", [("same", (2, 2), (2, 2)), ("valid", (3, 2), (1, 2)),
                                                  ("same", (3, 3), (2, 1))])
def test_pool2d_grad(r, mode, padding, pool, strides):
    kcheck.check_grad(lambda x: K.pool2d(x, pool, strides=strides, padding=padding, pool_mode=mode),
                      grad_arrays(r, (2, 5, 4, 2)))


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool3d_grad(r, mode):
    kcheck.check_grad(lambda x: K.pool3d(x, (2, 2, 2), strides=(2, 1, 2), padding="same", pool_mode=mode,
                                         data_format="channels_first"),
                      grad_arrays(r, (1, 2, 3, 3, 3)))


# Max-pool gradients with tied maxima (integer-valued data): each window's gradient goes to exactly
# one cell, its first maximum in row-major order, as TF's MaxPoolGrad does.  Tiling windows
# (stride = pool) take the ArgMax lowering, the others ORT's MaxPool indices.
TIE_POOLS = [((2, 2), (2, 2), "valid", (2, 7, 5, 3)), ((2, 2), (2, 2), "same", (2, 7, 5, 3)),
             ((3, 3), (3, 3), "same", (2, 8, 7, 2)), ((2, 3), (2, 3), "valid", (2, 5, 7, 2)),
             ((2, 2, 2), (2, 2, 2), "same", (1, 3, 5, 4, 2)), ((3, 2, 2), (3, 2, 2), "valid", (2, 6, 4, 5, 2)),
             ((3, 3), (2, 1), "same", (2, 6, 5, 2)), ((2, 2), (2, 3), "valid", (2, 5, 8, 2))]


def _pool_of(x, pool, strides, padding, data_format="channels_last"):
    pooling = K.pool2d if len(pool) == 2 else K.pool3d
    return pooling(x, pool, strides=strides, padding=padding, data_format=data_format)


def _tied(r, shape):
    return r.integers(-2, 3, shape).astype(np.float64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pool,strides,padding,shape", TIE_POOLS)
def test_max_pool_grad_ties_go_to_first_max(r, pool, strides, padding, shape, dtype):
    x = _tied(r, shape)
    ph = K.placeholder((None,) + shape[1:], dtype=dtype)  # run-time batch: window origins from Shape
    y = _pool_of(ph, pool, strides, padding)
    g = r.standard_normal(y.shape[1:]) * np.ones((shape[0],) + (1,) * (len(shape) - 1))
    dx = K.gradients(K.sum(y * K.constant(g, dtype=dtype)), [ph])[0]
    kcheck.check(dx, {ph: x.astype(dtype)}, np_max_pool_grad(x, g, pool, strides, padding), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool,strides,padding,shape", TIE_POOLS[:3] + TIE_POOLS[4:5])
def test_max_pool_grad_ties_channels_first(r, pool, strides, padding, shape):
    x = _tied(r, shape)
    xf = np.moveaxis(x, -1, 1)
    ph = K.placeholder(xf.shape)
    y = _pool_of(ph, pool, strides, padding, "channels_first")
    g = r.standard_normal(y.shape)
    dx = K.gradients(K.sum(y * K.constant(g)), [ph])[0]
    want = np_max_pool_grad(x, np.moveaxis(g, 1, -1), pool, strides, padding)
    kcheck.check(dx, {ph: xf.astype(np.float32)}, np.moveaxis(want, -1, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool,strides,padding,shape", TIE_POOLS[:4] + TIE_POOLS[-1:])
def test_max_pool_select_ties(r, pool, strides, padding, shape):
    """The gradient's own gradient in g reads its argument at the same first maxima."""
    x = _tied(r, shape)
    ph = K.placeholder(shape)
    y = _pool_of(ph, pool, strides, padding)
    g = K.placeholder(y.shape)
    dx = K.gradients(K.sum(y * g), [ph])[0]
    t = r.standard_normal(shape)
    dg = K.gradients(K.sum(dx * K.constant(t)), [g])[0]
    kcheck.check(dg, {ph: x.astype(np.float32), g: np.zeros(y.shape, np.float32)},
                 np_max_pool_select(x, t, pool, strides, padding), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("pool,strides,padding,shape", [TIE_POOLS[0], TIE_POOLS[2], TIE_POOLS[6]])
def test_relu_then_max_pool_grad(r, data_format, pool, strides, padding, shape):
    """relu → max pool: the relu mask is applied on the pooled side (ops/nn.py); the gradient is
    TF's, ties among relu's zeros included, also where relu's output feeds something else too."""
    x = _tied(r, shape)
    xin = x if data_format == "channels_last" else np.moveaxis(x, -1, 1)
    ph = K.placeholder(xin.shape)
    h = K.relu(ph)
    y = _pool_of(h, pool, strides, padding, data_format)
    g = r.standard_normal(y.shape)
    v = r.standard_normal(xin.shape)
    loss = K.sum(y * K.constant(g))
    g_last = g if data_format == "channels_last" else np.moveaxis(g, 1, -1)
    want = np_max_pool_grad(np.maximum(x, 0), g_last, pool, strides, padding) * (x > 0)
    want = want if data_format == "channels_last" else np.moveaxis(want, -1, 1)
    both = K.gradients(loss + K.sum(h * K.constant(v)), [ph])[0]
    kcheck.check([K.gradients(loss, [ph])[0], both], {ph: xin.astype(np.float32)},
                 [want, want + v * (xin > 0)], rtol=1e-5, atol=1e-5)


def test_tiled_max_pool_second_order(r):
    """Finite differences through the tiling windows' gradient and its gradient (no ties)."""
    weights = r.standard_normal((2, 3, 2, 2))
    build = _first_grad(lambda x: K.pool2d(x, (2, 2), strides=(2, 2), padding="same"), 0, weights)
    kcheck.check_grad(lambda x: build(x) * x, [r.standard_normal((2, 5, 4, 2))])


def _first_grad(build, wrt, weights):
    """The gradient of <build(...), weights> with respect to input ``wrt``, as a tensor."""
    def outer(*phs):
        out = build(*phs)
        return K.gradients(K.sum(out * K.constant(weights, dtype="float64")), [phs[wrt]])[0]
    return outer


@pytest.mark.parametrize("wrt", [0, 1])
def test_conv_second_order(r, wrt):
    """Differentiating the input and kernel gradients checks conv_transpose's and
    conv_kernel_grad's own gradient rules."""
    x, w = grad_arrays(r, (1, 5, 4, 2), (2, 3, 2, 2))
    weights = r.standard_normal((1, 3, 2, 2))
    build = _first_grad(lambda x, w: K.conv2d(x, w, strides=(2, 2), padding="same"), wrt, weights)
    kcheck.check_grad(lambda x, w: build(x, w) * build(x, w), [x, w])


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_second_order(r, mode):
    x = r.standard_normal((1, 5, 4, 2))
    weights = r.standard_normal((1, 3, 2, 2))
    build = _first_grad(lambda x: K.pool2d(x, (2, 3), strides=(2, 2), padding="same", pool_mode=mode), 0, weights)
    kcheck.check_grad(lambda x: build(x) * x, [x])


# -- float32 gradient lowerings (native ONNX ops) agree with the float64 ones --------------------------
GRAD_CASES = {
    "conv2d_same_s2": (lambda x, w: K.conv2d(x, w, strides=(2, 2), padding="same"), [(2, 7, 6, 3), (3, 3, 3, 4)]),
    "conv2d_cf_dil": (lambda x, w: K.conv2d(x, w, padding="valid", dilation_rate=(2, 1),
                                            data_format="channels_first"), [(2, 3, 7, 6), (3, 2, 3, 2)]),
    "conv1d_same_s2": (lambda x, w: K.conv1d(x, w, strides=2, padding="same"), [(2, 9, 2), (3, 2, 3)]),
    "conv1d_causal": (lambda x, w: K.conv1d(x, w, padding="causal", dilation_rate=2), [(2, 9, 2), (3, 2, 3)]),
    "depthwise": (lambda x, d: K.depthwise_conv2d(x, d, strides=(2, 1), padding="same"),
                  [(2, 5, 6, 3), (3, 3, 3, 2)]),
    "transpose": (lambda x, w: K.conv2d_transpose(x, w, (2, 7, 8, 2), strides=(2, 2), padding="same"),
                  [(2, 4, 4, 3), (3, 3, 2, 3)]),
    "maxpool": (lambda x: K.pool2d(x, (3, 3), strides=(2, 2), padding="same"), [(2, 7, 6, 3)]),
    "maxpool_tiled_same": (lambda x: K.pool2d(x, (2, 2), strides=(2, 2), padding="same"), [(2, 7, 5, 3)]),
    "maxpool_tiled_tail": (lambda x: K.pool2d(x, (2, 2), strides=(2, 2)), [(2, 7, 5, 3)]),
    "maxpool_tiled_valid": (lambda x: K.pool2d(x, (2, 2), strides=(2, 3), data_format="channels_first"),
                            [(2, 3, 7, 8)]),
    "avgpool": (lambda x: K.pool2d(x, (3, 2), strides=(2, 2), padding="same", pool_mode="avg"), [(2, 7, 5, 3)]),
    "conv3d": (lambda x, w: K.conv3d(x, w, strides=(1, 2, 2), padding="same"), [(1, 3, 5, 4, 2), (2, 2, 3, 2, 2)]),
}


def _grads(build, arrays, dtype, spatial_known=True):
    """K.gradients of sum(out²); data (the first input) optionally with unknown spatial sizes."""
    phs = [K.placeholder(a.shape if spatial_known or i else (a.shape[0],) + (None,) * (a.ndim - 2) + a.shape[-1:],
                         dtype=dtype) for i, a in enumerate(arrays)]
    out = build(*phs)
    return K.gradients(K.sum(out * out), phs), phs


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_native_gradients_match_float64(r, case):
    build, shapes = GRAD_CASES[case]
    arrays = [r.standard_normal(s) for s in shapes]
    grads64, phs64 = _grads(build, arrays, "float64")
    want = K.function(phs64, grads64)(arrays)
    grads32, phs32 = _grads(build, arrays, "float32")
    got = kcheck.evaluate(grads32, dict(zip(phs32, [a.astype(np.float32) for a in arrays])), rtol=1e-4, atol=1e-4)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-3)
    if case in ("maxpool", "maxpool_tiled_same", "maxpool_tiled_tail", "maxpool_tiled_valid", "avgpool",
                "conv2d_same_s2", "depthwise"):
        # the same gradients with spatial sizes known only at run time (pads computed in-graph)
        # onnx.reference 1.23's ConvTranspose mishandles group > 1 (it slices W by output channel;
        # ONNX's W is (in, out/group, ...)): the run-time-sized grouped input gradient, which
        # lowers to ConvTranspose, runs on ONNX Runtime only
        reference = case != "depthwise"
        for dtype in ("float32", "float64"):
            grads, phs = _grads(build, arrays, dtype, spatial_known=False)
            got = kcheck.evaluate(grads, dict(zip(phs, [a.astype(dtype) for a in arrays])), reference=reference,
                                  rtol=1e-4, atol=1e-4)
            for g, e in zip(got, want):
                np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-3)


def test_float16(r):
    """float16 runs natively, except the max-pool scatter, which ORT only has in float32."""
    builds = [lambda x, w, d: K.conv2d(x, w, strides=(2, 2), padding="same"),
              lambda x, w, d: K.depthwise_conv2d(x, d, padding="same"),
              lambda x, w, d: K.pool2d(x, (2, 2), strides=(2, 2), padding="same"),
              lambda x, w, d: K.pool2d(x, (3, 3), strides=(2, 1), padding="same"),
              lambda x, w, d: K.pool2d(x, (3, 2), strides=(2, 2), padding="same", pool_mode="avg")]
    arrays = [r.standard_normal((2, 7, 6, 3)), r.standard_normal((3, 3, 3, 4)), r.standard_normal((3, 3, 3, 2))]
    for build in builds:
        results = {}
        for dtype in ("float16", "float32"):
            phs = [K.placeholder(a.shape, dtype=dtype) for a in arrays]
            y = build(*phs)
            grads = K.gradients(K.sum(y * y), phs[:1])
            results[dtype] = K.function(phs, [y] + grads)([a.astype(dtype) for a in arrays])
        for half, single in zip(results["float16"], results["float32"]):
            assert half.dtype == np.float16
            np.testing.assert_allclose(half.astype(np.float32), single, rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("opset", [17, 21])
def test_other_opsets(r, opset):
    """Opset 17 has no Col2Im: transposed convs lower to ConvTranspose there.  The tiled max pool's
    gradient (SpaceToDepth, ArgMax, MaxUnpool) lowers alike at both ends of the opset range."""
    from kgraph.runtime.function import Function
    x, w = r.standard_normal((2, 7, 6, 3)).astype(np.float32), r.standard_normal((3, 3, 3, 4)).astype(np.float32)
    outs = []
    for version in (opset, 18):
        phs = [K.placeholder(x.shape), K.placeholder(w.shape)]
        c = K.conv2d(phs[0], phs[1], strides=(2, 2), padding="same")
        y = K.pool2d(c, (2, 2), padding="same", pool_mode="avg")
        m = K.pool2d(K.relu(c), (2, 2), strides=(2, 2), padding="same")
        t = K.conv2d_transpose(y, phs[1], (2, 7, 6, 3), strides=(2, 2), padding="same")
        grads = K.gradients(K.sum(y * y) + K.sum(t * t) + K.sum(m * m), phs)
        fn = Function(phs, [y, t, m] + grads, opset=version)
        model = fn.to_onnx()
        assert model.opset_import[0].version == version
        kcheck.onnx.checker.check_model(model, full_check=True)
        outs.append(fn([x, w]))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
