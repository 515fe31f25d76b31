"""Graph simplification run before lowering: common-subexpression elimination, constant folding
and dead-node pruning, all as a *plan* over an unchanged IR graph.

The IR is never rewritten (tensors stay the objects users hold); instead ``simplify(graph)``
decides, for every node, one of:

* ``lower``   — emit it (its inputs may be looked up through aliases);
* ``alias``   — a duplicate of an earlier node (same primitive, attributes and canonical inputs,
  constants compared by content): its outputs are the earlier node's ONNX values;
* ``fold``    — all its inputs are constants (or folded): its needed outputs are evaluated once,
  at lowering time, and emitted as constants (large ones become initializers);
* ``dead``    — nothing needed reads it (e.g. the constant-only ancestors of a folded value).

Why here and not in ONNX Runtime: autodiff builds gradients from primitives, and vjp rules
rebuild the same small pieces (``cast(size_of(x))``, transposes of one weight, broadcast seeds)
many times; collapsing them keeps every forward value computed once and the exported training
graphs lean on any runtime, not only on one with a good optimizer.
"""
import numpy as np
from onnx import helper

from .context import CUSTOM_DOMAIN, LoweringContext, ir_version_for

# Folding never grows a graph much: a node whose outputs hold more elements than this *and*
# more than its constant inputs is left to run (broadcasting a scalar to a large shape is cheaper
# at run time than a large initializer in the file).
FOLD_MAX_GROWTH_ELEMENTS = 1 << 16

# Primitive attributes that mark a node as observable or stateful: never merged nor folded.
_EFFECT_FLAGS = ("prints", "effects", "stateful", "random")


def _has_effects(primitive):
    return any(getattr(primitive, flag, False) for flag in _EFFECT_FLAGS)


def _freeze(value):
    """A hashable, type-exact key for an attribute: ``1``, ``1.0`` and ``True`` stay distinct,
    because rules may lower them differently."""
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(_freeze(v) for v in value)
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


class Plan:
    """What ``lower_nodes`` does with each node of one graph (see the module docstring)."""

    def __init__(self):
        self.alias = {}     # id(duplicate tensor) → the canonical tensor computing the same value
        self.folded = {}    # id(tensor) → numpy value, for folded tensors that something reads
        self.action = {}    # id(node) → "lower" | "alias" | "fold" | "dead"
        self.needed = set()  # ids of the canonical tensors that lowered nodes or outputs read
        self.frontier = []  # the folded tensors that are needed

    def count(self, action):
        return sum(1 for a in self.action.values() if a == action)


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

    foldable = set()  # id of canonical tensors computable from constants alone
    seen = {}  # CSE key → node
    for node in graph.nodes:
        prim = node.primitive
        if _has_effects(prim):
            plan.action[id(node)] = "lower"
            continue
        try:
            key = (prim.name, tuple(sorted((k, _freeze(v)) for k, v in node.attrs.items())),
                   tuple(ref(t) for t in node.inputs),
                   tuple((g.signature(), tuple(ref(c) for c in g.captures)) for g in node.subgraphs))
            hash(key)
        except TypeError:  # an attribute that is not hashable: lower the node as it is
            plan.action[id(node)] = "lower"
            continue
        earlier = seen.get(key)
        if earlier is not None and len(earlier.outputs) == len(node.outputs):
            plan.action[id(node)] = "alias"
            for dup, rep in zip(node.outputs, earlier.outputs):
                canonical[id(dup)] = canon(rep)
                plan.alias[id(dup)] = canon(rep)
            continue
        seen[key] = node
        plan.action[id(node)] = "lower"
        if fold and _can_fold(node, canon, foldable):
            plan.action[id(node)] = "fold"
            foldable.update(id(o) for o in node.outputs)

    _prune(graph, plan, canon, foldable)
    if fold:
        _evaluate_folds(graph, plan, opset)
    return plan


def _can_fold(node, canon, foldable):
    from ..graph import Constant

    if node.subgraphs or not node.inputs or node.primitive.lower_rule is None:
        return False  # no inputs: possibly a source of fresh values each run
    inputs = [canon(t) for t in node.inputs]
    if not all(isinstance(t, Constant) or id(t) in foldable for t in inputs):
        return False
    out_size = 0
    for o in node.outputs:
        if None in o.shape:
            # unknown static shape: nothing bounds the result, so fold only if its inputs are
            # small (then the result is bounded by the small ops that read them)
            out_size = None
            break
        out_size += int(np.prod(o.shape, dtype=np.int64))
    in_size = sum(int(np.prod(t.shape, dtype=np.int64)) if None not in t.shape else 0 for t in inputs)
    if out_size is None:
        return in_size <= FOLD_MAX_GROWTH_ELEMENTS
    return out_size <= max(FOLD_MAX_GROWTH_ELEMENTS, in_size)


def _prune(graph, plan, canon, foldable):
    """Walk back from the outputs: nodes nothing reads are dead; folded nodes whose outputs are
    read by a lowered node (or are graph outputs) are the fold frontier."""
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
        if not live and not _has_effects(node.primitive):
            plan.action[id(node)] = "dead"
            continue
        for t in node.inputs:
            needed.add(id(canon(t)))
        for g in node.subgraphs:
            for c in g.captures:
                needed.add(id(canon(c)))
    # an alias whose canonical node died is dead too
    for node in graph.nodes:
        if plan.action[id(node)] == "alias":
            rep = plan.alias[id(node.outputs[0])]
            if rep.node is not None and plan.action.get(id(rep.node)) == "dead":
                plan.action[id(node)] = "dead"
    plan.frontier = frontier
    plan.needed = needed


def _evaluate_folds(graph, plan, opset):
    """Evaluate the fold frontier once with ONNX Runtime; a fold that fails to run (an op that
    only fails on these values, say) leaves those nodes to run, so errors surface where they
    would have without folding."""
    from ..graph import Graph

    targets = plan.frontier
    if not targets:
        return
    try:
        values = evaluate_constant_tensors(Graph(targets), targets, opset)
    except Exception:  # noqa: BLE001  (fall back to lowering these nodes unchanged)
        _unfold(graph, plan)
        return
    for t, v in zip(targets, values):
        plan.folded[id(t)] = v


def _unfold(graph, plan):
    """Undo folding: folded and fold-dead nodes are lowered after all (dead ones re-pruned by
    ONNX Runtime's own dead-code elimination, which keeps this rare path simple)."""
    for node in graph.nodes:
        if plan.action[id(node)] in ("fold", "dead"):
            plan.action[id(node)] = "alias" if id(node.outputs[0]) in plan.alias else "lower"
            for t in node.inputs:
                plan.needed.add(id(t))
    plan.folded.clear()


def evaluate_constant_tensors(graph, targets, opset):
    """Values of ``targets`` (tensors of the constant-only ``graph``), computed on ONNX Runtime
    from their own lowering, so folded and unfolded graphs agree bit for bit."""
    import onnxruntime as ort

    from .model import value_info

    ctx = LoweringContext(opset)
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
