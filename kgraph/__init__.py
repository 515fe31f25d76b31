"""kgraph: the Keras 2 backend API as a transpiler to ONNX, trained and run on ONNX Runtime.

    import kgraph.backend as K       # the backend (KERAS_BACKEND=kgraph.backend for Keras 2.3.1)
    kgraph.export(f, "model.onnx")   # any K.function as a portable ONNX file
    kgraph.model_card(f.to_onnx())   # Markdown describing it (from templates/)
    kgraph.export_keras(model, "model.onnx")  # a Keras 2.3.1 model built on kgraph
"""
__version__ = "0.1.0"

from .deploy import export, model_card  # noqa: E402


def export_keras(model, path, opset=None, training=False):
    """Write a Keras 2.3.1 model running on kgraph as an ONNX file: its inference graph, or with
    ``training=True`` its compiled training step.  See ``kgraph.keras.export.export_keras``."""
    from .keras.export import export_keras as export_keras_model  # Keras users only: lazily
    return export_keras_model(model, path, opset=opset, training=training)


__all__ = ["export", "export_keras", "model_card", "__version__"]
