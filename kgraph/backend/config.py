"""Configuration, session and naming."""
import contextlib
import threading
from collections import defaultdict

import numpy as np

from .. import config as _config
from ..config import settings
from ..graph import Placeholder, Tensor, node_scope
from ..graph.ir import reads_after
from ..runtime import clear_sessions


def backend():
    return "kgraph"


def epsilon():
    return settings.epsilon


def set_epsilon(e):
    settings.epsilon = _config.check_epsilon(e)


def floatx():
    return settings.floatx


def set_floatx(floatx):
    settings.floatx = _config.check_floatx(str(floatx))


def cast_to_floatx(x):
    return np.asarray(x, dtype=settings.floatx)


def image_data_format():
    return settings.image_data_format


def set_image_data_format(data_format):
    settings.image_data_format = _config.check_data_format(str(data_format))


def image_dim_ordering():
    return "tf" if settings.image_data_format == "channels_last" else "th"


def set_image_dim_ordering(dim_ordering):
    orderings = {"tf": "channels_last", "th": "channels_first"}
    if dim_ordering not in orderings:
        raise ValueError(f"K.set_image_dim_ordering: unknown dim_ordering {dim_ordering!r}; expected 'tf' or 'th'")
    settings.image_data_format = orderings[dim_ordering]


def normalize_data_format(value):
    if value is None:
        value = settings.image_data_format
    data_format = str(value).lower()
    return _config.check_data_format(data_format, where="K.normalize_data_format")


# -- learning phase --------------------------------------------------------------------------
class _State(threading.local):
    def __init__(self):
        self.learning_phase = None  # the placeholder, made on first use
        self.fixed_phase = None  # 0/1 from set_learning_phase
        self.uids = defaultdict(int)
        self.name_scopes = []
        self.manual_init = False


_state = _State()


def learning_phase():
    """The scalar bool placeholder that selects training behaviour (fed 0 by default), or the
    int fixed with ``set_learning_phase``."""
    if _state.fixed_phase is not None:
        return _state.fixed_phase
    if _state.learning_phase is None:
        _state.learning_phase = Placeholder((), "bool", name="keras_learning_phase", default=np.asarray(False))
    return _state.learning_phase


def set_learning_phase(value):
    if value not in (0, 1) or isinstance(value, float):
        raise ValueError(f"K.set_learning_phase: expected 0 or 1, got {value!r}")
    _state.fixed_phase = int(value)


def clear_session():
    """Forget the learning phase, name counters and compiled sessions (variables stay valid)."""
    from .control import clear_function_cache
    _state.learning_phase = None
    _state.fixed_phase = None
    _state.uids.clear()
    clear_sessions()
    clear_function_cache()


class Session:
    """kgraph's counterpart of a TF session: the compiled-session cache of this process."""

    def close(self):
        clear_sessions()


_session = Session()


def get_session():
    return _session


def set_session(session):
    global _session
    if not isinstance(session, Session):
        raise TypeError(f"K.set_session: expected a kgraph backend Session (from K.get_session()), "
                        f"got {type(session).__name__}")
    _session = session


def get_uid(prefix=""):
    _state.uids[prefix] += 1
    return _state.uids[prefix]


def reset_uids():
    _state.uids.clear()


def manual_variable_initialization(value):
    # kgraph variables hold their value from creation; there is nothing to defer
    _state.manual_init = bool(value)


@contextlib.contextmanager
def name_scope(name):
    """Prefixes the names of tensors and variables created inside (``scope/name``)."""
    if not isinstance(name, str):
        raise TypeError(f"K.name_scope: name must be a string, got {type(name).__name__}")
    _state.name_scopes.append(name)
    try:
        with node_scope(name):  # the nodes made inside are named after it in ONNX files
            yield name
    finally:
        _state.name_scopes.pop()


def scoped_name(name):
    return "/".join(_state.name_scopes + [name]) if _state.name_scopes else name


def symbolic(func):
    return func  # kgraph is always symbolic


def eager(func):
    return func  # there is no eager mode: every call records a graph node


@contextlib.contextmanager
def control_dependencies(control_inputs):
    """Inside the block, reads of a variable that one of ``control_inputs`` updates see the
    updated value, as TF orders reads after the ops they depend on: Keras computes each metric's
    ``total / count`` under the metric's updates.  The IR stays pure data flow — nodes created
    inside read the update's new-value tensor in place of the variable.  Other tensors impose no
    order (everything an output depends on is computed anyway)."""
    from .state import merge_updates
    updates = [u for u in _flat_control_inputs(control_inputs) if hasattr(u, "_kgraph_update")]
    new_values = {id(x): new for x, new in merge_updates(updates, "K.control_dependencies")}
    with reads_after(new_values):
        yield


def _flat_control_inputs(control_inputs):
    if control_inputs is None:
        return
    if isinstance(control_inputs, (list, tuple)):
        for c in control_inputs:
            yield from _flat_control_inputs(c)
    elif isinstance(control_inputs, Tensor):
        yield control_inputs
    else:
        raise TypeError(f"K.control_dependencies: control_inputs must be tensors or update ops "
                        f"(results of K.update, update_add, ...), got {type(control_inputs).__name__}")
