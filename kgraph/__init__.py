"""kgraph: the Keras 2 backend API as a transpiler to ONNX, trained and run on ONNX Runtime.

    import kgraph.backend as K       # the backend (KERAS_BACKEND=kgraph.backend for Keras 2.3.1)
    kgraph.export(f, "model.onnx")   # any K.function as a portable ONNX file
    kgraph.model_card(f.to_onnx())   # Markdown describing it (from templates/)
"""
__version__ = "0.1.0"

from .deploy import export, model_card  # noqa: E402

__all__ = ["export", "model_card", "__version__"]
