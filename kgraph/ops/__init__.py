"""Primitives, grouped by family; each file shows its op set at a glance."""
from . import elementwise, linalg, reduce, shape  # noqa: F401  (importing registers the primitives)
from .primitive import InferError, Primitive

__all__ = ["InferError", "Primitive"]
