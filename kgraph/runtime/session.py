"""ONNX Runtime sessions, created once per structural graph and reused.

Functions that are built the same way (same primitives, attributes, wiring, constants; fed
inputs and variables by position) lower to the same ONNX, so one session serves them all.
"""
import os

import onnxruntime as ort

_sessions = {}
stats = {"compiled": 0}


def session_options():
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    threads = int(os.environ.get("KGRAPH_NUM_THREADS", "0"))
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return opts


def create_session(model, device):
    stats["compiled"] += 1
    return ort.InferenceSession(model.SerializeToString(), sess_options=session_options(),
                                providers=device.providers)


def cached_session(key, build_model, device):
    """The session for ``key``; ``build_model()`` lowers the graph only on a miss."""
    key = (key, device)
    sess = _sessions.get(key)
    if sess is None:
        sess = _sessions[key] = create_session(build_model(), device)
    return sess


def clear():
    _sessions.clear()
