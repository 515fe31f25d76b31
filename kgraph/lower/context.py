"""The builder that lowering rules emit ONNX through.

Rules see value *names* and call ``ctx.op("MatMul", a, b)``; the context names nodes and values
uniquely (across nested Loop/If bodies too, which ONNX requires), turns numpy constants into
initializers or ``Constant`` nodes, and hides the few opset differences that many rules share
(reductions take ``axes`` as an input from opset 18 on).
"""
import numpy as np
from onnx import helper, numpy_helper

from .. import dtypes

SUPPORTED_OPSETS = range(17, 22)
DEFAULT_OPSET = 18
CUSTOM_DOMAIN = "ai.kgraph"


def ir_version_for(opset):
    # onnx stamps its newest IR version, which the onnxruntime we pair with rejects: use the
    # version that introduced the opset instead.
    return {17: 8, 18: 8, 19: 9, 20: 9, 21: 10}[opset]


class Names:
    """Unique value/node names shared by a graph and all its nested bodies."""

    def __init__(self):
        self.used = set()
        self.next_suffix = {}  # per hint, so naming n values with one hint stays linear

    def fresh(self, hint):
        hint = "".join(c if c.isalnum() or c in "_./:" else "_" for c in str(hint)) or "v"
        name, i = hint, self.next_suffix.get(hint, 0)
        if i:
            name = f"{hint}_{i}"
        while name in self.used:
            i += 1
            name = f"{hint}_{i}"
        self.next_suffix[hint] = i + 1
        self.used.add(name)
        return name


def value_info(name, shape, dtype, dim_names=None):
    """An ONNX ValueInfo; unknown dims are named from ``dim_names`` or left anonymous."""
    dims = []
    for i, d in enumerate(shape):
        if d is not None:
            dims.append(d)
        else:
            dims.append(dim_names[i] if dim_names else None)
    return helper.make_tensor_value_info(name, dtypes.to_onnx(dtype), dims)


class LoweringContext:
    def __init__(self, opset=DEFAULT_OPSET, names=None, parent=None, inline_constants=False):
        if opset not in SUPPORTED_OPSETS:
            raise ValueError(f"opset {opset} is not supported; kgraph lowers to opsets "
                             f"{SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}")
        self.opset = opset
        self.names = names or Names()
        self.parent = parent
        self.inline_constants = inline_constants  # bodies carry constants as nodes
        self.nodes = []
        self.initializers = []
        self.functions = {} if parent is None else parent.functions  # model-local FunctionProtos
        self.values = {}  # id(Tensor) → ONNX name, for lowering IR graphs
        self._consts = {}
        self.current = None  # the Node being lowered, for error messages

    # -- building -----------------------------------------------------------------------
    def fresh(self, hint):
        return self.names.fresh(hint)

    def op(self, op_type, *inputs, outputs=1, domain="", name=None, **attrs):
        """Emit one node; return its output name, or a list when ``outputs`` > 1 or a list of hints."""
        hint = self.current.primitive.name if self.current is not None else op_type.lower()
        # the name scope the IR node was made in (a Keras layer: "dense_1/MatMul")
        scope = self.current.scope + "/" if self.current is not None and self.current.scope else ""
        out_names = ([self.fresh(scope + o) for o in outputs] if isinstance(outputs, (list, tuple))
                     else [self.fresh(scope + hint) for _ in range(outputs)])
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, [i or "" for i in inputs], out_names,
                                           name=self.fresh(scope + (name or op_type)), domain=domain or None,
                                           **attrs))
        return out_names[0] if len(out_names) == 1 and not isinstance(outputs, (list, tuple)) else out_names

    def const(self, value, dtype=None, hint="const"):
        """A constant value (numpy array or scalar), deduplicated by content.  A body's constants
        live in the outermost graph, which bodies read by name: a Constant node inside a Loop
        body would run again at every step."""
        if self.parent is not None:
            return self.parent.const(value, dtype=dtype, hint=hint)
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        tensor = numpy_helper.from_array(arr, name)
        if self.inline_constants or arr.size <= 16:
            self.nodes.append(helper.make_node("Constant", [], [name], name=self.fresh("Constant"), value=tensor))
        else:
            self.initializers.append(tensor)
        self._consts[key] = name
        return name

    def int64s(self, values):
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1), hint="ints")

    def scalar(self, value, dtype):
        return self.const(np.asarray(value, dtype=dtype), hint="scalar")

    # -- shared opset-aware helpers -------------------------------------------------------
    def reduce(self, op_type, x, axes, keepdims):
        """Reduce* over ``axes`` (None: all).  ReduceSum has taken axes as an input since opset 13,
        the others since 18."""
        keep = int(bool(keepdims))
        if axes is None:
            return self.op(op_type, x, keepdims=keep)
        axes = [int(a) for a in axes]
        if not axes:  # ONNX reads an empty axes list as "all axes"; here it means "none"
            return self.op("Identity", x)
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, x, self.int64s(axes), keepdims=keep)
        return self.op(op_type, x, axes=axes, keepdims=keep)

    def cast(self, x, dtype):
        return self.op("Cast", x, to=dtypes.to_onnx(dtype))

    def unsupported(self, what=None):
        prim = self.current.primitive.name if self.current is not None else "?"
        raise NotImplementedError(f"primitive {prim!r}{' (' + what + ')' if what else ''} has no "
                                  f"lowering for opset {self.opset}")

    def add_function(self, function_proto):
        """Register a model-local function (custom-domain ops such as ai.kgraph CTC)."""
        self.functions[(function_proto.domain, function_proto.name)] = function_proto

    # -- nested bodies ------------------------------------------------------------------
    def child(self):
        """A context for a Loop/If/Scan body: shares names and functions, sees outer values."""
        ctx = LoweringContext(self.opset, names=self.names, parent=self, inline_constants=True)
        return ctx

    def lookup(self, tensor):
        ctx = self
        while ctx is not None:
            if id(tensor) in ctx.values:
                return ctx.values[id(tensor)]
            ctx = ctx.parent
        raise KeyError(tensor)
