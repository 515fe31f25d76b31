"""IR → ONNX.  Knows ONNX and the IR, nothing of Keras argument conventions."""
from .context import CUSTOM_DOMAIN, DEFAULT_OPSET, SUPPORTED_OPSETS, LoweringContext, ir_version_for
from .model import lower_model, lower_nodes, lower_subgraph, value_info

__all__ = ["CUSTOM_DOMAIN", "DEFAULT_OPSET", "SUPPORTED_OPSETS", "LoweringContext", "ir_version_for",
           "lower_model", "lower_nodes", "lower_subgraph", "value_info"]
