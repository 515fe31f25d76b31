"""CTC decoders with TensorFlow's semantics (which Keras 2.3.1's ``ctc_decode`` returns).

Both take log-probabilities (B, T, C) (Keras passes ``log(y_pred + epsilon)``) and int lengths
(B,); the blank is the last class.  Each decoded path comes out as a dense int64 (B, W) tensor
padded with -1, W being the longest decoding of that path in the batch (TensorFlow's
``sparse_to_dense`` of the decoder's SparseTensor).

* greedy — ``tf.nn.ctc_greedy_decoder`` with its default ``merge_repeated=True``: the arg-max
  class per frame (first on ties), repeats merged, blanks removed; the score is the *negative*
  sum over frames of the max log-probability, shape (B, 1).
* beam search — ``tf.nn.ctc_beam_search_decoder``: a prefix beam search of ``beam_width``
  prefixes kept by total probability, each frame's input shifted by its max (so the scores are
  log-probabilities relative to the best path per frame), ``top_paths`` best prefixes returned
  with their scores (B, top_paths); ``merge_repeated`` merges equal consecutive labels of a
  prefix on output, as TensorFlow does.

The beam search is one ``Loop`` over time with fixed-size state: per prefix its blank- and
label-ending log-probabilities, length, last label, and a 62-bit rolling hash of the prefix and
of its parent (two 31-bit polynomial hashes), which identify the beam entries TensorFlow keeps
in a trie.  Each step picks the new beam with one ``TopK`` over the updated prefixes and all
one-label extensions; the labels are recovered afterwards by a second Loop that walks the
per-step back-pointers.  Where TensorFlow fails at run time (fewer prefixes than ``top_paths``)
the missing paths are empty with score -inf.
"""
import numpy as np

from .. import dtypes
from .ctc import log_sum_exp, take_along_last_axis
from .primitive import InferError, Primitive

# two 31-bit polynomial hashes: products stay below 2**62, so int64 arithmetic is exact; a
# prefix's key is both at once, hash1 · 2**31 + hash2 (non-negative)
_HASHES = ((2147483647, 1000003), (2147483629, 911382323))
_NO_PARENT, _EMPTY_KEY, _EMPTY_PARENT = -1, -2, -3  # sentinels no key equals, nor each other


def _key(f, hash1, hash2):
    return f.op("Add", f.op("Mul", hash1, f.int64s([2 ** 31])), hash2)


def _check(log_probs, lengths, where):
    if log_probs.ndim != 3 or not dtypes.is_float(log_probs.dtype):
        raise InferError(f"{where}: y_pred must be a float tensor (batch, time, classes), got shape "
                         f"{log_probs.shape} dtype {log_probs.dtype}")
    if lengths.ndim != 1 or not dtypes.is_int(lengths.dtype):
        raise InferError(f"{where}: input_length must be a 1-D int tensor (batch,), got shape "
                         f"{lengths.shape} dtype {lengths.dtype}")
    return log_probs.shape[0] if log_probs.shape[0] is not None else lengths.shape[0]


greedy_decode = Primitive("ctc_greedy_decode", differentiable=False, num_outputs=2)


@greedy_decode.infer
def _(log_probs, lengths):
    batch = _check(log_probs, lengths, "ctc_decode")
    return [((batch, None), "int64"), ((batch, 1), log_probs.dtype)]


@greedy_decode.lower
def _(ctx, node, log_probs, lengths):
    shape = ctx.op("Shape", log_probs)
    time = ctx.op("Slice", shape, ctx.int64s([1]), ctx.int64s([2]))
    blank = ctx.op("Sub", ctx.op("Slice", shape, ctx.int64s([2]), ctx.int64s([3])), ctx.int64s([1]))
    best = ctx.op("ArgMax", log_probs, axis=2, keepdims=0)  # (B, T), first index on ties
    top = ctx.reduce("ReduceMax", log_probs, [2], keepdims=False)
    in_seq = _frames_before(ctx, time, lengths)  # (B, T)
    zero = ctx.op("CastLike", ctx.const(np.float32(0)), log_probs)
    score = ctx.op("Neg", ctx.reduce("ReduceSum", ctx.op("Where", in_seq, top, zero), [1], keepdims=True))
    previous = ctx.op("Concat", ctx.op("Expand", ctx.int64s([-1]), ctx.op("Concat", _dim(ctx, shape, 0),
                                                                          ctx.int64s([1]), axis=0)),
                      ctx.op("Slice", best, ctx.int64s([0]), ctx.int64s([-1]), ctx.int64s([1])), axis=1)
    keep = ctx.op("And", in_seq, ctx.op("And", ctx.op("Not", ctx.op("Equal", best, blank)),
                                        ctx.op("Not", ctx.op("Equal", best, previous))))
    packed, count = compact(ctx, best, keep, time)
    return [trim(ctx, packed, count), score]


beam_search_decode = Primitive("ctc_beam_search_decode", differentiable=False, num_outputs=None)


@beam_search_decode.infer
def _(log_probs, lengths, beam_width, top_paths, merge_repeated):
    batch = _check(log_probs, lengths, "ctc_decode")
    if not 1 <= top_paths <= beam_width:
        raise InferError(f"ctc_decode: need 1 <= top_paths <= beam_width, got top_paths={top_paths}, "
                         f"beam_width={beam_width}")
    return [((batch, None), "int64")] * top_paths + [((batch, top_paths), log_probs.dtype)]


@beam_search_decode.lower
def _(ctx, node, log_probs, lengths):
    attrs = node.attrs
    return BeamSearch(ctx, log_probs, node.inputs[0].dtype, lengths, attrs["beam_width"], attrs["top_paths"],
                      attrs["merge_repeated"]).lower()


# -- shared pieces -------------------------------------------------------------------------------
def _dim(ctx, shape, axis):
    return ctx.op("Slice", shape, ctx.int64s([axis]), ctx.int64s([axis + 1]))


def _frames_before(ctx, time, lengths):
    """(B, T) bool: frame t is before lengths[b]."""
    frames = ctx.op("Range", ctx.scalar(0, np.int64), ctx.op("Squeeze", time, ctx.int64s([0])),
                    ctx.scalar(1, np.int64))
    return ctx.op("Less", ctx.op("Unsqueeze", frames, ctx.int64s([0])),
                  ctx.op("Unsqueeze", ctx.cast(lengths, "int64"), ctx.int64s([1])))


def compact(ctx, values, keep, width):
    """Move the kept entries of the last axis to its front, in order, padding with -1; also
    return how many each row kept.  ``width`` is the (1,) int64 length of that axis."""
    kept = ctx.cast(keep, "int64")
    position = ctx.op("Sub", ctx.op("CumSum", kept, ctx.scalar(-1, np.int64)), ctx.int64s([1]))
    # dropped entries all land in one spare slot past the end, which is cut off afterwards
    target = ctx.op("Where", keep, position, width)
    padded_shape = ctx.op("Concat", _drop_last_dim(ctx, ctx.op("Shape", values)),
                          ctx.op("Add", width, ctx.int64s([1])), axis=0)
    base = ctx.op("Expand", ctx.int64s([-1]), padded_shape)
    scattered = ctx.op("ScatterElements", base, target, values, axis=-1)
    packed = ctx.op("Slice", scattered, ctx.int64s([0]), width, ctx.int64s([-1]))
    return packed, ctx.reduce("ReduceSum", kept, [-1], keepdims=False)


def _drop_last_dim(ctx, shape):
    return ctx.op("Slice", shape, ctx.int64s([0]), ctx.int64s([-1]))


def trim(ctx, packed, count):
    """Cut (B, W) padded rows to the longest count in the batch."""
    longest = ctx.reduce("ReduceMax", count, None, keepdims=False)
    longest = ctx.op("Unsqueeze", ctx.op("Max", longest, ctx.scalar(0, np.int64)), ctx.int64s([0]))
    return ctx.op("Slice", packed, ctx.int64s([0]), longest, ctx.int64s([1]))


class BeamSearch:
    """Emits the beam search for one node; the state tensors are (B, W) unless noted."""

    def __init__(self, ctx, log_probs, dtype, lengths, beam_width, top_paths, merge_repeated):
        self.ctx = ctx
        self.log_probs = log_probs
        self.dtype = dtype
        self.lengths = ctx.cast(lengths, "int64")
        self.width = beam_width
        self.top_paths = top_paths
        self.merge_repeated = merge_repeated

    def lower(self):
        ctx = self.ctx
        lp = self.log_probs
        shape = ctx.op("Shape", lp)
        self.batch = _dim(ctx, shape, 0)
        self.time = _dim(ctx, shape, 1)
        self.labels = ctx.op("Sub", _dim(ctx, shape, 2), ctx.int64s([1]))  # non-blank classes
        self.neg_inf = ctx.op("CastLike", ctx.const(np.float32(-np.inf)), lp)
        self.neg_inf_column = ctx.op("Expand", self.neg_inf, ctx.op("Concat", self.batch, ctx.int64s([1]), axis=0))
        self.zero = ctx.op("CastLike", ctx.const(np.float32(0)), lp)
        # TensorFlow shifts each frame by its max before the search
        shifted = ctx.op("Sub", lp, ctx.reduce("ReduceMax", lp, [2], keepdims=True))
        self.frames = ctx.op("Transpose", shifted, perm=[1, 0, 2])  # (T, B, C)
        final, pointers, emitted = self.search()
        total = log_sum_exp(ctx, [final[0], final[1]], self.neg_inf, self.zero)
        scores = ctx.op("Slice", total, ctx.int64s([0]), ctx.int64s([self.top_paths]), ctx.int64s([1]))
        labels = self.backtrack(pointers, emitted)  # (B, P, T)
        found = ctx.op("Unsqueeze", ctx.op("Greater", scores, self.neg_inf), ctx.int64s([2]))
        labels = ctx.op("Where", found, labels, ctx.int64s([-1]))
        keep = ctx.op("GreaterOrEqual", labels, ctx.scalar(0, np.int64))
        packed, count = compact(ctx, labels, keep, self.time)
        if self.merge_repeated:
            before = ctx.op("Concat", ctx.op("Expand", ctx.int64s([-1]), ctx.op("Concat", self.batch, ctx.int64s(
                [self.top_paths, 1]), axis=0)), ctx.op("Slice", packed, ctx.int64s([0]), ctx.int64s([-1]),
                                                       ctx.int64s([2])), axis=2)
            keep = ctx.op("And", ctx.op("GreaterOrEqual", packed, ctx.scalar(0, np.int64)),
                          ctx.op("Not", ctx.op("Equal", packed, before)))
            packed, count = compact(ctx, packed, keep, self.time)
        paths = []
        for p in range(self.top_paths):
            pick = ctx.scalar(p, np.int64)
            paths.append(trim(ctx, ctx.op("Gather", packed, pick, axis=1), ctx.op("Gather", count, pick, axis=1)))
        return paths + [scores]

    def initial_state(self):
        ctx = self.ctx
        slots = ctx.op("Range", ctx.scalar(0, np.int64), ctx.scalar(self.width, np.int64), ctx.scalar(1, np.int64))
        self.slots = slots
        shape = ctx.op("Concat", self.batch, ctx.int64s([self.width]), axis=0)
        root = ctx.op("Equal", slots, ctx.scalar(0, np.int64))
        fill = lambda v: ctx.op("Expand", v, shape)  # noqa: E731
        blank = fill(ctx.op("Where", root, self.zero, self.neg_inf))  # only the empty prefix, p = 1
        label = fill(self.neg_inf)
        last = fill(ctx.int64s([-1]))
        hashes = [fill(ctx.int64s([0])) for _ in _HASHES]
        parent = fill(ctx.int64s([_NO_PARENT]))
        return [blank, label, last] + hashes + [parent]

    def search(self):
        ctx = self.ctx
        init = self.initial_state()
        b = ctx.child()
        t, cond = ctx.fresh("t"), ctx.fresh("cond")
        state = [ctx.fresh(n) for n in ("p_blank", "p_label", "last", "hash1", "hash2", "parent")]
        p_blank, p_label, last, hash1, hash2, parent_key = state
        width = b.int64s([self.width])
        x = b.op("Gather", self.frames, t, axis=0)  # (B, C)
        x_blank = b.op("Slice", x, self.labels, b.op("Add", self.labels, b.int64s([1])), b.int64s([1]))  # (B, 1)
        x_labels = b.op("Slice", x, b.int64s([0]), self.labels, b.int64s([1]))  # (B, K)
        total = log_sum_exp(b, [p_blank, p_label], self.neg_inf, self.zero)
        valid = b.op("Greater", total, self.neg_inf)

        # the parent of entry j is the entry i whose prefix key is j's parent key; slots that
        # hold no entry get keys that match nothing (a filler slot may copy a real entry's key)
        key = b.op("Where", valid, _key(b, hash1, hash2), b.int64s([_EMPTY_KEY]))
        wanted = b.op("Where", valid, parent_key, b.int64s([_EMPTY_PARENT]))
        match = b.op("Equal", b.op("Unsqueeze", wanted, b.int64s([2])), b.op("Unsqueeze", key, b.int64s([1])))
        parent = b.reduce("ReduceMax", b.op("Where", match, self.slots, b.int64s([-1])), [2], keepdims=False)
        has_parent = b.op("GreaterOrEqual", parent, b.scalar(0, np.int64))
        parent = b.op("Max", parent, b.int64s([0]))

        def of_parent(v):
            return take_along_last_axis(b, v, parent, 1)

        # a prefix's label-ending probability also grows from its parent's (from the parent's
        # blank-ending part only when the prefix repeats the parent's last label)
        from_parent = b.op("Where", b.op("Equal", last, of_parent(last)), of_parent(p_blank), of_parent(total))
        previous = b.op("Where", has_parent, from_parent, self.neg_inf)
        x_last = take_along_last_axis(b, x, b.op("Max", last, b.int64s([0])), 1)
        new_label = b.op("Add", log_sum_exp(b, [p_label, previous], self.neg_inf, self.zero), x_last)
        new_blank = b.op("Add", total, x_blank)
        new_total = log_sum_exp(b, [new_blank, new_label], self.neg_inf, self.zero)

        # one-label extensions (B, W·K), entry i's label k at i·K + k
        label_ids = b.op("Range", b.scalar(0, np.int64), b.op("Squeeze", self.labels, b.int64s([0])),
                         b.scalar(1, np.int64))
        is_last = b.op("Equal", b.op("Unsqueeze", last, b.int64s([2])), label_ids)  # k repeats i's last label
        extension = b.op("Add", b.op("Where", is_last, b.op("Unsqueeze", p_blank, b.int64s([2])),
                                     b.op("Unsqueeze", total, b.int64s([2]))),
                         b.op("Unsqueeze", x_labels, b.int64s([1])))
        extension = b.op("Reshape", extension, b.int64s([0, -1]))
        # extensions already in the beam (entry j is its parent's extension by j's last label)
        # are not candidates: scatter -inf on them, other entries' writes go to a spare column
        spare = b.op("Mul", width, self.labels)
        present = b.op("Where", has_parent, b.op("Add", b.op("Mul", parent, self.labels), last), spare)
        padded = b.op("Concat", extension, self.neg_inf_column, axis=1)
        blocked = b.op("ScatterElements", padded, present, b.op("Expand", self.neg_inf, b.op("Shape", present)),
                       axis=1)
        extension = b.op("Slice", blocked, b.int64s([0]), spare, b.int64s([1]))

        pool = b.op("Concat", new_total, extension, axis=1)
        _, chosen = b.op("TopK", pool, width, axis=1, largest=1, sorted=1, outputs=2)
        is_child = b.op("GreaterOrEqual", chosen, width)
        offset = b.op("Max", b.op("Sub", chosen, width), b.int64s([0]))
        source = b.op("Where", is_child, b.op("Div", offset, self.labels), chosen)
        label = b.op("Where", is_child, b.op("Mod", offset, self.labels), b.int64s([-1]))

        def take(v):
            return take_along_last_axis(b, v, source, 1)

        old_hashes = [take(hash1), take(hash2)]
        new = [
            b.op("Where", is_child, self.neg_inf, take(new_blank)),
            take_along_last_axis(b, b.op("Concat", new_label, extension, axis=1), chosen, 1),
            b.op("Where", is_child, label, take(last)),
        ]
        for old, (modulus, base) in zip(old_hashes, _HASHES):
            grown = b.op("Mod", b.op("Add", b.op("Mul", old, b.int64s([base])), b.op("Add", label, b.int64s([1]))),
                         b.int64s([modulus]))
            new.append(b.op("Where", is_child, grown, old))
        new.append(b.op("Where", is_child, _key(b, *old_hashes), take(parent_key)))
        # frames past a sequence's end leave its beam as it was
        active = b.op("Unsqueeze", b.op("Less", t, self.lengths), b.int64s([1]))
        outs = [b.op("Where", active, n, s) for n, s in zip(new, state)]
        pointer = b.op("Where", active, source, self.slots)
        emitted = b.op("Where", active, label, b.int64s([-1]))
        scans = [b.op("Reshape", v, b.int64s([-1])) for v in (pointer, emitted)]  # flat: see ops/ctc.py _flat
        types = [self.dtype] * 2 + ["int64"] * 4
        body = _body(b, "ctc_beam_step", t, cond, list(zip(state, types)), list(zip(outs, types)), scans)
        results = ctx.op("Loop", ctx.op("Squeeze", self.time, ctx.int64s([0])), ctx.const(np.array(True)), *init,
                         body=body, outputs=len(state) + 2)
        unflat = ctx.op("Concat", ctx.int64s([-1]), self.batch, ctx.int64s([self.width]), axis=0)
        pointers = ctx.op("Reshape", results[-2], unflat)
        emitted = ctx.op("Reshape", results[-1], unflat)
        return results[:len(state)], pointers, emitted

    def backtrack(self, pointers, emitted):
        """Labels (B, P, T) of the top P final entries, -1 on frames that emitted nothing."""
        ctx = self.ctx
        b = ctx.child()
        i, cond, current = ctx.fresh("i"), ctx.fresh("cond"), ctx.fresh("current")
        t = b.op("Sub", b.op("Sub", b.op("Squeeze", self.time, b.int64s([0])), b.scalar(1, np.int64)), i)
        label = take_along_last_axis(b, b.op("Gather", emitted, t, axis=0), current, 1)
        before = take_along_last_axis(b, b.op("Gather", pointers, t, axis=0), current, 1)
        body = _body(b, "ctc_backtrack_step", i, cond, [(current, "int64")], [(before, "int64")],
                     [b.op("Reshape", label, b.int64s([-1]))])
        start = ctx.op("Expand", ctx.op("Range", ctx.scalar(0, np.int64), ctx.scalar(self.top_paths, np.int64),
                                        ctx.scalar(1, np.int64)),
                       ctx.op("Concat", self.batch, ctx.int64s([self.top_paths]), axis=0))
        _, reversed_labels = ctx.op("Loop", ctx.op("Squeeze", self.time, ctx.int64s([0])), ctx.const(np.array(True)),
                                    start, body=body, outputs=2)
        labels = ctx.op("Reshape", reversed_labels, ctx.op("Concat", ctx.int64s([-1]), self.batch,
                                                           ctx.int64s([self.top_paths]), axis=0))
        labels = ctx.op("Slice", labels, ctx.int64s([-1]), ctx.int64s([-2 ** 62]), ctx.int64s([0]), ctx.int64s([-1]))
        return ctx.op("Transpose", labels, perm=[1, 2, 0])


def _body(b, name, counter, cond, carried, outputs, scans):
    """A Loop body graph: ``carried``/``outputs`` are (name, dtype) pairs, ``scans`` int64 names."""
    from onnx import helper

    def info(name, dtype, shape=None):
        return helper.make_tensor_value_info(name, dtypes.to_onnx(dtype), shape)

    cond_out = b.op("Identity", cond)
    ins = [info(counter, "int64", []), info(cond, "bool", [])] + [info(n, d) for n, d in carried]
    outs = [info(cond_out, "bool", [])] + [info(n, d) for n, d in outputs] + [info(n, "int64") for n in scans]
    return helper.make_graph(b.nodes, b.fresh(name), ins, outs)
