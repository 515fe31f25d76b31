"""The primitive registry: one object per op, holding its shape, lowering and gradient rules.

    add = Primitive("add")

    @add.infer
    def _(a, b):            # → (shape, dtype), or a list of them for several outputs
        ...

    @add.lower
    def _(ctx, node, a, b): # ONNX value names in, ONNX value name(s) out
        return ctx.op("Add", a, b)

    @add.vjp
    def _(node, g):         # output cotangent(s) in, one gradient (or None) per input out
        ...

Calling a primitive checks its inputs with the shape rule and records a ``Node``.
"""
from ..graph import Node, Tensor


class InferError(ValueError):
    """A shape or dtype rule rejected its inputs; the backend prefixes the K function's name."""


class Primitive:
    registry = {}

    def __init__(self, name, *, differentiable=True, num_outputs=1):
        if name in Primitive.registry:
            raise ValueError(f"primitive {name!r} is defined twice")
        self.name = name
        self.differentiable = differentiable
        self.num_outputs = num_outputs  # None: the shape rule decides
        self.infer_rule = self.lower_rule = self.vjp_rule = None
        Primitive.registry[name] = self

    def __repr__(self):
        return f"<Primitive {self.name}>"

    def infer(self, fn):
        self.infer_rule = fn
        return fn

    def lower(self, fn):
        self.lower_rule = fn
        return fn

    def vjp(self, fn):
        if not self.differentiable:
            raise ValueError(f"primitive {self.name!r} is declared non-differentiable")
        self.vjp_rule = fn
        return fn

    def __call__(self, *inputs, **attrs):
        return self.bind(inputs, attrs)

    def bind(self, inputs, attrs, subgraphs=()):
        for i, t in enumerate(inputs):
            if not isinstance(t, Tensor):
                raise TypeError(f"primitive {self.name}: input {i} must be a Tensor, got {type(t).__name__}")
        result = self.infer_rule(*inputs, **attrs) if not subgraphs else \
            self.infer_rule(*inputs, subgraphs=subgraphs, **attrs)
        single = self.num_outputs == 1
        specs = [result] if single else list(result)
        node = Node(self, inputs, attrs, subgraphs)
        node.outputs = tuple(Tensor(shape, dtype, node=node, index=i) for i, (shape, dtype) in enumerate(specs))
        return node.outputs[0] if single else node.outputs
