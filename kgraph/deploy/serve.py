"""Serving an ONNX file on a real Triton Inference Server (KServe v2 over HTTP and gRPC), through
NVIDIA PyTriton (the ``serve`` extra), with the model run by ONNX Runtime inside the inference
callable.

PyTriton starts Triton's own ``tritonserver`` binary (bundled in its wheel) as a child process;
Triton's python backend runs PyTriton's proxy in a ``triton_python_backend_stub`` grandchild, which
hands each request to the callable in this process.  Two facts about that path on this machine,
both handled here rather than left to the user:

- The stub is linked against ``libpython3.X.so.1.0`` and finds it through the dynamic loader, so
  with the loader's default path it picks the system's libpython (Debian's 3.11.2 here), runs
  this interpreter's standard library (pyenv's 3.11.7) on it and fails to load the model
  (``'_thread.RLock' object has no attribute '_recursion_count'``).  The running interpreter's own
  LIBDIR goes first on ``LD_LIBRARY_PATH`` of the server process (``stub_library_path``).
- nvidia-pytriton 0.7 requires numpy < 2; with numpy 2 forced into its environment, responses
  come back as empty tensors ("cannot reshape array of size 0", measured here; an earlier try
  with the raw python backend got silently corrupted ones).  ``check_numpy`` refuses numpy 2.

Nothing here imports pytriton at module level, so the signature checks work without the extra.
"""
import os
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time

import numpy as np

from .signature import signature, shape_text
from .triton import default_name, _NAME

HOST = "127.0.0.1"
# Triton waits this long for open client connections and in-flight requests when told to stop;
# its default (30 s) makes Ctrl-C look like a hang while a client keeps a connection open.
EXIT_TIMEOUT_S = 5


class ServeError(ValueError):
    """The model or the options cannot be served as asked (bad input: exit status 2)."""


def check_numpy(version=None):
    """Refuse numpy 2 (see the module's docstring): ``ServeError`` naming the version found."""
    version = np.__version__ if version is None else version
    major = int(version.split(".")[0])
    if major >= 2:
        raise ServeError(
            f"kgraph serve needs numpy < 2, found numpy {version}: nvidia-pytriton (which starts "
            f"the Triton server) requires numpy < 2 and with numpy 2 it returns empty or corrupted "
            f"tensors; install kgraph's serve extra in an environment of its own "
            f"(pip install 'kgraph-onnx[serve]', which pins numpy < 2)")


def _tensor_spec(tensor, batched, role):
    shape = tensor["shape"]
    if shape is None:
        raise ServeError(f"{role} {tensor['name']!r} has no shape in the model; Triton needs its rank")
    if tensor["onnx_type"] in ("BFLOAT16", "STRING") or tensor["dtype"] == "object":
        raise ServeError(f"{role} {tensor['name']!r} has type {tensor['onnx_type']}; kgraph serve "
                         f"serves numeric and bool tensors")
    if batched:
        if not shape or isinstance(shape[0], int):
            first = "no batch dim (a scalar)" if not shape else f"a fixed first dim {shape[0]}"
            raise ServeError(
                f"{role} {tensor['name']!r} has {first} (shape {shape_text(shape)}), but "
                f"--max-batch-size > 0 needs a symbolic first (batch) dim; export the model with a "
                f"None batch dim, or use --max-batch-size 0")
        shape = shape[1:]
    elif not shape:
        raise ServeError(f"{role} {tensor['name']!r} is a scalar; Triton serves tensors of rank >= 1 "
                         f"without batching (use --max-batch-size > 0 with a batch dim, or export it "
                         f"with shape (1,))")
    dims = tuple(-1 if not isinstance(d, int) else d for d in shape)
    # Triton needs rank >= 1 after the batch dim: a per-sample scalar (shape (batch,)) is served
    # as (batch, 1), as `kgraph deploy triton` does with dims [1] reshape [], and the callable
    # drops / adds that 1 around ONNX Runtime
    return {"name": tensor["name"], "dtype": np.dtype(tensor["dtype"]), "shape": dims or (1,),
            "per_sample_scalar": not dims}


def serve_plan(model, name, max_batch_size=0):
    """What Triton is told about ``model``: ``{"name", "max_batch_size", "inputs", "outputs"}``,
    each tensor ``{"name", "dtype" (numpy), "shape" (without the batch dim when batching; -1 for
    a symbolic dim), "per_sample_scalar"}``.  Raises ``ServeError`` when the model cannot be served so."""
    if not _NAME.match(name or ""):
        raise ServeError(f"model name {name!r}: expected letters, digits, '_', '.' or '-' "
                         f"(not starting with '.' or '-')")
    if max_batch_size < 0:
        raise ServeError(f"max batch size {max_batch_size}: expected an integer >= 0")
    try:
        inputs, outputs = signature(model)
    except ValueError as error:
        raise ServeError(str(error)) from None
    if not inputs:
        raise ServeError("the model has no inputs to feed; Triton needs at least one")
    batched = max_batch_size > 0
    return {"name": name, "max_batch_size": max_batch_size,
            "inputs": [_tensor_spec(t, batched, "input") for t in inputs],
            "outputs": [_tensor_spec(t, batched, "output") for t in outputs]}


def stub_library_path(environ=None):
    """``LD_LIBRARY_PATH`` for the Triton server process: this interpreter's shared-libpython
    folder first (the stub must load the libpython that matches the standard library it runs),
    then what was there.  Unchanged when this Python has no shared libpython."""
    environ = os.environ if environ is None else environ
    current = environ.get("LD_LIBRARY_PATH", "")
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not (libdir and soname and os.path.exists(os.path.join(libdir, soname))):
        return current
    parts = [p for p in current.split(":") if p and p != libdir]
    return ":".join([libdir] + parts)


def check_port_free(port, what):
    """``ServeError`` now if ``port`` is taken on 127.0.0.1, rather than Triton failing after its
    120 s start-up wait."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as error:
            raise ServeError(f"{what} port {port} on {HOST} is not free ({error.strerror}); "
                             f"choose another with --{what.lower()}-port") from None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _children(pid):
    """The pids whose parent is ``pid``, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name in parentheses may hold spaces; the fields after it are fixed
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def server_processes(pid):
    """What a server started from process ``pid`` runs: tritonserver, its python-backend stub and
    PyTriton's tensor-store manager.  multiprocessing's resource tracker is left out: it belongs to
    this process, not to the server, and ends when this process ends (killing it early would leak
    the shared memory it tracks)."""
    return [p for p in descendants(pid) if "multiprocessing.resource_tracker" not in _cmdline(p)]


def alive(pid):
    """Whether ``pid`` runs (a zombie does not count: it has exited and waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _inference_callable(session, plan):
    """PyTriton's callable: a list of requests in, one dict of outputs per request out.  Each
    request runs on its own (no ``@batch`` concatenation), so requests with different sizes of a
    symbolic non-batch dim (sequence length) stay correct."""
    input_specs, output_specs = plan["inputs"], plan["outputs"]
    output_names = [o["name"] for o in output_specs]

    def infer(requests):
        responses = []
        for request in requests:
            feeds = {}
            for spec in input_specs:
                value = np.asarray(request[spec["name"]])
                feeds[spec["name"]] = value.reshape(value.shape[:1]) if spec["per_sample_scalar"] else value
            results = session.run(output_names, feeds)
            responses.append({spec["name"]: value.reshape(-1, 1) if spec["per_sample_scalar"] else value
                              for spec, value in zip(output_specs, map(np.asarray, results))})
        return responses

    return infer


class ModelServer:
    """One ONNX file on a Triton Inference Server on 127.0.0.1.  ``start()`` returns once the
    model is ready; ``stop()`` (also on leaving a ``with`` block) stops Triton and makes sure its
    processes are gone.  Port 0 picks a free port."""

    def __init__(self, model_path, model=None, name=None, http_port=8000, grpc_port=8001, max_batch_size=0):
        import onnx

        self.model_path = os.path.abspath(model_path)
        model = onnx.load(model_path, load_external_data=False) if model is None else model
        self.plan = serve_plan(model, name or default_name(model_path), max_batch_size)
        self.name = self.plan["name"]
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        if self.http_port == self.grpc_port:
            raise ServeError(f"--http-port and --grpc-port are both {self.http_port}; expected two ports")
        self._triton = None
        self._log_dir = None
        self.last_log = ""
        self._pids = []

    @property
    def http_url(self):
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_url(self):
        return f"grpc://{HOST}:{self.grpc_port}"

    @property
    def log_path(self):
        return os.path.join(self._log_dir.name, "tritonserver.log") if self._log_dir else None

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except (OSError, TypeError):
            return ""

    def start(self):
        check_numpy()
        check_port_free(self.http_port, "HTTP")
        check_port_free(self.grpc_port, "gRPC")
        import onnxruntime as ort
        from pytriton.model_config import ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig

        from ..runtime.device import resolve_device
        from ..runtime.session import session_options

        try:
            session = ort.InferenceSession(self.model_path, sess_options=session_options(),
                                           providers=resolve_device().providers)
        except Exception as error:  # a file ONNX parses but ONNX Runtime cannot run is bad input
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ServeError(f"{self.model_path}: ONNX Runtime cannot load the model ({message})") from None
        # Triton's own log goes to a file (its start-up tables would bury the URLs on stdout);
        # its tail is shown when the server fails
        self._log_dir = tempfile.TemporaryDirectory(prefix="kgraph-serve-")
        config = TritonConfig(http_address=HOST, http_port=self.http_port, grpc_address=HOST,
                              grpc_port=self.grpc_port, allow_metrics=False, allow_gpu_metrics=False,
                              allow_cpu_metrics=False, exit_timeout_secs=EXIT_TIMEOUT_S,
                              log_file=self.log_path)
        saved = os.environ.get("LD_LIBRARY_PATH")
        os.environ["LD_LIBRARY_PATH"] = stub_library_path()
        try:
            self._triton = Triton(config=config)
            self._triton.bind(
                model_name=self.name, infer_func=_inference_callable(session, self.plan),
                inputs=[Tensor(name=t["name"], dtype=t["dtype"], shape=t["shape"]) for t in self.plan["inputs"]],
                outputs=[Tensor(name=t["name"], dtype=t["dtype"], shape=t["shape"]) for t in self.plan["outputs"]],
                config=ModelConfig(max_batch_size=self.plan["max_batch_size"], batching=self.plan["max_batch_size"] > 0),
                strict=True)
            self._triton.run()
        except BaseException:
            self.stop()
            raise
        finally:  # only the server process needed it; this process's own loader is unaffected
            if saved is None:
                os.environ.pop("LD_LIBRARY_PATH", None)
            else:
                os.environ["LD_LIBRARY_PATH"] = saved
        # remembered now, while they run: after a hard stop the stub is no longer our descendant
        self._pids = server_processes(os.getpid())
        return self

    def is_alive(self):
        return self._triton is not None and self._triton.is_alive()

    def stop(self, timeout=15):
        """Stop Triton; then wait for every process it started, killing what outlives
        ``timeout`` seconds.  Safe to call twice."""
        triton, self._triton = self._triton, None
        if triton is not None:
            try:
                triton.stop()
            except Exception:  # a half-started server: what matters is that its processes end
                pass
        pids = set(self._pids) | set(server_processes(os.getpid()))
        self._pids = []
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self._log_dir is not None:
            self.last_log = self.log_tail()  # for the error message of a server that failed
            self._log_dir.cleanup()
            self._log_dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def serve_until_signal(server, out=sys.stdout):
    """Start ``server``, print its URLs, and serve until SIGINT or SIGTERM (returns 0) or until
    the Triton server dies on its own (returns 1, with the tail of its log on stderr)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except ServeError:
            raise
        except Exception as error:  # Triton refused the model or died starting: say why, briefly
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"kgraph serve: the Triton server did not start: {first}\n{server.last_log}",
                  file=sys.stderr, flush=True)
            return 1
        print(f"serving {server.name} ({server.model_path}) on Triton Inference Server", file=out)
        print(f"  HTTP  {server.http_url}/v2/models/{server.name}", file=out)
        print(f"  gRPC  {server.grpc_url}  (tritonclient.grpc url {HOST}:{server.grpc_port})", file=out)
        print("ready; Ctrl-C or SIGTERM stops it", file=out, flush=True)
        while not stop.wait(0.5):
            if not server.is_alive():
                print(f"kgraph serve: the Triton server stopped on its own; its log ends:\n"
                      f"{server.log_tail()}", file=sys.stderr, flush=True)
                return 1
        print("stopping", file=out, flush=True)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
