"""Primitives, grouped by family; each file shows its op set at a glance."""
from . import control, conv, elementwise, layout, linalg, nn, pool, random, reduce, shape  # noqa: F401  (importing registers the primitives)
from . import ctc, ctc_decode, sparse  # noqa: F401,E402
from .primitive import InferError, Primitive

__all__ = ["InferError", "Primitive"]
