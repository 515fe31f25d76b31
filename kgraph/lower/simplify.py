"""Graph simplification around lowering: common-subexpression elimination, constant folding and
dead-node pruning over the IR, then a merge of duplicate ONNX nodes that lowering rules emit.

The IR is never rewritten (tensors stay the objects users hold); ``simplify(graph, opset)``
returns a *plan* that decides, for every node, one of:

* ``lower`` — emit it;
* ``alias`` — a duplicate of an earlier node (same primitive, attributes and canonical inputs,
  constants compared by content): its outputs are the earlier node's ONNX values;
* ``fold``  — its value is known before run time: all its inputs are constants (or folded), or it
  reads only the static shape of a tensor whose shape is fully known.  The needed folded values
  are computed once, at lowering time, through the nodes' own lowering on ONNX Runtime, and
  emitted as constants (large ones become initializers, which ``ctx.const`` decides);
* ``dead``  — nothing that is emitted reads it (the constant-only ancestors of a folded value).

Why: autodiff builds gradients out of primitives, and vjp rules rebuild the same small pieces
(``cast(size_of(x))``, ``Shape`` of one forward value, scalar seeds) many times.  Collapsing them
keeps every forward value computed once and reused by the backward pass, and keeps exported
training graphs lean on any runtime, not only on one with a good graph optimizer.
"""
import numpy as np
from onnx import AttributeProto, helper

from .context import CUSTOM_DOMAIN, LoweringContext, ir_version_for, value_info

# Folding must not blow a file up: a node whose outputs hold more elements than this *and*
# more than its constant inputs runs at run time instead (broadcasting a scalar to a large shape
# is cheaper to run than to ship as an initializer).
FOLD_MAX_GROWTH_ELEMENTS = 1 << 16

# Primitive attributes that mark a node as observable or stateful: never merged nor folded.
EFFECT_FLAGS = ("prints", "effects", "stateful", "random")

# ONNX ops whose two applications to the same inputs may differ: never merged.
NONDETERMINISTIC_ONNX_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform",
                             "RandomUniformLike", "Multinomial", "Bernoulli"}


def has_effects(primitive):
    return any(getattr(primitive, flag, False) for flag in EFFECT_FLAGS)


def _freeze(value):
    """A hashable, type-exact key for an attribute: ``1``, ``1.0`` and ``True`` stay distinct,
    because rules may lower them differently."""
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(_freeze(v) for v in value)
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


def _static_shape_value(node, canon):
    """The value of a node that only reads a fully known static shape, else None."""
    name = node.primitive.name
    if name not in ("shape_of", "size_of") or len(node.inputs) != 1:
        return None
    shape = canon(node.inputs[0]).shape
    if None in shape:
        return None
    if name == "shape_of":
        return np.asarray(shape, dtype=np.int64).reshape(-1)
    return np.asarray(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)


class Plan:
    """What ``lower_nodes`` does with each node of one graph (see the module docstring)."""

    def __init__(self):
        self.action = {}     # id(node) → "lower" | "alias" | "fold" | "dead"
        self.alias = {}      # id(duplicate tensor) → the canonical tensor computing its value
        self.static = {}     # id(tensor) → (tensor, value) known from static shapes alone
        self.folded = {}     # id(tensor) → numpy value, for the folded tensors emitted
        self.needed = set()  # ids of the tensors that emitted nodes and the outputs read
        self.frontier = []   # the folded tensors that are needed


def simplify(graph, opset, fold=True):
    """The plan for lowering ``graph`` (a ``kgraph.graph.Graph``) at ``opset``."""
    from ..graph import Constant

    plan = Plan()
    canonical = {}  # id(tensor) → canonical tensor
    const_keys = {}  # id(Constant) → its content key

    def canon(t):
        return canonical.get(id(t), t)

    def ref(t):
        t = canon(t)
        if isinstance(t, Constant):
            key = const_keys.get(id(t))
            if key is None:
                key = const_keys[id(t)] = ("const",) + t.digest
            return key
        return ("t", id(t))

    foldable = set()  # ids of canonical tensors whose value is known before run time
    seen = {}  # CSE key → node
    for node in graph.nodes:
        prim = node.primitive
        plan.action[id(node)] = "lower"
        if has_effects(prim):
            continue
        try:
            key = (prim.name, tuple(sorted((k, _freeze(v)) for k, v in node.attrs.items())),
                   tuple(ref(t) for t in node.inputs),
                   tuple((g.signature(), tuple(ref(c) for c in g.captures)) for g in node.subgraphs))
            hash(key)
        except TypeError:  # an attribute that is not hashable: lower the node as it is
            continue
        earlier = seen.get(key)
        if earlier is not None and len(earlier.outputs) == len(node.outputs):
            plan.action[id(node)] = "alias"
            for dup, rep in zip(node.outputs, earlier.outputs):
                rep = canon(rep)
                canonical[id(dup)] = plan.alias[id(dup)] = rep
                if id(rep) in plan.static:
                    plan.static[id(dup)] = (dup, plan.static[id(rep)][1])
            continue
        seen[key] = node
        if not fold:
            continue
        value = _static_shape_value(node, canon)
        if value is not None:
            plan.static[id(node.outputs[0])] = (node.outputs[0], value)
        if value is not None or _can_fold(node, canon, foldable):
            plan.action[id(node)] = "fold"
            foldable.update(id(o) for o in node.outputs)

    _prune(graph, plan, canon)
    if fold:
        _evaluate_folds(graph, plan, opset)
    return plan


def _can_fold(node, canon, foldable):
    from ..graph import Constant

    if node.subgraphs or not node.inputs or node.primitive.lower_rule is None:
        return False  # a node without inputs may be a source of fresh values on every run
    inputs = [canon(t) for t in node.inputs]
    if not all(isinstance(t, Constant) or id(t) in foldable for t in inputs):
        return False
    if any(None in t.shape for t in list(node.outputs) + inputs):
        return False  # nothing bounds the size of the result
    out_size = sum(int(np.prod(o.shape, dtype=np.int64)) for o in node.outputs)
    in_size = sum(int(np.prod(t.shape, dtype=np.int64)) for t in inputs)
    return out_size <= max(FOLD_MAX_GROWTH_ELEMENTS, in_size)


def _prune(graph, plan, canon):
    """Walk back from the outputs: nodes that nothing emitted reads are dead; folded nodes whose
    outputs are read by an emitted node (or are graph outputs) form the fold frontier."""
    needed = {id(canon(t)) for t in graph.outputs}
    frontier = []
    for node in reversed(graph.nodes):
        action = plan.action[id(node)]
        if action == "alias":
            continue
        live = [o for o in node.outputs if id(o) in needed]
        if action == "fold":
            if live:
                frontier.extend(live)
            else:
                plan.action[id(node)] = "dead"
            continue
        if not live and not has_effects(node.primitive):
            plan.action[id(node)] = "dead"
            continue
        for t in node.inputs:
            needed.add(id(canon(t)))
        for g in node.subgraphs:
            for c in g.captures:
                needed.add(id(canon(c)))
    for node in graph.nodes:  # an alias of a dead node is dead too
        if plan.action[id(node)] == "alias":
            rep = plan.alias[id(node.outputs[0])]
            if rep.node is not None and plan.action.get(id(rep.node)) == "dead":
                plan.action[id(node)] = "dead"
    plan.frontier = frontier
    plan.needed = needed


def _evaluate_folds(graph, plan, opset):
    """Evaluate the fold frontier once.  A fold that fails to run (an op that fails on these very
    values, say) leaves every node to run, so errors surface where they would without folding."""
    from ..graph import Graph

    targets = [t for t in plan.frontier if id(t) not in plan.static]
    try:
        if targets:
            known = [t for t, _ in plan.static.values()]
            sub = Graph(targets, stop=known)
            values = evaluate_constant_tensors(sub, targets, opset, known=plan.static)
            plan.folded.update((id(t), v) for t, v in zip(targets, values))
    except Exception:  # noqa: BLE001  (fall back to lowering the nodes unchanged)
        _unfold(graph, plan)
        return
    for t in plan.frontier:
        if id(t) in plan.static:
            plan.folded[id(t)] = plan.static[id(t)][1]


def _unfold(graph, plan):
    for node in graph.nodes:
        if plan.action[id(node)] in ("fold", "dead"):
            plan.action[id(node)] = "alias" if id(node.outputs[0]) in plan.alias else "lower"
            plan.needed.update(id(t) for t in node.inputs)
    plan.folded.clear()


def evaluate_constant_tensors(graph, targets, opset, known=None):
    """Values of ``targets``, tensors of the constant-only ``graph`` (``known``: id → (tensor,
    value) for tensors it stops at), computed on ONNX Runtime from the nodes' own lowering, so
    folded and unfolded graphs agree bit for bit."""
    import onnxruntime as ort


    ctx = LoweringContext(opset)
    for key, (t, value) in (known or {}).items():
        ctx.values[key] = ctx.const(value, hint="static")
    for c in graph.constants:
        ctx.values[id(c)] = ctx.const(c.value, hint="c")
    for node in graph.nodes:
        ctx.current = node
        names = node.primitive.lower_rule(ctx, node, *[ctx.lookup(t) for t in node.inputs])
        names = [names] if isinstance(names, str) else list(names)
        for t, name in zip(node.outputs, names):
            ctx.values[id(t)] = name
    ctx.current = None
    outputs = []
    for i, t in enumerate(targets):
        name = f"fold_{i}"
        ctx.nodes.append(helper.make_node("Identity", [ctx.lookup(t)], [name], name=ctx.fresh("fold")))
        outputs.append(value_info(name, t.shape, t.dtype))
    g = helper.make_graph(ctx.nodes, "fold", [], outputs, initializer=ctx.initializers)
    opsets = [helper.make_opsetid("", opset)]
    if ctx.functions:
        opsets.append(helper.make_opsetid(CUSTOM_DOMAIN, 1))
    model = helper.make_model(g, opset_imports=opsets, functions=list(ctx.functions.values()))
    model.ir_version = ir_version_for(opset)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {})


def apply_plan(ctx, plan, node):
    """Handle ``node`` per ``plan`` unless it is simply lowered; True when it was handled."""
    action = plan.action.get(id(node), "lower")
    if action == "lower":
        return False
    if action == "alias":
        for t in node.outputs:
            try:
                ctx.values[id(t)] = ctx.lookup(plan.alias[id(t)])
            except KeyError:  # the canonical value was folded away and nothing reads this one
                pass
    elif action == "fold":
        for t in node.outputs:
            if id(t) in plan.folded:
                ctx.values[id(t)] = ctx.const(plan.folded[id(t)], hint=t.name)
    return True


# -- after lowering: duplicate ONNX nodes ------------------------------------------------------
def _rename_inputs(nodes, mapping):
    """Apply ``mapping`` to node inputs, nested bodies included (they read outer names)."""
    for n in nodes:
        if any(i in mapping for i in n.input):
            n.input[:] = [mapping.get(i, i) for i in n.input]
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                _rename_inputs(a.g.node, mapping)
                _rename_graph_outputs(a.g, mapping)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    _rename_inputs(g.node, mapping)
                    _rename_graph_outputs(g, mapping)


def _rename_graph_outputs(graph, mapping):
    # a body output may be an outer value read directly
    for o in graph.output:
        if o.name in mapping:
            o.name = mapping[o.name]


def merge_duplicate_nodes(ctx):
    """Merge ONNX nodes of ``ctx`` that apply one op with the same attributes to the same
    inputs (lowering rules emit e.g. ``Shape(x)`` once per rule that needs it); the context's
    value names are updated to the survivors.  Returns how many nodes were removed."""
    mapping, kept, seen = {}, [], {}
    for n in ctx.nodes:
        if mapping:
            _rename_inputs([n], mapping)
        has_body = any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in n.attribute)
        if has_body or n.op_type in NONDETERMINISTIC_ONNX_OPS or "" in n.output:
            kept.append(n)
            continue
        key = (n.domain, n.op_type, n.overload if hasattr(n, "overload") else "", tuple(n.input),
               tuple(sorted(a.SerializeToString() for a in n.attribute)), len(n.output))
        earlier = seen.get(key)
        if earlier is None:
            seen[key] = n
            kept.append(n)
            continue
        for new, old in zip(n.output, earlier.output):
            mapping[new] = old
    if not mapping:
        return 0
    removed = len(ctx.nodes) - len(kept)
    ctx.nodes[:] = kept
    for key, name in list(ctx.values.items()):
        if name in mapping:
            ctx.values[key] = mapping[name]
    for key, name in list(ctx._consts.items()):
        if name in mapping:
            ctx._consts[key] = mapping[name]
    return removed
