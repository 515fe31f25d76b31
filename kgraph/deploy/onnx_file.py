"""Writing compiled functions as ONNX files (the model itself comes from ``Function.to_onnx``)."""
import os
import tempfile

import onnx


TWO_GB = 2 ** 31


def export(fn, path, opset=None, training=False):
    """Write ``fn`` as an ONNX file at ``path``, atomically: the file appears complete or not at
    all, and an existing file is replaced only by a model that passed the checker."""
    return write_model(fn.to_onnx(training=training, opset=opset), path)


def write_model(model, path):
    """Write the ``onnx.ModelProto`` ``model`` at ``path`` as ``export`` does: checked, atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    external = model.ByteSize() > TWO_GB - (1 << 20)
    if not external:  # a model past 2 GB cannot be checked in memory: checked as saved below
        onnx.checker.check_model(model, full_check=True)
    fd, tmp = tempfile.mkstemp(prefix=".kgraph-", suffix=".onnx.tmp", dir=directory)
    os.close(fd)
    data_name = os.path.basename(path) + ".data"
    tmp_data = os.path.join(directory, data_name + ".tmp")
    try:
        if external:
            # weights beside the model; the protobuf itself cannot pass 2 GB
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name + ".tmp", size_threshold=1024)
            onnx.checker.check_model(tmp, full_check=True)
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
