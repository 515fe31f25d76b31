"""What an ONNX file is: its signature (the inputs a caller feeds, the outputs it gets back) and
a summary of its contents, as plain data for ``kgraph inspect``, the model card and codegen."""
import collections

import numpy as np
import onnx


def _dim(d):
    if d.HasField("dim_value"):
        return int(d.dim_value)
    return d.dim_param or None  # a symbolic dim by name, or an anonymous unknown one


def _tensor(info):
    t = info.type.tensor_type
    if not info.type.HasField("tensor_type"):
        raise ValueError(f"{info.name!r} is not a tensor ({info.type.WhichOneof('value')}); "
                         f"kgraph serves tensor inputs and outputs only")
    shape = [_dim(d) for d in t.shape.dim] if t.HasField("shape") else None
    return {"name": info.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "onnx_type": onnx.TensorProto.DataType.Name(t.elem_type), "shape": shape}


def shape_text(shape):
    if shape is None:
        return "unknown rank"
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def signature(model):
    """``(inputs, outputs)``: lists of ``{"name", "dtype", "onnx_type", "shape"}``.  Inputs that
    are initializers-with-defaults (the learning phase) are left out: a caller need not feed
    them."""
    defaults = {i.name for i in model.graph.initializer}
    inputs = [_tensor(i) for i in model.graph.input if i.name not in defaults]
    return inputs, [_tensor(o) for o in model.graph.output]


def all_nodes(graph):
    """The nodes of ``graph`` and of every body nested in them (Loop, If, Scan)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            for g in attr.graphs:
                yield from all_nodes(g)


def op_histogram(model):
    """``{"domain::op" or "op": count}`` over the main graph and every nested body (Loop, If,
    Scan), but not inside local functions (those are listed on their own)."""
    counts = collections.Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                                 for n in all_nodes(model.graph))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def training_state_names(model):
    """The variables of a training-step file: inputs whose updated value is an output
    ``<name>:new``."""
    outputs = {o.name for o in model.graph.output}
    return [i.name for i in model.graph.input if f"{i.name}:new" in outputs]


def summarize(model):
    """A JSON-ready description of ``model``."""
    inputs, outputs = signature(model)
    parameters = sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer)
    nbytes = sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                 for t in model.graph.initializer)
    return {
        "graph": model.graph.name,
        "producer": {"name": model.producer_name, "version": model.producer_version},
        "ir_version": model.ir_version,
        "opset_imports": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": inputs,
        "outputs": outputs,
        "kind": "training step" if training_state_names(model) else "inference",
        "ops": op_histogram(model),
        "functions": [{"domain": f.domain, "name": f.name, "nodes": len(f.node),
                       "ops": sorted({n.op_type for n in f.node})} for f in model.functions],
        "parameters": parameters,
        "parameter_bytes": nbytes,
        "initializers": len(model.graph.initializer),
    }


def main_opset(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
