"""Iteration: rnn, map_fn, foldl, foldr.

Each traces its function once into a loop body (``kgraph.ops.control``), lowered to one ONNX
``Loop`` whose number of steps is read from the data at run time; ``rnn(unroll=True)`` instead
calls the step function once per time step, as Keras does.  Semantics follow Keras 2.3.1's
TensorFlow backend (``tf.keras.backend.rnn``, ``tf.map_fn``, ``tf.foldl``, ``tf.foldr``).
"""
from .. import dtypes
from ..graph import Graph, Placeholder, Tensor
from ..ops import control
from ..ops import elementwise as ew
from ..ops import shape as sh
from ._api import keras_api, to_tensor


# -- helpers ---------------------------------------------------------------------------------
def _tensor_list(values, where):
    if isinstance(values, Tensor):
        return [values]
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{where} must be a list of tensors, got {type(values).__name__}")
    return [to_tensor(v, where=where) for v in values]


def _structure(x, where):
    """A tensor or a flat list/tuple of tensors → (tensors, the container type or None)."""
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, Tensor) for v in x):
        return list(x), type(x)
    return [to_tensor(x, where=where)], None


def _pack(tensors, kind):
    return tensors[0] if kind is None else kind(tensors)


def _step(x, index):
    """Element ``index`` of ``x`` along axis 0 (negative counts from the end)."""
    end = None if index == -1 else index + 1
    return sh.squeeze(sh.slice_(x, starts=(index,), ends=(end,), axes=(0,), steps=(1,)), axes=(0,))


def _drop(x, first):
    """``x`` without its first (or last) element along axis 0."""
    start, end = (1, None) if first else (0, -1)
    return sh.slice_(x, starts=(start,), ends=(end,), axes=(0,), steps=(1,))


def _reverse(x):
    return sh.slice_(x, starts=(None,), ends=(None,), axes=(0,), steps=(-1,))


def _swap01(x):
    return sh.transpose(x, perm=(1, 0) + tuple(range(2, x.ndim)))


def _check_same(new, old, where, what):
    if new.dtype != old.dtype or not control.compatible_shapes(new.shape, old.shape):
        raise ValueError(f"{where}: {what} must keep shape {old.shape} and dtype {old.dtype} from step "
                         f"to step; the function returned shape {new.shape}, dtype {new.dtype}")


def _uses_learning_phase(tensor):
    """Whether the learning phase placeholder reaches ``tensor`` (Keras' TF backend marks rnn's
    last output so)."""
    from .config import _state
    phase = _state.learning_phase
    return phase is not None and any(p is phase for p in Graph([tensor]).placeholders)


# -- rnn --------------------------------------------------------------------------------------
def _call_step(step_function, x, states, constants):
    result = step_function(x, tuple(states) + tuple(constants))
    if not isinstance(result, (list, tuple)) or len(result) != 2:
        raise TypeError(f"K.rnn: step_function must return (output, new_states), got {result!r}")
    output, new_states = result
    output = to_tensor(output, where="K.rnn step output")
    new_states = [new_states] if isinstance(new_states, Tensor) else list(new_states)
    if len(new_states) != len(states):
        raise ValueError(f"K.rnn: step_function returned {len(new_states)} new states for "
                         f"{len(states)} states")
    new_states = [n if isinstance(n, Tensor) else to_tensor(n, s.dtype, where="K.rnn new state")
                  for n, s in zip(new_states, states)]
    for i, (n, s) in enumerate(zip(new_states, states)):
        _check_same(n, s, "K.rnn", f"state {i}")
    return output, new_states


def _broadcast_mask(mask_t, rank):
    """A per-sample mask ``(samples, ...)`` unsqueezed to select along the leading axes of a
    value of ``rank`` (Keras tiles it; broadcasting is the same selection)."""
    if mask_t.ndim > rank:
        raise ValueError(f"K.rnn: the mask has more axes than a step output or state (rank {rank})")
    if mask_t.ndim == rank:
        return mask_t
    return sh.unsqueeze(mask_t, axes=tuple(range(mask_t.ndim, rank)))


def _masked(mask_t, new, old):
    return ew.where(_broadcast_mask(mask_t, new.ndim), new, old)


@keras_api
def rnn(step_function, inputs, initial_states, go_backwards=False, mask=None, constants=None,
        unroll=False, input_length=None):
    """Iterates ``step_function(input_t, states + constants) -> (output_t, new_states)`` over axis 1
    of ``inputs``; returns ``(last_output, outputs, new_states)``.  Where ``mask`` (samples, time) is
    0 the output repeats the previous step's (zeros before the first step) and the states hold."""
    if not callable(step_function):
        raise TypeError(f"K.rnn: step_function must be callable, got {type(step_function).__name__}")
    inputs = to_tensor(inputs, where="K.rnn inputs")
    if inputs.ndim < 3:
        raise ValueError(f"K.rnn: inputs must be at least 3D (samples, time, ...), got shape {inputs.shape}")
    states = _tensor_list(initial_states, "K.rnn: initial_states")
    constants = _tensor_list([] if constants is None else constants, "K.rnn: constants")
    time_steps = inputs.shape[1]
    if input_length is not None:
        if isinstance(input_length, bool) or not isinstance(input_length, int) or input_length < 1:
            raise ValueError(f"K.rnn: input_length must be a positive int or None, got {input_length!r}")
        if time_steps is not None and time_steps != input_length:
            raise ValueError(f"K.rnn: input_length={input_length} but inputs have {time_steps} time steps")
    if mask is not None:
        mask = to_tensor(mask, where="K.rnn mask")
        if mask.dtype != "bool":
            mask = ew.cast(mask, dtype="bool")
        if mask.ndim < 2 or not control.compatible_shapes(mask.shape[:2], inputs.shape[:2]):
            raise ValueError(f"K.rnn: mask must have shape (samples, time) = {inputs.shape[:2]}, "
                             f"got {mask.shape}")
    if unroll:
        if time_steps is None:
            raise ValueError("K.rnn: unrolling requires a fixed number of timesteps (inputs of shape "
                             f"{inputs.shape})")
        last_output, outputs, new_states = _rnn_unrolled(step_function, inputs, states, constants, mask,
                                                         go_backwards)
    else:
        last_output, outputs, new_states = _rnn_loop(step_function, inputs, states, constants, mask,
                                                     go_backwards)
    if _uses_learning_phase(last_output):
        last_output._uses_learning_phase = True
    return last_output, outputs, new_states


def _rnn_unrolled(step_function, inputs, states, constants, mask, go_backwards):
    steps = range(inputs.shape[1])
    outputs = []
    for t in (reversed(steps) if go_backwards else steps):
        x_t = sh.squeeze(sh.slice_(inputs, starts=(t,), ends=(t + 1,), axes=(1,), steps=(1,)), axes=(1,))
        output, new_states = _call_step(step_function, x_t, states, constants)
        if mask is not None:
            m_t = sh.squeeze(sh.slice_(mask, starts=(t,), ends=(t + 1,), axes=(1,), steps=(1,)), axes=(1,))
            previous = outputs[-1] if outputs else ew.zeros_like_(output)
            output = _masked(m_t, output, previous)
            new_states = [_masked(m_t, n, s) for n, s in zip(new_states, states)]
        states = new_states
        outputs.append(output)
    stacked = sh.concat(*[sh.unsqueeze(o, axes=(1,)) for o in outputs], axis=1)
    return outputs[-1], stacked, list(states)


def _rnn_loop(step_function, inputs, states, constants, mask, go_backwards):
    sequence = _swap01(inputs)  # time-major: the loop scans axis 0
    sequences = [_reverse(sequence) if go_backwards else sequence]
    if mask is not None:
        mask_tm = _swap01(mask)
        sequences.append(_reverse(mask_tm) if go_backwards else mask_tm)

    start = control.trace_start()
    state_params = [Placeholder(s.shape, s.dtype, name=f"rnn_state_{i}") for i, s in enumerate(states)]
    x_t = Placeholder(sequence.shape[1:], sequence.dtype, name="rnn_input_t")
    output, new_states = _call_step(step_function, x_t, state_params, constants)
    carried, carried_params, step_params = list(states), list(state_params), [x_t]
    if mask is not None:
        m_t = Placeholder(sequences[1].shape[1:], "bool", name="rnn_mask_t")
        previous = Placeholder(output.shape, output.dtype, name="rnn_previous_output")
        carried.append(_zero_output(output, x_t, state_params, inputs, sequences[0], states))
        carried_params.append(previous)
        step_params.append(m_t)
        output = _masked(m_t, output, previous)
        new_states = [_masked(m_t, n, s) for n, s in zip(new_states, state_params)]
        new_states.append(output)
    results, _ = control.build_loop(carried, sequences, carried_params + step_params, new_states + [output],
                                    n_scan=1, start=start)
    finals, stacked = results[:-1], results[-1]
    # with a mask the loop carries the last (masked) output; without, it is the last step's
    last_output = finals[-1] if mask is not None else _step(stacked, -1)
    return last_output, _swap01(stacked), finals[:len(states)]


def _zero_output(output, x_t, state_params, inputs, sequence, states):
    """Zeros shaped like the step output: the 'previous output' of the first masked step."""
    if None not in output.shape[1:]:
        return control.batch_zeros(inputs, trailing=output.shape[1:], dtype=output.dtype)
    # trailing dims known only at run time: evaluate the step once on the first input, as TF does
    first = control.substitute([output], [(x_t, _step(sequence, 0))] + list(zip(state_params, states)))[0]
    return ew.zeros_like_(first)


# -- map_fn, foldl, foldr ----------------------------------------------------------------------
@keras_api
def map_fn(fn, elems, name=None, dtype=None):
    """``fn`` applied to each element of ``elems`` along axis 0 (a tensor, or a list/tuple of
    tensors passed to ``fn`` together); the results stacked."""
    if not callable(fn):
        raise TypeError(f"K.map_fn: fn must be callable, got {type(fn).__name__}")
    sequences, kind = _structure(elems, "K.map_fn elems")
    for e in sequences:
        if e.ndim < 1:
            raise ValueError(f"K.map_fn: elems must have at least one axis to map over, got shape {e.shape}")
    start = control.trace_start()
    params = [Placeholder(e.shape[1:], e.dtype, name=f"map_elem_{i}") for i, e in enumerate(sequences)]
    outputs, out_kind = _structure(fn(_pack(params, kind)), "K.map_fn fn result")
    if dtype is not None:
        wanted = list(dtype) if isinstance(dtype, (list, tuple)) else [dtype] * len(outputs)
        for o, d in zip(outputs, wanted):
            if o.dtype != dtypes.normalize(d, "K.map_fn dtype"):
                raise TypeError(f"K.map_fn: fn returned dtype {o.dtype}, but dtype={d!r} was given")
    results, _ = control.build_loop([], sequences, params, outputs, n_scan=len(outputs), start=start)
    return _pack(results, out_kind)


def _fold(fn, elems, initializer, from_end, where):
    if not callable(fn):
        raise TypeError(f"{where}: fn must be callable, got {type(fn).__name__}")
    sequences, kind = _structure(elems, f"{where} elems")
    for e in sequences:
        if e.ndim < 1:
            raise ValueError(f"{where}: elems must have at least one axis to fold over, got shape {e.shape}")
    if initializer is None:  # the first (last) element starts the fold; the rest are folded in
        accumulators, acc_kind = [_step(e, -1 if from_end else 0) for e in sequences], kind
        sequences = [_drop(e, first=not from_end) for e in sequences]
    else:
        accumulators, acc_kind = _structure(initializer, f"{where} initializer")
    start = control.trace_start()
    acc_params = [Placeholder(a.shape, a.dtype, name=f"fold_acc_{i}") for i, a in enumerate(accumulators)]
    elem_params = [Placeholder(e.shape[1:], e.dtype, name=f"fold_elem_{i}") for i, e in enumerate(sequences)]
    new, _ = _structure(fn(_pack(acc_params, acc_kind), _pack(elem_params, kind)), f"{where} fn result")
    if len(new) != len(accumulators):
        raise ValueError(f"{where}: fn returned {len(new)} accumulators for {len(accumulators)}")
    for i, (n, a) in enumerate(zip(new, accumulators)):
        _check_same(n, a, where, f"accumulator {i}")
    results, _ = control.build_loop(accumulators, sequences, acc_params + elem_params, new, n_scan=0,
                                    start=start, reverse=from_end)
    return _pack(results, acc_kind)


@keras_api
def foldl(fn, elems, initializer=None, name=None):
    """``fn(acc, x)`` folded over ``elems`` from first to last; returns the final ``acc``."""
    return _fold(fn, elems, initializer, from_end=False, where="K.foldl")


@keras_api
def foldr(fn, elems, initializer=None, name=None):
    """``fn(acc, x)`` folded over ``elems`` from last to first; returns the final ``acc``."""
    return _fold(fn, elems, initializer, from_end=True, where="K.foldr")
