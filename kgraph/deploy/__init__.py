"""The last layer: portable ONNX files and the generated text around them (templates/)."""
from .model_card import model_card, write_model_card
from .onnx_file import export, initial_state, inline_local_functions

__all__ = ["export", "initial_state", "inline_local_functions", "model_card", "write_model_card"]
