"""Portable ONNX files from compiled functions.

* ``training=False`` (inference): variables frozen into initializers, inputs and outputs named
  after the K tensors, unknown dims as named symbolic dims.
* ``training=True``: the training step itself — each variable is a graph input whose initializer
  of the same name holds its current value (an ONNX "initializer with default": the model runs
  with no variable feeds, and a feed overrides it); each updated variable's new value is an
  output named ``<variable>:new``.  A plain ``InferenceSession`` steps it by feeding the outputs
  back in.
"""
import os
import tempfile

import onnx

from ..lower import lower_model

TWO_GB = 2 ** 31


def _unique_names(names):
    seen, out = set(), []
    for n in names:
        base = "".join(c if c.isalnum() or c in "_.:/-" else "_" for c in n) or "value"
        name, i = base, 1
        while name in seen:
            name, i = f"{base}_{i}", i + 1
        seen.add(name)
        out.append(name)
    return out


def function_to_onnx(fn, training=False, opset=None):
    outputs = list(fn.outputs)
    updates = fn.updates if training else []
    all_inputs = fn.inputs + fn.defaults
    variables = fn.variables if training else []
    names = _unique_names([p.name for p in all_inputs] + [v.name for v in variables] +
                          [t.name for t in outputs] + [f"{v.name}:new" for v, _ in updates])
    n_in, n_var, n_out = len(all_inputs), len(variables), len(outputs)
    model = lower_model(
        all_inputs, outputs + [new for _, new in updates],
        input_names=names[:n_in], variables=variables, variable_names=names[n_in:n_in + n_var],
        output_names=names[n_in + n_var:],
        frozen=[] if training else fn.variables, opset=opset or fn.opset,
        graph_name=fn.name, dim_names=lambda name, i: f"{name}_dim{i}",
        variable_defaults=training,
        doc=f"kgraph {'training step' if training else 'inference'} export of function {fn.name!r}")
    # placeholders with defaults (the learning phase) become initializers-with-defaults too,
    # so a served model runs in inference mode without being fed them
    for p, name in zip(fn.defaults, names[len(fn.inputs):n_in]):
        model.graph.initializer.append(onnx.numpy_helper.from_array(p.default.astype(p.dtype), name))
    return model


def export(fn, path, opset=None, training=False):
    """Write ``fn`` as an ONNX file at ``path``, atomically: the file appears complete or not at
    all, and an existing file is replaced only by a model that passed the checker."""
    model = fn.to_onnx(training=training, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    external = model.ByteSize() > TWO_GB - (1 << 20)
    fd, tmp = tempfile.mkstemp(prefix=".kgraph-", suffix=".onnx.tmp", dir=directory)
    os.close(fd)
    data_name = os.path.basename(path) + ".data"
    tmp_data = os.path.join(directory, data_name + ".tmp")
    try:
        if external:
            # weights beside the model; the protobuf itself cannot pass 2 GB
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name + ".tmp", size_threshold=1024)
            _retarget_external_data(tmp, data_name)
            os.replace(tmp_data, os.path.join(directory, data_name))
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, tmp_data):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    return path


def _retarget_external_data(model_path, location):
    """Point the saved model's external tensors at the final data file name."""
    model = onnx.load_model(model_path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    with open(model_path, "wb") as f:
        f.write(model.SerializeToString())
