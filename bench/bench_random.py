"""Random-op benchmark (issue 4): kgraph's threefry dropout mask vs ONNX Runtime's own RandomUniform.

    python bench/bench_random.py [--threads N] [--rounds R] [--shape 256x512] [--rates 0.2,0.5]

Workload: dropout on a float32 tensor (default [256, 512]), one call = one fresh mask.  kgraph
decides each element from as few random bits as give the rate's 16-bit probability exactly:
rate 0.2 is the general case (8 bits plus a refinement of ties), rate 0.5 needs one bit.

* ``ort RandomUniform+Less+Mul`` — the target: a raw ONNX model drawing with ORT's native
  (engine-specific, non-portable) RandomUniform, keep = Less(rate, u), mask = Cast(keep) *
  scale, Mul by x — the same mask-and-multiply tail kgraph lowers to;
* ``kgraph K.dropout`` — ``K.function([x], [K.dropout(x, rate)])`` called as Keras calls it:
  the full Python path, the counter variable fed in and written back every call;
* ``kgraph K.dropout (session only)`` — the same lowered model run directly on its session;
* ``kgraph K.random_uniform`` and ``ort RandomUniform`` — one uniform per element, for context;
  a last table adds normals (kgraph's Box-Muller in exact arithmetic, so that every engine gives
  the same bits) and truncated normals against ORT's RandomNormal.

Both engines use the same intra-op thread count (KGRAPH_NUM_THREADS for kgraph) and are timed
interleaved round by round; the table shows medians and the ratio to the target.  The first
check: kgraph's drop rate and scale are what the rate asks for.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CPU, measure, ort_options  # noqa: E402


def ort_models(shape, rate):
    from onnx import TensorProto, helper, numpy_helper
    value = helper.make_tensor_value_info

    def model(nodes, inputs, outputs, inits):
        g = helper.make_graph(nodes, "baseline", inputs, outputs, initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        m.ir_version = 8
        return m

    consts = [numpy_helper.from_array(np.array(rate, np.float32), "rate"),
              numpy_helper.from_array(np.array(1 / (1 - rate), np.float32), "scale")]
    dropout = model(
        [helper.make_node("RandomUniform", [], ["u"], shape=list(shape), dtype=TensorProto.FLOAT),
         helper.make_node("Less", ["rate", "u"], ["keep"]),
         helper.make_node("Cast", ["keep"], ["kept"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["kept", "scale"], ["mask"]),
         helper.make_node("Mul", ["x", "mask"], ["y"])],
        [value("x", TensorProto.FLOAT, list(shape))], [value("y", TensorProto.FLOAT, list(shape))], consts)
    uniform = model([helper.make_node("RandomUniform", [], ["u"], shape=list(shape), dtype=TensorProto.FLOAT)],
                    [], [value("u", TensorProto.FLOAT, list(shape))], [])
    return dropout, uniform


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--shape", default="256x512")
    parser.add_argument("--rates", default="0.2,0.5")
    args = parser.parse_args()
    shape = tuple(int(d) for d in args.shape.split("x"))
    os.environ["KGRAPH_NUM_THREADS"] = str(args.threads)

    import onnxruntime as ort

    import kgraph.backend as K

    for rate in (float(r) for r in args.rates.split(",")):
        bench_rate(args, shape, rate, ort, K)
    bench_normals(args, shape, ort, K)


def bench_normals(args, shape, ort, K):
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("RandomNormal", [], ["z"], shape=list(shape), dtype=TensorProto.FLOAT)],
                              "normal", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    ort_normal = ort.InferenceSession(model.SerializeToString(), ort_options(args.threads),
                                      providers=["CPUExecutionProvider"])
    k_normal = K.function([], [K.random_normal(shape, seed=1)])
    k_truncated = K.function([], [K.truncated_normal(shape, seed=1)])
    engines = {"ort RandomNormal": lambda: ort_normal.run(None, {}),
               "kgraph K.random_normal": lambda: k_normal([]),
               "kgraph K.truncated_normal": lambda: k_truncated([])}
    medians = measure(engines, args.rounds, target_seconds=0.05)
    cpu = dict(CPU)
    print(f"normals, shape {shape}, {args.threads} intra-op thread(s), for context")
    print(f"{'engine':36s} {'wall ms':>9s} {'ratio':>7s} {'cpu ms':>9s} {'ratio':>7s}")
    for name in engines:
        print(f"{name:36s} {medians[name] * 1e3:9.3f} {medians[name] / medians['ort RandomNormal']:6.2f}x "
              f"{cpu[name] * 1e3:9.3f} {cpu[name] / cpu['ort RandomNormal']:6.2f}x")


def bench_rate(args, shape, rate, ort, K):
    opts = ort_options(args.threads)
    dropout_model, uniform_model = ort_models(shape, rate)
    ort_dropout = ort.InferenceSession(dropout_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ort_uniform = ort.InferenceSession(uniform_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) + 3  # no zeros of its own
    xp = K.placeholder(shape, dtype="float32")
    k_dropout = K.function([xp], [K.dropout(xp, rate, seed=1)])
    k_uniform = K.function([], [K.random_uniform(shape, seed=1)])
    session, counter = k_dropout.session, np.zeros((), np.uint32)
    feeds = {"in0": x, "var0": counter}

    masks = np.stack([k_dropout([x])[0] == 0 for _ in range(20)])
    kept = k_dropout([x])[0]
    kept_ratio = kept[kept != 0] / x[kept != 0]
    print(f"kgraph K.dropout({args.shape}, {rate}): drop rate {masks.mean():.4f} over 20 calls, "
          f"scale {kept_ratio.mean():.6f} (1 / (1 - rate) = {1 / (1 - rate):.6f}), "
          f"fresh masks: {not np.array_equal(masks[0], masks[1])}")

    engines = {
        "ort RandomUniform+Less+Mul": lambda: ort_dropout.run(None, {"x": x}),
        "kgraph K.dropout": lambda: k_dropout([x]),
        "kgraph K.dropout (session only)": lambda: session.run(None, feeds),
        "ort RandomUniform": lambda: ort_uniform.run(None, {}),
        "kgraph K.random_uniform": lambda: k_uniform([]),
    }
    medians = measure(engines, args.rounds, target_seconds=0.05)
    cpu = dict(CPU)
    reference, cpu_reference = medians["ort RandomUniform+Less+Mul"], cpu["ort RandomUniform+Less+Mul"]
    print(f"\nmedian time per call, shape {shape}, rate {rate}, {args.threads} intra-op thread(s), "
          f"{args.rounds} rounds")
    # with one intra-op thread ORT computes on the calling thread, so its CPU time is the work
    # itself, unaffected by other processes competing for the cores (wall time is not)
    print(f"{'engine':36s} {'wall ms':>9s} {'ratio':>7s} {'cpu ms':>9s} {'ratio':>7s}")
    for name in engines:
        print(f"{name:36s} {medians[name] * 1e3:9.3f} {medians[name] / reference:6.2f}x "
              f"{cpu[name] * 1e3:9.3f} {cpu[name] / cpu_reference:6.2f}x")
    note = "" if args.threads == 1 else " (cpu: this thread only)"
    print(f"\nrate {rate}: ratio kgraph K.dropout / ORT RandomUniform+Less+Mul: "
          f"wall {medians['kgraph K.dropout'] / reference:.2f}, "
          f"thread cpu {cpu['kgraph K.dropout'] / cpu_reference:.2f}{note} (target <= 1.5)\n")


if __name__ == "__main__":
    main()
