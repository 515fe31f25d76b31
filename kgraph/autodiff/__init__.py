"""Reverse-mode autodiff over the IR: each primitive's ``vjp`` rule builds its input gradients
out of primitives, so gradients lower like any graph and differentiate again (second order)."""
from .reverse import gradients

__all__ = ["gradients"]
