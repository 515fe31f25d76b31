"""Generate ``docs/ops.md``: every kgraph primitive, the ONNX ops its lowering emits, its gradient
rule, the opsets it lowers to and the engines that implement those ops.

    python tools/ops_doc.py            # (re)write docs/ops.md
    python tools/ops_doc.py --check    # exit 1 if docs/ops.md is not what this would write

Everything comes from the primitive registry (``kgraph.ops.Primitive.registry``) and from
reading the rules' source: see ``HEADER`` for what each column means and how it is found.
"""
import argparse
import ast
import inspect
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "ops.md")
sys.path.insert(0, ROOT)  # the checkout's kgraph, whatever is installed

import onnx  # noqa: E402
import onnx.defs  # noqa: E402
import onnx.reference.ops  # noqa: E402
import onnxruntime  # noqa: E402

import kgraph.backend  # noqa: E402,F401  (importing registers the primitives the backend uses)
import kgraph.ops  # noqa: E402
from kgraph.lower import context as lower_context  # noqa: E402
from kgraph.lower.context import CUSTOM_DOMAIN, SUPPORTED_OPSETS  # noqa: E402
from kgraph.ops.primitive import Primitive  # noqa: E402

# LoweringContext methods that emit nodes themselves; everything else on it (const, int64s,
# scalar, child, add_function, fresh) makes constants, names or nested contexts.
CONTEXT_EMITTERS = {"cast": ["Cast"]}


class UnresolvedOp(Exception):
    pass


class RuleReader:
    """Collect, by reading source, the ONNX op types a rule can emit on any branch and the
    primitives it builds.

    A rule emits nodes through ``<ctx>.op(op_type, ...)`` (any receiver: lowering contexts are
    passed around as ``ctx``, ``f``, ``body``), ``<ctx>.reduce(op_type, ...)`` and
    ``<ctx>.cast``.  ``op_type`` is a string literal, or a name bound to strings: a parameter
    given a literal at the call site or as its default, a closure variable (rule factories such
    as ``unary(name, onnx_op)``), a module constant, a local assigned strings, or a loop
    variable over strings.  The reader follows calls into kgraph.ops functions and classes
    (every method of a class it instantiates), not into kgraph.lower (whose nested-body
    lowering dispatches to the body's own primitives).  A name it cannot resolve is an error,
    so the table never silently misses an op."""

    def __init__(self):
        self._modules = {}
        self._done = {}

    # -- source ---------------------------------------------------------------------------
    def _module_tree(self, filename):
        if filename not in self._modules:
            with open(filename) as f:
                self._modules[filename] = ast.parse(f.read(), filename)
        return self._modules[filename]

    def _function_node(self, fn):
        code = fn.__code__
        tree = self._module_tree(code.co_filename)
        want = code.co_name
        params = list(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount])
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.Lambda)):
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                name = "<lambda>" if isinstance(node, ast.Lambda) else node.name
                args = [a.arg for a in node.args.args + node.args.kwonlyargs]
                if first == code.co_firstlineno and name == want and args == params:
                    return node
        raise LookupError(f"no source found for {fn.__qualname__} ({code.co_filename}:{code.co_firstlineno})")

    # -- names ------------------------------------------------------------------------------
    @staticmethod
    def _scope(fn):
        scope = dict(fn.__globals__)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                scope[name] = cell.cell_contents
            except ValueError:  # an empty cell
                pass
        return scope

    @staticmethod
    def _strings(value):
        if isinstance(value, str):
            return {value}
        if isinstance(value, (tuple, list, set, frozenset)) and value and all(isinstance(v, str) for v in value):
            return set(value)
        return None

    def _local_strings(self, fn_node, scope, bound):
        """name → possible string values, for names this function binds to strings."""
        env = {k: set(v) for k, v in bound.items()}

        def values(expr):
            if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
                return {expr.value}
            if isinstance(expr, ast.IfExp):
                a, b = values(expr.body), values(expr.orelse)
                return a | b if a is not None and b is not None else None
            if isinstance(expr, (ast.Tuple, ast.List, ast.Set)):
                parts = [values(e) for e in expr.elts]
                return set().union(*parts) if parts and all(p is not None for p in parts) else None
            if isinstance(expr, ast.Name):
                if expr.id in env:
                    return env[expr.id]
                return self._strings(scope.get(expr.id))
            return None  # calls, subscripts, ...: not a string the reader can know

        for _ in range(2):  # twice: a name may be assigned from one assigned later in the text
            for node in ast.walk(fn_node):
                if isinstance(node, ast.Assign):
                    v = values(node.value)
                    for target in node.targets:
                        if isinstance(target, ast.Name) and v is not None:
                            env.setdefault(target.id, set()).update(v)
                elif isinstance(node, (ast.For, ast.comprehension)):
                    # for op in ("A", "B") / for prim, op in ((p, "A"), ...)
                    it = node.iter
                    if isinstance(node.target, ast.Name):
                        v = values(it)
                        if v is not None:
                            env.setdefault(node.target.id, set()).update(v)
                    elif isinstance(node.target, ast.Tuple) and isinstance(it, (ast.Tuple, ast.List)):
                        for i, t in enumerate(node.target.elts):
                            if isinstance(t, ast.Name):
                                vs = [values(e.elts[i]) for e in it.elts
                                      if isinstance(e, (ast.Tuple, ast.List)) and len(e.elts) > i]
                                if vs and all(x is not None for x in vs):
                                    env.setdefault(t.id, set()).update(*vs)
        return env, values

    # -- the walk -------------------------------------------------------------------------------
    def read(self, fn, opset, bound=None):
        """What ``fn`` can emit when lowering for ``opset``: (set of (domain, op_type), names of
        the primitives it builds, facts).  Branches under a test that is decided by the opset
        alone (``ctx.opset >= 18``, also inside ``and``/``or``) are read only where taken;
        facts: ("refuses", test) for a ``ctx.unsupported`` call under a test true at ``opset``,
        ("branches", test) for other opset tests."""
        bound = bound or {}
        key = (fn, opset, tuple(sorted((k, tuple(sorted(v))) for k, v in bound.items())))
        if key in self._done:
            return self._done[key]
        self._done[key] = (set(), set(), set())  # recursion guard
        ops, prims, facts = set(), set(), set()
        node = self._function_node(fn)
        scope = self._scope(fn)
        scope.update(self._local_imports(node, fn))
        # parameters with string defaults (lambda ctx, node, x, _op=_op: ...)
        defaults = {}
        params = node.args.args
        for p, d in zip(params[len(params) - len(fn.__defaults__ or ()):], fn.__defaults__ or ()):
            if self._strings(d) is not None:
                defaults[p.arg] = self._strings(d)
        for k, d in (fn.__kwdefaults__ or {}).items():
            if self._strings(d) is not None:
                defaults[k] = self._strings(d)
        env, values = self._local_strings(node, scope, {**defaults, **bound})
        where = f"{fn.__module__}.{fn.__qualname__} ({os.path.relpath(fn.__code__.co_filename, ROOT)}:{{}})"

        def op_types(expr, line):
            v = values(expr) if expr is not None else None
            if not v:
                raise UnresolvedOp(f"cannot tell which ONNX op {where.format(line)} emits: "
                                   f"{ast.unparse(expr) if expr is not None else '(no op type)'}")
            return v

        for sub in self._walk(node, opset, facts):
            if not isinstance(sub, ast.Call):
                continue
            func = sub.func
            if isinstance(func, ast.Attribute) and func.attr in ("op", "reduce"):
                first = sub.args[0] if sub.args else None
                domain = ""
                for kw in sub.keywords:
                    if kw.arg == "op_type":
                        first = kw.value
                    if kw.arg == "domain":
                        d = values(kw.value)
                        domain = d.pop() if d and len(d) == 1 else "?"
                for t in op_types(first, sub.lineno):
                    ops.add((domain, t))
                if func.attr == "reduce":
                    ops.add(("", "Identity"))  # empty axes: "reduce over none"
                continue
            if isinstance(func, ast.Attribute) and func.attr in CONTEXT_EMITTERS:
                receiver = func.value
                if not (isinstance(receiver, ast.Name) and isinstance(scope.get(receiver.id), types.ModuleType)):
                    ops.update(("", t) for t in CONTEXT_EMITTERS[func.attr])
                    continue
            if isinstance(func, ast.Attribute) and func.attr == "bind" and isinstance(func.value, ast.Name) \
                    and isinstance(scope.get(func.value.id), Primitive):
                prims.add(scope[func.value.id].name)
                continue
            target = self._callee(func, scope)
            if target is None:
                continue
            if isinstance(target, Primitive):
                prims.add(target.name)
                continue
            if getattr(target, "__module__", "").startswith("kgraph.autodiff"):
                prims.add("the vjps of its body")
                continue
            for callee, callee_bound in self._callees(target, sub, env, values):
                o, p, f = self.read(callee, opset, callee_bound)
                ops |= o
                prims |= p
                facts |= f
        self._done[key] = (ops, prims, facts)
        return self._done[key]

    def _walk(self, node, opset, facts):
        """``ast.walk`` that skips the branches an opset-only test rules out at ``opset``."""
        todo = [node]
        while todo:
            n = todo.pop()
            yield n
            if isinstance(n, (ast.If, ast.IfExp)) and self._opset_test(n.test):
                truth = opset_truth(n.test, opset)
                text = ast.unparse(n.test)
                body = n.body if isinstance(n.body, list) else [n.body]
                orelse = n.orelse if isinstance(n.orelse, list) else [n.orelse]
                refuses = any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                              and c.func.attr == "unsupported" for b in body for c in ast.walk(b))
                if refuses and truth:
                    facts.add(("refuses", text))
                elif not refuses:
                    facts.add(("branches", text))
                todo.append(n.test)
                if truth is not False:
                    todo.extend(body)
                if truth is not True:
                    todo.extend(orelse)
                continue
            todo.extend(ast.iter_child_nodes(n))

    @staticmethod
    def _local_imports(fn_node, fn):
        """Names bound by ``from .x import y`` inside the function (imports kept local to
        break import cycles between the ops modules)."""
        import importlib
        names = {}
        package = fn.__module__.rsplit(".", 1)[0]
        for sub in ast.walk(fn_node):
            if isinstance(sub, ast.ImportFrom):
                module = importlib.import_module("." * sub.level + (sub.module or ""), package) if sub.level \
                    else importlib.import_module(sub.module)
                for alias in sub.names:
                    value = getattr(module, alias.name, None)
                    if value is None:
                        value = importlib.import_module(f"{module.__name__}.{alias.name}")
                    names[alias.asname or alias.name] = value
        return names

    @staticmethod
    def _opset_test(test):
        return any(isinstance(n, ast.Attribute) and n.attr == "opset" for n in ast.walk(test))

    @staticmethod
    def _callee(func, scope):
        if isinstance(func, ast.Name):
            return scope.get(func.id)  # builtins and locals are not kgraph rules
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = scope.get(func.value.id)
            if isinstance(owner, types.ModuleType) and owner.__name__.startswith("kgraph.ops"):
                return getattr(owner, func.attr, None)
            if isinstance(owner, Primitive) and func.attr in ("infer_rule", "lower_rule", "vjp_rule"):
                return getattr(owner, func.attr)  # another primitive's rule, called as a helper
        return None

    @staticmethod
    def _ours(fn):
        return isinstance(fn, types.FunctionType) and fn.__module__.startswith("kgraph.ops")

    def _callees(self, target, call, env, values):
        """The functions a call runs, with the string arguments it binds to their parameters."""
        if inspect.isclass(target):
            if not target.__module__.startswith("kgraph.ops"):
                return []
            return [(m, {}) for m in vars(target).values() if self._ours(m)]
        if not self._ours(target):
            return []
        try:
            sig = inspect.signature(target)
            placeholders = [ast.unparse(a) for a in call.args]
            bound_args = sig.bind_partial(*placeholders, **{k.arg: ast.unparse(k.value) for k in call.keywords if k.arg})
        except (TypeError, ValueError):
            return [(target, {})]
        by_text = {ast.unparse(a): a for a in call.args}
        by_text.update({ast.unparse(k.value): k.value for k in call.keywords if k.arg})
        bound = {}
        for name, text in bound_args.arguments.items():
            if isinstance(text, str) and text in by_text:
                v = values(by_text[text])
                if v:
                    bound[name] = v
        return [(target, bound)]


# -- engines -----------------------------------------------------------------------------------
def ort_cpu_kernels():
    """(domain, op) → version ranges of ONNX Runtime's CPU kernels, as ORT itself registers them."""
    from onnxruntime.capi import _pybind_state
    kernels = {}
    for k in _pybind_state.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            kernels.setdefault((k.domain, k.op_name), []).append(tuple(k.version_range))
    return kernels


def schema_version(op, opset):
    """The version of ``op`` in effect at ``opset``, or None where ONNX has no such op yet."""
    try:
        return onnx.defs.get_schema(op, opset, "").since_version
    except onnx.defs.SchemaError:
        return None


def ort_runs(op, opset, kernels):
    """True: a CPU kernel; "function": no kernel, but ONNX defines the op by a function body,
    which ONNX Runtime expands (CastLike); False: neither."""
    v = schema_version(op, opset)
    if v is None:
        return False
    if any(lo <= v <= hi for lo, hi in kernels.get(("", op), ())):
        return True
    schema = onnx.defs.get_schema(op, opset, "")
    return "function" if schema.has_function or schema.has_context_dependent_function else False


def reference_runs(op, opset):
    try:
        onnx.reference.ops.load_op("", op, opset)
        return True
    except (NotImplementedError, RuntimeError, ValueError):
        return False


def fmt_opsets(opsets):
    if not opsets:
        return "none"
    opsets = sorted(opsets)
    if opsets == list(range(opsets[0], opsets[-1] + 1)):
        return f"{opsets[0]}–{opsets[-1]}" if len(opsets) > 1 else str(opsets[0])
    return ", ".join(map(str, opsets))


def opset_truth(test, opset):
    """The value of an ``if`` test at ``opset`` where the opset alone decides it, else None:
    comparisons of ``<x>.opset`` with an int, combined with and/or/not."""
    if opset is None:
        return None
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.left, ast.Attribute) \
            and test.left.attr == "opset" and isinstance(test.comparators[0], ast.Constant):
        value = test.comparators[0].value
        compare = {ast.Lt: int.__lt__, ast.LtE: int.__le__, ast.Gt: int.__gt__, ast.GtE: int.__ge__,
                   ast.Eq: int.__eq__, ast.NotEq: int.__ne__}.get(type(test.ops[0]))
        return compare(opset, value) if compare else None
    if isinstance(test, ast.BoolOp):
        parts = [opset_truth(v, opset) for v in test.values]
        if isinstance(test.op, ast.And):
            return False if False in parts else (True if all(p is True for p in parts) else None)
        return True if True in parts else (False if all(p is False for p in parts) else None)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = opset_truth(test.operand, opset)
        return None if inner is None else not inner
    return None


# -- the document ---------------------------------------------------------------------------------
HEADER = """\
# kgraph primitives

Generated by `python tools/ops_doc.py` from kgraph's primitive registry
(`kgraph.ops.Primitive.registry`); `tests/test_ops_doc.py` fails when this file is stale.
Do not edit by hand.

Checked against onnx {onnx_version} and onnxruntime {ort_version}; kgraph lowers to opsets
{opset_lo}–{opset_hi}.  {count} primitives, {differentiable} with a gradient rule.

How each column is found:

- **ONNX ops**: read from the source of the primitive's `lower` rule (Python's `ast`), following
  the kgraph.ops functions and classes it calls.  Every `ctx.op(...)`, `ctx.reduce(...)` and
  `ctx.cast(...)` on any branch counts, so this is what the rule *can* emit, not what one
  particular call emits; branches decided by the opset alone (`if ctx.opset >= 18 and ...`) are
  read per opset, and an op emitted at only some opsets says at which.  Op types held in
  variables are resolved from closures (rule factories such as `unary("exp", "Exp")`),
  defaults, module constants and call-site literals; a name the reader cannot resolve stops the
  generator with an error.  Not listed: `Constant` nodes and initializers for constants, the
  `Identity` nodes that bind graph outputs, nodes that a `Loop` body's own primitives emit (they
  have their own rows) and rewrites by the peephole passes that run after lowering
  (`kgraph/lower/rules.py`, `kgraph/lower/simplify.py`).  `tests/test_ops_doc.py` lowers real
  models and checks that every node emitted while a primitive's rule ran is in its row.
  `ai.kgraph.*` ops are model-local functions shipped in the file; their bodies' standard ops
  are listed after them.
- **Gradient**: `—` for primitives declared non-differentiable; otherwise the primitives the
  `vjp` rule builds (read the same way), or `raises (by design)` where the rule refuses.
- **Opsets**: the supported opsets at which ONNX defines every standard op the rule emits there
  (`onnx.defs`) and the rule does not refuse (`ctx.unsupported` under an opset test).
  `(branches on opset)` marks rules that test the opset.
- **Engines**: `ort`: ONNX Runtime has a CPU kernel registered for the version of each op in
  effect at each of those opsets (`get_all_opkernel_def`; the kernels' type constraints, hence
  dtype coverage, are not checked here), or the op has an ONNX function body that ORT expands
  (named).  `reference`: `onnx.reference` has an implementation of each op at those opsets
  (`onnx.reference.ops.load_op`).  An engine covering only some opsets says which.  OpenVINO is
  not checked per op here; `kgraph check --engines openvino` runs whole models on it.
  Custom-domain ops are judged by their function bodies, which both engines run as local
  functions.

| primitive | ONNX ops | gradient | opsets | engines | defined in |
|---|---|---|---|---|---|
"""


def _split(ops, where):
    custom = {t for d, t in ops if d == CUSTOM_DOMAIN}
    standard = {t for d, t in ops if d == ""}
    unknown = sorted(f"{d}.{t}" for d, t in ops if d not in ("", CUSTOM_DOMAIN))
    if unknown:
        raise UnresolvedOp(f"primitive {where}: ops in unexpected domains {unknown}")
    return custom, standard


def describe(prim, reader, kernels):
    if prim.lower_rule is None:
        raise UnresolvedOp(f"primitive {prim.name} has no lowering rule")
    per_opset, branches = {}, False
    for o in SUPPORTED_OPSETS:
        ops, _, facts = reader.read(prim.lower_rule, o)
        branches |= any(kind == "branches" for kind, _ in facts)
        custom, standard = _split(ops, prim.name)
        if any(kind == "refuses" for kind, _ in facts) or any(schema_version(t, o) is None for t in standard):
            continue
        per_opset[o] = (custom, standard)
    opsets = sorted(per_opset)
    custom = sorted(set().union(*[c for c, _ in per_opset.values()]))
    standard_all = sorted(set().union(*[s for _, s in per_opset.values()]))

    def show(t):
        at = [o for o in opsets if t in per_opset[o][1]]
        return f"`{t}`" + ("" if at == opsets else f" (opset {fmt_opsets(at)})")

    ops_text = ", ".join(show(t) for t in standard_all)
    if custom:
        ops_text = ", ".join(f"`{CUSTOM_DOMAIN}.{t}`" for t in custom) + f" (body: {ops_text})"
    opset_text = fmt_opsets(opsets) + (" (branches on opset)" if branches else "")
    engines = []
    for name, runs in (("ort", lambda t, o: ort_runs(t, o, kernels)), ("reference", reference_runs)):
        ok = [o for o in opsets if all(runs(t, o) for t in per_opset[o][1])]
        expanded = sorted({t for o in ok for t in per_opset[o][1] if runs(t, o) == "function"})
        note = f" ({', '.join(expanded)} as its ONNX function)" if expanded else ""
        if ok == opsets and opsets:
            engines.append(name + note)
        elif ok:
            engines.append(f"{name} (opset {fmt_opsets(ok)}){note}")
        elif opsets:
            missing = sorted({t for o in opsets for t in per_opset[o][1] if not runs(t, o)})
            engines.append(f"not {name}: {', '.join(missing)}")
    if not prim.differentiable:
        grad = "—"
    elif prim.vjp_rule is None:
        grad = "**missing**"
    else:
        _, built, _ = reader.read(prim.vjp_rule, None)
        raises = any(isinstance(n, ast.Raise) for n in ast.walk(reader._function_node(prim.vjp_rule)))
        if built:
            grad = "vjp: " + ", ".join(sorted(built))
        else:
            grad = "raises (by design)" if raises else "vjp: passes the cotangent through"
    module = prim.lower_rule.__module__.replace("kgraph.ops.", "ops/")
    return f"| `{prim.name}` | {ops_text or '—'} | {grad} | {opset_text} | {', '.join(engines) or '—'} | `{module}.py` |\n"


def load_registry():
    """Every primitive: the backend's, and those of any kgraph.ops module it does not import."""
    import importlib
    import pkgutil
    for info in pkgutil.iter_modules(kgraph.ops.__path__):
        importlib.import_module(f"kgraph.ops.{info.name}")
    return Primitive.registry


def render():
    reader = RuleReader()
    kernels = ort_cpu_kernels()
    registry = load_registry()
    lo, hi = SUPPORTED_OPSETS.start, SUPPORTED_OPSETS.stop - 1
    text = HEADER.format(onnx_version=onnx.__version__, ort_version=onnxruntime.__version__,
                         opset_lo=lo, opset_hi=hi, count=len(registry),
                         differentiable=sum(1 for p in registry.values() if p.vjp_rule is not None))
    for name in sorted(registry):
        text += describe(registry[name], reader, kernels)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate docs/ops.md from kgraph's primitive registry.")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/ops.md is stale, write nothing")
    parser.add_argument("--output", default=DOC, help="where to write (default: docs/ops.md)")
    args = parser.parse_args(argv)
    try:
        text = render()
    except UnresolvedOp as error:  # a rule this reader cannot follow: say which, write nothing
        print(f"ops_doc: error: {error}", file=sys.stderr)
        return 2
    if args.check:
        try:
            with open(args.output) as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{os.path.relpath(args.output)} is stale: run python tools/ops_doc.py", file=sys.stderr)
            return 1
        print(f"{os.path.relpath(args.output)} is current")
        return 0
    from kgraph.deploy.files import write_atomic
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_atomic(args.output, text, force=True)
    print(f"wrote {os.path.relpath(args.output)} ({len(Primitive.registry)} primitives)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
