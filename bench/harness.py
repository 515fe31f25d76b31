"""What every benchmark shares: interleaved timing, tables of medians and ratios, one thread
count for every engine, and ONNX Runtime sessions built like kgraph's own."""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# -- timing -----------------------------------------------------------------------------------
def calls_per_round(fn, target_seconds):
    """How many calls of ``fn`` fill about ``target_seconds`` (after warming it up)."""
    for _ in range(3):
        fn()
    n, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > target_seconds / 4 or n >= 1 << 16:
            break
        n *= 2
    return max(1, int(n * target_seconds / max(elapsed, 1e-9)))


def measure(engines, rounds, target_seconds=0.01, settle_seconds=0.0):
    """Median seconds per call for each of ``engines`` ({name: fn}), interleaved by round so
    that drift (frequency scaling, other processes) hits every engine alike."""
    counts = {name: calls_per_round(fn, target_seconds) for name, fn in engines.items()}
    samples = {name: [] for name in engines}
    cpu = {name: [] for name in engines}
    for _ in range(rounds):
        for name, fn in engines.items():
            n = counts[name]
            if settle_seconds:
                # both runtimes' worker threads spin after their work: calling one engine right
                # after the other measured the pair at 2.5x their separate times (CNN bench)
                time.sleep(settle_seconds)
                fn()
            start, start_cpu = time.perf_counter(), time.thread_time()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
            cpu[name].append((time.thread_time() - start_cpu) / n)
    MINIMA.update({name: min(s) for name, s in samples.items()})
    CPU.update({name: statistics.median(s) for name, s in cpu.items()})
    return {name: statistics.median(s) for name, s in samples.items()}


# the fastest round of each engine in the last ``measure``: shown beside the median, since on a
# shared machine other processes inflate medians far more than minima
MINIMA = {}
# median CPU time of the calling thread per call: with one intra-op thread ORT computes on the
# calling thread, so this is the work itself, unaffected by other processes competing for cores
CPU = {}


def format_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.2f} µs"
    return f"{seconds * 1e3:8.3f} ms"


def print_table(title, medians, reference, notes=None):
    print(f"\n{title}")
    width = max(len(n) for n in medians) + 2
    print(f"  {'engine':<{width}} {'median':>11}   {'ratio':>6}   {'fastest round':>13}   {'ratio':>6}"
          f"   (ratios vs {reference})")
    for name, t in medians.items():
        note = f"   {notes[name]}" if notes and name in notes else ""
        fastest = MINIMA.get(name, t)
        print(f"  {name:<{width}} {format_time(t)}   {t / medians[reference]:5.2f}x   {format_time(fastest):>13}   "
              f"{fastest / MINIMA.get(reference, medians[reference]):5.2f}x{note}")


# -- ONNX Runtime helpers ---------------------------------------------------------------------
def ort_options(threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def ort_session(model, threads):
    import onnxruntime as ort
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, sess_options=ort_options(threads), providers=["CPUExecutionProvider"])


def setup_threads(threads):
    """One thread count for every engine: kgraph's sessions read KGRAPH_NUM_THREADS when they are
    created, so the session cache is cleared too."""
    os.environ["KGRAPH_NUM_THREADS"] = str(threads)
    import kgraph.backend as K
    K.clear_session()
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass


def thread_counts(text):
    """``"1,2"`` → ``[1, 2]``: the benches run once per thread count."""
    try:
        counts = sorted({int(t) for t in str(text).split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thread counts such as 1,2; got {text!r}") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1; got {text!r}")
    return counts


DEFAULT_THREADS = ",".join(str(t) for t in sorted({1, os.cpu_count() or 1}))


def torch_or_none():
    try:
        import torch
        return torch
    except ImportError:
        return None
