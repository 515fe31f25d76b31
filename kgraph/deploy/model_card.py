"""A model card (Markdown) for an exported ONNX model, from ``templates/model_card.md.j2``."""
import os

from .. import __version__
from .files import write_atomic
from .signature import shape_text, summarize
from .templates import render


def _rows(values):
    return [{"name": v["name"], "dtype": v["dtype"], "shape": shape_text(v["shape"])} for v in values]


def model_card(model, filename="model.onnx", name=None, description=""):
    """Markdown describing ``model`` (an ``onnx.ModelProto``): its signature, opset, ops,
    parameters, and how to run, deploy and serve it."""
    summary = summarize(model)
    training = summary["kind"] == "training step"
    return render(
        "model_card.md.j2",
        name=name or model.graph.name, description=description or model.doc_string,
        kgraph_version=__version__, producer=summary["producer"],
        opset=summary["opset_imports"].get("ai.onnx"), opsets=summary["opset_imports"],
        ir_version=model.ir_version, training=training, filename=os.path.basename(filename),
        inputs=_rows(summary["inputs"]), outputs=_rows(summary["outputs"]),
        ops=summary["ops"], parameters=summary["parameters"], parameter_bytes=summary["parameter_bytes"],
        initializers=summary["initializers"],
        functions=[f"{f['domain']}::{f['name']}" for f in summary["functions"]])


def write_model_card(model, path, onnx_filename, force=True, **kwargs):
    """Write ``model_card(...)`` to ``path`` atomically, mode 0644 (``force=False``: never over
    an existing file)."""
    return write_atomic(path, model_card(model, filename=onnx_filename, **kwargs), force=force)
