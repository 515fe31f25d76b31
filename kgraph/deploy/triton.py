"""A Triton Inference Server model repository for an ONNX file: ``REPO/NAME/config.pbtxt``
(from ``templates/triton_config.pbtxt.j2``) and ``REPO/NAME/VERSION/model.onnx``, which is what
production Triton containers serve with their ONNX Runtime backend."""
import os
import re

from .. import __version__
from .files import check_writable, copy_atomic, write_atomic
from .signature import signature
from .templates import render

# ONNX tensor types → Triton's (model_config.proto DataType)
TRITON_TYPES = {
    "FLOAT": "TYPE_FP32", "DOUBLE": "TYPE_FP64", "FLOAT16": "TYPE_FP16", "BFLOAT16": "TYPE_BF16",
    "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64",
    "BOOL": "TYPE_BOOL", "STRING": "TYPE_STRING",
}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class TritonConfigError(ValueError):
    """The model cannot be described to Triton as asked (e.g. a fixed batch dim with batching)."""


def default_name(model_path):
    stem = os.path.splitext(os.path.basename(model_path))[0]
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem) or "model"


def _tensor_config(tensor, batched, role):
    if tensor["onnx_type"] not in TRITON_TYPES:
        raise TritonConfigError(f"{role} {tensor['name']!r} has type {tensor['onnx_type']}, which Triton cannot serve")
    shape = tensor["shape"]
    if shape is None:
        raise TritonConfigError(f"{role} {tensor['name']!r} has no shape in the model; Triton needs its rank")
    if batched:
        if not shape or isinstance(shape[0], int):
            first = "no batch dim (a scalar)" if not shape else f"a fixed first dim {shape[0]}"
            raise TritonConfigError(
                f"{role} {tensor['name']!r} has {first}, but --max-batch-size > 0 needs a symbolic "
                f"first (batch) dim; export it with a None batch dim, or use --max-batch-size 0")
        shape = shape[1:]
    dims = [-1 if not isinstance(d, int) else d for d in shape]
    # Triton needs at least one dim: a scalar is served as [1] reshaped to []
    return {"name": tensor["name"], "data_type": TRITON_TYPES[tensor["onnx_type"]],
            "dims": dims or [1], "reshape": None if dims else []}


def triton_config(model, name, max_batch_size=0, instances=1, kind="cpu", dynamic_batching=False,
                  version=1, model_file="model.onnx"):
    """The text of ``config.pbtxt`` for ``model``."""
    if not _NAME.match(name):
        raise TritonConfigError(f"model name {name!r}: expected letters, digits, '_', '.' or '-'")
    if max_batch_size < 0 or instances < 1 or version < 1:
        raise TritonConfigError("expected max batch size >= 0, instances >= 1 and version >= 1")
    if kind not in ("cpu", "gpu"):
        raise TritonConfigError(f"kind {kind!r}: expected 'cpu' or 'gpu'")
    if dynamic_batching and max_batch_size == 0:
        raise TritonConfigError("dynamic batching needs --max-batch-size > 0")
    inputs, outputs = signature(model)
    batched = max_batch_size > 0
    return render("triton_config.pbtxt.j2", name=name, kgraph_version=__version__, model_file=model_file,
                  max_batch_size=max_batch_size, version=version, instances=instances,
                  kind="KIND_GPU" if kind == "gpu" else "KIND_CPU", dynamic_batching=dynamic_batching,
                  inputs=[_tensor_config(t, batched, "input") for t in inputs],
                  outputs=[_tensor_config(t, batched, "output") for t in outputs])


def write_repository(model, model_path, repo, name=None, version=1, force=False, **config):
    """Write ``repo/name/config.pbtxt`` and ``repo/name/version/model.onnx`` (plus the model's
    external-data file, if any).  Everything is checked before anything is written; returns the
    paths written."""
    name = name or default_name(model_path)
    text = triton_config(model, name, version=version, model_file=os.path.basename(model_path), **config)
    model_dir = os.path.join(repo, name)
    version_dir = os.path.join(model_dir, str(version))
    config_path = os.path.join(model_dir, "config.pbtxt")
    onnx_path = os.path.join(version_dir, "model.onnx")
    externals = sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})
    targets = [config_path, onnx_path] + [os.path.join(version_dir, e) for e in externals]
    for target in targets:
        if os.path.exists(target) and not force:
            raise FileExistsError(f"{target} already exists (use --force to overwrite it)")
    os.makedirs(version_dir, exist_ok=True)
    for target in targets:
        check_writable(target, force=force)
    source_dir = os.path.dirname(os.path.abspath(model_path))
    for source, target in [(model_path, onnx_path)] + [(os.path.join(source_dir, e), os.path.join(version_dir, e))
                                                        for e in externals]:
        copy_atomic(source, target)
    write_atomic(config_path, text, force=True)
    return targets
