"""``kgraph serve`` end to end, in ``.venv-serve/`` (nvidia-pytriton needs numpy < 2): for each
model kgraph exported (an MLP, an RNN's Loop, the CTC local function), ``python -m kgraph serve``
runs as a subprocess on free loopback ports; tritonclient HTTP and gRPC requests get kgraph's own
outputs (and exactly what onnxruntime gives on the same file); after SIGINT / SIGTERM the command,
its tritonserver child and the python-backend stub are gone.  One server per model, in turn."""
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

import kgraph
import kgraph.backend as K
from deploy_models import Exported, kgraph_cli, models  # noqa: F401  (models: the session fixture)
from kgraph.deploy.serve import ServeError, check_numpy

START_DEADLINE_S = 120  # only so a broken server fails the test instead of hanging it
TRITON_TYPES = {np.dtype("float32"): "FP32", np.dtype("int32"): "INT32", np.dtype("int64"): "INT64"}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read()
    except OSError:
        return None


def _gone(pid):
    """Exited: no such process, or a zombie (it has exited and only waits for its parent, or
    init, to collect its status)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat.rsplit(")", 1)[1].split()[0] == "Z"


def _descendants(pid):
    """``{pid: command line}`` of every process below ``pid``, read from /proc."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        stat = _proc_stat(entry)
        if stat:
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as f:
                        found[child] = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                todo.append(child)
    return found


class Served:
    """``python -m kgraph serve ...`` running; its stdout lines arrive on a queue."""

    def __init__(self, path, *options):
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self.stderr = open(f"{path}.serve.stderr", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kgraph", "serve", path, "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), *options],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self):
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.output.append(line)
            if line.startswith("ready"):
                return "".join(self.output)
        self.stop(signal.SIGKILL)
        self.stderr.seek(0)
        pytest.fail(f"kgraph serve did not get ready; stdout:\n{''.join(self.output)}\nstderr:\n"
                    f"{self.stderr.read()[-4000:]}")

    def stop(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()


def _infer(module, url, name, feeds, output_names):
    client = module.InferenceServerClient(url)
    try:
        inputs = []
        for key, value in feeds.items():
            tensor = module.InferInput(key, list(value.shape), TRITON_TYPES[value.dtype])
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        outputs = [module.InferRequestedOutput(n) for n in output_names]
        result = client.infer(name, inputs, outputs=outputs)
        return [result.as_numpy(n) for n in output_names]
    finally:
        client.close()


@pytest.fixture(scope="module")
def served_models(models, tmp_path_factory):  # noqa: F811
    """kgraph's three deployment models, and one whose input and output are a scalar per sample
    (shape (batch,)), which Triton serves as (batch, 1)."""
    x = K.placeholder((None, 4), name="x")
    scale = K.placeholder((None,), name="scale")
    y = K.sum(x, axis=1) * scale
    y.name = "scaled_sum"
    feeds = {"x": np.random.default_rng(3).standard_normal((3, 4)).astype("float32"),
             "scale": np.array([0.5, -1.0, 2.0], np.float32)}
    fn = K.function([x, scale], [y], name="per_sample")
    path = kgraph.export(fn, tmp_path_factory.mktemp("served") / "per_sample.onnx")
    return {**models, "per_sample": Exported(path, fn, feeds)}


def _batched_view(array):
    """What a client of a batching model sends and gets for a tensor of shape (batch,)."""
    return array.reshape(-1, 1) if array.ndim == 1 else array


# (model, serve options, the signal that stops it): batching on for three of them
CASES = [("mlp", ["--max-batch-size", "8"], signal.SIGINT),
         ("rnn", [], signal.SIGTERM),
         ("ctc", ["--max-batch-size", "4", "--name", "ctc_loss"], signal.SIGINT),
         ("per_sample", ["--max-batch-size", "4"], signal.SIGINT)]


@pytest.mark.parametrize("which, options, stop_signal", CASES, ids=[c[0] for c in CASES])
def test_serve_answers_http_and_grpc_then_stops(served_models, which, options, stop_signal):
    exported = served_models[which]
    name = options[options.index("--name") + 1] if "--name" in options else which
    session = ort.InferenceSession(exported.path, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    batched = "--max-batch-size" in options
    view = _batched_view if batched else (lambda a: a)

    server = Served(exported.path, *options)
    try:
        printed = server.wait_ready()
        assert f"http://127.0.0.1:{server.http_port}/v2/models/{name}" in printed
        assert f"grpc://127.0.0.1:{server.grpc_port}" in printed
        children = _descendants(server.proc.pid)
        triton = [pid for pid, cmd in children.items() if "/tritonserver " in cmd]
        stub = [pid for pid, cmd in children.items() if "triton_python_backend_stub" in cmd]
        assert len(triton) == 1 and len(stub) == 1, children
        assert "--http-address 127.0.0.1" in children[triton[0]].replace("=", " ")
        assert "--grpc-address 127.0.0.1" in children[triton[0]].replace("=", " ")

        batches = [exported.feeds]
        if batched:  # another batch size through the same batched model
            batches.append({k: v[:1] for k, v in exported.feeds.items()})
        for feeds in batches:
            expected = [view(e) for e in session.run(output_names, feeds)]
            client_feeds = {k: view(v) for k, v in feeds.items()}
            for module, url in ((httpclient, f"127.0.0.1:{server.http_port}"),
                                (grpcclient, f"127.0.0.1:{server.grpc_port}")):
                got = _infer(module, url, name, client_feeds, output_names)
                for g, e in zip(got, expected):
                    assert g.dtype == e.dtype and g.shape == e.shape
                    # the same file on the same runtime, up to float32 rounding: the server's
                    # inputs come out of shared memory at another alignment, and ORT's ReduceSum
                    # on a misaligned copy of the same array differs by 1 ulp (measured here)
                    np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
        # and kgraph's own outputs, computed when the model was exported
        got = _infer(httpclient, f"127.0.0.1:{server.http_port}", name,
                     {k: view(v) for k, v in exported.feeds.items()}, output_names)
        for g, e in zip(got, exported.outputs):
            np.testing.assert_allclose(g, view(np.asarray(e)), rtol=1e-5, atol=1e-6)
    finally:
        status = server.stop(stop_signal)
    assert status == 0, f"kgraph serve exited with {status}"
    assert "stopping" in "".join(server.output) + "".join(iter(server.lines.get, None))
    for pid, cmd in children.items():
        if "multiprocessing.resource_tracker" in cmd:
            continue  # the serve process's own helper: it sees its parent's exit and ends by itself
        assert _gone(pid), f"process {pid} ({cmd[:80]}) outlived kgraph serve"
    assert _gone(server.proc.pid)


def _fixed_batch_model(path):
    x = K.placeholder((2, 4), name="features")
    w = K.variable(np.arange(12, dtype="float32").reshape(4, 3), name="w")
    return kgraph.export(K.function([x], [K.dot(x, w)], name="fixed"), path)


def test_serve_bad_input_exits_2_with_a_clear_message(tmp_path):
    missing = tmp_path / "missing.onnx"
    result = kgraph_cli("serve", missing)
    assert result.returncode == 2 and "no such file" in result.stderr and str(missing) in result.stderr

    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a model\n")
    result = kgraph_cli("serve", not_onnx)
    assert result.returncode == 2 and "is not an ONNX model" in result.stderr

    fixed = _fixed_batch_model(tmp_path / "fixed.onnx")
    result = kgraph_cli("serve", fixed, "--max-batch-size", "4", "--http-port", "0", "--grpc-port", "0")
    assert result.returncode == 2, result.stderr
    assert "'features' has a fixed first dim 2" in result.stderr
    assert "--max-batch-size 0" in result.stderr

    with socket.socket() as taken:  # a port in use: refused at once, not after Triton's long wait
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kgraph_cli("serve", fixed, "--http-port", str(port), "--grpc-port", "0")
    assert result.returncode == 2, result.stderr
    assert f"HTTP port {port} on 127.0.0.1 is not free" in result.stderr

    unknown_op = tmp_path / "unknown_op.onnx"  # parses as ONNX, but no runtime has the op
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.unknown")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 2])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                           onnx.helper.make_opsetid("example.unknown", 1)],
                                     ir_version=8), unknown_op)
    result = kgraph_cli("serve", unknown_op, "--http-port", "0", "--grpc-port", "0")
    assert result.returncode == 2, result.stderr
    assert "ONNX Runtime cannot load the model" in result.stderr and "NoSuchOp" in result.stderr

    result = kgraph_cli("serve", fixed, "--name", "bad name", "--http-port", "0", "--grpc-port", "0")
    assert result.returncode == 2 and "model name 'bad name'" in result.stderr
    assert "Traceback" not in result.stderr


def test_numpy_2_is_refused():
    check_numpy()  # this environment's numpy (< 2, as the serve extra installs it) passes
    with pytest.raises(ServeError, match=r"needs numpy < 2, found numpy 2\.2\.6"):
        check_numpy("2.2.6")
