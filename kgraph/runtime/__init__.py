"""Compiled functions on ONNX Runtime: sessions, providers, feeds, IOBinding, updates."""
from .device import Device, resolve_device
from .function import Function
from .session import clear as clear_sessions

__all__ = ["Device", "Function", "resolve_device", "clear_sessions"]
