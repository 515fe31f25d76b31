"""A standalone runner script for an ONNX file (``templates/predict.py.j2``): onnxruntime and
numpy only, the model's signature baked in."""
import os

from .. import __version__
from .signature import signature
from .templates import render


def _shape_literal(shape):
    if shape is None:
        raise ValueError("an input of unknown rank cannot be validated; re-export it with a shape")
    dims = [repr(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def predict_script(model, model_path, script_path):
    """The text of ``predict.py`` for ``model``, which it finds at ``model_path`` relative to the
    script's own folder at run time."""
    inputs, outputs = signature(model)
    relative = os.path.relpath(os.path.abspath(model_path), os.path.dirname(os.path.abspath(script_path)))
    return render("predict.py.j2", model_name=os.path.basename(model_path), kgraph_version=__version__,
                  script_name=os.path.basename(script_path), model_path=relative,
                  inputs=[dict(io, shape_literal=_shape_literal(io["shape"])) for io in inputs], outputs=outputs)
