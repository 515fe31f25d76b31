"""Counter-based random numbers: threefry-2x32 with 20 rounds (as in JAX), in ONNX uint32 ops.

Why not ONNX's RandomUniform/RandomNormal: their seeded sequences differ between engines and
restart in every new session.  Here every draw is a pure function of (key, counter, element):

* the *key* (two uint32 words) is derived at trace time from the seed and the kind of draw, so
  one seed gives the same numbers in every process and on every engine;
* the *counter* is a uint32 ``Variable`` per random op, fed to the session and advanced by one
  on every call (its ``implicit_update``, which ``runtime.Function`` applies): each call of a
  compiled function draws fresh numbers;
* lane ``i`` of a call computes ``threefry2x32(key, (i, counter))`` and yields 64 bits.

Everything after the bits is exact IEEE arithmetic (integer ops, Cast, Add, Mul, Div, Sqrt,
Where — never Log/Sin/Cos, whose last bits differ between onnxruntime and onnx.reference), so
every engine returns bit-identical values, normals included.

Speed (onnxruntime CPU, measured): Add and Mul on uint32 are vectorized (~0.1 ns/element), while
BitShift and the Bitwise* kernels run ~0.4-0.6 ns/element.  So a rotation is written as
``x * 2**r + (x >> (32 - r))`` (a wrapping multiply is a left shift, and the two halves have no
common bits, so + is |); and a dropout mask spends as few random bits per element as give its
16-bit keep probability exactly: 8 plus a rare refinement in general, 1 for rate 0.5.
"""
import numpy as np
from onnx import numpy_helper

from ..graph import Constant, Variable
from .elementwise import add
from .primitive import InferError, Primitive

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
KEY_PARITY = 0x1BD11BDA
MASK32 = 0xFFFFFFFF

# one stream per kind of draw, so one seed feeds unrelated streams to, e.g., a uniform and a normal
STREAMS = {"uniform": 1, "normal": 2, "truncated_normal": 3, "dropout": 4, "integers": 5}


# -- the generator on numpy (trace-time key derivation) ------------------------------------------
def threefry2x32_numpy(key, x0, x1):
    """The reference threefry-2x32-20 on uint32 arrays (Random123's known-answer vectors hold)."""
    with np.errstate(over="ignore"):
        k0, k1 = np.uint32(key[0] & MASK32), np.uint32(key[1] & MASK32)
        ks = (k0, k1, np.uint32(k0 ^ k1 ^ np.uint32(KEY_PARITY)))
        x0 = np.asarray(x0, dtype=np.uint32) + ks[0]
        x1 = np.asarray(x1, dtype=np.uint32) + ks[1]
        for group in range(5):
            for r in ROTATIONS[group % 2]:
                x0 = x0 + x1
                x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
            x0 = x0 + ks[(group + 1) % 3]
            x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def derive_key(seed, stream):
    """The key of a draw: the 64-bit seed hashed with the stream's number."""
    seed = int(seed) & ((1 << 64) - 1)
    y0, y1 = threefry2x32_numpy((seed & MASK32, seed >> 32), STREAMS[stream], 0)
    return int(y0), int(y1)


def new_counter(name="random_counter"):
    """A call counter: uint32 state that every call of a compiled function advances by one."""
    counter = Variable(np.zeros((), dtype=np.uint32), "uint32", name=name)
    counter.implicit_update = add(counter, Constant(np.ones((), dtype=np.uint32)))
    return counter


# -- ONNX emission helpers ----------------------------------------------------------------------
def _u32(ctx, value):
    return ctx.const(np.asarray(int(value) & MASK32, dtype=np.uint32), hint="u32")


def _rotl(ctx, x, r):
    return ctx.op("Add", ctx.op("Mul", x, _u32(ctx, 1 << r)),
                  ctx.op("BitShift", x, _u32(ctx, 32 - r), direction="RIGHT"))


def emit_threefry(ctx, key, x0, x1, x1_scalar=False):
    """threefry2x32(key, (x0, x1)) on uint32 ONNX values; ``x1_scalar``: x1 is a scalar, so the
    first key injection folds into one scalar add."""
    if ctx.opset < 18:
        ctx.unsupported("threefry needs BitwiseXor, which ONNX has from opset 18")
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    ks = (k0, k1, k0 ^ k1 ^ KEY_PARITY)
    x1 = ctx.op("Add", x1, _u32(ctx, ks[1]))
    if x1_scalar:  # (x0 + k0) + x1 == x0 + (x1 + k0): one vector add instead of two
        x0 = ctx.op("Add", x0, ctx.op("Add", x1, _u32(ctx, ks[0])))
    else:
        x0 = ctx.op("Add", ctx.op("Add", x0, _u32(ctx, ks[0])), x1)
    first = True
    for group in range(5):
        for r in ROTATIONS[group % 2]:
            if not first:
                x0 = ctx.op("Add", x0, x1)
            first = False
            x1 = ctx.op("BitwiseXor", _rotl(ctx, x1, r), x0)
        x0 = ctx.op("Add", x0, _u32(ctx, ks[(group + 1) % 3]))
        x1 = ctx.op("Add", x1, _u32(ctx, ks[(group + 2) % 3] + group + 1))
    return x0, x1


class _Target:
    """The element count and shape of a draw: Python ints when static, ONNX values otherwise."""

    def __init__(self, ctx, node, shape_value):
        self.ctx = ctx
        static = node.attrs["shape"]
        if shape_value is None:
            self.n = int(np.prod(static, dtype=np.int64))
            self.shape = ctx.int64s(static)
        else:
            self.n = ctx.op("ReduceProd", shape_value, keepdims=0)
            self.shape = shape_value

    def lanes(self, per_lane, count=None):
        """uint32 lane indices 0..ceil(count / per_lane) - 1 (count: n unless given), and how
        many there are."""
        ctx = self.ctx
        count = self.n if count is None else count
        if isinstance(count, int):
            m = -(-count // per_lane)
            end = ctx.scalar(m, np.int64)
        else:
            m = end = count if per_lane == 1 else ctx.op(
                "Div", ctx.op("Add", count, ctx.scalar(per_lane - 1, np.int64)), ctx.scalar(per_lane, np.int64))
        idx = ctx.op("Range", ctx.scalar(0, np.int64), end, ctx.scalar(1, np.int64))
        return ctx.cast(idx, "uint32"), m

    def ends(self, value):
        """A Slice bound (1-D int64) from an int or a scalar ONNX value."""
        ctx = self.ctx
        return ctx.int64s([value]) if isinstance(value, int) else ctx.op("Unsqueeze", value, ctx.int64s([0]))

    def trim(self, flat, available):
        """The first n values of a flat ``flat`` that holds ``available`` (an int, or
        ``self.n`` itself when exactly n)."""
        if available is self.n or (isinstance(self.n, int) and available == self.n):
            return flat
        ctx = self.ctx
        return ctx.op("Slice", flat, ctx.int64s([0]), self.ends(self.n), ctx.int64s([0]))

    def finish(self, flat, available):
        return self.ctx.op("Reshape", self.trim(flat, available), self.shape)


def _blocks(ctx, node, counter, target, per_lane):
    lanes, m = target.lanes(per_lane)
    y0, y1 = emit_threefry(ctx, node.attrs["key"], lanes, counter, x1_scalar=True)
    return y0, y1, m


def _times(m, k):
    return m * k if isinstance(m, int) else None  # None: more than n, trim at run time


def _unit_float(ctx, words, dtype):
    """Uniform [0, 1) from uint32 words: the top bits scaled by a power of two.  ONNX has no
    bitcast for the usual mantissa trick; Cast of a 24-bit integer and an exact power-of-two
    scale give the same grid of values (k / 2**24).  float16 uses 11 bits, so no value rounds
    up to 1."""
    bits = 11 if dtype == "float16" else 24
    top = ctx.op("BitShift", words, _u32(ctx, 32 - bits), direction="RIGHT")
    u = ctx.op("Mul", ctx.cast(top, "float32"), ctx.scalar(2.0 ** -bits, np.float32))
    return u if dtype == "float32" else ctx.cast(u, dtype)


def _unit_double(ctx, hi, lo):
    """Uniform [0, 1) in float64 with 53 random bits: (hi >> 5) * 2**26 + (lo >> 6), scaled."""
    a = ctx.cast(ctx.op("BitShift", hi, _u32(ctx, 5), direction="RIGHT"), "float64")
    b = ctx.cast(ctx.op("BitShift", lo, _u32(ctx, 6), direction="RIGHT"), "float64")
    combined = ctx.op("Add", ctx.op("Mul", a, ctx.scalar(2.0 ** 26, np.float64)), b)
    return ctx.op("Mul", combined, ctx.scalar(2.0 ** -53, np.float64))


# -- exact-arithmetic elementary functions for Box-Muller ---------------------------------------
def _horner(ctx, t, coeffs, dtype):
    """sum(c_i t**i) by Horner's rule, highest power first."""
    acc = ctx.scalar(coeffs[-1], dtype)
    for c in reversed(coeffs[:-1]):
        acc = ctx.op("Add", ctx.op("Mul", acc, t), ctx.scalar(c, dtype))
    return acc


def _log2_split(ctx, d, dtype, max_exponent):
    """d = 2**e * m with m in [sqrt(1/2), sqrt(2)), for 1 <= d <= 2**max_exponent: returns e
    (exact, as a float) and ln m.  The exponent comes from halving steps (ONNX has no frexp);
    ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, by its series."""
    e = None
    step = 1 << ((max_exponent - 1).bit_length() - 1)  # steps sum to >= max_exponent - 1
    while step >= 1:
        big = ctx.op("GreaterOrEqual", d, ctx.scalar(2.0 ** step, dtype))
        d = ctx.op("Where", big, ctx.op("Mul", d, ctx.scalar(2.0 ** -step, dtype)), d)
        bumped = ctx.scalar(step, dtype) if e is None else ctx.op("Add", e, ctx.scalar(step, dtype))
        e = ctx.op("Where", big, bumped, ctx.scalar(0, dtype) if e is None else e)
        step //= 2
    big = ctx.op("GreaterOrEqual", d, ctx.scalar(np.sqrt(2.0), dtype))
    d = ctx.op("Where", big, ctx.op("Mul", d, ctx.scalar(0.5, dtype)), d)
    e = ctx.op("Where", big, ctx.op("Add", e, ctx.scalar(1, dtype)), e)
    one = ctx.scalar(1, dtype)
    s = ctx.op("Div", ctx.op("Sub", d, one), ctx.op("Add", d, one))
    terms = 5 if dtype == "float32" else 12  # truncation below 1 ulp of the dtype
    series = _horner(ctx, ctx.op("Mul", s, s), [2.0 / (2 * i + 1) for i in range(terms)], dtype)
    return e, ctx.op("Mul", s, series)


def _sin_cos(ctx, psi, dtype):
    """sin and cos on [0, pi/2] by their Taylor series (truncation < 1 ulp of the dtype)."""
    from math import factorial
    t = ctx.op("Mul", psi, psi)
    terms = 7 if dtype == "float32" else 12
    sin = ctx.op("Mul", psi, _horner(ctx, t, [(-1) ** i / factorial(2 * i + 1) for i in range(terms)], dtype))
    cos = _horner(ctx, t, [(-1) ** i / factorial(2 * i) for i in range(terms + 1)], dtype)
    return sin, cos


def _box_muller(ctx, a, b, dtype):
    """Two independent standard normals per pair of uint32 words (a, b).

    radius  r = sqrt(-2 ln u), u = (a + 1) / 2**32 in (0, 1];
    angle   uniform on the circle as (+-cos psi, +-sin psi), psi uniform on [0, pi/2) from the
            low 30 bits of b, the two signs from its top two bits — for a uniform angle the
            quadrant is uniform and independent of the angle within it, and on [0, pi/2)
            (cos, sin) and (sin, cos) are equally distributed, so independent signs are exact.
    """
    d = ctx.op("Add", ctx.cast(a, dtype), ctx.scalar(1, dtype))
    e, log_m = _log2_split(ctx, d, dtype, 32)
    # ln u = (e - 32) ln 2 + ln m: the exponent part is exact, so values of u near 1 (small radii)
    # keep their relative precision instead of cancelling against 32 ln 2
    log_u = ctx.op("Add", ctx.op("Mul", ctx.op("Sub", e, ctx.scalar(32, dtype)), ctx.scalar(np.log(2.0), dtype)), log_m)
    radius = ctx.op("Sqrt", ctx.op("Max", ctx.op("Mul", log_u, ctx.scalar(-2, dtype)), ctx.scalar(0, dtype)))
    low30 = ctx.op("Mul", b, _u32(ctx, 4))  # wrapping: the low 30 bits, scaled by 4
    psi = ctx.op("Mul", ctx.cast(low30, dtype), ctx.scalar(np.pi / 2 ** 33, dtype))
    sin, cos = _sin_cos(ctx, psi, dtype)
    top = _u32(ctx, 1 << 31)
    neg0 = ctx.op("GreaterOrEqual", b, top)
    neg1 = ctx.op("GreaterOrEqual", ctx.op("Mul", b, _u32(ctx, 2)), top)
    z0 = ctx.op("Mul", radius, cos)
    z1 = ctx.op("Mul", radius, sin)
    return ctx.op("Where", neg0, ctx.op("Neg", z0), z0), ctx.op("Where", neg1, ctx.op("Neg", z1), z1)


# -- primitives ---------------------------------------------------------------------------------
threefry2x32 = Primitive("threefry2x32", differentiable=False, num_outputs=2)
threefry2x32.random = True


@threefry2x32.infer
def _(x0, x1, key):
    from .elementwise import broadcast_shapes
    if x0.dtype != "uint32" or x1.dtype != "uint32":
        raise InferError(f"threefry2x32: counters must be uint32, got {x0.dtype} and {x1.dtype}")
    shape = broadcast_shapes(x0.shape, x1.shape, where="threefry2x32")
    return [(shape, "uint32"), (shape, "uint32")]


@threefry2x32.lower
def _(ctx, node, x0, x1):
    # the first round combines x0 and x1, so both outputs already have the broadcast shape
    return list(emit_threefry(ctx, node.attrs["key"], x0, x1))


def _draw_primitive(name, lower_flat):
    """A random primitive: inputs (counter[, shape]); attrs key, shape (static, None for run-time
    dims), dtype and the draw's own.  ``lower_flat(ctx, node, counter, target)`` returns a flat
    value and how many elements it holds (an int, or None when only known at run time)."""
    prim = Primitive(name, differentiable=False)
    prim.random = True  # the simplifier never merges nor folds it

    @prim.infer
    def _(counter, *shape_value, key, shape, dtype, **attrs):
        if counter.dtype != "uint32" or counter.shape != ():
            raise InferError(f"{name}: the counter must be a uint32 scalar, got {counter.dtype} {counter.shape}")
        if shape_value:
            (s,) = shape_value
            if s.dtype != "int64" or s.shape != (len(shape),):
                raise InferError(f"{name}: the run-time shape must be int64 of shape ({len(shape)},), "
                                 f"got {s.dtype} {s.shape}")
        elif any(d is None for d in shape):
            raise InferError(f"{name}: shape {shape} has unknown dims but no run-time shape was given")
        return tuple(shape), dtype

    @prim.lower
    def _(ctx, node, counter, shape_value=None):
        target = _Target(ctx, node, shape_value)
        flat, available = lower_flat(ctx, node, counter, target)
        return target.finish(flat, available)

    return prim


def _lower_uniform(ctx, node, counter, target):
    dtype = node.attrs["dtype"]
    if dtype == "float64":
        y0, y1, m = _blocks(ctx, node, counter, target, 1)
        return _unit_double(ctx, y0, y1), m
    y0, y1, m = _blocks(ctx, node, counter, target, 2)
    return _unit_float(ctx, ctx.op("Concat", y0, y1, axis=0), dtype), _times(m, 2)


def _lower_integers(ctx, node, counter, target):
    low, span = node.attrs["low"], node.attrs["span"]
    if span <= 1 << 32:
        y0, y1, m = _blocks(ctx, node, counter, target, 2)
        words = ctx.op("Concat", y0, y1, axis=0)
        if span < 1 << 32:
            words = ctx.op("Mod", words, _u32(ctx, span))
        available = _times(m, 2)
    else:
        y0, y1, available = _blocks(ctx, node, counter, target, 1)
        wide = ctx.op("Add", ctx.op("Mul", ctx.cast(y0, "uint64"), ctx.scalar(1 << 32, np.uint64)),
                      ctx.cast(y1, "uint64"))
        words = ctx.op("Mod", wide, ctx.scalar(span, np.uint64))
    shifted = ctx.op("Add", ctx.cast(words, "int64"), ctx.scalar(low, np.int64))
    return ctx.cast(shifted, node.attrs["dtype"]), available


def _compute_dtype(dtype):
    return "float64" if dtype == "float64" else "float32"


def _lower_normal(ctx, node, counter, target):
    dtype = node.attrs["dtype"]
    y0, y1, m = _blocks(ctx, node, counter, target, 2)
    z0, z1 = _box_muller(ctx, y0, y1, _compute_dtype(dtype))
    z = ctx.op("Concat", z0, z1, axis=0)
    return (z if dtype == _compute_dtype(dtype) else ctx.cast(z, dtype)), _times(m, 2)


# rejection rate of |z| < 2 for a standard normal, and how many candidates a truncated normal of
# n values draws: n / (1 - p) plus 8 standard deviations of the rejection count, plus 16
TRUNCATED_REJECTION = 0.04550026389635842
TRUNCATED_MARGIN_SIGMAS = 8


def truncated_pool_size(n):
    """Candidates drawn for n truncated normals (see ``_lower_truncated_normal``), computed in
    the same float64 steps as the run-time form, so both draw the same lanes."""
    p = TRUNCATED_REJECTION
    n = np.float64(n)
    margin = np.float64(TRUNCATED_MARGIN_SIGMAS * np.sqrt(p) / (1 - p))
    return int(np.ceil(n * np.float64(1 / (1 - p)) + np.sqrt(n) * margin + np.float64(16)))


def _lower_truncated_normal(ctx, node, counter, target):
    """TF's truncated normal redraws values beyond 2 std, drawing in sequence.  So does this:
    one pool of normal candidates (2 per Box-Muller lane), the ones with |z| < 2 kept in order
    (Compress), the first n of them taken — exactly the conditional distribution.  The pool
    holds n / (1 - p) candidates plus 8 standard deviations of the rejection count, so it falls
    short of n accepted values with probability below 1e-14 (for n = 1: 0.0455**19); a short
    pool is padded with 0, the mean."""
    dtype, work = node.attrs["dtype"], _compute_dtype(node.attrs["dtype"])
    n = target.n
    zero = numpy_helper.from_array(np.zeros((1,), dtype=work))
    if isinstance(n, int):
        lane_count = ctx.scalar(-(-truncated_pool_size(n) // 2), np.int64)
        pad = ctx.op("ConstantOfShape", ctx.int64s([n]), value=zero)
    else:
        nf = ctx.cast(n, "float64")
        p = TRUNCATED_REJECTION
        margin = ctx.scalar(TRUNCATED_MARGIN_SIGMAS * np.sqrt(p) / (1 - p), np.float64)
        pool = ctx.op("Add", ctx.op("Mul", nf, ctx.scalar(1 / (1 - p), np.float64)),
                      ctx.op("Mul", ctx.op("Sqrt", nf), margin))
        pool = ctx.op("Add", pool, ctx.scalar(16, np.float64))
        lane_count = ctx.cast(ctx.op("Ceil", ctx.op("Mul", pool, ctx.scalar(0.5, np.float64))), "int64")
        pad = ctx.op("ConstantOfShape", ctx.op("Unsqueeze", n, ctx.int64s([0])), value=zero)
    lanes = ctx.cast(ctx.op("Range", ctx.scalar(0, np.int64), lane_count, ctx.scalar(1, np.int64)), "uint32")
    y0, y1 = emit_threefry(ctx, node.attrs["key"], lanes, counter, x1_scalar=True)
    z = ctx.op("Concat", *_box_muller(ctx, y0, y1, work), axis=0)
    inside = ctx.op("Less", ctx.op("Abs", z), ctx.scalar(2, work))
    accepted = ctx.op("Concat", ctx.op("Compress", z, inside, axis=0), pad, axis=0)
    return (accepted if dtype == work else ctx.cast(accepted, dtype)), None


def decision_bits(threshold):
    """The fewest bits b (a divisor of 32, at most 16) whose b-bit chunks decide ``v >= t`` with
    exactly the probability of the 16-bit comparison: 16 - b low zero bits in the threshold."""
    for b in (1, 2, 4, 8):
        if threshold % (1 << (16 - b)) == 0:
            return b
    return 16


def _chunks(ctx, y0, y1, b):
    """The b-bit chunks of the words (y0, y1), each moved to the top of a uint32 by a wrapping
    multiply by 2**(32 - b (j + 1)) (bits above it fall off): one broadcast Mul for all."""
    per_word = 32 // b
    words = ctx.op("Unsqueeze", ctx.op("Concat", y0, y1, axis=0), ctx.int64s([0]))
    shifts = np.array([[1 << (32 - b * (j + 1))] for j in range(per_word)], dtype=np.uint32)
    return ctx.op("Reshape", ctx.op("Mul", words, ctx.const(shifts, hint="chunk_shifts")), ctx.int64s([-1]))


def refinement_pool_size(n):
    """Second-level chunks drawn for n 16-bit decisions: the expected n / 256 ties plus 8 of
    their standard deviations plus 16 (the same float64 steps as the run-time form)."""
    ties = np.float64(n) * np.float64(1 / 256)
    return int(np.ceil(ties + np.sqrt(ties) * np.float64(8) + np.float64(16)))


def _pool_size(ctx, n):
    if isinstance(n, int):
        return refinement_pool_size(n)
    ties = ctx.op("Mul", ctx.cast(n, "float64"), ctx.scalar(1 / 256, np.float64))
    pool = ctx.op("Add", ctx.op("Add", ties, ctx.op("Mul", ctx.op("Sqrt", ties), ctx.scalar(8, np.float64))),
                  ctx.scalar(16, np.float64))
    return ctx.cast(ctx.op("Ceil", pool), "int64")


def _keep_in_chunks(ctx, node, counter, target, b):
    """v >= t for b-bit chunks v: exact when t (16-bit) has 16 - b low zero bits."""
    y0, y1, m = _blocks(ctx, node, counter, target, 64 // b)
    threshold = node.attrs["threshold"] >> (16 - b)
    keep = ctx.op("GreaterOrEqual", _chunks(ctx, y0, y1, b), _u32(ctx, threshold << (32 - b)))
    return target.trim(keep, _times(m, 64 // b))


def _keep_refined(ctx, node, counter, target):
    """v16 >= t16 from 8 random bits per element plus 8 more for the rare ties: with v16 =
    (hi, lo) and t16 = (t_hi, t_lo), keep iff hi > t_hi, or hi == t_hi (1 element in 256) and
    lo >= t_lo, where the r-th tied element takes chunk r of a pool drawn from the lanes after
    the n elements' (Compress lists the ties, ScatterND writes their decisions).  Exactly the
    16-bit decision at half the threefry work.  Only if the ties outnumber the pool (8 standard
    deviations above their mean: probability < 1e-14) are the extra tied elements dropped."""
    n, t16 = target.n, node.attrs["threshold"]
    t_hi, t_lo = t16 >> 8, t16 & 0xFF
    pool = _pool_size(ctx, n)
    main_lanes = -(-n // 8) if isinstance(n, int) else \
        ctx.op("Div", ctx.op("Add", n, ctx.scalar(7, np.int64)), ctx.scalar(8, np.int64))
    pool_lanes = -(-pool // 8) if isinstance(pool, int) else \
        ctx.op("Div", ctx.op("Add", pool, ctx.scalar(7, np.int64)), ctx.scalar(8, np.int64))
    total = main_lanes + pool_lanes if isinstance(n, int) else ctx.op("Add", main_lanes, pool_lanes)
    lanes, _ = target.lanes(1, count=total)
    y0, y1 = emit_threefry(ctx, node.attrs["key"], lanes, counter, x1_scalar=True)
    zero, split, end = ctx.int64s([0]), target.ends(main_lanes), target.ends(total)
    main = target.trim(_chunks(ctx, *(ctx.op("Slice", y, zero, split, zero) for y in (y0, y1)), 8),
                       main_lanes * 8 if isinstance(n, int) else None)
    pool_chunks = _chunks(ctx, *(ctx.op("Slice", y, split, end, zero) for y in (y0, y1)), 8)
    above = ctx.op("GreaterOrEqual", main, _u32(ctx, (t_hi + 1) << 24))
    tied = ctx.op("Xor", ctx.op("GreaterOrEqual", main, _u32(ctx, t_hi << 24)), above)
    positions = ctx.op("Range", ctx.scalar(0, np.int64), ctx.scalar(n, np.int64) if isinstance(n, int) else n,
                       ctx.scalar(1, np.int64))
    where_tied = ctx.op("Compress", positions, tied, axis=0)  # cheaper than NonZero here (measured)
    where_tied = ctx.op("Unsqueeze", ctx.op("Slice", where_tied, zero, target.ends(pool), zero), ctx.int64s([1]))
    ties = ctx.op("Slice", ctx.op("Shape", where_tied), zero, ctx.int64s([1]))
    refined = ctx.op("GreaterOrEqual", ctx.op("Slice", pool_chunks, zero, ties, zero), _u32(ctx, t_lo << 24))
    return ctx.op("ScatterND", above, where_tied, refined)


def _lower_dropout_mask(ctx, node, counter, target):
    """Keep iff a uniform 16-bit v >= threshold, from as few random bits as give exactly that
    probability: b-bit chunks (b = 1 for rate 0.5, 2 for 0.25, ...) when the threshold allows,
    else an 8-bit decision refined on ties (``_keep_refined``)."""
    t16 = node.attrs["threshold"]
    b = decision_bits(t16)
    if b < 16 or t16 >> 8 == 0xFF:
        keep = _keep_in_chunks(ctx, node, counter, target, b)
    else:
        keep = _keep_refined(ctx, node, counter, target)
    dtype = node.attrs["dtype"]
    # Cast and Mul are cheaper than a Where broadcasting two scalars (measured)
    return ctx.op("Mul", ctx.cast(keep, dtype), ctx.scalar(node.attrs["scale"], dtype)), target.n


random_uniform = _draw_primitive("random_uniform", _lower_uniform)        # [0, 1)
random_integers = _draw_primitive("random_integers", _lower_integers)     # [low, low + span)
random_normal = _draw_primitive("random_normal", _lower_normal)           # N(0, 1)
random_truncated_normal = _draw_primitive("random_truncated_normal", _lower_truncated_normal)
dropout_mask = _draw_primitive("dropout_mask", _lower_dropout_mask)       # 0 or scale


def draw(primitive, stream, seed, shape, shape_value=None, **attrs):
    """Apply a random primitive with a fresh counter and the key of (seed, stream)."""
    counter = new_counter(f"{primitive.name}_counter")
    inputs = (counter,) if shape_value is None else (counter, shape_value)
    return primitive(*inputs, key=derive_key(seed, stream), shape=tuple(shape), **attrs)


def dropout_threshold(rate):
    """The 16-bit threshold for a drop probability: round(rate * 2**16), capped so a rate just
    below 1 still keeps the rare value (the cap changes the probability by < 2**-16)."""
    return min(int(round(float(rate) * 65536)), 65535)
