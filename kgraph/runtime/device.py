"""Which execution provider a compiled function runs on.

``auto`` takes CUDA when the installed onnxruntime offers it; ``cuda``/``cuda:N`` insist on it and
fail clearly when it is missing (a silent CPU fallback would hide a broken GPU install behind a
50x slowdown).
"""
from dataclasses import dataclass

import onnxruntime as ort

from ..config import check_device, settings


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "cuda"
    index: int = 0

    @property
    def providers(self):
        if self.kind == "cuda":
            return [("CUDAExecutionProvider", {"device_id": self.index}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    @property
    def ort_device(self):
        """The device name OrtValue/IOBinding use."""
        return "cuda" if self.kind == "cuda" else "cpu"

    @property
    def keeps_variables_resident(self):
        """On CUDA, variables live on the device between calls (IOBinding), never round-tripping
        through host memory; on CPU a numpy array is already where the kernels read it."""
        return self.kind == "cuda"


def resolve_device(spec=None, available=None):
    spec = check_device(spec if spec is not None else settings.device)
    available = ort.get_available_providers() if available is None else available
    has_cuda = "CUDAExecutionProvider" in available
    if spec == "cpu" or (spec == "auto" and not has_cuda):
        return Device("cpu")
    if spec == "auto":
        return Device("cuda", 0)
    if not has_cuda:
        raise RuntimeError(f"kgraph device {spec!r} was requested (KGRAPH_DEVICE or keras.json "
                           f"'kgraph_device'), but onnxruntime offers no CUDAExecutionProvider "
                           f"(available: {', '.join(available)}); install onnxruntime-gpu or use 'cpu'")
    return Device("cuda", int(spec.split(":")[1]) if ":" in spec else 0)
