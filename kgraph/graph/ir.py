"""kgraph's intermediate representation: pure data, no ONNX, no Keras conventions.

A ``Tensor`` is either a *source* (``Placeholder``, ``Variable``, ``Constant``: values that come
from outside the graph) or the output of a ``Node`` (one application of a primitive to input
tensors with hashable attributes).  A ``Graph`` is the pruned, topologically ordered view of the
nodes that some outputs depend on; lowering, autodiff and the simplifier all work on it.
"""
import contextlib
import hashlib
import itertools
import threading

import numpy as np

_uids = itertools.count()


class Tensor:
    """A symbolic value with a static shape (``None`` for unknown dims) and a dtype string.

    Python operators and ``eval()`` are Keras semantics, which live in ``kgraph.backend``; the
    backend installs them through ``Tensor.backend`` so this layer never imports it.
    """

    backend = None  # set by kgraph.backend: the module that implements operators and eval
    __array_priority__ = 100  # numpy defers ``ndarray + Tensor`` to ``Tensor.__radd__``

    def __init__(self, shape, dtype, name=None, node=None, index=0):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = dtype
        self.node = node
        self.index = index
        self.uid = next(_uids)
        self.name = name or f"{node.primitive.name if node else 'tensor'}_{self.uid}"

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        shape = "(" + ", ".join("None" if d is None else str(d) for d in self.shape) + ")"
        return f"<{type(self).__name__} {self.name!r} shape={shape} dtype={self.dtype}>"

    # Identity semantics for == and hashing, as TF 1.x tensors have: Keras keeps tensors in sets
    # and dicts and tests membership with ``in``.  Elementwise equality is ``K.equal``.
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def __bool__(self):
        raise TypeError(f"the truth value of symbolic tensor {self.name!r} is unknown until it runs; "
                        "use K.switch for data-dependent choices")

    def __iter__(self):
        raise TypeError(f"symbolic tensor {self.name!r} is not iterable; index it or use K.map_fn")

    def __len__(self):
        if not self.shape or self.shape[0] is None:
            raise TypeError(f"len() of tensor {self.name!r} with shape {self.shape} is not known statically")
        return self.shape[0]

    def eval(self):
        return Tensor.backend.eval(self)


def _operator(name, swap=False, unary=False):
    attr = name + "_" if name in ("and", "or") else name  # keywords

    def method(self, *other):
        fn = getattr(Tensor.backend.operators, attr)
        if unary:
            return fn(self)
        return fn(other[0], self) if swap else fn(self, other[0])
    method.__name__ = f"__{'r' if swap else ''}{name}__"
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor"):
    setattr(Tensor, f"__{_name}__", _operator(_name))
    setattr(Tensor, f"__r{_name}__", _operator(_name, swap=True))
for _name in ("lt", "le", "gt", "ge", "getitem"):
    setattr(Tensor, f"__{_name}__", _operator(_name))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(Tensor, f"__{_name}__", _operator(_name, unary=True))


class Placeholder(Tensor):
    """A value fed at call time.  ``default`` (a numpy array) is used when a function is not given it."""

    def __init__(self, shape, dtype, name=None, default=None, sparse=False):
        super().__init__(shape, dtype, name=name or f"placeholder_{next(_uids)}")
        self.default = default
        self.sparse = sparse


class Variable(Tensor):
    """A value that lives between calls.  ``value`` is a numpy array, or a device buffer with
    ``.numpy()`` that the runtime keeps resident; ``version`` changes on every write, which lets a
    compiled function know when values it froze are stale."""

    writes = 0  # global count of writes to any variable: one int compare on the hot path

    def __init__(self, value, dtype, name=None, constraint=None):
        value = np.asarray(value, dtype=dtype)
        super().__init__(value.shape, dtype, name=name or f"variable_{next(_uids)}")
        self.constraint = constraint
        self.version = 0
        self._value = value

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, new):
        self._value = new
        self.version += 1
        Variable.writes += 1

    def numpy(self):
        v = self._value
        return v if isinstance(v, np.ndarray) else v.numpy()


class Constant(Tensor):
    def __init__(self, value, name=None):
        value = np.asarray(value)
        super().__init__(value.shape, value.dtype.name, name=name or f"const_{next(_uids)}")
        self.value = value
        self.value.setflags(write=False)
        self._digest = None

    @property
    def digest(self):
        if self._digest is None:
            v = np.asarray(self.value, order="C")  # ascontiguousarray would make 0-d arrays 1-d
            self._digest = (v.dtype.name, v.shape, hashlib.sha1(v.tobytes()).hexdigest())
        return self._digest


class _Scope(threading.local):
    current = ""


_scope = _Scope()


@contextlib.contextmanager
def node_scope(name):
    """Nodes created inside carry ``scope`` = the enclosing scopes joined by ``/`` (``K.name_scope``,
    which Keras wraps around each layer's call): the lowering names ONNX nodes after it, so a file
    shows which layer each node comes from.  A scope names; it never changes what a graph computes."""
    outer = _scope.current
    _scope.current = f"{outer}/{name}" if outer and name else (name or outer)
    try:
        yield _scope.current
    finally:
        _scope.current = outer


class _ReadsAfter(threading.local):
    substitutions = None  # id(variable) → the tensor its reads see, or None


_reads_after = _ReadsAfter()


@contextlib.contextmanager
def reads_after(new_values):
    """Nodes created inside read ``new_values[id(v)]`` wherever they read variable ``v``: how a
    read is ordered after an update (``K.control_dependencies``) while the graph stays pure data
    flow.  Nested blocks see the outer substitutions too."""
    outer = _reads_after.substitutions
    _reads_after.substitutions = {**(outer or {}), **new_values} or None
    try:
        yield
    finally:
        _reads_after.substitutions = outer


class Node:
    """One application of ``primitive`` to ``inputs`` with ``attrs``, a dict of hashable values
    (ints, floats, strings, tuples) — never arrays: those are ``Constant`` inputs.  ``scope`` is
    the name scope it was created in (see ``node_scope``)."""

    __slots__ = ("primitive", "inputs", "attrs", "outputs", "subgraphs", "scope")

    def __init__(self, primitive, inputs, attrs, subgraphs=()):
        self.primitive = primitive
        substitutions = _reads_after.substitutions
        self.inputs = tuple(inputs) if substitutions is None else tuple(
            substitutions.get(id(t), t) if isinstance(t, Variable) else t for t in inputs)
        self.attrs = attrs
        self.subgraphs = tuple(subgraphs)
        self.outputs = ()
        self.scope = _scope.current

    def __repr__(self):
        return f"<Node {self.primitive.name} {[t.name for t in self.inputs]} {self.attrs}>"


def is_source(t):
    return t.node is None


class Graph:
    """The nodes that ``outputs`` depend on, in topological order, stopping at ``stop`` tensors
    (the inputs of a subgraph).  Sources reached are sorted by kind."""

    def __init__(self, outputs, stop=()):
        self.outputs = list(outputs)
        stop_ids = {id(t) for t in stop}
        self.nodes, self.placeholders, self.variables, self.constants = [], [], [], []
        seen_nodes, seen_sources = set(), set()
        # iterative DFS: recursion would overflow on long unrolled graphs
        for out in self.outputs:
            stack = [(out, False)]
            while stack:
                t, expanded = stack.pop()
                if id(t) in stop_ids or t.node is None:
                    if id(t) not in seen_sources and id(t) not in stop_ids:
                        seen_sources.add(id(t))
                        bucket = (self.variables if isinstance(t, Variable) else
                                  self.constants if isinstance(t, Constant) else self.placeholders)
                        bucket.append(t)
                    continue
                node = t.node
                if expanded:
                    if id(node) not in seen_nodes:
                        seen_nodes.add(id(node))
                        self.nodes.append(node)
                    continue
                if id(node) in seen_nodes:
                    continue
                stack.append((t, True))
                for inp in reversed(node.inputs + tuple(c for g in node.subgraphs for c in g.captures)):
                    if inp.node is None or id(inp.node) not in seen_nodes:
                        stack.append((inp, False))

    def signature(self, inputs=(), variables=None):
        """A hashable structural key: equal for graphs that lower to the same ONNX up to names.
        Placeholders and variables are keyed by position (their values are fed), constants by
        content, so two functions built the same way share one compiled session."""
        variables = self.variables if variables is None else variables
        refs = {}
        for i, p in enumerate(inputs):
            refs[id(p)] = ("in", i, p.shape, p.dtype)
        for i, v in enumerate(variables):
            refs[id(v)] = ("var", i, v.shape, v.dtype)
        for p in self.placeholders:
            refs.setdefault(id(p), ("ph", p.name, p.shape, p.dtype))
        for c in self.constants:
            refs[id(c)] = ("const", c.digest)
        key = []
        for n, node in enumerate(self.nodes):
            for k, t in enumerate(node.outputs):
                refs[id(t)] = ("node", n, k)
            key.append((node.primitive.name, tuple(sorted(node.attrs.items())),
                        tuple(refs[id(t)] for t in node.inputs),
                        tuple(g.signature() for g in node.subgraphs)))
        return (tuple(key), tuple(refs[id(t)] for t in self.outputs))


class Subgraph:
    """A traced body for Loop/If/Scan-like primitives: ``inputs`` are the body's own placeholders,
    ``captures`` the outer tensors the body reads (weights, constants, the learning phase)."""

    def __init__(self, inputs, outputs, captures=()):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.captures = list(captures)
        self.graph = Graph(self.outputs, stop=self.inputs + self.captures)

    def signature(self):
        g = self.graph
        return g.signature(inputs=self.inputs + self.captures, variables=g.variables)
