"""A loop whose body is a standard recurrent cell, lowered to ONNX's fused ``LSTM`` / ``GRU`` / ``RNN``.

``K.rnn`` traces any step function into an ONNX ``Loop``; for the cells of Keras 2.3.1 (LSTMCell,
GRUCell with reset_after False/True, SimpleRNNCell; implementation 1 and 2) ONNX has fused
ops: one kernel over the sequence instead of the body's ops dispatched per step (measured here,
bench/bench_lstm.py: 1.27x faster than the Loop on CPU; on CUDA, where Loops are reported to copy
between device and host, onnxruntime runs them on cuDNN when the activations are cuDNN's and a
GRU resets after its product, else on its CPU kernel).  When a loop's gradient residuals are not
needed (inference graphs, exports), the loop lowering asks ``lower_recognized_cell`` first; it
returns None unless the body is exactly one of these cells, and the Loop is kept then.

How a body is recognized: every value the step outputs is evaluated *symbolically* — a gate's
pre-activation as a sum of terms (``x_t @ W[:, cols]``, ``h @ R[:, cols]``, a bias's ``cols``,
for the GRU ``(r * h) @ R`` or ``r * (h @ R + b)``), the rest as an expression tree over
activations of such sums, the carried states and constants — and that tree is compared with
the cell's equations.  Anything else (a mask's select, a dropout multiply on the state, an
extra op, an activation ONNX's cells lack) fails the match.  Column ranges make the two Keras
implementations (one product sliced per gate, or one product per gate) the same thing, and
the input projection that ``hoist_sequence_work`` moved out of the loop is read back through
the producers of the loop's sequence input.  Loops traced inside ``loops_kept()`` stay Loops.
"""
import contextlib
import threading

import numpy as np

from ..graph import Constant

# Keras's activations that ONNX's recurrent ops take by name.  hard_sigmoid only with Keras's
# slope and offset, which are ONNX HardSigmoid's defaults: no activation_alpha/beta is written.
_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
_FLOATS = ("float32",)  # onnxruntime's CPU LSTM/GRU/RNN kernels are float only


class _Fusion(threading.local):
    enabled = True


_fusion = _Fusion()


def fusing():
    """Whether loops traced now may lower to a fused cell (see ``loops_kept``)."""
    return _fusion.enabled


@contextlib.contextmanager
def loops_kept():
    """Loops traced inside (``K.rnn``, ``map_fn`` ...) lower to ONNX ``Loop`` even when their body
    is a standard cell: for comparing the two lowerings, or for a runtime whose fused ops differ.
    The choice is a loop attribute, part of the graph's signature, so cached sessions of the
    two forms stay apart."""
    saved, _fusion.enabled = _fusion.enabled, False
    try:
        yield
    finally:
        _fusion.enabled = saved


class NoMatch(Exception):
    """The body is not one of the recognized cells."""


class Weight:
    """Columns ``[lo, hi)`` (last axis) of a loop-invariant outer tensor: a kernel or a bias."""

    def __init__(self, tensor, lo, hi):
        self.tensor, self.lo, self.hi = tensor, lo, hi


class Term:
    """One summand of a gate's pre-activation.  ``kind``: ``x`` (x_t @ W; source: the time-major
    sequence), ``h`` (h @ W; source: the state index), ``hr`` ((r * h) @ W) and ``rh``
    (r * (h @ W)), source (state index, reset gate), ``b`` a bias, ``rb`` r * bias (source r)."""

    def __init__(self, kind, source, weight):
        self.kind, self.source, self.weight = kind, source, weight

    def narrowed(self, lo, hi):
        w = self.weight
        return Term(self.kind, self.source, Weight(w.tensor, w.lo + lo, w.lo + hi))


class Lin:
    """A sum of ``Term`` s of ``width`` columns: what an activation of a gate reads."""

    def __init__(self, terms, width):
        self.terms, self.width = tuple(terms), width

    def of(self, kind):
        return [t for t in self.terms if t.kind == kind]


def _weight(tensor):
    if tensor.ndim not in (1, 2) or tensor.shape[-1] is None or tensor.dtype not in _FLOATS:
        return None
    return Weight(tensor, 0, tensor.shape[-1])


def _columns(shape, attrs, width):
    """The ``[lo, hi)`` a slice takes of the last axis, or NoMatch for any other slice."""
    axes = [a % len(shape) for a in attrs["axes"]]
    if axes != [len(shape) - 1] or attrs["steps"] != (1,):
        raise NoMatch("a slice other than columns")
    r = range(*slice(attrs["starts"][0], attrs["ends"][0], 1).indices(width))
    if not len(r):
        raise NoMatch("an empty slice")
    return r.start, r.stop


# -- symbolic evaluation ------------------------------------------------------------------------
def _tagged(v, tag):
    """Whether ``v`` is an expression node ``(tag, ...)`` (not a Lin or Weight)."""
    return isinstance(v, tuple) and v[0] == tag


def _matmul(node, a, b, rank):
    if not isinstance(b, Weight) or b.tensor.ndim != 2 or node.inputs[0].ndim != rank:
        raise NoMatch("a product that is not by a weight matrix")
    if _tagged(a, "x"):
        term = Term("x", a[1], b)
    elif _tagged(a, "state"):
        term = Term("h", a[1], b)
    elif _tagged(a, "mul") and any(_tagged(v, "state") for v in a[1:]) and any(_tagged(v, "act") for v in a[1:]):
        state = next(v for v in a[1:] if _tagged(v, "state"))
        gate = next(v for v in a[1:] if _tagged(v, "act"))
        term = Term("hr", (state[1], gate), b)  # GRU, reset before the product
    else:
        raise NoMatch("a product of something other than x_t or a state")
    return Lin([term], b.hi - b.lo)


def _add(node, a, b):
    if isinstance(b, Lin) and not isinstance(a, Lin):
        a, b = b, a
    if isinstance(a, Lin) and isinstance(b, Lin) and a.width == b.width:
        return Lin(a.terms + b.terms, a.width)
    if isinstance(a, Lin) and isinstance(b, Weight) and b.tensor.ndim == 1 and b.hi - b.lo == a.width:
        return Lin(a.terms + (Term("b", None, b),), a.width)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return ("add", a, b)
    raise NoMatch("a sum that is neither a gate nor the cell's state update")


def _mul(node, a, b):
    if isinstance(a, Lin) and isinstance(b, tuple):
        a, b = b, a
    if _tagged(a, "act") and isinstance(b, Lin):
        # GRU reset_after: r * (h @ R + b_R) — the product and its bias are reset together
        if any(t.kind not in ("h", "b") for t in b.terms):
            raise NoMatch("a gate times a sum that reads x_t")
        return Lin([Term("rh", (t.source, a), t.weight) if t.kind == "h" else Term("rb", a, t.weight)
                    for t in b.terms], b.width)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return ("mul", a, b)
    raise NoMatch("a product outside the cell's equations")


def _slice(node, x):
    if isinstance(x, Lin):
        lo, hi = _columns(node.inputs[0].shape, node.attrs, x.width)
        return Lin([t.narrowed(lo, hi) for t in x.terms], hi - lo)
    if isinstance(x, Weight):
        lo, hi = _columns(node.inputs[0].shape, node.attrs, x.hi - x.lo)
        return Weight(x.tensor, x.lo + lo, x.lo + hi)
    raise NoMatch("a slice of a state")


def _activation(node, x):
    name = node.primitive.name
    if name == "hard_sigmoid":
        if (node.attrs.get("alpha"), node.attrs.get("beta")) != (0.2, 0.5):
            raise NoMatch("hard_sigmoid with another slope than Keras's")
        return ("act", "HardSigmoid", x)
    return ("act", _ACTIVATIONS[name], x)


_RULES = {
    "matmul": lambda node, a, b: _matmul(node, a, b, rank=2),
    "add": lambda node, a, b: _add(node, a, b),
    "sub": lambda node, a, b: ("sub", a, b) if isinstance(a, tuple) and isinstance(b, tuple) else _no(),
    "mul": _mul,
    "slice": _slice,
    "identity": lambda node, x: x,
    "hard_sigmoid": _activation,
    **{name: _activation for name in _ACTIVATIONS},
}


def _no():
    raise NoMatch("a difference outside the cell's equations")


class _Evaluator:
    """Symbolic values of a loop body's tensors, computed on demand (a body is a few dozen nodes)."""

    def __init__(self, node):
        a = node.attrs
        C, S = a["n_carried"], a["n_sequences"]
        body = node.subgraphs[0]
        self.values = {}
        for i, p in enumerate(body.inputs[:C]):
            self.values[id(p)] = ("state", i)
        for k, p in enumerate(body.inputs[C:C + S]):
            seq = node.inputs[C + k]
            try:
                self.values[id(p)] = _outer_projection(seq)  # hoisted x_t @ W (+ b)
            except NoMatch:
                self.values[id(p)] = ("x", seq)
        for p, outer in zip(body.inputs[C + S:], node.inputs[C + S:]):
            self.values[id(p)] = _weight(outer)

    def __call__(self, t):
        if id(t) in self.values:
            v = self.values[id(t)]
        elif isinstance(t, Constant):
            v = ("const", np.asarray(t.value))
        elif t.node is None or len(t.node.outputs) != 1 or t.node.primitive.name not in _RULES:
            v = None
        else:
            v = _RULES[t.node.primitive.name](t.node, *[self(i) for i in t.node.inputs])
        if v is None:
            raise NoMatch(f"{t.name} is not part of a recognized cell")
        self.values[id(t)] = v
        return v


def _outer_projection(seq):
    """``seq`` as ``X @ W (+ b)`` over the whole time-major sequence (what hoisting built), or
    NoMatch.  Columns of it sliced, for a product of several gates at once."""
    node = seq.node
    if node is None or len(node.outputs) != 1:
        raise NoMatch("not a projection")
    name = node.primitive.name
    if name == "matmul":
        x, w = node.inputs
        weight = _weight(w)
        if x.ndim != 3 or weight is None or w.ndim != 2:
            raise NoMatch("not a projection of a sequence")
        return Lin([Term("x", x, weight)], weight.hi - weight.lo)
    if name == "add":
        a, b = node.inputs
        for lin_side, bias in ((a, b), (b, a)):
            try:
                lin = _outer_projection(lin_side)
            except NoMatch:
                continue
            weight = _weight(bias)
            if weight is not None and bias.ndim == 1 and weight.hi - weight.lo == lin.width:
                return Lin(lin.terms + (Term("b", None, weight),), lin.width)
        raise NoMatch("a sum other than a bias")
    if name == "slice":
        lin = _outer_projection(node.inputs[0])
        lo, hi = _columns(node.inputs[0].shape, node.attrs, lin.width)
        return Lin([t.narrowed(lo, hi) for t in lin.terms], hi - lo)
    raise NoMatch("not a projection")


# -- the cells' equations -----------------------------------------------------------------------
def _pairs(expr, op):
    """The operand orders of a commutative ``op`` node (both), or none."""
    if not isinstance(expr, tuple) or expr[0] != op:
        return []
    return [(expr[1], expr[2]), (expr[2], expr[1])]


def _is_state(v, i):
    return _tagged(v, "state") and v[1] == i


def _gate(v, activation=None):
    """An activation of a gate sum: (activation, Lin), or NoMatch."""
    if not (_tagged(v, "act") and isinstance(v[2], Lin)):
        raise NoMatch("not a gate")
    if activation is not None and v[1] != activation:
        raise NoMatch("gates with different activations")
    return v


def _check_gate(lin, h_index, hidden, allowed):
    """A gate reads x_t once, the state ``h_index`` once (through ``allowed`` kinds) and biases."""
    kinds = [t.kind for t in lin.terms]
    if lin.width != hidden or kinds.count("x") != 1 or sum(kinds.count(k) for k in allowed) != 1:
        raise NoMatch("a gate of another shape")
    if any(k not in ("x", "b") + tuple(allowed) + (("rb",) if "rh" in allowed else ()) for k in kinds):
        raise NoMatch("a gate with an extra term")
    h = next(t for t in lin.terms if t.kind in allowed)
    if (h.source if h.kind == "h" else h.source[0]) != h_index:
        raise NoMatch("a gate reading another state")


def _first(attempts):
    for attempt in attempts:
        try:
            return attempt()
        except NoMatch:
            continue
    raise NoMatch("no operand order matches")


def _match_lstm(carried, hidden):
    """c = f * c_prev + i * g(x_c), h = o * h_act(c) (either operand order), states (h, c)."""
    def attempt(hi, ci, fc_pair, ig, oh):
        c = carried[ci]
        f, c_prev = fc_pair
        if not _is_state(c_prev, ci):
            raise NoMatch("no forget product")
        f = _gate(f)
        i, g = _gate(ig[0], f[1]), _gate(ig[1])
        o, h_act = _gate(oh[0], f[1]), oh[1]
        if not (isinstance(h_act, tuple) and h_act[0] == "act" and h_act[2] is c):
            raise NoMatch("the output is not o * act(c)")
        for gate in (i, f, g, o):
            _check_gate(gate[2], hi, hidden, ("h",))
        return dict(op="LSTM", h=hi, c=ci, gates=[i[2], o[2], f[2], g[2]],
                    activations=[f[1], g[1], h_act[1]], linear_before_reset=0)

    if len(carried) != 2:
        raise NoMatch("an LSTM carries two states")
    tries = []
    for hi, ci in ((0, 1), (1, 0)):
        for first, second in _pairs(carried[ci], "add"):
            for fc in _pairs(first, "mul"):
                for ig in _pairs(second, "mul"):
                    for oh in _pairs(carried[hi], "mul"):
                        tries.append(lambda hi=hi, ci=ci, fc=fc, ig=ig, oh=oh: attempt(hi, ci, fc, ig, oh))
    return _first(tries)


def _is_one_minus(v, z):
    return (_tagged(v, "sub") and v[2] is z and _tagged(v[1], "const")
            and v[1][1].size == 1 and float(v[1][1].reshape(())) == 1.0)


def _match_gru(carried, hidden):
    """h = z * h_prev + (1 - z) * g(x_h + (r * h_prev) @ R_h  or  r * (h_prev @ R_h + b))."""
    def attempt(zh, kept_new):
        z, h_prev = zh
        one_minus, hh = kept_new
        if not _is_state(h_prev, 0) or not _is_one_minus(one_minus, z):
            raise NoMatch("not a GRU update")
        z, hh = _gate(z), _gate(hh)
        resets = [t for t in hh[2].terms if t.kind in ("hr", "rh")]
        if len(resets) != 1:
            raise NoMatch("no reset term")
        r = _gate(resets[0].source[1], z[1])
        if any(t.kind == "rb" and t.source is not r for t in hh[2].terms):
            raise NoMatch("a bias reset by another gate")
        _check_gate(z[2], 0, hidden, ("h",))
        _check_gate(r[2], 0, hidden, ("h",))
        _check_gate(hh[2], 0, hidden, (resets[0].kind,))
        return dict(op="GRU", h=0, c=None, gates=[z[2], r[2], hh[2]], activations=[z[1], hh[1]],
                    linear_before_reset=int(resets[0].kind == "rh"))

    if len(carried) != 1:
        raise NoMatch("a GRU carries one state")
    tries = [lambda zh=zh, kn=kn: attempt(zh, kn)
             for first, second in _pairs(carried[0], "add")
             for zh in _pairs(first, "mul") for kn in _pairs(second, "mul")]
    return _first(tries)


def _match_simple(carried, hidden):
    """h = act(x_t @ W + h_prev @ R + b)."""
    if len(carried) != 1:
        raise NoMatch("a simple RNN carries one state")
    act, lin = _gate(carried[0])[1:]
    _check_gate(lin, 0, hidden, ("h",))
    return dict(op="RNN", h=0, c=None, gates=[lin], activations=[act], linear_before_reset=0)


def match_cell(node, used):
    """The cell a loop node computes, as a dict (op, state indices, gates in ONNX's order,
    activations, the time-major input), or None.  ``used``: which of the node's outputs are read;
    the saved residuals of a training graph must not be."""
    a = node.attrs
    C, n_scan, R = a["n_carried"], a["n_scan"], a.get("n_residuals", 0)
    if a.get("keep_loop") or a.get("reverse") or a.get("grad_loop") or any(used[C + n_scan - R:]) or C not in (1, 2):
        return None
    body = node.subgraphs[0]
    states = body.inputs[:C]
    if any(p.ndim != 2 or p.dtype not in _FLOATS or p.shape[1] is None for p in states):
        return None
    hidden = states[0].shape[1]
    try:
        value = _Evaluator(node)
        carried = [value(o) for o in body.outputs[:C]]
        scans = [value(o) for o in body.outputs[C:C + n_scan - R]]
        for matcher in (_match_lstm, _match_gru, _match_simple):
            try:
                cell = matcher(carried, hidden)
                break
            except NoMatch:
                continue
        else:
            return None
    except (NoMatch, RecursionError):  # a body deeper than any cell's: not one
        return None
    if any(s is not carried[cell["h"]] for s in scans) or any(p.shape[1] != hidden for p in states):
        return None
    xs = {id(t.source): t.source for g in cell["gates"] for t in g.terms if t.kind == "x"}
    if len(xs) != 1:
        return None  # gates reading different inputs (Keras's dropout masks per gate)
    x = next(iter(xs.values()))
    rows = {t.weight.tensor.shape[0] for g in cell["gates"] for t in g.terms if t.kind == "x"}
    if x.ndim != 3 or x.dtype not in _FLOATS or rows != {x.shape[2]}:
        return None
    S = a["n_sequences"]
    projected = [isinstance(value.values.get(id(p)), Lin) for p in body.inputs[C:C + S]]
    cell.update(x=x, hidden=hidden, projected=projected)
    return cell


# -- emitting the op ----------------------------------------------------------------------------
def _gather_columns(ctx, names, weights):
    """The weights' column ranges side by side (last axis); neighbouring ranges of one tensor
    are taken with one Slice, a whole tensor with none."""
    runs = []
    for w in weights:
        if runs and runs[-1][0] is w.tensor and runs[-1][2] == w.lo:
            runs[-1][2] = w.hi
        else:
            runs.append([w.tensor, w.lo, w.hi])
    parts = []
    for tensor, lo, hi in runs:
        name = names[id(tensor)]
        if (lo, hi) != (0, tensor.shape[-1]):
            name = ctx.op("Slice", name, ctx.int64s([lo]), ctx.int64s([hi]), ctx.int64s([-1]))
        parts.append(name)
    return parts[0] if len(parts) == 1 else ctx.op("Concat", *parts, axis=-1)


def _bias(ctx, names, weights, hidden):
    """The sum of a gate's bias terms (zeros where it has none)."""
    if not weights:
        return ctx.const(np.zeros(hidden, np.float32), hint="zero_bias")
    total = _gather_columns(ctx, names, weights[:1])
    for w in weights[1:]:
        total = ctx.op("Add", total, _gather_columns(ctx, names, [w]))
    return total


def lower_recognized_cell(ctx, node, names, used):
    """ONNX names of the loop node's outputs computed by one LSTM/GRU/RNN op, or None (keep
    the Loop).  ``names``: the ONNX names of the node's inputs."""
    cell = match_cell(node, used)
    if cell is None:
        return None
    gates, hidden = cell["gates"], cell["hidden"]
    tensors = [cell["x"]] + [t.weight.tensor for g in gates for t in g.terms]
    known = {}
    for t in tensors:  # every input must have been lowered already; otherwise keep the Loop
        try:
            known[id(t)] = ctx.lookup(t)
        except KeyError:
            return None
    C = node.attrs["n_carried"]
    # the hoisted projections (x_t @ W + b for all steps): the fused op computes them itself
    released = [names[C + k] for k in range(node.attrs["n_sequences"]) if cell["projected"][k]]

    unsqueeze0, squeeze0 = ctx.int64s([0]), ctx.int64s([0])
    w = _gather_columns(ctx, known, [g.of("x")[0].weight for g in gates])
    w = ctx.op("Unsqueeze", ctx.op("Transpose", w, perm=[1, 0]), unsqueeze0)
    recurrent = [next(t for t in g.terms if t.kind in ("h", "hr", "rh")).weight for g in gates]
    r = ctx.op("Unsqueeze", ctx.op("Transpose", _gather_columns(ctx, known, recurrent), perm=[1, 0]), unsqueeze0)
    has_bias = any(t.kind in ("b", "rb") for g in gates for t in g.terms)
    b = ""
    if has_bias:
        wb = [_bias(ctx, known, [t.weight for t in g.of("b")], hidden) for g in gates]
        rb = [_bias(ctx, known, [t.weight for t in g.of("rb")], hidden) for g in gates]
        b = ctx.op("Unsqueeze", ctx.op("Concat", *wb, *rb, axis=0), unsqueeze0)
    initial_h = ctx.op("Unsqueeze", names[cell["h"]], unsqueeze0)
    inputs = [known[id(cell["x"])], w, r, b, "", initial_h]
    hints = ["rnn_y", "rnn_y_h"]
    attrs = dict(hidden_size=hidden, activations=cell["activations"])
    if cell["op"] == "LSTM":
        inputs.append(ctx.op("Unsqueeze", names[cell["c"]], unsqueeze0))
        hints.append("rnn_y_c")
    if cell["op"] == "GRU":
        # written even when 0 (the default): onnxruntime's CUDA provider sends a GRU to its CPU
        # kernel only when the attribute says 0; cuDNN's own GRU always resets after the product
        attrs["linear_before_reset"] = cell["linear_before_reset"]
    if cell["op"] == "LSTM":
        results = ctx.op("LSTM", *inputs, outputs=hints, **attrs)
    elif cell["op"] == "GRU":
        results = ctx.op("GRU", *inputs, outputs=hints, **attrs)
    else:
        results = ctx.op("RNN", *inputs, outputs=hints, **attrs)
    stacked = ctx.op("Squeeze", results[0], ctx.int64s([1]))  # (T, 1, B, H): one direction
    finals = {cell["h"]: ctx.op("Squeeze", results[1], squeeze0)}
    if cell["c"] is not None:
        finals[cell["c"]] = ctx.op("Squeeze", results[2], squeeze0)
    n_scan, R = node.attrs["n_scan"], node.attrs.get("n_residuals", 0)
    out = [finals[i] for i in range(C)] + [stacked] * (n_scan - R)
    out += [ctx.fresh("unused_loop_output") for _ in range(R)]
    # removed after the whole graph is lowered, if nothing else reads them (lower/rules.py)
    ctx.released = getattr(ctx, "released", []) + released
    return out

