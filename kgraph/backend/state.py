"""State and values: variable updates (applied by K.function), reading and writing values."""
import weakref

import numpy as np

from ..graph import Graph, Variable
from ..ops import elementwise as ew
from ..ops.debug import print_tensor as _print_tensor
from ..ops.shape import identity
from ._api import keras_api, to_tensor


def _check_variable(x, where):
    if not isinstance(x, Variable):
        raise TypeError(f"{where}: expected a variable (from K.variable), got {type(x).__name__}")


def _update_value(x, value, where):
    value = to_tensor(value, x.dtype, where)
    if value.shape != x.shape and not (len(value.shape) == len(x.shape) and all(
            a is None or a == b for a, b in zip(value.shape, x.shape))):
        raise ValueError(f"{where}: new value of shape {value.shape} does not match variable "
                         f"{x.name!r} of shape {x.shape}")
    return value


def _record(result, x, kind, operand):
    """Updates are tensors (their value is the variable's new value) carrying what K.function
    needs to apply them: several updates of one variable apply in order."""
    result._kgraph_update = (x, kind, operand)
    return result


@keras_api
def update(x, new_x):
    _check_variable(x, "K.update")
    new_x = _update_value(x, new_x, "K.update")
    # a fresh tensor: marking ``new_x`` itself would make every later use of it an update
    return _record(identity(new_x), x, "assign", new_x)


@keras_api
def update_add(x, increment):
    _check_variable(x, "K.update_add")
    inc = _update_value(x, increment, "K.update_add") if not np.isscalar(increment) else to_tensor(increment, x.dtype)
    return _record(ew.add(x, inc), x, "add", inc)


@keras_api
def update_sub(x, decrement):
    _check_variable(x, "K.update_sub")
    dec = _update_value(x, decrement, "K.update_sub") if not np.isscalar(decrement) else to_tensor(decrement, x.dtype)
    return _record(ew.sub(x, dec), x, "sub", dec)


@keras_api
def moving_average_update(x, value, momentum):
    """x ← x - (x - value)·(1 - momentum), as Keras 2.3.1's TF backend (no zero-debiasing)."""
    _check_variable(x, "K.moving_average_update")
    value = to_tensor(value, x.dtype)
    decay = ew.sub(ew.scalar_like(1, x), to_tensor(momentum, x.dtype))
    return update_sub(x, ew.mul(ew.sub(x, value), decay))


def merge_updates(updates, where):
    """Keras' update forms → one ``(variable, new_value)`` per variable.  Several updates of one
    variable apply in list order: an assignment replaces, an add/sub accumulates."""
    merged = {}
    for u in updates or ():
        if isinstance(u, (tuple, list)) and len(u) == 2:
            x, new = u
            _check_variable(x, where)
            kind, operand, own = "assign", _update_value(x, new, where), None
        elif hasattr(u, "_kgraph_update"):
            (x, kind, operand), own = u._kgraph_update, u
        else:
            raise TypeError(f"{where}: updates must be (variable, new_value) pairs or results of "
                            f"K.update/update_add/update_sub/moving_average_update, got {u!r}")
        current = merged.get(id(x), (x, x))[1]
        if kind == "assign":
            current = operand
        elif current is x:  # the update's own tensor already is x ± operand
            current = own
        else:
            current = (ew.add if kind == "add" else ew.sub)(current, operand)
        merged[id(x)] = (x, current)
    return list(merged.values())


def updates_read_by(x):
    """The update ops among what ``x`` is computed from, in graph order: evaluating ``x`` runs
    them, as fetching a tensor that reads an assign op runs the assign in TF."""
    return [t for node in Graph([x]).nodes for t in node.outputs if hasattr(t, "_kgraph_update")]


_eval_with_updates = weakref.WeakKeyDictionary()


def eval_applying_updates(x, updates):
    """``K.eval`` of a tensor that reads update ops: the updates apply (on every call, as each
    ``sess.run`` of an assign op does) and the value is computed from the values before them."""
    fn = _eval_with_updates.get(x)
    if fn is None:
        from ..runtime import Function
        fn = _eval_with_updates[x] = Function([], [x], merge_updates(updates, "K.eval"), name="eval")
    return fn([])[0]


def get_value(x):
    if not isinstance(x, Variable):
        from .variables import eval
        return eval(x)
    return np.array(x.numpy())


def batch_get_value(ops):
    return [get_value(x) for x in ops]


def set_value(x, value):
    _check_variable(x, "K.set_value")
    arr = np.asarray(value)
    if arr.shape != x.shape:
        raise ValueError(f"K.set_value: variable {x.name!r} has shape {x.shape}, got a value of shape {arr.shape}")
    x.value = np.array(arr, dtype=x.dtype)  # a fresh array: the caller's stays theirs


def batch_set_value(tuples):
    checked = []
    for x, value in tuples:  # check all first, so a bad pair leaves every variable unchanged
        _check_variable(x, "K.batch_set_value")
        arr = np.asarray(value)
        if arr.shape != x.shape:
            raise ValueError(f"K.batch_set_value: variable {x.name!r} has shape {x.shape}, "
                             f"got a value of shape {arr.shape}")
        checked.append((x, np.array(arr, dtype=x.dtype)))
    for x, arr in checked:
        x.value = arr


@keras_api
def print_tensor(x, message=""):
    """Returns ``x``; every run of a function that computes it prints ``message`` and the value."""
    return _print_tensor(to_tensor(x), message=str(message))
