"""Loops: one ``loop`` primitive for K.rnn, map_fn, foldl and foldr, lowered to an ONNX ``Loop``.

A loop node reads ``carried`` initial values, ``sequences`` (scanned along axis 0) and
``captures`` (loop-invariant outer tensors: weights, constants, the learning phase).  Its body is
a *closed* ``Subgraph``: its inputs are placeholders for the carried values, for one step of each
sequence and for each capture, so the body is a pure function of its inputs.  The captures are
inputs of the node itself, so autodiff and the graph walk see them like any operand.  Outputs:
the final carried values, then each per-step output stacked along a new axis 0.  ``reverse``
walks the steps from last to first; stacked outputs stay aligned with the sequence positions.

Gradients.  When the loop is built, the body is differentiated once (``kgraph.autodiff`` over the
traced step).  The forward values the backward step reads and that depend on the carried values
(or on a random draw) — the ``residuals`` — become extra per-step outputs of the forward loop;
values computed from the step inputs and captures alone are recomputed by the backward step.
The vjp is a second loop in the opposite direction that carries the cotangents of the carried
values and accumulates the captures' gradients, scanning the sequences, the residuals and the
outputs' cotangents.
Outputs that nothing reads (the residuals in an inference graph, a capture gradient nobody asked
for) are left out of the ONNX ``Loop`` when it is lowered, with the work that only they needed.
Gradients of gradients through a loop are not supported.

Tracing a step into a body is ``tracing.py``; moving its input projection out of the loop is
``loop_hoist.py``.
"""
import numpy as np
from onnx import helper

from .. import dtypes
from ..graph import Constant, Graph, Placeholder, Subgraph
from .elementwise import add, zeros_like_
from .loop_hoist import hoist_sequence_work
from .primitive import InferError, Primitive
from .tracing import close_over, depending, has_effects, node_reads, params_reached, substitute, trace_start  # noqa: F401

INT64_MIN = int(np.iinfo(np.int64).min)


# -- the primitive -----------------------------------------------------------------------------
loop = Primitive("loop", num_outputs=None)


def compatible_shapes(a, b):
    """Equal ranks and equal dims wherever both are known."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


@loop.infer
def _(*inputs, subgraphs, n_carried, n_sequences, n_scan, n_residuals=0, reverse=False, grad_loop=False,
      batched_grads=(), keep_loop=False):
    body = subgraphs[0]
    C, S = n_carried, n_sequences
    if len(body.inputs) != len(inputs) or len(body.outputs) != C + n_scan:
        raise InferError(f"loop: the body takes {len(body.inputs)} inputs and gives {len(body.outputs)} "
                         f"outputs; the node has {len(inputs)} inputs and {C} + {n_scan} outputs")
    if S < 1:
        raise InferError("loop: needs at least one sequence (it sets the number of steps)")
    for i in range(C):
        init, param, new = inputs[i], body.inputs[i], body.outputs[i]
        if not (init.dtype == param.dtype == new.dtype):
            raise InferError(f"loop: carried value {i} has dtype {init.dtype} but the step returns {new.dtype}")
        if not (compatible_shapes(init.shape, param.shape) and compatible_shapes(init.shape, new.shape)):
            raise InferError(f"loop: carried value {i} has shape {init.shape} but the step returns shape "
                             f"{new.shape}")
    steps = None
    for k in range(S):
        seq, param = inputs[C + k], body.inputs[C + k]
        if seq.ndim < 1 or seq.dtype != param.dtype or not compatible_shapes(seq.shape[1:], param.shape):
            raise InferError(f"loop: sequence {k} of shape {seq.shape} ({seq.dtype}) does not match its "
                             f"step input of shape {param.shape} ({param.dtype})")
        if seq.shape[0] is not None:
            if steps is not None and steps != seq.shape[0]:
                raise InferError(f"loop: sequences have different lengths {steps} and {seq.shape[0]}")
            steps = seq.shape[0]
    for k in range(C + S, len(inputs)):
        if inputs[k].dtype != body.inputs[k].dtype or not compatible_shapes(inputs[k].shape, body.inputs[k].shape):
            raise InferError(f"loop: captured value {k - C - S} does not match its placeholder")
    return ([(inputs[i].shape, inputs[i].dtype) for i in range(C)] +
            [((steps,) + o.shape, o.dtype) for o in body.outputs[C:]])


def _live_parts(body, n_carried, n_scan, used):
    """The carried values and per-step outputs a lowering must keep for the ``used`` outputs: a
    carried value is kept when it is used or when a kept output depends on it."""
    params = body.inputs
    keep_carried = {i for i in range(n_carried) if used[i]}
    keep_scan = [j for j in range(n_scan) if used[n_carried + j]]
    while True:
        targets = ([body.outputs[i] for i in sorted(keep_carried)] +
                   [body.outputs[n_carried + j] for j in keep_scan])
        reached = params_reached(targets, params)
        more = {i for i in range(n_carried) if id(params[i]) in reached} - keep_carried
        if not more:
            return sorted(keep_carried), keep_scan, targets, reached
        keep_carried |= more


@loop.lower
def _(ctx, node, *names):
    from ..lower import lower_subgraph, value_info

    a = node.attrs
    C, S, n_scan, reverse = a["n_carried"], a["n_sequences"], a["n_scan"], a.get("reverse", False)
    body = node.subgraphs[0]
    params = body.inputs
    needed = getattr(ctx, "needed", None)
    used = [needed is None or id(t) in needed for t in node.outputs]
    if needed is not None:  # only the forward values are read: a standard cell is one fused op
        from .rnn_cells import lower_recognized_cell
        fused = lower_recognized_cell(ctx, node, names, used)
        if fused is not None:
            return fused
    keep_carried, keep_scan, targets, reached = _live_parts(body, C, n_scan, used)
    seqs, caps = names[C:C + S], names[C + S:]

    steps = ctx.op("Squeeze", ctx.op("Shape", seqs[0], start=0, end=1), ctx.int64s([0]))
    bctx = ctx.child()
    iteration, cond_in = bctx.fresh("iteration"), bctx.fresh("cond_in")
    index = iteration
    if reverse:
        last = ctx.op("Sub", steps, ctx.const(np.asarray(1, dtype=np.int64), hint="one"))
        index = bctx.op("Sub", last, iteration)
    for k in range(S):  # a step reads one element of each sequence it uses
        if id(params[C + k]) in reached:
            bctx.values[id(params[C + k])] = bctx.op("Gather", seqs[k], index, axis=0)
    for p, outer in zip(params[C + S:], caps):
        bctx.values[id(p)] = outer
    _lower_invariants_outside(ctx, bctx, targets, params[:C + S], params[C + S:], caps)
    carried_params = [params[i] for i in keep_carried]
    others = [p for i, p in enumerate(params) if i not in keep_carried]
    sub = Subgraph(carried_params, targets, captures=others)
    graph = lower_subgraph(ctx, sub, [bctx.fresh(p.name) for p in carried_params], name="loop_body",
                           prefix=[(iteration, (), "int64"), (cond_in, (), "bool")], ctx=bctx)
    # ONNX runtimes disagree on how a Loop joins per-step outputs of rank >= 1: onnxruntime stacks
    # them on a new axis (the spec), onnx.reference concatenates them along axis 0.  A Reshape
    # to (steps, *step_shape) after the loop gives the stacked result from either, when at most
    # one dim of the step shape is unknown (it becomes -1: Keras's batch).  Otherwise the step's
    # value leaves the body flattened to 1-D (both join 1-D values into (steps, n)) and its
    # shape, carried out of the loop, restores it.
    n_keep = len(keep_carried)
    carried_outs, scan_outs = list(graph.output)[:n_keep], list(graph.output)[n_keep:]
    flat = ctx.int64s([-1])
    shape_outs, step_outs, shape_inits, restore = [], [], [], []
    for j, out in zip(keep_scan, scan_outs):
        step_shape = body.outputs[C + j].shape
        if step_shape.count(None) <= 1:
            step_outs.append(out)
            restore.append([-1 if d is None else d for d in step_shape])
            continue
        flat_name = bctx.fresh(f"{out.name}_flat")
        graph.node.append(helper.make_node("Reshape", [out.name, flat], [flat_name], name=bctx.fresh("Reshape")))
        step_outs.append(value_info(flat_name, (None,), body.outputs[C + j].dtype))
        shape_name = bctx.fresh(f"{out.name}_shape")
        graph.node.append(helper.make_node("Shape", [out.name], [shape_name], name=bctx.fresh("Shape")))
        shape_outs.append(value_info(shape_name, (len(step_shape),), "int64"))
        graph.input.append(value_info(bctx.fresh(f"{out.name}_shape_in"), (len(step_shape),), "int64"))
        shape_inits.append(ctx.int64s([0] * len(step_shape)))
        restore.append(len(shape_inits) - 1)
    cond_out = bctx.fresh("cond_out")
    graph.node.append(helper.make_node("Identity", [cond_in], [cond_out], name=bctx.fresh("Identity")))
    del graph.output[:]
    graph.output.extend([value_info(cond_out, (), "bool")] + carried_outs + shape_outs + step_outs)

    hints = ["loop_carried"] * (n_keep + len(shape_inits)) + ["loop_scan"] * len(keep_scan)
    always = ctx.const(np.asarray(True), hint="true")  # onnx.reference runs no step without a condition
    results = ctx.op("Loop", steps, always, *[names[i] for i in keep_carried], *shape_inits, body=graph,
                     outputs=hints)
    out_names = [None] * len(node.outputs)
    for i, name in zip(keep_carried, results):
        out_names[i] = name
    final_shapes = results[n_keep:n_keep + len(shape_inits)]
    steps_1d = None
    for j, name, shape in zip(keep_scan, results[n_keep + len(shape_inits):], restore):
        if isinstance(shape, int):
            full = ctx.op("Concat", ctx.op("Shape", name, start=0, end=1), final_shapes[shape], axis=0)
        else:
            steps_1d = steps_1d or ctx.op("Unsqueeze", steps, ctx.int64s([0]))
            full = ctx.op("Concat", steps_1d, ctx.int64s(shape), axis=0)
        name = ctx.op("Reshape", name, full)
        if reverse:  # ONNX stacks in iteration order; put step t back at position t
            name = ctx.op("Slice", name, ctx.int64s([-1]), ctx.int64s([INT64_MIN]), ctx.int64s([0]),
                          ctx.int64s([-1]))
        out_names[C + j] = name
    # outputs nothing reads get a name no node produces
    return [n if n is not None else ctx.fresh("unused_loop_output") for n in out_names]


def _lower_invariants_outside(ctx, bctx, targets, step_params, capture_params, capture_names):
    """Emit the body's loop-invariant values — those computed from the captures alone, such as
    ``transpose(R)`` in an RNN's backward step — once, before the Loop, instead of once per step;
    the body reads them by their outer names (ONNX scoping)."""
    varying = {id(p) for p in step_params}
    invariant = []
    for node in Graph(targets, stop=list(step_params) + list(capture_params)).nodes:
        if (node.subgraphs or has_effects(node) or node.primitive.lower_rule is None
                or any(id(t) in varying for t in node.inputs)):
            varying.update(id(o) for o in node.outputs)
        else:
            invariant.append(node)
    if not invariant:
        return
    for p, outer in zip(capture_params, capture_names):
        ctx.values[id(p)] = outer
    for node in invariant:
        for t in node.inputs:
            if isinstance(t, Constant) and id(t) not in ctx.values:
                ctx.values[id(t)] = ctx.const(t.value, hint=t.name)
        ctx.current = node
        names = node.primitive.lower_rule(ctx, node, *[ctx.lookup(t) for t in node.inputs])
        names = [names] if isinstance(names, str) else list(names)
        for t, name in zip(node.outputs, names):
            ctx.values[id(t)] = name
            bctx.values[id(t)] = name
    ctx.current = None


@loop.vjp
def _(node, *gs):
    a = node.attrs
    C, S, n_scan, R = a["n_carried"], a["n_sequences"], a["n_scan"], a.get("n_residuals", 0)
    if a.get("grad_loop", False):
        raise NotImplementedError("gradients: second-order gradients through a loop (K.rnn, map_fn, "
                                  "foldl, foldr) are not supported")
    if len(node.subgraphs) < 2:
        _backward_body(node.subgraphs[0], C, S, n_scan)  # raises the reason, e.g. a primitive without vjp
        raise NotImplementedError("gradients: this loop was built without a gradient")
    n_out = n_scan - R
    if any(g is not None for g in gs[C + n_out:]):
        raise NotImplementedError("gradients: differentiating a loop's saved values is not supported")
    body = node.subgraphs[0]
    params = body.inputs
    carried, seqs, caps = node.inputs[:C], node.inputs[C:C + S], node.inputs[C + S:]
    float_carried = [i for i in range(C) if dtypes.is_float(params[i].dtype)]
    float_seqs = [k for k in range(S) if dtypes.is_float(params[C + k].dtype)]
    float_caps = [k for k in range(len(caps)) if dtypes.is_float(caps[k].dtype)]
    float_outs = [j for j in range(n_out) if dtypes.is_float(body.outputs[C + j].dtype)]

    # zeros sized at run time: a static-shape constant of a stacked sequence would bloat the file
    ct_carried = [gs[i] if gs[i] is not None else zeros_like_(carried[i]) for i in float_carried]
    accumulators = [zeros_like_(caps[k]) for k in float_caps]
    ct_outs = [gs[C + j] if gs[C + j] is not None else zeros_like_(node.outputs[C + j]) for j in float_outs]
    residuals = list(node.outputs[C + n_out:C + n_scan])
    # float capture position → (how its per-step factors combine, where each factor is)
    batched = {pos: (kind, refs) for pos, kind, refs in a.get("batched_grads", ())}
    accumulated = [pos for pos in range(len(float_caps)) if pos not in batched]
    n_factors = len({ref for _, refs in batched.values() for ref in refs if ref[0] == "scan"})
    back_seqs = [*seqs, *residuals, *ct_outs]
    back = loop.bind([*ct_carried, *[accumulators[pos] for pos in accumulated], *back_seqs, *caps],
                     dict(n_carried=len(float_carried) + len(accumulated), n_sequences=len(back_seqs),
                          n_scan=len(float_seqs) + n_factors, n_residuals=0, reverse=not a.get("reverse", False),
                          grad_loop=True),
                     (node.subgraphs[1],))
    grads = [None] * len(node.inputs)
    for pos, i in enumerate(float_carried):
        grads[i] = back[pos]
    for j, pos in enumerate(accumulated):
        grads[C + S + float_caps[pos]] = back[len(float_carried) + j]
    first_scan = len(float_carried) + len(accumulated)
    for pos, k in enumerate(float_seqs):
        grads[C + k] = back[first_scan + pos]
    stacked = {"scan": back[first_scan + len(float_seqs):], "seq": back_seqs}
    for pos, (kind, refs) in batched.items():
        factors = [stacked[where][i] for where, i in refs]
        grads[C + S + float_caps[pos]] = _combine_factors(kind, factors, caps[float_caps[pos]])
    return grads


def _combine_factors(kind, factors, capture):
    """A capture's gradient from its per-step factors, stacked over all steps: one product over
    every (step, row) pair instead of one per step accumulated inside the backward loop."""
    from .linalg import matmul, swap_last
    from .reduce import reduce_sum
    from .shape import reshape, squeeze
    if kind == "matmul":  # sum over steps of a_t^T b_t
        a, b = factors
        rows_a = reshape(a, shape=(-1, a.shape[-1]))
        rows_b = reshape(b, shape=(-1, b.shape[-1]))
        return matmul(swap_last(rows_a), rows_b)
    step_axes = tuple(kind[1])  # ("sum", axes): sum over steps of reduce_sum(b_t, axes)
    b, = factors
    axes = (0,) + tuple(x + 1 for x in step_axes)
    total = squeeze(reduce_sum(b, axes=axes, keepdims=True), axes=(0,) + tuple(kind[2]))
    return total if total.shape == capture.shape else reshape(total, shape=capture.shape)


def _backward_body(body, C, S, n_scan):
    """The reverse step of a closed forward body, and the residuals it reads.

    Returns ``(backward, residuals, batched)``: ``residuals`` are forward-body tensors that depend on the
    carried values (the forward loop must save them per step); ``backward`` is a closed
    ``Subgraph`` with inputs (cotangents of the float carried values, accumulators of the float
    captures' gradients | one step of each sequence, of each residual, of the cotangent of each
    float per-step output | the captures) and outputs (new carried cotangents, updated
    accumulators | the gradient of one step of each float sequence).  None when no gradient flows.
    """
    from ..autodiff import gradients

    params = body.inputs
    carried_p, slice_p, cap_p = params[:C], params[C:C + S], params[C + S:]
    outs = body.outputs
    fc = [i for i in range(C) if dtypes.is_float(carried_p[i].dtype)]
    fs = [k for k in range(S) if dtypes.is_float(slice_p[k].dtype)]
    fk = [k for k in range(len(cap_p)) if dtypes.is_float(cap_p[k].dtype)]
    fo = [j for j in range(n_scan) if dtypes.is_float(outs[C + j].dtype)]
    xs = [carried_p[i] for i in fc] + [slice_p[k] for k in fs] + [cap_p[k] for k in fk]
    if not xs or not (fc or fo):
        return None
    ct_carried = [Placeholder(carried_p[i].shape, carried_p[i].dtype, name=f"ct_carried_{i}") for i in fc]
    ct_outs = [Placeholder(outs[C + j].shape, outs[C + j].dtype, name=f"ct_step_output_{j}") for j in fo]
    grads = gradients([outs[i] for i in fc] + [outs[C + j] for j in fo], xs, grad_ys=ct_carried + ct_outs)

    forward = body.graph
    forward_nodes = {id(n) for n in forward.nodes}
    forward_tensors = {id(p) for p in params} | {id(o) for n in forward.nodes for o in n.outputs}
    # values that differ from step to step are saved; the rest is recomputed by the backward step
    carried_dependent = depending(forward.nodes, carried_p, effects=True)
    backward_graph = Graph(grads)
    cotangent_dependent = depending(backward_graph.nodes, ct_carried + ct_outs)
    residuals, seen = [], set()
    for n in backward_graph.nodes:
        if id(n) in forward_nodes:
            continue
        for t in node_reads(n):
            if id(t) in forward_tensors and id(t) in carried_dependent and id(t) not in seen:
                seen.add(id(t))
                residuals.append(t)

    accumulators = [Placeholder(cap_p[k].shape, cap_p[k].dtype, name=f"grad_capture_{k}") for k in fk]
    new_slices = [Placeholder(p.shape, p.dtype, name=f"step_{k}") for k, p in enumerate(slice_p)]
    saved = [Placeholder(r.shape, r.dtype, name=f"residual_{k}") for k, r in enumerate(residuals)]
    new_caps = [Placeholder(p.shape, p.dtype, name=f"capture_{k}") for k, p in enumerate(cap_p)]
    # a gradient that does not depend on the cotangents is zero (the vjp is linear in them)
    stand_ins = ct_carried + [new_slices[k] for k in fs] + [new_caps[k] for k in fk]
    flows = [id(g) in cotangent_dependent for g in grads]
    grads = [g if f else zeros_like_(s) for g, f, s in zip(grads, flows, stand_ins)]
    grads = substitute(grads, list(zip(residuals, saved)) + list(zip(slice_p, new_slices)) +
                       list(zip(cap_p, new_caps)))
    g_carried, g_seqs, g_caps = grads[:len(fc)], grads[len(fc):len(fc) + len(fs)], grads[len(fc) + len(fs):]
    cap_flows = flows[len(fc) + len(fs):]
    # a factor that is one step of a sequence the backward loop scans is that sequence, stacked;
    # any other leaves the loop as a per-step output, once however many gradients use it
    scanned = {id(t): ("seq", j) for j, t in enumerate(new_slices + saved + ct_outs)}
    batched, factors, accumulated, kept = [], [], [], []
    for pos, (acc, g, f) in enumerate(zip(accumulators, g_caps, cap_flows)):
        split = _per_step_factors(g) if f else None
        if split is None:
            accumulated.append(add(acc, g) if f else acc)
            kept.append(acc)
            continue
        kind, parts = split
        refs = []
        for t in parts:
            if id(t) not in scanned:
                scanned[id(t)] = ("scan", len(factors))
                factors.append(t)
            refs.append(scanned[id(t)])
        batched.append((pos, kind, tuple(refs)))
    inputs = ct_carried + kept + new_slices + saved + ct_outs + new_caps
    backward = Subgraph(inputs, g_carried + accumulated + g_seqs + factors)
    stray = backward.graph.placeholders + backward.graph.variables
    if stray:
        raise RuntimeError(f"loop: the backward step reads values outside it: {[t.name for t in stray]}")
    return backward, residuals, tuple(batched)


def _per_step_factors(g):
    """``(kind, factors)`` when a capture's per-step gradient ``g`` is a product or a sum that
    all steps can compute at once from their stacked factors, else None:

    * ``a^T @ b`` (the weight of ``K.dot(h, W)``) → ``("matmul", [a, b])``;
    * ``sum(b, axes)`` (a bias) → ``(("sum", axes, squeezed), [b])``.
    """
    node = g.node
    if node is None:
        return None
    name = node.primitive.name
    if name == "matmul":
        left, right = node.inputs
        producer = left.node
        if (producer is not None and producer.primitive.name == "transpose" and left.ndim == 2
                and right.ndim == 2 and producer.attrs.get("perm") == (1, 0)
                and None not in (left.shape[0], right.shape[-1])):
            return "matmul", [producer.inputs[0], right]
        return None
    if name == "squeeze":
        inner = node.inputs[0].node
        if (inner is not None and inner.primitive.name == "reduce_sum" and inner.attrs.get("keepdims")
                and tuple(node.attrs["axes"]) == tuple(inner.attrs["axes"])):
            axes = tuple(inner.attrs["axes"])
            return ("sum", axes, tuple(x + 1 for x in axes)), [inner.inputs[0]]
    return None


def build_loop(carried, sequences, params, outputs, *, n_scan, start, reverse=False):
    """Bind a loop over a traced step.  ``params`` are the placeholders the step was traced with
    (one per carried value, then one per sequence step); ``outputs`` the step's new carried values
    then its ``n_scan`` per-step outputs; ``start`` the ``trace_start()`` taken before tracing.
    Returns the final carried values followed by the stacked per-step outputs."""
    sequences, params, outputs = hoist_sequence_work(sequences, params, outputs, len(carried), start)
    C, S = len(carried), len(sequences)
    captures, capture_params, outputs = close_over(params, outputs, start)
    params = list(params) + capture_params
    body = Subgraph(params, outputs)
    subgraphs, n_residuals = (body,), 0
    try:
        built = _backward_body(body, C, S, n_scan)
    except Exception:  # noqa: BLE001  (a step without a gradient still runs; the vjp raises why)
        built = None
    batched = ()
    if built is not None:
        backward, residuals, batched = built
        subgraphs = (Subgraph(params, outputs + residuals), backward)
        n_residuals = len(residuals)
    from .rnn_cells import fusing
    attrs = dict(n_carried=C, n_sequences=S, n_scan=n_scan + n_residuals, n_residuals=n_residuals,
                 reverse=bool(reverse), grad_loop=False, batched_grads=batched)
    if not fusing():  # an attribute, so that the session cache tells the two lowerings apart
        attrs["keep_loop"] = True
    results = loop.bind([*carried, *sequences, *captures], attrs, subgraphs)
    return list(results[:C + n_scan]), captures


# -- zeros with the batch dimension of another tensor -----------------------------------------
batch_zeros = Primitive("batch_zeros", differentiable=False)


@batch_zeros.infer
def _(like, trailing, dtype):
    if like.ndim < 1:
        raise InferError("batch_zeros: the reference tensor needs a batch axis")
    return (like.shape[0],) + tuple(trailing), dtype


@batch_zeros.lower
def _(ctx, node, like):
    a = node.attrs
    shape = ctx.op("Shape", like, start=0, end=1)
    if a["trailing"]:
        shape = ctx.op("Concat", shape, ctx.int64s(a["trailing"]), axis=0)
    value = helper.make_tensor("value", dtypes.to_onnx(a["dtype"]), [1], [0])
    return ctx.op("ConstantOfShape", shape, value=value)
