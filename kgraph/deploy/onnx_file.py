"""Writing compiled functions as ONNX files (the model itself comes from ``Function.to_onnx``)."""
import os

import onnx
import onnx.inliner
from onnx import numpy_helper

from .files import FILE_MODE, check_writable, temporary_path
from .signature import all_nodes

TWO_GB = 2 ** 31  # protobuf's hard limit on one message: past it, weights go to external data


def export(fn, path, opset=None, training=False, inline_functions=False, external_data_threshold=None,
           force=True):
    """Write ``fn`` as an ONNX file at ``path``, atomically and with mode 0644: the file appears
    complete or not at all, and an existing file is replaced only by a model that passed the
    checker (``force=False``: not at all).

    * ``training``: the training step itself (see ``Function.to_onnx``).
    * ``inline_functions``: expand model-local functions (CTC) into plain ONNX ops, for engines
      that cannot read local functions (OpenVINO).
    * ``external_data_threshold``: model size in bytes past which the weights go to
      ``<path>.data`` beside the file (default: just under 2 GiB, protobuf's limit).
    """
    path = os.fspath(path)
    check_writable(path, force=force)
    model = fn.to_onnx(training=training, opset=opset)
    if inline_functions:
        model = inline_local_functions(model)
    return write_model(model, path, external_data_threshold=external_data_threshold, force=force)


def write_model(model, path, external_data_threshold=None, force=True):
    """Write the ModelProto ``model`` at ``path`` after ``onnx.checker`` (full check) passes:
    atomically, mode 0644; weights go to ``<path>.data`` past ``external_data_threshold`` bytes."""
    path = os.fspath(path)
    check_writable(path, force=force)
    threshold = TWO_GB - (1 << 20) if external_data_threshold is None else external_data_threshold
    external = model.ByteSize() > threshold
    directory = os.path.dirname(os.path.abspath(path))
    data_name = os.path.basename(path) + ".data"
    if external:  # the weights file is an output too: same rules, checked before any work
        check_writable(os.path.join(directory, data_name), force=force)
    else:  # a model past 2 GB cannot be checked in memory: checked as saved below
        onnx.checker.check_model(model, full_check=True)
    tmp = temporary_path(path, ".onnx.tmp")
    tmp_data = os.path.join(directory, data_name + ".tmp")
    try:
        if external:
            # weights beside the model; the protobuf itself cannot pass 2 GB
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name + ".tmp", size_threshold=1024)
            onnx.checker.check_model(tmp, full_check=True)
            _retarget_external_data(tmp, data_name)
            os.chmod(tmp_data, FILE_MODE)
            os.replace(tmp_data, os.path.join(directory, data_name))
        else:
            onnx.save_model(model, tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, tmp_data):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    return path


def inline_local_functions(model):
    """``model`` with every call of a model-local function replaced by the function's body, and
    the then-unused function definitions and custom-domain opset import dropped."""
    inlined = onnx.inliner.inline_local_functions(model)
    used = {n.domain for n in all_nodes(inlined.graph)} | {"", "ai.onnx"}
    kept = [o for o in inlined.opset_import if o.domain in used]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    del inlined.functions[:]
    return inlined


def initial_state(model):
    """``{variable input name: numpy array}``: the values a training-step file's variables had
    at export, from its ``TrainingInfoProto`` initialization graph (``Function.to_onnx``)."""
    state = {}
    for info in model.training_info:
        values = {t.name: numpy_helper.to_array(t) for t in info.initialization.initializer}
        produced = {n.output[0]: n.input[0] for n in info.initialization.node if n.op_type == "Identity"}
        for binding in info.initialization_binding:
            source = produced.get(binding.value, binding.value)
            if source not in values:
                raise ValueError(f"the initial state of {binding.key!r} is not a stored tensor "
                                 f"(initialization output {binding.value!r})")
            state[binding.key] = values[source]
    return state


def _retarget_external_data(model_path, location):
    """Point the saved model's external tensors at the final data file name."""
    model = onnx.load_model(model_path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    with open(model_path, "wb") as f:
        f.write(model.SerializeToString())
