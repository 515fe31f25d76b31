"""Core benchmark (issue 2): what a compiled K.function costs against raw ONNX Runtime.

    python bench/bench_core.py [--threads 1,2] [--rounds R]

(a) per-call cost of a one-Add function (numpy in, numpy out): K.function vs the public
    ``InferenceSession.run`` on the same exported model vs ORT's C-level ``run`` vs a
    pre-bound IOBinding.
(b) MLP 784-512-512-10 forward (softmax output), batch 32 and 256: K.function (frozen mode:
    weights as initializers) vs raw ORT with the weights as initializers vs raw ORT with the
    weights bound as OrtValues vs PyTorch eager (skipped when torch is not installed).

All engines run in one process, interleaved round by round, with the same thread count
(ORT intra-op threads; torch.set_num_threads).  Medians of per-call times; ratios against the
reference named in each table.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DEFAULT_THREADS, measure, ort_session, print_table, setup_threads, thread_counts, \
    torch_or_none  # noqa: E402


# -- (a) per-call overhead --------------------------------------------------------------------
def bench_per_call(threads, rounds):
    import onnxruntime as ort

    import kgraph.backend as K

    x = K.placeholder((4,), name="x")
    y = K.placeholder((4,), name="y")
    f = K.function([x, y], [x + y], name="add")
    model = f.to_onnx()
    (out_name,) = [o.name for o in model.graph.output]
    sess = ort_session(model, threads)
    a = np.arange(4, dtype=np.float32)
    b = np.ones(4, dtype=np.float32)
    feeds = {"x": a, "y": b}
    run_c = sess._sess.run
    binding = sess.io_binding()
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(a))
    binding.bind_ortvalue_input("y", ort.OrtValue.ortvalue_from_numpy(b))
    binding.bind_ortvalue_output(out_name, ort.OrtValue.ortvalue_from_shape_and_type([4], np.float32))
    np.testing.assert_array_equal(f([a, b])[0], sess.run(None, feeds)[0])

    engines = {
        "K.function": lambda: f([a, b]),
        "InferenceSession.run": lambda: sess.run(None, feeds),
        "ORT C-level run": lambda: run_c([out_name], feeds, None),
        "IOBinding, pre-bound": lambda: sess.run_with_iobinding(binding),
    }
    medians = measure(engines, rounds, target_seconds=0.005)
    print_table("(a) per call, one Add on float32[4] (numpy in, numpy out)", medians, "InferenceSession.run",
                notes={"IOBinding, pre-bound": "(outputs stay OrtValues)"})
    return medians


# -- (b) MLP forward --------------------------------------------------------------------------
SIZES = (784, 512, 512, 10)


def mlp_weights(seed=0):
    rng = np.random.default_rng(seed)
    weights = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        limit = np.sqrt(6.0 / (n_in + n_out))
        weights += [rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32),
                    rng.uniform(-0.1, 0.1, n_out).astype(np.float32)]
    return weights


def kgraph_mlp_forward(weights):
    import kgraph.backend as K
    x = K.placeholder((None, SIZES[0]), name="x")
    params = [K.variable(w) for w in weights]
    h = x
    for i in range(len(SIZES) - 1):
        h = K.bias_add(K.dot(h, params[2 * i]), params[2 * i + 1])
        h = K.relu(h) if i < len(SIZES) - 2 else K.softmax(h)
    return x, h, params


def raw_mlp_model(weights, as_initializers):
    """The forward pass written by hand: MatMul, Add, Relu, ..., Softmax."""
    from onnx import TensorProto, helper, numpy_helper
    names = [f"W{i // 2}" if i % 2 == 0 else f"b{i // 2}" for i in range(len(weights))]
    nodes, h = [], "x"
    for i in range(len(SIZES) - 1):
        nodes.append(helper.make_node("MatMul", [h, f"W{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]))
        h = f"h{i}" if i < len(SIZES) - 2 else "probs"
        nodes.append(helper.make_node("Relu" if i < len(SIZES) - 2 else "Softmax", [f"z{i}"], [h],
                                      **({} if i < len(SIZES) - 2 else {"axis": -1})))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIZES[0]])]
    initializers = []
    if as_initializers:
        initializers = [numpy_helper.from_array(w, n) for w, n in zip(weights, names)]
    else:
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(w.shape)) for w, n in zip(weights, names)]
    graph = helper.make_graph(nodes, "mlp", inputs,
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", SIZES[-1]])],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model, names


def torch_mlp_forward(weights, torch):
    params = [torch.from_numpy(w) for w in weights]

    def forward(xb):
        with torch.no_grad():
            h = torch.from_numpy(xb)
            for i in range(len(SIZES) - 1):
                h = torch.addmm(params[2 * i + 1], h, params[2 * i])
                h = torch.relu(h) if i < len(SIZES) - 2 else torch.softmax(h, dim=-1)
            return h.numpy()
    return forward


def bench_mlp_forward(threads, rounds, batch):
    import onnxruntime as ort

    import kgraph.backend as K
    from kgraph.runtime import Function

    weights = mlp_weights()
    x_np = np.random.default_rng(1).normal(size=(batch, SIZES[0])).astype(np.float32)
    x, probs, params = kgraph_mlp_forward(weights)
    frozen = K.function([x], [probs], name="mlp")
    fed = Function([x], [probs], name="mlp_fed", mode="fed")
    assert frozen.mode == "frozen"

    init_sess = ort_session(raw_mlp_model(weights, True)[0], threads)
    input_model, names = raw_mlp_model(weights, False)
    input_sess = ort_session(input_model, threads)
    binding = input_sess.io_binding()
    weight_values = [ort.OrtValue.ortvalue_from_numpy(w) for w in weights]
    for n, v in zip(names, weight_values):
        binding.bind_ortvalue_input(n, v)

    def raw_bound(xb=x_np):
        binding.bind_cpu_input("x", xb)
        binding.bind_output("probs")
        input_sess.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()

    init_run = init_sess._sess.run
    engines = {
        "K.function (frozen)": lambda: frozen([x_np]),
        "K.function (fed)": lambda: fed([x_np]),
        "raw ORT, initializers": lambda: init_run(["probs"], {"x": x_np}, None),
        "raw ORT, OrtValue weights": raw_bound,
    }
    torch = torch_or_none()
    if torch is not None:
        torch_forward = torch_mlp_forward(weights, torch)
        engines["PyTorch eager"] = lambda: torch_forward(x_np)
    reference = init_run(["probs"], {"x": x_np}, None)[0]
    for name, fn in engines.items():  # every engine computes the same thing
        out = fn()
        out = out[0] if isinstance(out, list) else out
        np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-6, err_msg=name)
    medians = measure(engines, rounds, target_seconds=0.02)
    print_table(f"(b) MLP 784-512-512-10 forward, batch {batch}", medians, "raw ORT, initializers",
                notes={"K.function (frozen)": "(target <= 1.05x at batch 256)",
                       "K.function (fed)": "(weights fed as numpy each call)"})
    if torch is not None:
        t = medians["PyTorch eager"]
        print(f"  vs PyTorch eager: raw ORT initializers {medians['raw ORT, initializers'] / t:.2f}x, "
              f"K.function {medians['K.function (frozen)'] / t:.2f}x")
    return medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=thread_counts, default=DEFAULT_THREADS,
                        help="thread counts for every engine, comma-separated (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=40, help="timing rounds per engine")
    args = parser.parse_args(argv)
    import onnxruntime as ort
    torch = torch_or_none()
    print(f"kgraph core benchmark: onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"torch {torch.__version__ if torch else 'not installed (column skipped)'}; "
          f"{os.cpu_count()} cores")
    for threads in args.threads:
        setup_threads(threads)
        print(f"\n== {threads} thread{'s' if threads > 1 else ''} (ORT intra-op, torch) ==")
        bench_per_call(threads, args.rounds * 3)
        for batch in (32, 256):
            bench_mlp_forward(threads, args.rounds, batch)


if __name__ == "__main__":
    main()
