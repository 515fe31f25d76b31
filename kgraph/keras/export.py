"""``kgraph.export_keras``: a Keras 2.3.1 model (running on kgraph) as a portable ONNX file.

Inference (the default) exports what ``model.predict`` computes: the learning phase is fixed to
0 before lowering, so the training branches of Dropout, BatchNormalization and the like leave
the graph instead of being computed and discarded; the weights are frozen in as initializers;
inputs and outputs carry the model's own names (``model.input_names`` / ``model.output_names``)
with a symbolic ``batch`` dim.  ``training=True`` exports the compiled training step (Keras's
own ``train_function``: the optimizer step, loss and metrics) through ``Function.to_onnx``.

Node and value names start with the Keras layer they come from (``dense_1/MatMul``): Keras
wraps each layer's call in ``K.name_scope(layer.name)``, IR nodes record that scope and the
lowering names ONNX nodes after it.

Nothing here imports Keras: a model is read through its attributes.
"""
import sys

import numpy as np
import onnx

from ..deploy.onnx_file import write_model
from ..graph import Constant, Graph, Placeholder, Tensor
from ..rewrite import specialize
from ..lower import DEFAULT_OPSET, lower_model
from ..lower.conv_affine import fold_conv_affine

BATCH_DIM = "batch"


def export_keras(model, path, opset=None, training=False):
    """Write the Keras model ``model`` as an ONNX file at ``path`` (atomically; the file passes
    ``onnx.checker.check_model(full_check=True)``) and return the path.

    * ``training=False``: the inference graph (learning phase 0, weights frozen in).
    * ``training=True``: the compiled training step; the model must be compiled.  Each weight and
      optimizer slot is a required input (its value at export is in the file's TrainingInfoProto
      initialization: ``kgraph.deploy.initial_state``) and its new value an output ``<name>:new``;
      the outputs ``model.metrics_names`` come first.
    """
    _check_model(model)
    opset = opset or DEFAULT_OPSET
    proto = training_model(model, opset) if training else inference_model(model, opset)
    return write_model(proto, path)


def inference_model(model, opset=DEFAULT_OPSET):
    """The ``onnx.ModelProto`` of ``model.predict``'s computation (see the module docstring)."""
    inputs, outputs = list(model.inputs), list(model.outputs)
    where = f"kgraph.export_keras: model {model.name!r}"
    for i, t in enumerate(inputs):
        if not isinstance(t, Placeholder):
            raise TypeError(f"{where}: input {i} is {t!r}, not a kgraph placeholder; was the model "
                            f"built with KERAS_BACKEND=kgraph.backend?")
    constants = []
    for p in Graph(outputs).placeholders:
        if any(p is t for t in inputs):
            continue
        if p.default is None:
            raise ValueError(f"{where}: the outputs read placeholder {p.name!r}, which is not one of "
                             f"the model's inputs ({', '.join(model.input_names)})")
        # the learning phase: fed False by predict, so the inference graph is specialized to it
        constants.append((p, Constant(np.asarray(p.default, dtype=p.dtype), name=p.name)))
    outputs = specialize(outputs, constants)
    variables = Graph(outputs).variables
    input_names = _unique(model.input_names)
    proto = lower_model(
        inputs, outputs, input_names=input_names, output_names=_unique(model.output_names, input_names),
        frozen=variables, opset=opset, graph_name=model.name,
        dim_names=lambda name, i: BATCH_DIM if i == 0 else f"{name}_dim{i}",
        doc=f"kgraph inference export of Keras model {model.name!r}")
    fold_conv_affine(proto)  # BatchNormalization (and any per-channel scale/shift) into the Conv
    for out in proto.graph.output:  # Keras outputs are batch-major like its inputs
        dims = out.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    _add_metadata(proto, model, "inference")
    return proto


def training_model(model, opset=DEFAULT_OPSET):
    """The ``onnx.ModelProto`` of one compiled training step of ``model`` (``train_on_batch``)."""
    if getattr(model, "optimizer", None) is None or not hasattr(model, "train_function"):
        raise ValueError(f"kgraph.export_keras: model {model.name!r} is not compiled; call "
                         f"model.compile(optimizer, loss) before exporting with training=True")
    model._make_train_function()
    fn = model.train_function
    proto = fn.to_onnx(training=True, opset=opset)
    graph = proto.graph
    names = list(model.metrics_names)
    if len(names) == fn.n_outputs:
        taken = {i.name for i in graph.input} | {o.name for o in graph.output[fn.n_outputs:]}
        for out, name in zip(graph.output[:fn.n_outputs], _unique(names, taken)):
            _rename_value(graph, out.name, name)
    phase = [i for p, i in zip(fn.inputs, graph.input) if p.name == "keras_learning_phase" and p.default is not None]
    for value in phase:  # a training step trains unless told otherwise: default True
        graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(True), value.name))
    _add_metadata(proto, model, "training step")
    proto.doc_string = f"kgraph training-step export of Keras model {model.name!r}"
    return proto


# -- helpers ---------------------------------------------------------------------------------
def _check_model(model):
    if not all(hasattr(model, a) for a in ("layers", "name", "get_weights")):
        raise TypeError(f"kgraph.export_keras: expected a Keras model (keras.models.Model), got "
                        f"{type(model).__name__}")
    if not getattr(model, "inputs", None) or not getattr(model, "outputs", None):
        raise ValueError(f"kgraph.export_keras: model {model.name!r} has no inputs or outputs yet; "
                         f"build it (call it on data or give its first layer an input_shape) first")
    for t in list(model.inputs) + list(model.outputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"kgraph.export_keras: model {model.name!r} holds {type(t).__name__} tensors, "
                            f"not kgraph's: build or load it with KERAS_BACKEND=kgraph.backend")


def _unique(names, taken=()):
    """ONNX names a value once: a repeated name gets a suffix."""
    seen, out = set(taken), []
    for name in names:
        unique, i = name, 1
        while unique in seen:
            unique, i = f"{name}_{i}", i + 1
        seen.add(unique)
        out.append(unique)
    return out


def _rename_value(graph, old, new):
    """Rename a value of ``graph`` everywhere, nested bodies included (they read outer names)."""
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
        for attr in node.attribute:
            for body in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_value(body, old, new)


def _add_metadata(proto, model, kind):
    keras = sys.modules.get("keras")
    props = {"keras_model": model.name, "kgraph_export": kind,
             "keras_version": getattr(keras, "__version__", "unknown")}
    for key, value in props.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(value)))
