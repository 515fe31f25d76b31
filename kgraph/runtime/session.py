"""ONNX Runtime sessions, created once per structural graph and reused.

Functions that are built the same way (same primitives, attributes, wiring, constants; fed
inputs and variables by position) lower to the same ONNX, so one session serves them all.
"""
import os

import onnxruntime as ort

_sessions = {}
stats = {"compiled": 0}


def intra_op_threads():
    """``$KGRAPH_NUM_THREADS`` (0 or unset: ONNX Runtime's default, one per core)."""
    text = os.environ.get("KGRAPH_NUM_THREADS", "0").strip() or "0"
    if not text.isdigit():
        raise ValueError(f"KGRAPH_NUM_THREADS: expected a thread count (0 for all cores), got {text!r}")
    return int(text)


def session_options():
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = intra_op_threads()
    opts.inter_op_num_threads = 1
    # ORT's memory pattern (one block laid out from the first run's allocations) overshoots on
    # training steps: a keras_applications ResNet50 step at batch 32 peaked at 14.9 GB with it,
    # 8.6 GB without, and ran faster; MLP train_on_batch times were unchanged (bench_keras memory)
    opts.enable_mem_pattern = False
    return opts


def _run_time_conv_weights(model):
    """Whether some Conv reads a weight computed at run time (a training step's fed variables).
    ORT's NCHWc transform only rewrites Convs with constant weights; in such a graph it just
    wraps the pools in layout reorders, which cost more than they save (3% of bench_cnn's
    training step on 2 threads)."""
    constant = {t.name for t in model.graph.initializer}
    constant.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return any(n.op_type == "Conv" and n.input[1] not in constant for n in model.graph.node)


def create_session(model, device):
    stats["compiled"] += 1
    disabled = ["NchwcTransformer"] if _run_time_conv_weights(model) else None
    return ort.InferenceSession(model.SerializeToString(), sess_options=session_options(),
                                providers=device.providers, disabled_optimizers=disabled)


def cached_session(key, build_model, device):
    """The session for ``key``; ``build_model()`` lowers the graph only on a miss."""
    key = (key, device)
    sess = _sessions.get(key)
    if sess is None:
        sess = _sessions[key] = create_session(build_model(), device)
    return sess


def clear():
    _sessions.clear()
