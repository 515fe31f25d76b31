"""The last layer: portable ONNX files (and, later, the generated code around them)."""
from .onnx_file import export

__all__ = ["export"]
