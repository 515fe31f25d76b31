"""Dtype names (numpy strings, as Keras uses them) and their ONNX element types."""
import numpy as np
from onnx import TensorProto

_ONNX = {
    "float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
    "int64": TensorProto.INT64, "uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64, "bool": TensorProto.BOOL,
}
_FROM_ONNX = {v: k for k, v in _ONNX.items()}
SUPPORTED = tuple(_ONNX)
FLOATS = ("float16", "float32", "float64")


def normalize(dtype, where="dtype"):
    """'float32', np.float32, np.dtype('float32') → 'float32'; anything else is an error."""
    if dtype is None:
        raise TypeError(f"{where}: a dtype is required, got None")
    if isinstance(dtype, str) and dtype in _ONNX:
        return dtype
    name = getattr(dtype, "dtype", None)  # a tensor or an array
    if isinstance(name, str) and name in _ONNX:
        return name
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _ONNX:
        raise TypeError(f"{where}: unsupported dtype {dtype!r}; expected one of {', '.join(SUPPORTED)}")
    return name


def to_onnx(dtype):
    return _ONNX[dtype]


def from_onnx(elem_type):
    return _FROM_ONNX[elem_type]


def is_float(dtype):
    return dtype in FLOATS


def is_int(dtype):
    return dtype.startswith(("int", "uint"))


def result_type(*dtypes):
    """numpy's promotion of tensor dtypes (Python scalars never reach here: they take their partner's dtype)."""
    return np.result_type(*[np.dtype(d) for d in dtypes]).name
