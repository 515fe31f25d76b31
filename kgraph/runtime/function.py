"""A compiled function: a list of numpy arrays in, a list out, variable updates written back.

Semantics: every output and every new variable value is computed from the values the variables
had at the start of the call (they are all outputs of one session run); then the updates are
applied.  The per-call path is kept to a feed check, one C-level run and the write-back.

Variable placement, chosen per function:

* *fed* — variables are session inputs, their current arrays fed each call.  Used by functions
  that update variables (training steps) and by ``K.eval``.  The variables such a function reads
  but never updates (Keras's ``lr``, ``momentum``) are baked in as constants instead, so the
  graph rewrites of ``kgraph.rewrite`` fold them (``0 * m`` is gone); a change to one rebuilds the
  session, and a function whose baked values keep changing stops baking.
* *frozen* — variables are initializers, so ONNX Runtime can constant-fold and pre-pack them
  (~10-30% faster for dense layers).  Used by functions without updates (prediction).  When a
  variable changes, the session is rebuilt on the next call; a function whose variables keep
  changing faster than a rebuild pays for itself switches to *fed* for good.
* *resident* (CUDA) — variables stay on the device as OrtValues bound with IOBinding; update
  outputs are written into a second buffer per variable and swapped in after the run (ONNX
  Runtime must never see one OrtValue bound as both input and output of a run).
"""
import warnings

import numpy as np
import onnx
import onnxruntime as ort

from ..graph import Constant, Graph, Variable
from ..lower import DEFAULT_OPSET, lower_model
from ..lower.conv_affine import fold_conv_affine
from ..rewrite import specialize
from . import session as sessions
from .device import resolve_device

# a function rebuilt for new variable values after fewer calls than this since its last build
# stops specializing to them (frozen goes fed; fed stops baking its read-only variables)
MIN_CALLS_PER_REBUILD = 50


class FeedSpec:
    """Checks and converts one fed value, fast when it is already right."""

    __slots__ = ("placeholder", "dtype", "shape", "where", "ndim", "known_dims")

    def __init__(self, placeholder, where):
        self.placeholder = placeholder
        self.dtype = np.dtype(placeholder.dtype)
        self.shape = placeholder.shape
        self.where = where
        self.ndim = len(self.shape)
        self.known_dims = tuple((i, d) for i, d in enumerate(self.shape) if d is not None)

    def __call__(self, x):
        # the hot path of every call: plain loops and identity checks, no generators
        if type(x) is not np.ndarray or (x.dtype is not self.dtype and x.dtype != self.dtype):
            x = self.convert(x)
        shape = x.shape
        if shape != self.shape:
            if len(shape) != self.ndim:
                self.bad_shape(shape)
            for i, d in self.known_dims:
                if shape[i] != d:
                    self.bad_shape(shape)
        return x

    def bad_shape(self, shape):
        raise ValueError(f"{self.where}: input {self.placeholder.name!r} expects shape "
                         f"{_fmt(self.shape)}, got {_fmt(shape)}")

    def convert(self, x):
        with warnings.catch_warnings():  # numpy 1.x only warns about ragged lists
            warnings.simplefilter("ignore")
            try:
                arr = np.asarray(x)
            except Exception as e:  # ragged lists and the like (numpy 2)
                raise ValueError(f"{self.where}: input {self.placeholder.name!r} could not be read "
                                 f"as an array ({e})") from None
        if arr.dtype == object:
            raise ValueError(f"{self.where}: input {self.placeholder.name!r} could not be read as an "
                             f"array of numbers (ragged or mixed values)")
        target = self.dtype
        if arr.dtype == target:
            return arr
        ok = np.can_cast(arr.dtype, target, casting="same_kind") or (
            target.kind == "f" and arr.dtype.kind in "iub") or (
            target.kind == "b" and arr.dtype.kind in "iuf" and np.isin(arr, (0, 1)).all())
        if not ok:
            raise ValueError(f"{self.where}: input {self.placeholder.name!r} expects dtype {target.name}, "
                             f"got {arr.dtype.name}")
        return arr.astype(target)


class SparseFeedSpec:
    """The feed of a sparse placeholder: a ``scipy.sparse`` matrix or array (any format), an
    ``(indices, values, dense_shape)`` triple, or a dense array, converted to the three arrays the
    placeholder's parts take.  Repeated scipy entries are summed first (COO semantics)."""

    __slots__ = ("placeholder", "shape", "values", "where")

    def __init__(self, placeholder, where):
        self.placeholder = placeholder
        self.shape = placeholder.shape
        self.values = FeedSpec(placeholder.sparse_parts[1], where)  # dtype conversion
        self.where = where

    def __call__(self, x):
        rank = len(self.shape)
        if hasattr(x, "tocoo") and hasattr(x, "nnz"):
            coo = x.tocoo(copy=True)
            coo.sum_duplicates()
            coords = getattr(coo, "coords", None)
            coords = (coo.row, coo.col) if coords is None else coords
            indices = np.stack([np.asarray(c, dtype=np.int64) for c in coords], axis=1) if coords else None
            values, shape = coo.data, tuple(coo.shape)
        elif isinstance(x, tuple) and len(x) == 3:
            indices, values, shape = x
            shape = tuple(int(d) for d in np.asarray(shape).reshape(-1))
            indices = np.asarray(indices, dtype=np.int64).reshape(-1, len(shape))
        else:
            arr = np.asarray(x)
            nonzero = np.nonzero(arr)
            indices = np.stack(nonzero, axis=1).astype(np.int64) if arr.ndim else None
            values, shape = arr[nonzero], arr.shape
        if len(shape) != rank or any(s is not None and s != g for s, g in zip(self.shape, shape)):
            raise ValueError(f"{self.where}: sparse input {self.placeholder.name!r} expects shape "
                             f"{_fmt(self.shape)}, got {_fmt(shape)}")
        values = self.values(np.asarray(values).reshape(-1))
        if indices is None or indices.shape != (values.shape[0], rank):
            raise ValueError(f"{self.where}: sparse input {self.placeholder.name!r}: indices of shape "
                             f"{None if indices is None else indices.shape} do not match {values.shape[0]} "
                             f"values of a rank-{rank} tensor")
        return np.ascontiguousarray(indices), values, np.asarray(shape, dtype=np.int64)


def _is_switch(placeholder):
    """A fed scalar bool placeholder with a default: the learning phase."""
    return (placeholder.dtype == "bool" and placeholder.shape == () and placeholder.default is not None
            and not getattr(placeholder, "sparse_parts", None))


def _fmt(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Function:
    def __init__(self, inputs, outputs, updates=(), name=None, device=None, opset=None, mode=None):
        self.name = name or "function"
        self.where = f"K.function {self.name!r}"
        self.inputs = list(inputs)
        # a sparse placeholder is fed as its COO parts: those are the graph's inputs, and one
        # SparseFeedSpec turns each fed value into all three
        self.feed_inputs = self.inputs
        self.inputs = [part for p in self.feed_inputs for part in (getattr(p, "sparse_parts", None) or (p,))]
        self.outputs = list(outputs)
        self.opset = opset or DEFAULT_OPSET
        self.device = resolve_device(device)
        self._options = dict(name=name, device=device, opset=opset, mode=mode)
        updates = list(updates)
        self._user_updates = list(updates)
        graph = Graph(self.outputs + [new for _, new in updates])
        # random ops advance their counters: updates the user never wrote
        updated = {id(v) for v, _ in updates}
        for v in graph.variables:
            if getattr(v, "implicit_update", None) is not None and id(v) not in updated:
                updates.append((v, v.implicit_update))
                updated.add(id(v))
        if len(updates) != len(updated):
            raise ValueError(f"{self.where}: a variable appears in more than one update")
        self.updates = updates
        self.graph = graph = Graph(self.outputs + [new for _, new in updates])
        self.variables = graph.variables
        self.read_only = [v for v in self.variables if id(v) not in updated]
        # only steps bake: a function without updates (K.eval) is rebuilt for nothing it computes
        self.bake_read_only = bool(updates)
        not_fed = [p for p in graph.placeholders if all(p is not i for i in self.inputs)]
        self.defaults = [p for p in not_fed if p.default is not None]
        missing = [p for p in not_fed if p.default is None]
        if missing:
            raise ValueError(f"{self.where}: the outputs depend on placeholders that are not among the "
                             f"inputs: {', '.join(repr(p.name) for p in missing)}")
        self.feeds = [SparseFeedSpec(p, self.where) if getattr(p, "sparse_parts", None) else
                      FeedSpec(p, self.where) for p in self.feed_inputs]
        self._flatten_feeds = any(isinstance(s, SparseFeedSpec) for s in self.feeds)
        # print_tensor nodes: their values are fetched as extra outputs and printed after a run
        self.printed = [n for n in graph.nodes if getattr(n.primitive, "prints", False)]
        self.fetches = self.outputs + [n.outputs[0] for n in self.printed]
        self.n_outputs = len(self.outputs)
        self.n_fetches = len(self.fetches)
        # a fed learning phase (Keras feeds 0 to predict, 1 to fit): each value it takes gets a
        # function of its own, specialized to it, so the branch not taken (Dropout's mask,
        # BatchNormalization's batch statistics) is not computed at all
        self.switches = [i for i, p in enumerate(self.feed_inputs) if _is_switch(p)]
        self._variants = {}
        if mode is None:
            mode = "resident" if self.device.keeps_variables_resident else (
                "fed" if updates or not self.variables else "frozen")
        self.mode = mode
        self._calls_since_build = 0
        self._writes_seen = None
        self._executor = None
        if not self.switches:
            self._build()

    # -- compilation ------------------------------------------------------------------
    def _lower(self, outputs, frozen):
        return lower_model(
            self.inputs, outputs,
            input_names=[f"in{i}" for i in range(len(self.inputs))],
            output_names=[f"out{i}" for i in range(self.n_fetches + len(self.updates))],
            variables=self.fed_variables, variable_names=[f"var{i}" for i in range(len(self.fed_variables))],
            frozen=self.variables if frozen else (), opset=self.opset, graph_name=self.name)

    def _build(self):
        frozen = self.mode == "frozen"
        baked = [] if frozen or not self.bake_read_only else self.read_only
        baked_ids = {id(v) for v in baked}
        self.fed_variables = [] if frozen else [v for v in self.variables if id(v) not in baked_ids]
        # placeholders that are never fed hold their defaults: constants too
        constants = [(p, Constant(np.asarray(p.default, dtype=p.dtype), name=p.name)) for p in self.defaults]
        constants += [(v, Constant(v.numpy(), name=v.name)) for v in baked]
        outputs = specialize(self.fetches + [new for _, new in self.updates], constants)
        # values that a rebuild specializes the session to: all variables when frozen
        self._watched = self.variables if frozen else baked
        self._versions = [v.version for v in self._watched]
        self._writes_seen = Variable.writes if self._watched else None
        if frozen:  # weights are initializers: BatchNormalization folds into the Conv before it
            model = self._lower(outputs, True)
            fold_conv_affine(model)
            sess = sessions.create_session(model, self.device)
        else:  # constants are keyed by content: functions baked to the same values share a session
            key = ("fed", self.opset, Graph(outputs).signature(inputs=self.inputs, variables=self.fed_variables))
            sess = sessions.cached_session(key, lambda: self._lower(outputs, False), self.device)
        self.session = sess
        self._session_outputs = outputs
        self._calls_since_build = 0
        executor = ResidentExecutor if self.mode == "resident" else NumpyExecutor
        self._executor = executor(self, sess)

    def session_model(self):
        """The ``onnx.ModelProto`` this function's session runs now (inputs ``in<i>`` then fed
        variables ``var<i>``; outputs ``out<i>``; with a learning phase among the inputs, the
        function specialized to its default): for inspection, benchmarks and tests."""
        if self.switches:
            return self._variant(tuple(bool(self.feed_inputs[i].default) for i in self.switches)).session_model()
        model = self._lower(self._session_outputs, self.mode == "frozen")
        if self.mode == "frozen":
            fold_conv_affine(model)
        return model

    def _variant(self, key):
        """The function specialized to the switch values ``key`` (built on first use)."""
        variant = self._variants.get(key)
        if variant is None:
            switched = [(self.feed_inputs[i], Constant(np.asarray(value))) for i, value in zip(self.switches, key)]
            targets = [v for v, _ in self._user_updates]
            values = specialize(self.outputs + [new for _, new in self._user_updates], switched)
            rest = [p for i, p in enumerate(self.feed_inputs) if i not in self.switches]
            variant = self._variants[key] = Function(
                rest, values[:self.n_outputs], list(zip(targets, values[self.n_outputs:])), **self._options)
        return variant

    def _variables_changed(self):
        self._writes_seen = Variable.writes
        if [v.version for v in self._watched] == self._versions:
            return
        if self._calls_since_build < MIN_CALLS_PER_REBUILD:
            # values change too often for sessions specialized to them to pay off
            if self.mode == "frozen":
                self.mode = "fed"
            self.bake_read_only = False
        self._build()

    # -- calling ------------------------------------------------------------------------
    def __call__(self, inputs=()):
        if type(inputs) is not list and type(inputs) is not tuple:  # exact types first: hot path
            if isinstance(inputs, dict):
                inputs = [inputs[p] for p in self.feed_inputs]
            elif not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
        if len(inputs) != len(self.feeds):
            raise ValueError(f"{self.where}: expected {len(self.feeds)} inputs "
                             f"({', '.join(p.name for p in self.feed_inputs)}), got {len(inputs)}")
        if self.switches:
            key = tuple(bool(self.feeds[i](inputs[i])) for i in self.switches)
            return self._variant(key)([x for i, x in enumerate(inputs) if i not in self.switches])
        if self._writes_seen is not None and Variable.writes != self._writes_seen:
            self._variables_changed()
        self._calls_since_build += 1
        if self._flatten_feeds:
            values = [spec(x) for spec, x in zip(self.feeds, inputs)]
            values = [v for value in values for v in (value if isinstance(value, tuple) else (value,))]
        else:  # a lazy map of the plain function: cheaper than a list of bound-method calls
            values = map(FeedSpec.__call__, self.feeds, inputs)
        results = self._executor.run(values)
        if self.printed:
            for node, value in zip(self.printed, results[self.n_outputs:]):
                print(node.attrs["message"], value)
            return results[:self.n_outputs]
        return results

    def to_onnx(self, training=False, opset=None):
        """This function as a portable ``onnx.ModelProto``.

        * ``training=False`` (inference): variables frozen into initializers, inputs and outputs
          named after the K tensors, unknown dims as named symbolic dims.
        * ``training=True``: the step itself — each variable is a graph input, its current value
          kept in the file as ONNX's initial training state (``training_info[0].initialization``,
          read with ``kgraph.deploy.initial_state``); each updated variable's new value is an
          output named ``<variable>:new``.  Plain onnxruntime steps it by feeding those back.

        Placeholders with defaults (the learning phase) become initializers-with-defaults too, so
        a served model runs in inference mode unless told otherwise.
        """
        return function_to_onnx(self, training=training, opset=opset)


class NumpyExecutor:
    """Feeds numpy arrays through the session's C-level ``run`` (the public wrapper re-validates
    names on every call, which costs more than the whole one-Add graph)."""

    def __init__(self, fn, sess):
        self.fn = fn
        self.run_c = getattr(sess, "_sess", sess).run
        self.names = [f"in{i}" for i in range(len(fn.inputs))]
        self.variables = fn.fed_variables
        self.var_names = [f"var{i}" for i in range(len(self.variables))]
        self.out_names = [f"out{i}" for i in range(fn.n_fetches + len(fn.updates))]
        self.targets = [v for v, _ in fn.updates]
        self.n_out = fn.n_fetches
        if not self.var_names and not self.targets:
            self.run = self.run_inputs_only  # frozen or stateless: feeds are just the inputs

    def run_inputs_only(self, values):
        return self.run_c(self.out_names, dict(zip(self.names, values)), None)

    def run(self, values):
        feeds = dict(zip(self.names, values))
        for name, v in zip(self.var_names, self.variables):
            value = v.value
            feeds[name] = value if isinstance(value, np.ndarray) else value.numpy()
        results = self.run_c(self.out_names, feeds, None)
        if self.targets:
            for v, new in zip(self.targets, results[self.n_out:]):
                v.value = new
            return results[:self.n_out]
        return results


class ResidentExecutor:
    """Variables bound as device OrtValues with IOBinding; updates double-buffered.  Runs on any
    device ONNX Runtime can allocate on — CUDA in production, CPU in the tests."""

    def __init__(self, fn, sess):
        self.fn = fn
        self.sess = sess
        self.device = fn.device.ort_device
        self.index = fn.device.index
        self.names = [f"in{i}" for i in range(len(fn.inputs))]
        self.var_names = [f"var{i}" for i in range(len(fn.fed_variables))]
        self.out_names = [f"out{i}" for i in range(fn.n_fetches)]
        self.update_names = [f"out{fn.n_fetches + i}" for i in range(len(fn.updates))]
        self.targets = [v for v, _ in fn.updates]
        self.spares = {}  # id(variable) → the second buffer its next update is written into

    def to_device(self, v):
        value = v.value
        if isinstance(value, ort.OrtValue) and value.device_name().lower().startswith(self.device):
            return value
        v._value = ort.OrtValue.ortvalue_from_numpy(np.asarray(v.numpy(), order="C"), self.device, self.index)
        return v._value

    def spare(self, v):
        buf = self.spares.get(id(v))
        if buf is None or buf.shape() != list(v.shape):
            buf = ort.OrtValue.ortvalue_from_shape_and_type(v.shape, np.dtype(v.dtype), self.device, self.index)
            self.spares[id(v)] = buf
        return buf

    def run(self, values):
        binding = self.sess.io_binding()
        for name, x in zip(self.names, values):
            binding.bind_cpu_input(name, x)
        current = [self.to_device(v) for v in self.fn.fed_variables]
        for name, value in zip(self.var_names, current):
            binding.bind_ortvalue_input(name, value)
        for name in self.out_names:
            binding.bind_output(name, "cpu")
        new_buffers = [self.spare(v) for v in self.targets]
        for name, buf in zip(self.update_names, new_buffers):
            binding.bind_ortvalue_output(name, buf)
        self.sess.run_with_iobinding(binding)
        for v, buf in zip(self.targets, new_buffers):
            old = v.value
            v.value = buf  # the new values become current; the old buffers take the next updates
            if isinstance(old, ort.OrtValue):
                self.spares[id(v)] = old
            else:
                self.spares.pop(id(v), None)
        outputs = binding.get_outputs()
        return [outputs[i].numpy() for i in range(len(self.out_names))]


def _unique_names(names):
    seen, out = set(), []
    for n in names:
        base = "".join(c if c.isalnum() or c in "_.:/-" else "_" for c in n) or "value"
        name, i = base, 1
        while name in seen:
            name, i = f"{base}_{i}", i + 1
        seen.add(name)
        out.append(name)
    return out


def function_to_onnx(fn, training=False, opset=None):
    """See ``Function.to_onnx``."""
    outputs = list(fn.outputs)
    updates = fn.updates if training else []
    all_inputs = fn.inputs + fn.defaults
    variables = fn.variables if training else []
    names = _unique_names([p.name for p in all_inputs] + [v.name for v in variables] +
                          [t.name for t in outputs] + [f"{v.name}:new" for v, _ in updates])
    n_in, n_var = len(all_inputs), len(variables)
    model = lower_model(
        all_inputs, outputs + [new for _, new in updates],
        input_names=names[:n_in], variables=variables, variable_names=names[n_in:n_in + n_var],
        output_names=names[n_in + n_var:],
        frozen=[] if training else fn.variables, opset=opset or fn.opset,
        graph_name=fn.name, dim_names=lambda name, i: f"{name}_dim{i}",
        doc=f"kgraph {'training step' if training else 'inference'} export of function {fn.name!r}")
    # placeholders with defaults (the learning phase) become initializers-with-defaults too,
    # so a served model runs in inference mode without being fed them
    for p, name in zip(fn.defaults, names[len(fn.inputs):n_in]):
        model.graph.initializer.append(onnx.numpy_helper.from_array(p.default.astype(p.dtype), name))
    if training and variables:
        model.training_info.append(_initial_state(variables, names[n_in:n_in + n_var]))
    if not training:  # weights are frozen in: per-channel scale/shift after a Conv folds into it
        fold_conv_affine(model)
    return model


def _initial_state(variables, names):
    """The variables' current values as ONNX's own record of a training state's start: a
    ``TrainingInfoProto`` whose initialization graph outputs them, bound to the variable inputs.
    They are not initializers of the main graph, because an initializer that is also a graph
    input makes onnxruntime warn at every load ("Initializer ... appears in graph inputs")."""
    initializers = [onnx.numpy_helper.from_array(v.numpy(), f"{name}:initial") for v, name in zip(variables, names)]
    nodes = [onnx.helper.make_node("Identity", [f"{name}:initial"], [name], name=f"initial/{name}")
             for name in names]
    outs = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype)),
                                               list(v.shape)) for v, name in zip(variables, names)]
    info = onnx.TrainingInfoProto()
    info.initialization.CopyFrom(onnx.helper.make_graph(nodes, "initial_state", [], outs, initializer=initializers))
    for name in names:
        info.initialization_binding.add(key=name, value=name)
    return info
