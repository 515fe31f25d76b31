"""The IR layer: pure data, no ONNX and no Keras argument conventions."""
from .ir import Constant, Graph, Node, Placeholder, Subgraph, Tensor, Variable, is_source, node_scope

__all__ = ["Constant", "Graph", "Node", "Placeholder", "Subgraph", "Tensor", "Variable", "is_source",
           "node_scope"]
