"""Shape manipulation: every K function against numpy on ONNX Runtime and onnx.reference, its
gradients against finite differences, and its argument errors."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

import kgraph.backend as K
from kcheck import check, check_grad


def rand(*shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# -- independent numpy references ----------------------------------------------------------------
def np_bilinear(x, fh, fw, channels_first=False):
    """TF1 resize_bilinear (align_corners=False, half_pixel_centers=False) by its definition:
    source = out * in/out, lerp between floor and min(ceil, in - 1)."""
    if channels_first:
        x = x.transpose(0, 2, 3, 1)
    h, w = x.shape[1:3]

    def grid(size, factor):
        src = np.arange(size * factor) * (size / (size * factor))
        lo = np.floor(src).astype(int)
        hi = np.minimum(np.ceil(src).astype(int), size - 1)
        return lo, hi, src - lo

    y0, y1, fy = grid(h, fh)
    x0, x1, fx = grid(w, fw)
    fx = fx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    out = top + (bottom - top) * fy[None, :, None, None]
    return out.transpose(0, 3, 1, 2) if channels_first else out


def np_nearest(x, factors):
    for axis, f in enumerate(factors):
        x = np.repeat(x, f, axis=axis)
    return x


# -- concatenate ----------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1, 2, -3])
def test_concatenate(axis):
    a, b = rand(2, 3, 4), rand(2, 3, 4, seed=1)
    x, y = K.placeholder((2, 3, 4)), K.placeholder((2, 3, 4))
    check(K.concatenate([x, y, x], axis=axis), {x: a, y: b}, np.concatenate([a, b, a], axis=axis))


def test_concatenate_unknown_batch_and_python_values():
    x = K.placeholder((None, 2))
    a = rand(3, 2)
    out = K.concatenate([x, x * 2], axis=0)
    assert K.int_shape(out) == (None, 2)
    check(out, {x: a}, np.concatenate([a, a * 2], axis=0))
    v = K.placeholder((2,))
    check(K.concatenate([v, [1.0, 2.0]]), {v: a[0]}, np.concatenate([a[0], [1, 2]]).astype("float32"))
    check(K.concatenate([x]), {x: a}, a)


def test_concatenate_of_int_shape_pieces_builds_a_reshape_target():
    x = K.placeholder((None, 6))
    target = K.concatenate([K.shape(x)[:1], K.constant([2, 3], dtype="int32")])
    a = rand(4, 6)
    check(K.reshape(x, target), {x: a}, a.reshape(4, 2, 3))



def test_concatenate_delegates_sparse_operands(monkeypatch):
    from kgraph.backend import sparse
    sp, x = K.placeholder((None, 3), sparse=True), K.placeholder((None, 3))
    calls = []
    monkeypatch.setattr(sparse, "concatenate", lambda tensors, axis: calls.append((tensors, axis)) or "delegated")
    assert K.concatenate([x, sp], axis=-1) == "delegated"
    assert calls == [([x, sp], 1)]


def test_concatenate_of_sparse_and_dense_operands_runs():
    # ORT only: a scipy.sparse feed goes through K.function, which kcheck's reference run bypasses
    sp, x = K.placeholder((None, 3), sparse=True), K.placeholder((None, 3))
    m = scipy.sparse.random(2, 3, density=0.5, format="csr", dtype=np.float32, random_state=0)
    a = rand(2, 3)
    got = K.function([x, sp], [K.concatenate([x, sp])])([a, m])[0]
    np.testing.assert_allclose(got, np.concatenate([a, m.toarray()], axis=-1))


def test_concatenate_grad():
    check_grad(lambda a, b: K.concatenate([a, b, a], axis=-1), [rand(2, 3), rand(2, 2, seed=1)])
    check_grad(lambda a, b: K.concatenate([a, b], axis=0), [rand(1, 3), rand(2, 3, seed=1)])


# -- reshape, flatten, batch_flatten ---------------------------------------------------------
@pytest.mark.parametrize("target", [(3, 8), [-1, 4], (2, -1, 2, 3), np.array([24]), (4, 6, 1)])
def test_reshape_static(target):
    a = rand(2, 3, 4)
    x = K.placeholder((2, 3, 4))
    check(K.reshape(x, target), {x: a}, a.reshape(tuple(np.asarray(target).tolist())))


def test_reshape_with_unknown_batch():
    a = rand(5, 3, 4)
    x = K.placeholder((None, 3, 4))
    out = K.reshape(x, (-1, 12))
    assert K.int_shape(out) == (None, 12)
    check(out, {x: a}, a.reshape(-1, 12))


def test_reshape_with_shape_tensors():
    a, b = rand(5, 3, 4), rand(5, 12)
    x, y = K.placeholder((None, 3, 4)), K.placeholder((None, 12))
    from_shape = K.reshape(y, K.shape(x))
    stacked = K.reshape(x, K.stack([K.shape(x)[0], 12]))
    mixed = K.reshape(y, (-1, K.shape(x)[1], 4))  # as Keras' TimeDistributed builds it
    assert K.int_shape(mixed) == (None, None, 4)
    check([from_shape, stacked, mixed], {x: a, y: b}, [b.reshape(5, 3, 4), a.reshape(5, 12), b.reshape(5, 3, 4)])
    check(K.reshape(x, K.constant([60], dtype="int64")), {x: a}, a.reshape(60))



def test_reshape_grad():
    check_grad(lambda a: K.reshape(a, (3, -1)), [rand(2, 3, 2)])
    check_grad(lambda a: K.reshape(a, K.stack([K.shape(a)[1], -1])), [rand(2, 3)])


@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 3, 4), (1, 2, 1, 3)])
def test_flatten_and_batch_flatten(shape):
    a = rand(*shape)
    x = K.placeholder((None,) + shape[1:])
    flat, batch = K.flatten(x), K.batch_flatten(x)
    rest = int(np.prod(shape[1:]))
    assert K.int_shape(flat) == (None,) and K.int_shape(batch) == (None, rest)
    check([flat, batch], {x: a}, [a.reshape(-1), a.reshape(shape[0], -1)])


def test_batch_flatten_of_a_scalar_and_of_unknown_inner_dims():
    check(K.batch_flatten(K.constant(3.0)), {}, np.full((1, 1), 3, "float32"))
    x = K.placeholder((2, None, 3))
    a = rand(2, 4, 3)
    assert K.int_shape(K.batch_flatten(x)) == (2, None)
    check(K.batch_flatten(x), {x: a}, a.reshape(2, 12))


def test_flatten_grads():
    check_grad(K.flatten, [rand(2, 3)])
    check_grad(K.batch_flatten, [rand(2, 3, 2)])


# -- permute_dimensions ---------------------------------------------------------------------
@pytest.mark.parametrize("pattern", [(0, 2, 1), (2, 0, 1), [1, 0, 2], (-1, 0, 1)])
def test_permute_dimensions(pattern):
    a = rand(2, 3, 4)
    x = K.placeholder((None, 3, 4))
    perm = [p % 3 for p in pattern]
    out = K.permute_dimensions(x, pattern)
    assert K.int_shape(out) == tuple((None, 3, 4)[p] for p in perm)
    check(out, {x: a}, a.transpose(perm))


def test_permute_dimensions_grad():
    check_grad(lambda a: K.permute_dimensions(a, (2, 0, 1)), [rand(2, 3, 4)])


# -- resize_images / resize_volumes ----------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])  # native Resize / decomposition
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("factors", [(2, 3), (1, 2), (3, 1)])
def test_resize_images(dtype, data_format, factors):
    a = rand(2, 3, 4, 5, dtype=dtype)
    x = K.placeholder((None, None, None, 5) if data_format == "channels_last" else (None, 3, None, None), dtype=dtype)
    fh, fw = factors
    first = data_format == "channels_first"
    layout = (1, 1, fh, fw) if first else (1, fh, fw, 1)
    nearest = K.resize_images(x, fh, fw, data_format)
    bilinear = K.resize_images(x, fh, fw, data_format, interpolation="bilinear")
    assert nearest.dtype == bilinear.dtype == dtype
    check([nearest, bilinear], {x: a}, [np_nearest(a, layout), np_bilinear(a, fh, fw, first)], rtol=1e-5, atol=1e-5)


def test_resize_images_static_shape_and_default_format():
    x = K.placeholder((None, 3, 4, 2))
    assert K.int_shape(K.resize_images(x, 2, 3, "channels_last")) == (None, 6, 12, 2)
    assert K.int_shape(K.resize_images(x, 2, 3, "channels_first")) == (None, 3, 8, 6)
    assert K.int_shape(K.resize_images(x, 2, 2, None)) == (None, 6, 8, 2)


def test_resize_images_integer_inputs():
    a = np.arange(2 * 3 * 4, dtype="int32").reshape(1, 3, 4, 2)
    for dtype in ["int32", "int64", "uint8", "bool"]:  # native and decomposed nearest
        x = K.placeholder((1, 3, 4, 2), dtype=dtype)
        v = a.astype(dtype) if dtype != "bool" else a % 3 == 0
        check(K.resize_images(x, 2, 2, "channels_last"), {x: v}, np_nearest(v, (1, 2, 2, 1)))
    x = K.placeholder((1, 3, 4, 2), dtype="int32")
    out = K.resize_images(x, 2, 3, "channels_last", interpolation="bilinear")
    assert out.dtype == "float32"  # as TF's resize_bilinear
    check(out, {x: a}, np_bilinear(a.astype("float32"), 2, 3), atol=1e-5)



@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_resize_images_grad(data_format, interpolation):
    check_grad(lambda a: K.resize_images(a, 2, 3, data_format, interpolation=interpolation), [rand(1, 2, 3, 2)])
    check_grad(lambda a: K.resize_images(a, 3, 1, data_format, interpolation=interpolation), [rand(2, 1, 2, 2)])


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_resize_images_grad_with_unknown_dims(data_format, interpolation):
    """Run-time shapes take the other lowering of the gradient's reshapes; the expected gradient
    is the transpose of the resize as a matrix, built column by column from the numpy resize."""
    first = data_format == "channels_first"
    shape = (2, 2, 3, 2)
    a = rand(*shape, dtype="float64")

    def np_resize(v):
        return np_bilinear(v, 2, 3, first) if interpolation == "bilinear" else \
            np_nearest(v, (1, 1, 2, 3) if first else (1, 2, 3, 1))
    w = rand(*np_resize(a).shape, dtype="float64", seed=1)
    basis = np.eye(a.size).reshape((a.size,) + shape)
    expected = np.array([np.sum(np_resize(e) * w) for e in basis]).reshape(shape)
    x = K.placeholder((None,) * 4, dtype="float64")
    loss = K.sum(K.resize_images(x, 2, 3, data_format, interpolation) * K.constant(w, dtype="float64"))
    check(K.gradients(loss, [x])[0], {x: a}, expected, rtol=1e-10, atol=1e-10)


def test_resize_images_float16():
    a = rand(1, 2, 3, 2, dtype="float16")
    x = K.placeholder((1, 2, 3, 2), dtype="float16")
    outs = [K.resize_images(x, 2, 2, "channels_last"), K.resize_images(x, 2, 2, "channels_last", "bilinear")]
    assert [o.dtype for o in outs] == ["float16", "float16"]
    check(outs, {x: a}, [np_nearest(a, (1, 2, 2, 1)), np_bilinear(a.astype("float32"), 2, 2)], rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_resize_images_second_order_grad(interpolation):
    def grad_of_energy(a):
        up = K.resize_images(a, 2, 2, "channels_last", interpolation=interpolation)
        return K.gradients(K.sum(up * up * up), [a])[0]
    check_grad(grad_of_energy, [rand(1, 3, 2, 1)], rtol=1e-4)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_resize_volumes(data_format, dtype):
    a = rand(2, 2, 3, 2, 2, dtype=dtype)
    x = K.placeholder((None,) * 5, dtype=dtype)
    layout = (1, 1, 2, 3, 1) if data_format == "channels_first" else (1, 2, 3, 1, 1)
    out = K.resize_volumes(x, *layout[1:4] if data_format == "channels_last" else layout[2:5], data_format)
    check(out, {x: a}, np_nearest(a, layout))
    check_grad(lambda t: K.resize_volumes(t, 2, 1, 3, data_format), [rand(1, 2, 2, 2, 2)])



# -- repeat_elements, repeat, tile ---------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_repeat_elements(axis, dtype):
    a = np.arange(24).reshape(2, 3, 4)
    a = (a % 2 == 0) if dtype == "bool" else a.astype(dtype)
    x = K.placeholder((None, 3, None), dtype=dtype)
    out = K.repeat_elements(x, 3, axis)
    static = [None, 3, None]
    static[axis] = None if static[axis] is None else static[axis] * 3
    assert K.int_shape(out) == tuple(static)
    check(out, {x: a}, np.repeat(a, 3, axis=axis))


def test_repeat_elements_grad():
    check_grad(lambda a: K.repeat_elements(a, 3, 1), [rand(2, 3)])
    check_grad(lambda a: K.repeat_elements(a, 2, -1), [rand(2, 2, 2)])


def test_repeat():
    a = rand(3, 4)
    x = K.placeholder((None, 4))
    out = K.repeat(x, 5)
    assert K.int_shape(out) == (None, 5, 4)
    check(out, {x: a}, np.repeat(a[:, None, :], 5, axis=1))
    n = K.shape(x)[0]  # a run-time count
    check(K.repeat(x, n), {x: a}, np.repeat(a[:, None, :], 3, axis=1))
    check_grad(lambda t: K.repeat(t, 3), [rand(2, 3)])


@pytest.mark.parametrize("n, expected_reps", [(3, (1, 3)), ((2, 3), (2, 3)), ([2], (1, 2)), ((1, 1), (1, 1)),
                                             (np.array([2, 2]), (2, 2)), ((0, 2), (0, 2))])
def test_tile(n, expected_reps):
    a = rand(2, 3)
    x = K.placeholder((None, 3))
    check(K.tile(x, n), {x: a}, np.tile(a, expected_reps))


def test_tile_with_tensor_counts_and_static_shapes():
    a = rand(2, 3)
    x = K.placeholder((None, 3))
    assert K.int_shape(K.tile(x, (2, 2))) == (None, 6)
    counts = K.stack([K.shape(x)[0], 2])
    check(K.tile(x, counts), {x: a}, np.tile(a, (2, 2)))
    check(K.tile(x, K.constant([1, 3], dtype="int32")), {x: a}, np.tile(a, (1, 3)))
    assert K.int_shape(K.tile(x, K.constant([1, 3], dtype="int32"))) == (None, 9)



def run_time_ints(x, values):
    """An int32 vector only known at run time (built from ``x``'s shape)."""
    return K.shape(x)[:len(values)] * 0 + K.constant(values, dtype="int32")


def test_tile_grads():
    check_grad(lambda a: K.tile(a, (2, 3)), [rand(2, 3)])
    check_grad(lambda a: K.tile(a, (1, 2, 1)), [rand(2, 1, 3)])
    check_grad(lambda a: K.tile(a, run_time_ints(a, [3, 1, 2])), [rand(2, 2, 2)])
    check_grad(lambda a: K.tile(a, (0, 2)), [rand(2, 2)])  # an empty result: zero gradient

    def second_order(a):
        t = K.tile(a, (2, 2))
        return K.gradients(K.sum(t * t * t), [a])[0]
    check_grad(second_order, [rand(2, 2)], rtol=1e-4)


@settings(max_examples=12, deadline=None)
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       reps=st.lists(st.integers(0, 3), min_size=1, max_size=3),
       rep=st.integers(1, 3), data=st.data())
def test_tile_and_repeat_elements_match_numpy(shape, reps, rep, data):
    a = rand(*shape, seed=len(shape))
    reps = reps[:len(shape)]
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = K.placeholder((None,) * len(shape))
    check([K.tile(x, reps), K.repeat_elements(x, rep, axis)], {x: a},
          [np.tile(a, [1] * (len(shape) - len(reps)) + reps), np.repeat(a, rep, axis=axis)])


# -- arange ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    ((5,), np.arange(5, dtype="int32")),
    ((2, 10, 3), np.arange(2, 10, 3, dtype="int32")),
    ((10, 2, -3), np.arange(10, 2, -3, dtype="int32")),
    ((-3,), np.arange(0, dtype="int32")),  # Keras: a negative single argument is an empty range
    ((4, 2), np.arange(4, 2, dtype="int32")),
    ((0.5, 3), np.arange(0.5, 3, dtype="float32")),  # float bounds: float32, as Keras' TF backend
    ((2.5,), np.arange(2.5, dtype="float32")),
])
def test_arange(args, expected):
    out = K.arange(*args)
    assert out.dtype == expected.dtype.name
    check(out, {}, expected)


def test_arange_dtypes_and_tensor_bounds():
    check(K.arange(1, 4, dtype="float32"), {}, np.arange(1, 4, dtype="float32"))
    check(K.arange(6, step=2, dtype="int64"), {}, np.arange(0, 6, 2, dtype="int64"))
    assert K.int_shape(K.arange(1, 10, 2)) == (5,)
    n = K.placeholder((), dtype="int32")
    for value in [4, -2]:
        check(K.arange(n), {n: np.int32(value)}, np.arange(max(value, 0), dtype="int32"))
    check(K.arange(1, n, 2, dtype="float64"), {n: np.int32(8)}, np.arange(1, 8, 2, dtype="float64"))
    f = K.placeholder((), dtype="float64")
    check(K.arange(0, f, 0.5), {f: np.float64(2)}, np.arange(0, 2, 0.5))



# -- expand_dims, squeeze, stack -------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_expand_dims(axis):
    a = rand(2, 3)
    x = K.placeholder((None, 3))
    out = K.expand_dims(x, axis)
    assert K.ndim(out) == 3 and out.shape[axis] == 1
    check(out, {x: a}, np.expand_dims(a, axis))


def test_expand_dims_default_and_grad():
    x = K.placeholder((2, 3))
    assert K.int_shape(K.expand_dims(x)) == (2, 3, 1)
    check_grad(lambda a: K.expand_dims(a, 1), [rand(2, 3)])


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_squeeze(axis):
    shape = {1: (2, 1, 3), -1: (2, 3, 1), 0: (1, 2, 3)}[axis]
    a = rand(*shape)
    x = K.placeholder(tuple(None if i == 0 and axis != 0 else d for i, d in enumerate(shape)))
    check(K.squeeze(x, axis), {x: a}, np.squeeze(a, axis))


def test_squeeze_unknown_dim_and_grad():
    x = K.placeholder((None, None))
    check(K.squeeze(x, 1), {x: rand(3, 1)}, rand(3, 1)[:, 0])
    check_grad(lambda a: K.squeeze(a, -1), [rand(2, 3, 1)])


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_stack(axis):
    a, b = rand(2, 3), rand(2, 3, seed=1)
    x, y = K.placeholder((None, 3)), K.placeholder((None, 3))
    check(K.stack([x, y, x], axis=axis), {x: a, y: b}, np.stack([a, b, a], axis=axis))


def test_stack_of_scalars_and_grad():
    x = K.placeholder((None, 3))
    check(K.stack([K.shape(x)[0], 7, K.shape(x)[1]]), {x: rand(4, 3)}, np.array([4, 7, 3], "int32"))
    check(K.stack([x]), {x: rand(2, 3)}, rand(2, 3)[None])
    check_grad(lambda a, b: K.stack([a, b, a], axis=1), [rand(2, 3), rand(2, 3, seed=1)])


# -- padding --------------------------------------------------------------------------------
def test_temporal_padding():
    a = rand(2, 3, 4)
    x = K.placeholder((None, None, 4))
    check([K.temporal_padding(x), K.temporal_padding(x, (0, 2))], {x: a},
          [np.pad(a, ((0, 0), (1, 1), (0, 0))), np.pad(a, ((0, 0), (0, 2), (0, 0)))])
    assert K.int_shape(K.temporal_padding(K.placeholder((None, 5, 4)), (2, 3))) == (None, 10, 4)
    check_grad(lambda t: K.temporal_padding(t, (2, 1)), [rand(2, 3, 2)])


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_spatial_2d_padding(data_format):
    a = rand(2, 3, 4, 2)
    x = K.placeholder((None,) * 4)
    pad = ((1, 2), (0, 3))
    spatial = (pad[0], pad[1], (0, 0)) if data_format == "channels_last" else ((0, 0), pad[0], pad[1])
    check([K.spatial_2d_padding(x, pad, data_format), K.spatial_2d_padding(x, data_format=data_format)],
          {x: a}, [np.pad(a, ((0, 0),) + spatial),
                   np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)) if data_format == "channels_last"
                          else ((0, 0), (0, 0), (1, 1), (1, 1)))])
    check_grad(lambda t: K.spatial_2d_padding(t, pad, data_format), [rand(1, 2, 3, 2)])


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_spatial_3d_padding(data_format):
    a = rand(1, 2, 3, 2, 2)
    x = K.placeholder((None, 2, 3, 2, 2))
    pad = ((1, 0), (0, 2), (2, 1))
    spatial = pad + ((0, 0),) if data_format == "channels_last" else ((0, 0),) + pad
    out = K.spatial_3d_padding(x, pad, data_format)
    assert K.int_shape(out) == tuple([None] + [d + b + e for d, (b, e) in zip((2, 3, 2, 2), spatial)])
    check(out, {x: a}, np.pad(a, ((0, 0),) + spatial))
    check_grad(lambda t: K.spatial_3d_padding(t, pad, data_format), [rand(1, 2, 2, 1, 2)])


def test_padding_uses_the_default_data_format():
    K.set_image_data_format("channels_first")
    a = rand(1, 2, 3, 3)
    x = K.placeholder((1, 2, 3, 3))
    check(K.spatial_2d_padding(x, ((1, 0), (0, 1))), {x: a}, np.pad(a, ((0, 0), (0, 0), (1, 0), (0, 1))))



def test_pad_second_order_grad():
    def grad_of_energy(a):
        p = K.temporal_padding(a, (1, 2))
        return K.gradients(K.sum(p * p * p), [a])[0]
    check_grad(grad_of_energy, [rand(1, 2, 2)], rtol=1e-4)


# -- one_hot --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8"])
def test_one_hot(dtype):
    idx = np.array([[0, 2, 1], [3, 4, 2]], dtype=dtype)
    i = K.placeholder((None, 3), dtype=dtype)
    out = K.one_hot(i, 4)
    assert out.dtype == "float32" and K.int_shape(out) == (None, 3, 4)
    expected = (idx[..., None] == np.arange(4)).astype("float32")  # 4 is out of range: all zeros, as TF
    check(out, {i: idx}, expected)


def test_one_hot_negative_indices_and_floatx():
    i = K.placeholder((3,), dtype="int32")
    check(K.one_hot(i, 3), {i: np.array([-1, 0, 2], "int32")}, np.array([[0, 0, 0], [1, 0, 0], [0, 0, 1]], "float32"))
    K.set_floatx("float64")
    assert K.one_hot(i, 3).dtype == "float64"


# -- reverse --------------------------------------------------------------------------------
@pytest.mark.parametrize("axes", [0, -1, [0, 2], (1,), [], [-1, 0, 1]])
def test_reverse(axes):
    a = rand(2, 3, 4)
    x = K.placeholder((None, 3, 4))
    check(K.reverse(x, axes), {x: a}, np.flip(a, axis=axes) if axes != [] else a)


def test_reverse_grad():
    check_grad(lambda a: K.reverse(a, [0, 1]), [rand(2, 3)])


# -- slice ----------------------------------------------------------------------------------
@pytest.mark.parametrize("start, size", [([0, 1, 1], [2, 2, 3]), ((1, 0, 2), (-1, 3, -1)), ([0, 0, 0], [0, 3, 4])])
def test_slice_static(start, size):
    a = rand(2, 3, 4)
    x = K.placeholder((None, 3, 4))
    expected = a[tuple(np.s_[s:(None if z == -1 else s + z)] for s, z in zip(start, size))]
    out = K.slice(x, start, size)
    assert K.int_shape(out)[1:] == expected.shape[1:]
    check(out, {x: a}, expected)


def test_slice_with_tensor_arguments():
    a = rand(3, 5)
    x = K.placeholder((None, 5))
    last_row = K.slice(x, K.stack([K.shape(x)[0] - 1, 0]), K.constant([1, -1], dtype="int32"))
    middle = K.slice(x, [0, K.shape(x)[0] - 2], [-1, 2])
    by_constants = K.slice(x, K.constant([1, 1], dtype="int32"), K.constant([2, 3], dtype="int32"))
    assert K.int_shape(by_constants) == (2, 3)
    check([last_row, middle, by_constants], {x: a}, [a[2:3], a[:, 1:3], a[1:3, 1:4]])


def test_slice_grads():
    check_grad(lambda a: K.slice(a, [1, 0, 1], [1, -1, 2]), [rand(2, 3, 4)])
    check_grad(lambda a: K.slice(a, run_time_ints(a, [0, 1]), run_time_ints(a, [2, -1])), [rand(3, 3)])

    def second_order(a):
        s = K.slice(a, run_time_ints(a, [1, 0]), [1, 2])
        return K.gradients(K.sum(s * s * s), [a])[0]
    check_grad(second_order, [rand(2, 3)], rtol=1e-4)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_slice_matches_numpy(data):
    shape = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    start = [data.draw(st.integers(0, d - 1)) for d in shape]
    size = [data.draw(st.integers(-1, d - s)) for d, s in zip(shape, start)]
    a = rand(*shape)
    x = K.placeholder((None,) * len(shape))
    expected = a[tuple(np.s_[s:(None if z == -1 else s + z)] for s, z in zip(start, size))]
    check(K.slice(x, start, size), {x: a}, expected)


# -- pattern_broadcast ------------------------------------------------------------------------
def test_pattern_broadcast():
    a = rand(1, 1, 3)
    x = K.placeholder((None, 1, 3))
    out = K.pattern_broadcast(x, (True, True, False))
    assert K.int_shape(out) == (1, 1, 3)
    check([out, out + K.constant(np.ones((4, 1, 3)))], {x: a}, [a, np.broadcast_to(a + 1, (4, 1, 3))])
    same = K.pattern_broadcast(x, [False, True, False])
    assert K.int_shape(same) == (None, 1, 3)
    check(same, {x: rand(2, 1, 3)}, rand(2, 1, 3))
    check_grad(lambda t: K.pattern_broadcast(t, (True, False)), [rand(1, 3)])


# -- argument errors: each names the K function and the argument ----------------------------------
def P(*shape, dtype="float32"):
    return K.placeholder(shape, dtype=dtype)


ERRORS = [
    (lambda: K.concatenate([P(2, 3), P(2, 4)], axis=0), ValueError, "K.concatenate"),
    (lambda: K.concatenate([]), ValueError, "K.concatenate.*non-empty"),
    (lambda: K.concatenate([P(2, 3), P(2, 3, dtype="int32")]), ValueError, "K.concatenate.*dtypes"),
    (lambda: K.concatenate([K.constant(1.0), K.constant(2.0)]), ValueError, "K.concatenate.*scalars"),
    (lambda: K.concatenate([P(2, 3)] * 2, axis=1.5), TypeError, "K.concatenate.*axis"),
    (lambda: K.reshape(P(2, 3), (4, 2)), ValueError, "K.reshape.*cannot reshape"),
    (lambda: K.reshape(P(2, 3), (-1, -1)), ValueError, "K.reshape.*-1"),
    (lambda: K.reshape(P(2, 3), (None, 3)), TypeError, "K.reshape.*entries"),
    (lambda: K.reshape(P(2, 3), K.constant([[6]], dtype="int32")), ValueError, "K.reshape.*1-D"),
    (lambda: K.reshape(P(2, 3), K.constant([6.0])), TypeError, "K.reshape.*integer"),
    (lambda: K.permute_dimensions(P(2, 3, 4), (0, 1)), ValueError, "K.permute_dimensions.*permutation"),
    (lambda: K.permute_dimensions(P(2, 3, 4), (0, 1, 1)), ValueError, "K.permute_dimensions.*permutation"),
    (lambda: K.permute_dimensions(P(2, 3, 4), "021"), TypeError, "K.permute_dimensions.*pattern"),
    (lambda: K.resize_images(P(3, 4, 2), 2, 2, "channels_last"), ValueError, "K.resize_images.*4D"),
    (lambda: K.resize_images(P(1, 3, 4, 2), 0, 2, "channels_last"), ValueError, "K.resize_images.*height_factor"),
    (lambda: K.resize_images(P(1, 3, 4, 2), 2, 1.5, "channels_last"), ValueError, "K.resize_images.*width_factor"),
    (lambda: K.resize_images(P(1, 3, 4, 2), 2, 2, "channels_last", "bicubic"), ValueError,
     'K.resize_images.*"nearest" or "bilinear"'),
    (lambda: K.resize_images(P(1, 3, 4, 2), 2, 2, "NHWC"), ValueError, "K.resize_images.*data_format"),
    (lambda: K.resize_volumes(P(1, 2, 2, 2), 2, 2, 2, "channels_last"), ValueError, "K.resize_volumes.*5D"),
    (lambda: K.resize_volumes(P(1, 2, 2, 2, 1), -1, 2, 2, "channels_last"), ValueError,
     "K.resize_volumes.*depth_factor"),
    (lambda: K.repeat_elements(P(2, 3), 0, 1), ValueError, "K.repeat_elements.*rep"),
    (lambda: K.repeat_elements(P(2, 3), 2, 2), ValueError, "K.repeat_elements.*axis"),
    (lambda: K.repeat(P(2, 3, 4), 2), ValueError, "K.repeat.*2D"),
    (lambda: K.tile(P(2, 3), (1, 2, 3)), ValueError, "K.tile.*3 entries"),
    (lambda: K.tile(P(2, 3), (1, -2)), ValueError, "K.tile.*non-negative"),
    (lambda: K.tile(P(2, 3), "2"), TypeError, "K.tile.*`n`"),
    (lambda: K.tile(P(2, 3), K.constant([1, 2, 3], dtype="int32")), ValueError, "K.tile.*3 entries"),
    (lambda: K.arange(0, 4, 0), ValueError, "K.arange.*step"),
    (lambda: K.arange(P(2, dtype="int32")), ValueError, "K.arange.*scalar"),
    (lambda: K.arange(0, 4, dtype="complex64"), TypeError, "K.arange.*dtype"),
    (lambda: K.arange(0, "4"), TypeError, "K.arange.*stop"),
    (lambda: K.expand_dims(P(2, 3), 3), ValueError, "K.expand_dims.*out of range"),
    (lambda: K.expand_dims(P(2, 3), -4), ValueError, "K.expand_dims.*out of range"),
    (lambda: K.squeeze(P(2, 3), 1), ValueError, "K.squeeze.*size 3"),
    (lambda: K.squeeze(P(2, 1), 2), ValueError, "K.squeeze.*axis"),
    (lambda: K.stack([P(None, 3), P(3)]), ValueError, "K.stack.*same rank"),
    (lambda: K.stack([P(2, 3)] * 2, axis=3), ValueError, "K.stack.*out of range"),
    (lambda: K.stack([]), ValueError, "K.stack.*non-empty"),
    (lambda: K.temporal_padding(P(2, 3)), ValueError, "K.temporal_padding.*3D"),
    (lambda: K.temporal_padding(P(2, 3, 4), (1, -1)), ValueError, "K.temporal_padding.*padding"),
    (lambda: K.spatial_2d_padding(P(1, 2, 3, 4), ((1, 1),)), ValueError, "K.spatial_2d_padding.*padding"),
    (lambda: K.spatial_2d_padding(P(2, 3, 4)), ValueError, "K.spatial_2d_padding.*4D"),
    (lambda: K.spatial_3d_padding(P(1, 2, 2, 2, 1), data_format="NDHWC"), ValueError,
     "K.spatial_3d_padding.*data_format"),
    (lambda: K.spatial_3d_padding(P(1, 2, 2, 2, 1), ((1, 1), (1, 1), (1, 1.5))), ValueError,
     "K.spatial_3d_padding.*padding"),
    (lambda: K.one_hot(P(3), 3), TypeError, "K.one_hot.*integer"),
    (lambda: K.one_hot(P(3, dtype="int32"), 0), ValueError, "K.one_hot.*num_classes"),
    (lambda: K.reverse(P(2, 3), [1, -1]), ValueError, "K.reverse.*twice"),
    (lambda: K.reverse(P(2, 3), 2), ValueError, "K.reverse.*out of range"),
    (lambda: K.reverse(P(2, 3), "1"), TypeError, "K.reverse.*axes"),
    (lambda: K.slice(P(2, 3), [0], [1]), ValueError, "K.slice.*should match"),
    (lambda: K.slice(P(2, 3), [0, 0], [1, 1, 1]), ValueError, "K.slice.*should match"),
    (lambda: K.slice(P(2, 3), [-1, 0], [1, 1]), ValueError, "K.slice.*>= 0"),
    (lambda: K.slice(P(2, 3), [1, 1], [1, 3]), ValueError, "K.slice.*exceeds"),
    (lambda: K.slice(P(2, 3), [0.5, 0], [1, 1]), TypeError, "K.slice.*start"),
    (lambda: K.pattern_broadcast(P(None, 1, 3), (False, False, True)), ValueError, "K.pattern_broadcast.*size 3"),
    (lambda: K.pattern_broadcast(P(None, 1, 3), (True,)), ValueError, "K.pattern_broadcast.*3 booleans"),
]


@pytest.mark.parametrize("call, error, message", ERRORS, ids=[f"{i}-{m.split('.')[1][:20]}" for i, (_, _, m)
                                                              in enumerate(ERRORS)])
def test_argument_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# -- the lowering at the other supported opsets --------------------------------------------------
@pytest.mark.parametrize("opset", [17, 21])
def test_lowering_at_opsets_17_and_21(opset):
    a = rand(2, 3, 4, 2)
    x = K.placeholder((None, 3, 4, 2))
    i = K.placeholder((None,), dtype="int32")
    outs = [K.resize_images(x, 2, 2, "channels_last", "bilinear"), K.resize_images(x, 2, 1, "channels_first"),
            K.spatial_2d_padding(x), K.tile(x, (1, 2, 1, 1)), K.reverse(x, [1, 2]),
            K.slice(x, [0, K.shape(x)[1] - 2, 0, 0], [-1, 2, 3, 1]), K.batch_flatten(x), K.one_hot(i, 3),
            K.arange(K.shape(i)[0]), K.reshape(x, K.stack([K.shape(x)[0], -1]))]
    expected = [np_bilinear(a, 2, 2), np_nearest(a, (1, 1, 2, 1)), np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0))),
                np.tile(a, (1, 2, 1, 1)), a[:, ::-1, ::-1], a[:, 1:3, 0:3, 0:1], a.reshape(2, -1),
                np.eye(3, dtype="float32")[[0, 2]], np.arange(2, dtype="int32"), a.reshape(2, -1)]
    fn = K.function([x, i], outs)
    model = fn.to_onnx(opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    feeds = dict(zip([v.name for v in model.graph.input], [a, np.array([0, 2], "int32")]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for got in (session.run(None, feeds), ReferenceEvaluator(model).run(None, feeds)):
        for k, (g, e) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=f"output {k} at opset {opset}")


def test_adjoints_of_adjacent_slices_join_into_one_concat():
    # an LSTM's gates: z[:, :u], z[:, u:2u], ...: the gradient of z is one Concat of the gates'
    # gradients, not one zero Pad per gate summed
    from collections import Counter
    x = K.placeholder((3, 8), dtype="float64")
    y = K.sum(K.sigmoid(x[:, :2]) * 2) + K.sum(K.tanh(x[:, 2:4])) + K.sum(x[:, 4:8] ** 2)
    g, = K.gradients(y, [x])
    ops = Counter(n.op_type for n in K.function([x], [g]).session_model().graph.node)
    assert ops["Concat"] == 1 and ops["Pad"] == 0 and ops["Add"] == 0, ops
    a = np.random.default_rng(0).normal(size=(3, 8))
    s = 1 / (1 + np.exp(-a[:, :2]))
    want = np.concatenate([2 * s * (1 - s), 1 - np.tanh(a[:, 2:4]) ** 2, 2 * a[:, 4:8]], axis=1)
    check(g, {x: a}, want)
    # a gap (column 4 unused) and a separate run stay slices of the whole
    check_grad(lambda p: K.concatenate([K.sigmoid(p[:, :2]) * 2, K.tanh(p[:, 2:4]), p[:, 5:8] ** 2], axis=1),
               [np.random.default_rng(1).normal(size=(3, 8))])
