"""Random ops: the threefry generator bit for bit, distributions, seeds, fresh draws, and
onnxruntime vs onnx.reference agreement (bit-identical: every draw is exact arithmetic)."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator
from scipy import stats

import kgraph.backend as K
from kgraph.ops import random as rnd

import kcheck

N = 40_000  # draws per statistics test: standard error of a mean ~ 0.005 std


# -- helpers ------------------------------------------------------------------------------------
def counters_of(fn):
    return [v for v in fn.variables if getattr(v, "implicit_update", None) is not None]


def run_on_reference(fn, values, counter_values):
    """Run ``fn``'s training export on onnx.reference with the counters at ``counter_values``."""
    model = fn.to_onnx(training=True)
    onnx.checker.check_model(model, full_check=True)
    names = [i.name for i in model.graph.input]
    feeds = dict(zip(names, values))
    export_names = names[len(fn.inputs) + len(fn.defaults):]
    for v, name in zip(fn.variables, export_names):
        feeds[name] = counter_values.get(id(v), v.numpy())
    return ReferenceEvaluator(model).run(None, feeds)[:len(fn.outputs)]


def assert_engines_bit_identical(outputs, feeds=None):
    """One call on onnxruntime, the same call on onnx.reference: identical bytes."""
    feeds = feeds or {}
    inputs = list(feeds)
    values = [np.asarray(feeds[p]) for p in inputs]
    fn = K.function(inputs, outputs)
    fn(values)  # advance the counters once, so the compared call is not the first
    before = {id(v): np.array(v.numpy()) for v in counters_of(fn)}
    assert before, "expected random counters in the function"
    got = fn(values)
    ref = run_on_reference(fn, values, before)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)), \
            f"engines differ in {int(np.sum(a != b))} of {a.size} values"
    return got


def threefry_ref(key, x0, x1):
    """Threefry-2x32, 20 rounds (Salmon et al., Random123), written out for the test."""
    rot = [13, 15, 26, 6, 17, 29, 16, 24]
    m = 0xFFFFFFFF
    ks = [key[0], key[1], key[0] ^ key[1] ^ 0x1BD11BDA]
    x = [(int(x0) + ks[0]) & m, (int(x1) + ks[1]) & m]
    for i in range(20):
        r = rot[i % 8]
        x[0] = (x[0] + x[1]) & m
        x[1] = (((x[1] << r) | (x[1] >> (32 - r))) & m) ^ x[0]
        if i % 4 == 3:
            j = i // 4 + 1
            x[0] = (x[0] + ks[j % 3]) & m
            x[1] = (x[1] + ks[(j + 1) % 3] + j) & m
    return x


# -- the generator --------------------------------------------------------------------------------
KNOWN_ANSWERS = [  # Random123's threefry2x32_20 known-answer vectors (also JAX's tests)
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key,counter,expected", KNOWN_ANSWERS)
def test_threefry_known_answers(key, counter, expected):
    x0 = K.constant(np.array([counter[0]], np.uint32), dtype="uint32")
    x1 = K.constant(np.array([counter[1]], np.uint32), dtype="uint32")
    y0, y1 = rnd.threefry2x32(x0, x1, key=key)
    kcheck.check([y0, y1], {}, [np.array([expected[0]], np.uint32), np.array([expected[1]], np.uint32)])
    assert [int(v) for v in rnd.threefry2x32_numpy(key, counter[0], counter[1])] == list(expected)


def test_threefry_matches_reference_on_many_counters(rng):
    key = (0xDEADBEEF, 0x01234567)
    c0 = rng.integers(0, 2 ** 32, 64, dtype=np.uint64).astype(np.uint32)
    c1 = rng.integers(0, 2 ** 32, 64, dtype=np.uint64).astype(np.uint32)
    p0, p1 = K.placeholder((64,), dtype="uint32"), K.placeholder((64,), dtype="uint32")
    y0, y1 = rnd.threefry2x32(p0, p1, key=key)
    expected = np.array([threefry_ref(key, a, b) for a, b in zip(c0, c1)], dtype=np.uint32)
    kcheck.check([y0, y1], {p0: c0, p1: c1}, [expected[:, 0], expected[:, 1]])


def test_scalar_counter_broadcasts_like_the_lowering_uses_it():
    key = (7, 9)
    lanes = K.constant(np.arange(5, dtype=np.uint32), dtype="uint32")
    ctr = K.constant(np.uint32(3), dtype="uint32")
    y0, y1 = rnd.threefry2x32(lanes, ctr, key=key)
    expected = np.array([threefry_ref(key, i, 3) for i in range(5)], dtype=np.uint32)
    kcheck.check([y0, y1], {}, [expected[:, 0], expected[:, 1]])


# -- distributions ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_random_uniform_statistics(dtype):
    u = K.eval(K.random_uniform((N,), seed=1, dtype=dtype)).astype(np.float64)
    assert K.random_uniform((2,), dtype=dtype, seed=0).dtype == dtype
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert stats.kstest(u, "uniform").pvalue > 1e-4


def test_random_uniform_range_and_default_dtype():
    K.set_floatx("float64")
    u = K.random_uniform((N,), minval=-3.0, maxval=5.0, seed=2)
    assert u.dtype == "float64"
    v = K.eval(u)
    assert v.min() >= -3 and v.max() < 5 and abs(v.mean() - 1.0) < 0.08


def test_random_uniform_tensor_bounds():
    lo = K.constant(np.array([0.0, 10.0], np.float32))
    hi = K.constant(np.array([1.0, 20.0], np.float32))
    v = K.eval(K.random_uniform((N // 2, 2), minval=lo, maxval=hi, seed=3))
    assert v[:, 0].min() >= 0 and v[:, 0].max() < 1 and v[:, 1].min() >= 10 and v[:, 1].max() < 20


@pytest.mark.parametrize("dtype,low,high", [("int32", 3, 9), ("int64", -2 ** 40, 2 ** 40), ("int32", -5, -4)])
def test_random_uniform_integers(dtype, low, high):
    v = K.eval(K.random_uniform((N,), low, high, dtype=dtype, seed=4))
    assert v.dtype == dtype and v.min() >= low and v.max() < high
    if high - low == 1:
        assert np.all(v == low)
    elif high - low < 100:
        counts = np.bincount(v - low, minlength=high - low)
        assert stats.chisquare(counts).pvalue > 1e-4
    else:
        assert abs(v.mean() / (high - low)) < 0.02


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_random_normal_statistics(dtype):
    z = K.eval(K.random_normal((N,), seed=5, dtype=dtype)).astype(np.float64)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert stats.kstest(z, "norm").pvalue > 1e-4
    # tails and the centre are populated as a normal's are
    assert 0.03 < np.mean(np.abs(z) > 2) < 0.06 and 0.0 < np.mean(np.abs(z) < 0.01) < 0.02


def test_random_normal_mean_stddev_and_float16():
    z = K.eval(K.random_normal((N,), mean=3.0, stddev=0.5, seed=6, dtype="float16")).astype(np.float64)
    assert abs(z.mean() - 3) < 0.02 and abs(z.std() - 0.5) < 0.02


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_truncated_normal_bounded_and_distributed(dtype):
    mean, std = 1.5, 2.0
    t = K.eval(K.truncated_normal((N,), mean=mean, stddev=std, seed=7, dtype=dtype)).astype(np.float64)
    assert np.all(np.abs(t - mean) <= 2 * std)
    z = (t - mean) / std
    truncated = stats.truncnorm(-2, 2)
    assert abs(z.std() - truncated.std()) < 0.02 and abs(z.mean()) < 0.02
    assert stats.kstest(z, truncated.cdf).pvalue > 1e-4
    # redrawn, not clipped: no mass piles up at the bounds
    assert np.mean(np.abs(z) > 1.99) < 0.002


def test_truncated_normal_pool_is_large_enough_and_a_short_pool_pads(monkeypatch):
    for n in (1, 10, 1000, 10 ** 6):
        pool = rnd.truncated_pool_size(n)
        rejected_mean, rejected_std = pool * rnd.TRUNCATED_REJECTION, np.sqrt(pool * 0.0434)
        assert pool - rejected_mean - 7.9 * rejected_std >= n
    # force a pool far too small: the missing values are the mean, the drawn ones stay in range
    monkeypatch.setattr(rnd, "TRUNCATED_MARGIN_SIGMAS", -60)
    v = K.eval(K.truncated_normal((1000,), mean=5.0, seed=3))
    short = 1000 - int(np.sum(v != 5.0))
    assert 200 < short < 400 and np.all(np.abs(v - 5) < 2)
    assert np.all(v[-short:] == 5.0)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_random_binomial(p):
    b = K.eval(K.random_binomial((N,), p=p, seed=8))
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert abs(b.mean() - p) < 0.01
    if p in (0.0, 1.0):
        assert np.all(b == p)


def test_binomial_is_the_uniform_stream_thresholded():
    u = K.eval(K.random_uniform((500,), seed=9))
    b = K.eval(K.random_binomial((500,), p=0.4, seed=9))
    np.testing.assert_array_equal(b, (u < 0.4).astype(np.float32))


# -- dropout decisions, re-derived in numpy from the generator ------------------------------------
def threefry_lanes(key, count, counter=0):
    out = np.array([threefry_ref(key, i, counter) for i in range(count)], dtype=np.uint64)
    return np.concatenate([out[:, 0], out[:, 1]])  # the words: all y0, then all y1


def expected_keep(seed, n, rate, pool_size):
    """The mask K.dropout documents: a uniform 16-bit v per element, kept iff v >= round(rate *
    2**16) = t, read from the fewest bits that give that probability: b-bit chunks (byte j of a
    word is chunk j) when t has 16 - b low zero bits; else one byte per element, and each element
    whose byte equals t's high byte takes the next byte of a pool drawn from the lanes after the
    n elements' (up to ``pool_size`` ties) and compares it with t's low byte."""
    t = min(int(round(rate * 65536)), 65535)
    key = [int(v) for v in threefry_ref((seed & 0xFFFFFFFF, seed >> 32), 4, 0)]  # stream 4: dropout
    for b in (1, 2, 4, 8):
        if t % (1 << (16 - b)) == 0:
            per_lane = 64 // b
            words = threefry_lanes(key, -(-n // per_lane))
            chunks = np.concatenate([(words >> (b * j)) & ((1 << b) - 1) for j in range(32 // b)])
            return chunks[:n] >= (t >> (16 - b))
    pool = pool_size(n)
    main_lanes, pool_lanes = -(-n // 8), -(-pool // 8)
    words = threefry_lanes(key, main_lanes + pool_lanes)
    y0, y1 = words[:main_lanes + pool_lanes], words[main_lanes + pool_lanes:]

    def chunks(w):
        return np.concatenate([(w >> (8 * j)) & 0xFF for j in range(4)])
    main = chunks(np.concatenate([y0[:main_lanes], y1[:main_lanes]]))[:n]
    extra = chunks(np.concatenate([y0[main_lanes:], y1[main_lanes:]]))
    keep = main > (t >> 8)
    tied = np.flatnonzero(main == (t >> 8))[:pool]
    keep[tied] = extra[:len(tied)] >= (t & 0xFF)
    return keep


@pytest.mark.parametrize("rate", [0.5, 0.25, 0.125, 0.5 + 1 / 512, 0.3, 0.2, 0.0625 + 1 / 65536])
def test_dropout_decisions_are_the_documented_16_bit_comparison(rate):
    n, seed = 3000, 77
    y = K.eval(K.dropout(K.ones((n,)), rate, seed=seed))
    keep = expected_keep(seed, n, rate, rnd.refinement_pool_size)
    np.testing.assert_array_equal(y != 0, keep)
    np.testing.assert_allclose(y[keep], 1 / (1 - rate), rtol=1e-7)


def test_dropout_tie_pool_shortfall_drops_the_extra_ties(monkeypatch):
    monkeypatch.setattr(rnd, "refinement_pool_size", lambda n: 3)
    y = K.eval(K.dropout(K.ones((4000,)), 0.3, seed=5))
    np.testing.assert_array_equal(y != 0, expected_keep(5, 4000, 0.3, lambda n: 3))


# -- seeds and state ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", [K.random_uniform, K.random_normal, K.truncated_normal])
def test_same_seed_same_values_in_separately_built_functions(op):
    a = K.function([], [op((3, 5), seed=123)])([])[0]
    b = K.function([], [op((3, 5), seed=123)])([])[0]
    c = K.function([], [op((3, 5), seed=124)])([])[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_each_call_draws_fresh_values_and_counters_advance():
    t = K.random_normal((4, 4), seed=1)
    fn = K.function([], [t])
    (counter,) = counters_of(fn)
    first, second = fn([])[0], fn([])[0]
    assert not np.array_equal(first, second)
    assert int(counter.numpy()) == 2
    assert not np.array_equal(K.eval(t), K.eval(t))


def test_seed_none_follows_numpys_global_generator():
    np.random.seed(1234)
    a = K.eval(K.random_uniform((6,)))
    np.random.seed(1234)
    b = K.eval(K.random_uniform((6,)))
    c = K.eval(K.random_uniform((6,)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_same_seed_same_values_in_a_fresh_process():
    code = ("import numpy as np, kgraph.backend as K; "
            "print(repr(K.eval(K.random_normal((5,), seed=42)).tolist() + "
            "K.eval(K.dropout(K.ones((8,)), 0.5, seed=42)).tolist()))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root, env=env).stdout
    here = K.eval(K.random_normal((5,), seed=42)).tolist() + K.eval(K.dropout(K.ones((8,)), 0.5, seed=42)).tolist()
    assert eval(out.strip()) == here


# -- engines agree bit for bit --------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: K.random_uniform((37, 11), seed=1),
    lambda: K.random_uniform((37, 11), seed=1, dtype="float64"),
    lambda: K.random_uniform((37, 11), seed=1, dtype="float16"),
    lambda: K.random_uniform((101,), -7, 1000, dtype="int32", seed=1),
    lambda: K.random_normal((37, 11), seed=1),
    lambda: K.random_normal((37, 11), seed=1, dtype="float64"),
    lambda: K.truncated_normal((37, 11), seed=1),
    lambda: K.random_binomial((37, 11), p=0.25, seed=1),
    lambda: K.dropout(K.ones((37, 11)), 0.3, seed=1),
], ids=["uniform32", "uniform64", "uniform16", "int32", "normal32", "normal64", "truncated", "binomial",
        "dropout"])
def test_onnxruntime_and_reference_bit_identical(make):
    assert_engines_bit_identical([make()])


def test_bit_identical_with_run_time_shapes():
    x = K.placeholder((None, 3))
    outs = [K.random_normal(K.shape(x), seed=2), K.random_uniform((K.shape(x)[0], 5), seed=2),
            K.truncated_normal(K.shape(x), seed=2), K.dropout(x, 0.5, seed=2)]
    got = assert_engines_bit_identical(outs, {x: np.ones((7, 3), np.float32)})
    assert [g.shape for g in got] == [(7, 3), (7, 5), (7, 3), (7, 3)]


@pytest.mark.parametrize("make", [
    lambda s: K.dropout(K.ones((1000,)) if s is None else K.ones_like(s), 0.3, seed=6),
    lambda s: K.dropout(K.ones((1000,)) if s is None else K.ones_like(s), 0.25, seed=6),
    lambda s: K.truncated_normal((1000,) if s is None else K.shape(s), seed=6),
    lambda s: K.random_normal((1000,) if s is None else K.shape(s), seed=6),
    lambda s: K.random_uniform((1000,) if s is None else K.shape(s), seed=6),
], ids=["dropout_refined", "dropout_chunks", "truncated", "normal", "uniform"])
def test_run_time_shapes_draw_what_static_shapes_draw(make):
    x = K.placeholder((None,))
    static = K.eval(make(None))
    dynamic = K.function([x], [make(x)])([np.zeros(1000, np.float32)])[0]
    np.testing.assert_array_equal(static, dynamic)


# -- shapes and errors ----------------------------------------------------------------------------
def test_shape_forms():
    x = K.placeholder((None, 4))
    n = K.shape(x)[0]
    t = K.random_uniform((n, 2, 3), seed=0)
    assert K.int_shape(t) == (None, 2, 3)
    assert K.int_shape(K.random_normal(K.shape(x), seed=0)) == (None, 4)
    assert K.int_shape(K.random_normal(np.array([2, 3]), seed=0)) == (2, 3)
    assert K.int_shape(K.random_normal(5, seed=0)) == (5,)
    assert K.eval(K.random_normal((), seed=0)).shape == ()
    assert K.eval(K.random_uniform((0, 3), seed=0)).shape == (0, 3)
    v = K.function([x], [t])([np.zeros((6, 4), np.float32)])[0]
    assert v.shape == (6, 2, 3)


@pytest.mark.parametrize("call,error,words", [
    (lambda: K.random_uniform((2, -1)), ValueError, ["K.random_uniform", "non-negative"]),
    (lambda: K.random_uniform((2, None)), ValueError, ["K.random_uniform", "shape entry 1"]),
    (lambda: K.random_normal((2,), dtype="int32"), TypeError, ["K.random_normal", "float"]),
    (lambda: K.truncated_normal((2,), seed=1.5), TypeError, ["K.truncated_normal", "seed"]),
    (lambda: K.random_binomial((2,), p=1.5), ValueError, ["K.random_binomial", "p"]),
    (lambda: K.random_uniform((2,), 0.0, 1.0, dtype="int32"), TypeError, ["K.random_uniform", "int minval"]),
    (lambda: K.random_uniform((2,), 5, 5, dtype="int32"), ValueError, ["K.random_uniform", "minval < maxval"]),
    (lambda: K.random_normal(K.placeholder((None,), dtype="int32")), ValueError, ["K.random_normal", "known length"]),
    (lambda: K.random_uniform("abc"), TypeError, ["K.random_uniform", "shape"]),
])
def test_errors_name_the_function(call, error, words):
    with pytest.raises(error) as info:
        call()
    for w in words:
        assert w in str(info.value)


def test_opsets():
    from kgraph.runtime import Function
    t = K.random_normal((3,), seed=1)
    same_at_18 = K.function([], [K.random_normal((3,), seed=1)])([])[0]
    np.testing.assert_array_equal(Function([], [t], opset=21)([])[0], same_at_18)
    with pytest.raises(NotImplementedError, match="opset 17"):
        Function([], [K.dropout(K.ones((2,)), 0.5, seed=1)], opset=17)
