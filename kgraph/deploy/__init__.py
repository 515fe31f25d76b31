"""The last layer: portable ONNX files and the generated text around them (templates/)."""
from .model_card import model_card, write_model_card
from .onnx_file import export

__all__ = ["export", "model_card", "write_model_card"]
