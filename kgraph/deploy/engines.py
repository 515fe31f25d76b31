"""The ONNX engines a kgraph file runs on, behind one interface, and seeded random inputs that
match a file's signature; shared by ``kgraph check`` and ``kgraph bench``.

``ENGINES[name]`` is an :class:`Engine`: ``engine(model, feeds)`` runs an ``onnx.ModelProto`` once
and returns its outputs (numpy arrays, in the model's output order); ``engine.compile(model,
device)`` prepares it once and returns ``run(feeds) -> outputs``, for repeated runs.

* ``ort``: ONNX Runtime, with kgraph's session options and device choice (``kgraph.runtime``).
* ``reference``: ``onnx.reference.ReferenceEvaluator``, the ONNX specification in numpy; it
  reads model-local functions (CTC) itself.
* ``openvino``: OpenVINO's CPU plugin (extra ``openvino``), at float32 precision (its default
  bf16/f16 inference differs from ONNX Runtime by ~1e-2) and on a copy of the model with its
  local functions inlined (its ONNX frontend has no conversion rule for custom-domain ops).
"""
import numpy as np

from .onnx_file import inline_local_functions
from .signature import signature

CHECK_DIM = 2  # what a symbolic dim becomes when the caller does not say: small and quick


class EngineError(ValueError):
    """An unknown engine, an engine that is not installed, or a device it cannot use."""


class Engine:
    name = None
    package = None  # the module it needs, when that is not a kgraph dependency
    extra = None    # the kgraph extra that installs it
    devices = ("cpu",)
    needs_inlined_functions = False

    def require(self):
        """Import the engine's package, or raise an ``EngineError`` naming the extra to install."""
        if self.package is None:
            return
        try:
            __import__(self.package)
        except ImportError as error:
            raise EngineError(f"engine {self.name!r} needs the {self.package!r} package, which is not "
                              f"installed ({error}); install it with: pip install 'kgraph-onnx[{self.extra}]'") from None

    def check_device(self, device):
        if device not in self.devices:
            raise EngineError(f"engine {self.name!r} runs on {', '.join(self.devices)}, not {device!r}")

    def prepare(self, model):
        """The model as this engine can read it."""
        return inline_local_functions(model) if self.needs_inlined_functions and model.functions else model

    def compile(self, model, device="cpu"):
        self.require()
        self.check_device(device)
        return self._compile(self.prepare(model), [o.name for o in model.graph.output], device)

    def __call__(self, model, feeds):
        return self.compile(model)(feeds)

    def _compile(self, model, output_names, device):
        raise NotImplementedError(f"engine {self.name!r} has no compile step")


class OnnxRuntime(Engine):
    name = "ort"
    devices = ("cpu", "cuda")

    def check_device(self, device):
        super().check_device(device)
        ort_providers(device)

    def _compile(self, model, output_names, device):
        import onnxruntime as ort

        from ..runtime.session import session_options

        session = ort.InferenceSession(model.SerializeToString(), sess_options=session_options(),
                                       providers=ort_providers(device))
        return lambda feeds: session.run(output_names, feeds)


def ort_providers(device, available=None):
    """ONNX Runtime's providers for ``device`` ("cpu" or "cuda"), chosen as kgraph's own compiled
    functions choose them (``kgraph.runtime.device``): "cuda" without a CUDAExecutionProvider is
    an ``EngineError`` saying what to install, never a silent fallback to the CPU."""
    import onnxruntime as ort

    from ..runtime.device import resolve_device

    available = ort.get_available_providers() if available is None else list(available)
    try:
        return resolve_device(device, available=available).providers
    except (RuntimeError, ValueError):
        raise EngineError(f"device {device!r}: this onnxruntime offers no CUDAExecutionProvider "
                          f"(available: {', '.join(available)}); install onnxruntime-gpu "
                          f"(pip install 'kgraph-onnx[gpu]') or use the cpu") from None


class Reference(Engine):
    name = "reference"

    def _compile(self, model, output_names, device):
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)
        return lambda feeds: [np.asarray(v) for v in evaluator.run(output_names, feeds)]


class OpenVINO(Engine):
    name = "openvino"
    package = "openvino"
    extra = "openvino"
    needs_inlined_functions = True

    def _compile(self, model, output_names, device):
        import openvino

        core = openvino.Core()
        compiled = core.compile_model(core.read_model(model.SerializeToString()), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})
        ports = [compiled.output(name) for name in output_names]

        def run(feeds):
            results = compiled(feeds)
            return [np.asarray(results[port]) for port in ports]
        return run


ENGINES = {engine.name: engine for engine in (OnnxRuntime(), Reference(), OpenVINO())}


def get_engine(name):
    """The engine called ``name``, installed, or an ``EngineError`` saying what is known or missing."""
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
    engine = ENGINES[name]
    engine.require()
    return engine


def parse_dims(pairs):
    """``["seq=16", ...]`` (``--dim NAME=SIZE``) as ``{"seq": 16}``."""
    dims = {}
    for pair in pairs or ():
        name, sep, size = pair.partition("=")
        if not sep or not name or not size.isdigit() or int(size) < 1:
            raise ValueError(f"--dim: expected NAME=SIZE with a positive size, got {pair!r}")
        dims[name] = int(size)
    return dims


def input_shapes(model, batch=CHECK_DIM, dims=None):
    """``{input name: concrete shape}``: a symbolic first dim is the batch size, a symbolic dim
    named in ``dims`` takes that size, any other symbolic dim is ``CHECK_DIM``."""
    dims = dims or {}
    inputs, _ = signature(model)
    unknown = sorted(set(dims) - {d for i in inputs for d in (i["shape"] or ()) if isinstance(d, str)})
    if unknown:
        names = sorted({d for i in inputs for d in (i["shape"] or ()) if isinstance(d, str)})
        raise ValueError(f"--dim names {', '.join(unknown)}, which no input has; the model's symbolic "
                         f"dims are {', '.join(names) or '(none)'}")
    shapes = {}
    for info in inputs:
        if info["shape"] is None:
            raise ValueError(f"input {info['name']!r} has no shape in the model (unknown rank); "
                             f"random inputs need at least its rank")
        shape = []
        for axis, d in enumerate(info["shape"]):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str) and d in dims:
                shape.append(dims[d])
            else:
                shape.append(batch if axis == 0 else CHECK_DIM)
        shapes[info["name"]] = tuple(shape)
    return shapes


def int_range(shapes):
    """``(low, high)``, inclusive, for integer inputs: small positive values, at most the smallest
    axis length > 1 among the inputs, so that they are valid as class ids, indices and sequence
    lengths along any axis of the model's other inputs (CTC's labels and lengths)."""
    lengths = [d for shape in shapes.values() for d in shape if d > 1]
    return 1, max(1, min(lengths, default=1))


def random_feeds(model, batch=CHECK_DIM, dims=None, seed=0):
    """Seeded random inputs matching ``model``'s signature: floats standard normal, integers in
    ``int_range``, booleans fair coin flips."""
    shapes = input_shapes(model, batch, dims)
    low, high = int_range(shapes)
    rng = np.random.default_rng(seed)
    inputs, _ = signature(model)
    feeds = {}
    for info in inputs:
        dtype, shape = np.dtype(info["dtype"]), shapes[info["name"]]
        if dtype.kind == "f":
            feeds[info["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[info["name"]] = rng.integers(low, high, shape, endpoint=True).astype(dtype)
        elif dtype.kind == "b":
            feeds[info["name"]] = rng.random(shape) < 0.5
        else:
            raise ValueError(f"input {info['name']!r} is {info['onnx_type']}; random inputs are made "
                             f"for float, integer and bool inputs only")
    return feeds


def compare(expected, actual):
    """``(diff, scale)``, elementwise: ``|actual - expected|`` and ``|expected|`` (as float64).
    Non-finite values agree only with the same non-finite value (CTC's loss is +inf for a label
    that cannot fit its input length, on every engine)."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    same_nonfinite = (np.isnan(expected) & np.isnan(actual)) | (np.isinf(expected) & (expected == actual))
    with np.errstate(invalid="ignore"):
        diff = np.where(same_nonfinite, 0.0, np.abs(expected - actual))
    diff = np.where(np.isnan(diff), np.inf, diff)  # a NaN on one side only is as far off as it gets
    scale = np.where(same_nonfinite, 1.0, np.abs(expected))
    return diff, scale


def within(diff, scale, rtol, atol):
    """Whether every element passes ``|actual - expected| <= atol + rtol * |expected|``."""
    return bool(np.all(diff <= atol + rtol * scale))
