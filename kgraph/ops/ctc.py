"""CTC primitives.

The loss, its gradient and the gradient's own vjp (a Hessian-vector product, so CTC is twice
differentiable) each lower to one node of the ``ai.kgraph`` domain whose body ships in the model
as a local function (FunctionProto) built from standard ops: the forward (and backward)
recursions in log space inside ``Loop``s over time.  Any runtime that understands model-local
functions runs the file, and Netron shows one ``CTCLoss`` op.  The functions take their float
type from their input (constants go through ``CastLike``), so one definition serves float32 and
float64.

Semantics are TensorFlow's ``ctc_loss`` with its defaults, which Keras 2.3.1 calls: the inputs
are unnormalized logits (a log-softmax is applied), the blank is the last class, repeated labels
need a blank between them, and frames at or past a sequence's ``input_length`` do not count.
Where no alignment exists (labels longer than the input, where TensorFlow raises, or repeats
without room for the blanks between them) the loss is ``inf`` and, as TensorFlow does for "no
valid path", the gradient is the softmax.

The decoders (greedy and beam search) live in ``ctc_decode.py``.
"""
import numpy as np
from onnx import helper

from .. import dtypes
from ..graph import Constant
from ..lower.context import CUSTOM_DOMAIN, LoweringContext
from .elementwise import mul
from .primitive import InferError, Primitive
from .reduce import reduce_sum
from .shape import expand_like

LOSS_FUNCTION = "CTCLoss"
GRAD_FUNCTION = "CTCLossGrad"
GRAD_VJP_FUNCTION = "CTCLossGradVjp"


def check_ctc_inputs(logits, labels, input_length, label_length, where="ctc_loss"):
    """Shared shape/dtype rule: (B, T, C) float logits, (B, L) int labels, (B,) int lengths."""
    if logits.ndim != 3 or not dtypes.is_float(logits.dtype):
        raise InferError(f"{where}: logits must be a float tensor (batch, time, classes), "
                         f"got shape {logits.shape} dtype {logits.dtype}")
    if labels.ndim != 2 or not dtypes.is_int(labels.dtype):
        raise InferError(f"{where}: labels must be an int tensor (batch, max_label_length), "
                         f"got shape {labels.shape} dtype {labels.dtype}")
    for name, t in (("input_length", input_length), ("label_length", label_length)):
        if t.ndim != 1 or not dtypes.is_int(t.dtype):
            raise InferError(f"{where}: {name} must be a 1-D int tensor (batch,), got shape {t.shape} "
                             f"dtype {t.dtype}")
    batch = {d for d in (logits.shape[0], labels.shape[0], input_length.shape[0], label_length.shape[0])
             if d is not None}
    if len(batch) > 1:
        raise InferError(f"{where}: batch sizes differ: logits {logits.shape}, labels {labels.shape}, "
                         f"input_length {input_length.shape}, label_length {label_length.shape}")
    if logits.shape[2] is not None and logits.shape[2] < 1:
        raise InferError(f"{where}: needs at least one class (the blank), got {logits.shape[2]}")
    return (batch.pop() if batch else None), logits.dtype


ctc_loss = Primitive("ctc_loss")  # → (batch,) negative log-likelihoods


@ctc_loss.infer
def _(logits, labels, input_length, label_length):
    batch, dtype = check_ctc_inputs(logits, labels, input_length, label_length)
    return (batch,), dtype


@ctc_loss.lower
def _(ctx, node, logits, labels, input_length, label_length):
    ctx.add_function(ctc_loss_function(ctx.opset))
    return ctx.op(LOSS_FUNCTION, logits, labels, input_length, label_length, domain=CUSTOM_DOMAIN)


@ctc_loss.vjp
def _(node, g):
    return [ctc_loss_grad(g, *node.inputs), None, None, None]


# The gradient is itself a custom-domain op, and so is its own vjp (below).
ctc_loss_grad = Primitive("ctc_loss_grad")  # (g, logits, labels, lengths...) → d(Σ g·loss)/d logits


@ctc_loss_grad.infer
def _(g, logits, labels, input_length, label_length):
    check_ctc_inputs(logits, labels, input_length, label_length, where="ctc_loss_grad")
    if g.ndim != 1 or g.dtype != logits.dtype:
        raise InferError(f"ctc_loss_grad: cotangent must be (batch,) {logits.dtype}, got {g.shape} {g.dtype}")
    return logits.shape, logits.dtype


@ctc_loss_grad.lower
def _(ctx, node, g, logits, labels, input_length, label_length):
    ctx.add_function(ctc_loss_grad_function(ctx.opset))
    return ctx.op(GRAD_FUNCTION, g, logits, labels, input_length, label_length, domain=CUSTOM_DOMAIN)


@ctc_loss_grad.vjp
def _(node, v):
    g, logits, labels, input_length, label_length = node.inputs
    unit = ctc_loss_grad(expand_like(Constant(np.ones((), g.dtype)), g), logits, labels, input_length, label_length)
    g_g = reduce_sum(mul(v, unit), axes=(1, 2))
    return [g_g, ctc_loss_grad_vjp(v, g, logits, labels, input_length, label_length), None, None, None]


# The exact Hessian-vector product; one more derivative would need a third-order semiring, and
# asking for it is an error rather than a silent zero.
ctc_loss_grad_vjp = Primitive("ctc_loss_grad_vjp")  # (v, g, logits, ...) → d(Σ v·ctc_loss_grad)/d logits


@ctc_loss_grad_vjp.infer
def _(v, g, logits, labels, input_length, label_length):
    shape, dtype = ctc_loss_grad.infer_rule(g, logits, labels, input_length, label_length)
    if v.dtype != dtype or v.ndim != 3:
        raise InferError(f"ctc_loss_grad_vjp: cotangent must be (batch, time, classes) {dtype}, got {v.shape} "
                         f"{v.dtype}")
    return shape, dtype


@ctc_loss_grad_vjp.lower
def _(ctx, node, v, g, logits, labels, input_length, label_length):
    ctx.add_function(ctc_loss_grad_vjp_function(ctx.opset))
    return ctx.op(GRAD_VJP_FUNCTION, v, g, logits, labels, input_length, label_length, domain=CUSTOM_DOMAIN)


@ctc_loss_grad_vjp.vjp
def _(node, *_):
    raise NotImplementedError("gradients: third-order derivatives of the CTC loss are not supported "
                              "(ctc_loss_grad_vjp has no differentiable form)")


label_mask = Primitive("ctc_label_mask", differentiable=False)  # (B,) lengths, (B, L) → l < length[b]


@label_mask.infer
def _(lengths, like):
    if lengths.ndim != 1 or not dtypes.is_int(lengths.dtype) or like.ndim != 2:
        raise InferError(f"ctc_label_dense_to_sparse: expected lengths (batch,) of ints and labels "
                         f"(batch, max_length), got {lengths.shape} {lengths.dtype} and {like.shape}")
    return like.shape, "bool"


@label_mask.lower
def _(ctx, node, lengths, like):
    width = ctx.op("Gather", ctx.op("Shape", like), ctx.scalar(1, np.int64))
    positions = ctx.op("Range", ctx.scalar(0, np.int64), width, ctx.scalar(1, np.int64))
    lengths = ctx.cast(lengths, "int64")
    return ctx.op("Less", ctx.op("Unsqueeze", positions, ctx.int64s([0])),
                  ctx.op("Unsqueeze", lengths, ctx.int64s([1])))


# -- the function bodies ---------------------------------------------------------------------
def take_along_last_axis(f, data, index, batch_rank):
    """``GatherElements`` on the last axis of ``data`` (index dims before it must equal data's).
    Written as ``GatherND`` with ``batch_dims``: onnx.reference's GatherElements gives wrong
    results once the gathered axis exceeds numpy's ``np.choose`` limit (32 or 64 choices)."""
    return f.op("GatherND", data, f.op("Unsqueeze", index, f.int64s([batch_rank + 1])), batch_dims=batch_rank)


def log_sum_exp(f, xs, neg_inf, zero):
    """log(Σ exp(x)) elementwise over the tensors ``xs``; all -inf gives -inf, not nan."""
    m = f.op("Max", *xs)
    safe = f.op("Where", f.op("Equal", m, neg_inf), zero, m)
    total = f.op("Sum", *[f.op("Exp", f.op("Sub", x, safe)) for x in xs])
    return f.op("Add", safe, f.op("Log", total))


class _Lattice:
    """The pieces the forward and backward recursions share, emitted into a function body."""

    def __init__(self, f, logits, labels, input_length, label_length):
        self.f = f
        i64 = lambda v: f.int64s(v)  # noqa: E731
        scalar = lambda v: f.scalar(v, np.int64)  # noqa: E731
        self.neg_inf = f.op("CastLike", f.const(np.float32(-np.inf)), logits)
        self.zero = f.op("CastLike", f.const(np.float32(0)), logits)
        self.logp = f.op("LogSoftmax", logits, axis=-1)  # TF's ctc_loss normalizes its inputs
        shape = f.op("Shape", logits)
        self.batch = f.op("Slice", shape, i64([0]), i64([1]))
        self.time = f.op("Gather", shape, scalar(1))
        classes = f.op("Slice", shape, i64([2]), i64([3]))
        self.classes = classes
        blank = f.op("Sub", classes, i64([1]))
        self.input_length = f.cast(input_length, "int64")
        self.label_length = f.cast(label_length, "int64")
        labels = f.cast(labels, "int64")
        width = f.op("Gather", f.op("Shape", labels), scalar(1))
        positions = f.op("Range", scalar(0), width, scalar(1))
        in_label = f.op("Less", f.op("Unsqueeze", positions, i64([0])),
                        f.op("Unsqueeze", self.label_length, i64([1])))
        # padding past each label_length may hold anything (-1 included): use the blank there
        # so every gather stays in range; those positions never reach the final states
        labels = f.op("Where", in_label, labels, blank)
        blanks = f.op("Expand", blank, f.op("Shape", labels))
        pairs = f.op("Concat", f.op("Unsqueeze", blanks, i64([2])), f.op("Unsqueeze", labels, i64([2])), axis=2)
        batch_one = f.op("Concat", self.batch, i64([1]), axis=0)
        ext = f.op("Concat", f.op("Reshape", pairs, i64([0, -1])), f.op("Expand", blank, batch_one), axis=1)
        self.ext = ext  # (B, S): blank, l1, blank, l2, ..., lL, blank
        states = f.op("Gather", f.op("Shape", ext), scalar(1))
        self.positions = f.op("Range", scalar(0), states, scalar(1))
        # s-2 → s may skip a blank only into a label that differs from the label before it
        batch_two = f.op("Concat", self.batch, i64([2]), axis=0)
        before = f.op("Concat", f.op("Expand", blank, batch_two), f.op("Slice", ext, i64([0]), i64([-2]), i64([1])),
                      axis=1)
        is_label = f.op("Equal", f.op("Mod", self.positions, scalar(2)), scalar(1))
        self.skip = f.op("And", is_label, f.op("Not", f.op("Equal", ext, before)))
        # (B, T, S) log-probabilities of each lattice state's label, time-major for the loops
        lattice_shape = f.op("Concat", self.batch, f.op("Unsqueeze", self.time, i64([0])),
                             f.op("Unsqueeze", states, i64([0])), axis=0)
        self.state_labels = f.op("Expand", f.op("Unsqueeze", ext, i64([1])), lattice_shape)  # (B, T, S)
        self.lp_time_major = f.op("Transpose", self.at_states(self.logp), perm=[1, 0, 2])
        self.neg_inf_1 = f.op("Expand", self.neg_inf, batch_one)
        self.neg_inf_2 = f.op("Expand", self.neg_inf, batch_two)
        self.zero_1 = f.op("Expand", self.zero, batch_one)
        self.zero_2 = f.op("Expand", self.zero, batch_two)
        # the last blank and the last label: the two states a complete path ends in
        two = i64([2])
        self.end_blank = f.op("Mul", self.label_length, two)
        self.end_label = f.op("Sub", self.end_blank, i64([1]))
        self.has_label = f.op("Greater", self.label_length, i64([0]))

    def at_states(self, per_class):
        """(B, T, C) per class → (B, T, S) per lattice state."""
        return take_along_last_axis(self.f, per_class, self.state_labels, 2)

    def end_states(self):
        """(B, S) with 0 at the final states and -inf elsewhere."""
        f = self.f
        pos = f.op("Unsqueeze", self.positions, f.int64s([0]))
        at_blank = f.op("Equal", pos, f.op("Unsqueeze", self.end_blank, f.int64s([1])))
        at_label = f.op("And", f.op("Equal", pos, f.op("Unsqueeze", self.end_label, f.int64s([1]))),
                        f.op("Unsqueeze", self.has_label, f.int64s([1])))
        return f.op("Where", f.op("Or", at_blank, at_label), self.zero, self.neg_inf)

    def start_states(self):
        # a virtual state before the first frame: one step of the recursion from it gives
        # alpha_0 = [lp(blank), lp(l1), -inf, ...]; with input_length 0 it is the answer itself
        f = self.f
        first = f.op("Equal", self.positions, f.scalar(0, np.int64))
        return f.op("Where", f.op("Unsqueeze", first, f.int64s([0])), self.zero,
                    f.op("Expand", self.neg_inf, f.op("Shape", self.ext)))

    def forward_loop(self, keep_all, values=None):
        """Run alpha over time: the final alphas and, with ``keep_all``, all of them (T, B, S).

        With ``values`` (T, B, S: a number per frame and state), also carry
        C_t(s) = E[Σ_{u<=t} values_u(π_u) | the path is in state s at t], the forward half of
        the expectation semiring the second derivative needs; then return (alphas, Cs) too."""
        f = self.f
        body = f.child()
        t, cond, alpha = f.fresh("t"), f.fresh("cond"), f.fresh("alpha")
        carried = [alpha]
        lp_t = body.op("Gather", self.lp_time_major, t, axis=0)
        logs = [alpha, body.op("Concat", self.neg_inf_1, _drop_last(body, alpha, 1), axis=1),
                body.op("Where", self.skip, body.op("Concat", self.neg_inf_2, _drop_last(body, alpha, 2), axis=1),
                        self.neg_inf)]
        active = body.op("Unsqueeze", body.op("Less", t, self.input_length), body.int64s([1]))
        if values is None:
            new = [log_sum_exp(body, logs, self.neg_inf, self.zero)]
        else:
            expect = f.fresh("expect")
            carried.append(expect)
            shifted = [expect, body.op("Concat", self.zero_1, _drop_last(body, expect, 1), axis=1),
                       body.op("Concat", self.zero_2, _drop_last(body, expect, 2), axis=1)]
            lse, mean = weighted_mean(body, logs, shifted, self.neg_inf, self.zero)
            new = [lse, body.op("Add", mean, body.op("Gather", values, t, axis=0))]
        new[0] = body.op("Add", new[0], lp_t)
        outs = [body.op("Where", active, n, c) for n, c in zip(new, carried)]
        scans = [_flat(body, o) for o in outs] if keep_all else []
        graph = _loop_body(body, "ctc_alpha_step", t, cond, carried, outs + scans)
        start = [self.start_states()] + ([f.op("Expand", self.zero, f.op("Shape", self.ext))] if values else [])
        results = f.op("Loop", self.time, _true(f), *start, body=graph, outputs=len(outs) + len(scans))
        results = [results] if isinstance(results, str) else results
        stacked = [_unflat(f, r, self.ext) for r in results[len(outs):]]
        if values is None:
            return results[0], (stacked[0] if keep_all else None)
        return results[0], stacked[0], stacked[1]

    def backward_loop(self, values=None):
        """All betas, time-major (T, B, S); beta_t(s) is the log-probability of the frames after t
        given state s at t (lp_t excluded), so alpha_t + beta_t - log p is a log-occupancy.

        With ``values``, also all B_t(s) = E[Σ_{u>t} values_u(π_u) | state s at t]."""
        f = self.f
        ends = self.end_states()
        body = f.child()
        i, cond, beta = f.fresh("i"), f.fresh("cond"), f.fresh("beta")
        carried = [beta]
        one = body.scalar(1, np.int64)
        last = body.op("Sub", self.time, one)
        t = body.op("Sub", last, i)
        following = body.op("Min", body.op("Add", t, one), last)
        x = body.op("Add", beta, body.op("Gather", self.lp_time_major, following, axis=0))
        no_skip = body.op("Expand", body.const(np.zeros((1, 1), bool)),
                          body.op("Concat", self.batch, body.int64s([2]), axis=0))
        skip_next = body.op("Concat", _drop_first(body, self.skip, 2), no_skip, axis=1)
        logs = [x, body.op("Concat", _drop_first(body, x, 1), self.neg_inf_1, axis=1),
                body.op("Where", skip_next, body.op("Concat", _drop_first(body, x, 2), self.neg_inf_2, axis=1),
                        self.neg_inf)]
        ended = body.op("Unsqueeze", body.op("GreaterOrEqual", t, body.op("Sub", self.input_length, one)),
                        body.int64s([1]))
        if values is None:
            outs = [body.op("Where", ended, ends, log_sum_exp(body, logs, self.neg_inf, self.zero))]
        else:
            expect = f.fresh("expect")
            carried.append(expect)
            d = body.op("Add", expect, body.op("Gather", values, following, axis=0))
            shifted = [d, body.op("Concat", _drop_first(body, d, 1), self.zero_1, axis=1),
                       body.op("Concat", _drop_first(body, d, 2), self.zero_2, axis=1)]
            lse, mean = weighted_mean(body, logs, shifted, self.neg_inf, self.zero)
            outs = [body.op("Where", ended, ends, lse), body.op("Where", ended, self.zero, mean)]
        graph = _loop_body(body, "ctc_beta_step", i, cond, carried, outs + [_flat(body, o) for o in outs])
        start = [ends] + ([f.op("Expand", self.zero, f.op("Shape", self.ext))] if values else [])
        results = f.op("Loop", self.time, _true(f), *start, body=graph, outputs=2 * len(outs))
        reverse = lambda r: f.op("Slice", _unflat(f, r, self.ext), f.int64s([-1]), f.int64s([-2 ** 62]),  # noqa
                                 f.int64s([0]), f.int64s([-1]))
        stacked = [reverse(r) for r in results[len(outs):]]
        return stacked[0] if values is None else stacked

    def log_likelihood(self, alpha):
        """(B,) log p(labels | logits) from the final alphas."""
        f = self.f
        ends = f.op("Add", alpha, self.end_states())
        top = f.reduce("ReduceMax", ends, [1], keepdims=True)
        safe = f.op("Where", f.op("Equal", top, self.neg_inf), self.zero, top)
        total = f.reduce("ReduceSum", f.op("Exp", f.op("Sub", ends, safe)), [1], keepdims=True)
        return f.op("Squeeze", f.op("Add", f.op("Log", total), safe), f.int64s([1]))


def weighted_mean(f, logs, values, neg_inf, zero):
    """(log Σ exp(logs), Σ softmax(logs)·values) elementwise over the lists; a mean over
    all -inf weights is 0."""
    m = f.op("Max", *logs)
    safe = f.op("Where", f.op("Equal", m, neg_inf), zero, m)
    weights = [f.op("Exp", f.op("Sub", x, safe)) for x in logs]
    total = f.op("Sum", *weights)
    one = f.op("CastLike", f.const(np.float32(1)), zero)
    mean = f.op("Div", f.op("Sum", *[f.op("Mul", w, v) for w, v in zip(weights, values)]),
                f.op("Where", f.op("Equal", total, zero), one, total))
    return f.op("Add", safe, f.op("Log", total)), mean


def _true(f):
    # onnx.reference runs no iteration when a Loop's optional condition is left out
    return f.const(np.array(True))


def _flat(f, x):
    # onnx.reference stacks a Loop's per-iteration outputs with np.vstack, which is right only
    # for 1-D values: scan outputs travel flat and are reshaped after the Loop
    return f.op("Reshape", x, f.int64s([-1]))


def _unflat(f, stacked, like):
    return f.op("Reshape", stacked, f.op("Concat", f.int64s([-1]), f.op("Shape", like), axis=0))


def _drop_last(f, x, n):
    return f.op("Slice", x, f.int64s([0]), f.int64s([-n]), f.int64s([1]))


def _drop_first(f, x, n):
    return f.op("Slice", x, f.int64s([n]), f.int64s([2 ** 62]), f.int64s([1]))


def _loop_body(body, name, counter, cond, carried, outputs):
    cond_out = body.op("Identity", cond)
    # the functions serve several float types: the carried values are left untyped and take
    # their type from the Loop's inputs
    inputs = [_scalar_info(counter, "int64"), _scalar_info(cond, "bool")] + [_untyped(c) for c in carried]
    return helper.make_graph(body.nodes, body.fresh(name), inputs,
                             [_scalar_info(cond_out, "bool")] + [_untyped(o) for o in outputs])


def _scalar_info(name, dtype):
    return helper.make_tensor_value_info(name, dtypes.to_onnx(dtype), [])


def _untyped(name):
    return helper.make_value_info(name, helper.TypeProto())


def _function_context(opset, inputs):
    # bodies carry their constants as nodes: functions have no initializers
    f = LoweringContext(opset, inline_constants=True)
    f.names.used.update(inputs)
    return f


def _function(name, f, inputs, outputs, doc):
    return helper.make_function(CUSTOM_DOMAIN, name, inputs, outputs, f.nodes,
                                opset_imports=[helper.make_opsetid("", f.opset)], doc_string=doc)


_LOSS_INPUTS = ["logits", "labels", "input_length", "label_length"]


def ctc_loss_function(opset):
    f = _function_context(opset, _LOSS_INPUTS + ["loss"])
    lattice = _Lattice(f, *_LOSS_INPUTS)
    alpha, _ = lattice.forward_loop(keep_all=False)
    f.nodes.append(helper.make_node("Neg", [lattice.log_likelihood(alpha)], ["loss"], name=f.fresh("Neg")))
    return _function(LOSS_FUNCTION, f, _LOSS_INPUTS, ["loss"],
                     "CTC negative log-likelihood per batch entry (TensorFlow ctc_loss semantics: "
                     "log-softmax of the logits, blank = last class)")


def _occupancy(f, lat, alphas, betas, log_p):
    """(T, B, S) state occupancies P(state s at t | labels), 0 on frames past input_length and
    for entries with no valid path; also the (T, B) mask of counted frames."""
    log_occ = f.op("Sub", f.op("Add", alphas, betas), f.op("Unsqueeze", log_p, f.int64s([0, 2])))
    frames = f.op("Range", f.scalar(0, np.int64), lat.time, f.scalar(1, np.int64))
    in_seq = f.op("Less", f.op("Unsqueeze", frames, f.int64s([1])),
                  f.op("Unsqueeze", lat.input_length, f.int64s([0])))  # (T, B)
    # no valid path (log p = -inf): TensorFlow's gradient is the softmax alone
    possible = f.op("Unsqueeze", f.op("Greater", log_p, lat.neg_inf), f.int64s([0]))
    counted = f.op("Unsqueeze", f.op("And", in_seq, possible), f.int64s([2]))
    return f.op("Where", counted, f.op("Exp", log_occ), lat.zero), in_seq


def _per_class(f, lat, per_state):
    """(T, B, S) per lattice state → (B, T, C) per class: several states may share a class."""
    classes = f.op("Range", f.scalar(0, np.int64), f.op("Squeeze", lat.classes, f.int64s([0])),
                   f.scalar(1, np.int64))
    one_hot = f.op("CastLike", f.op("Equal", f.op("Unsqueeze", lat.ext, f.int64s([2])), classes), "logits")
    return f.op("MatMul", f.op("Transpose", per_state, perm=[1, 0, 2]), one_hot)


def _frame_mask(f, in_seq):
    return f.op("CastLike", f.op("Unsqueeze", f.op("Transpose", in_seq, perm=[1, 0]), f.int64s([2])), "logits")


def ctc_loss_grad_function(opset):
    """d(Σ_b g_b · loss_b)/d logits = g · (softmax - occupancy) on frames before input_length."""
    inputs = ["g"] + _LOSS_INPUTS
    f = _function_context(opset, inputs + ["grad"])
    lat = _Lattice(f, *_LOSS_INPUTS)
    alpha, alphas = lat.forward_loop(keep_all=True)
    occ, in_seq = _occupancy(f, lat, alphas, lat.backward_loop(), lat.log_likelihood(alpha))
    grad = f.op("Sub", f.op("Mul", f.op("Exp", lat.logp), _frame_mask(f, in_seq)), _per_class(f, lat, occ))
    f.nodes.append(helper.make_node("Mul", [grad, f.op("Unsqueeze", "g", f.int64s([1, 2]))], ["grad"],
                                    name=f.fresh("Mul")))
    return _function(GRAD_FUNCTION, f, inputs, ["grad"],
                     "gradient of CTCLoss with respect to its logits, weighted by g (alpha-beta)")


def ctc_loss_grad_vjp_function(opset):
    """d(Σ v · CTCLossGrad(g, logits, ...))/d logits, the Hessian-vector product of the loss.

    Σ_tc v·grad = g·(Σ_tc v·softmax - E[F]) with F = Σ_t v_t(π_t) over the alignments π of
    the labels.  The softmax term differentiates in closed form; d E[F]/d logits_t(c) is the
    covariance of F with [π_t = c], computed from the expectation semiring: the forward and
    backward conditional expectations C and B of F's parts before and after each frame, so
    E[F · [π_t = c]] = Σ_{s: label c} occupancy_t(s) · (C_t(s) + B_t(s))."""
    inputs = ["v", "g"] + _LOSS_INPUTS
    f = _function_context(opset, inputs + ["grad"])
    lat = _Lattice(f, *_LOSS_INPUTS)
    v_states = f.op("Transpose", lat.at_states("v"), perm=[1, 0, 2])  # (T, B, S)
    alpha, alphas, before = lat.forward_loop(keep_all=True, values=v_states)
    betas, after = lat.backward_loop(values=v_states)
    occ, in_seq = _occupancy(f, lat, alphas, betas, lat.log_likelihood(alpha))
    weighted = f.op("Mul", occ, f.op("Add", before, after))  # occupancy · E[F | state at t]
    frames = f.op("Max", f.op("CastLike", lat.input_length, "logits"),
                  f.op("CastLike", f.const(np.float32(1)), "logits"))
    # every counted frame's Σ_s occupancy · E[F | s] is E[F]: average them
    expected = f.op("Div", f.reduce("ReduceSum", weighted, [0, 2], keepdims=False), frames)  # (B,)
    covariance = f.op("Sub", _per_class(f, lat, weighted),
                      f.op("Mul", f.op("Unsqueeze", expected, f.int64s([1, 2])), _per_class(f, lat, occ)))
    softmax = f.op("Exp", lat.logp)
    centered = f.op("Sub", "v", f.reduce("ReduceSum", f.op("Mul", "v", softmax), [2], keepdims=True))
    softmax_term = f.op("Mul", f.op("Mul", softmax, centered), _frame_mask(f, in_seq))
    grad = f.op("Sub", softmax_term, covariance)
    f.nodes.append(helper.make_node("Mul", [grad, f.op("Unsqueeze", "g", f.int64s([1, 2]))], ["grad"],
                                    name=f.fresh("Mul")))
    return _function(GRAD_VJP_FUNCTION, f, inputs, ["grad"],
                     "vector-Jacobian product of CTCLossGrad with respect to its logits")
