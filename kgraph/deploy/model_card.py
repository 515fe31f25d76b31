"""A model card (Markdown) for an exported ONNX model, from ``templates/model_card.md.j2``."""
import os
import tempfile

import jinja2
import numpy as np
import onnx

from .. import __version__

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("kgraph", "templates"), keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined, autoescape=False)


def _value(info):
    t = info.type.tensor_type
    dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in t.shape.dim]
    return {"name": info.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"}


def model_card(model, filename="model.onnx", name=None, description=""):
    """Markdown describing ``model`` (an ``onnx.ModelProto``): its inputs, outputs, size, opset."""
    initializer_names = {i.name for i in model.graph.initializer}
    training = any(o.name.endswith(":new") for o in model.graph.output)
    return _templates.get_template("model_card.md.j2").render(
        name=name or model.graph.name, description=description or model.doc_string,
        kgraph_version=__version__, opset=model.opset_import[0].version, ir_version=model.ir_version,
        training=training, filename=os.path.basename(filename),
        inputs=[_value(i) for i in model.graph.input if training or i.name not in initializer_names],
        outputs=[_value(o) for o in model.graph.output],
        parameters=int(sum(np.prod(i.dims, dtype=np.int64) for i in model.graph.initializer)),
        initializers=len(model.graph.initializer),
        functions=[f"{f.domain}::{f.name}" for f in model.functions])


def write_model_card(model, path, onnx_filename, **kwargs):
    """Write ``model_card(...)`` to ``path`` atomically (complete or not at all)."""
    text = model_card(model, filename=onnx_filename, **kwargs)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".kgraph-", suffix=".md.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
