"""Functions, gradients, and the value-level control flow (switch, train/test phase)."""
import weakref

from .. import autodiff
from ..graph import Tensor
from ..ops import elementwise as ew
from ..ops import shape as sh
from ..runtime import Function
from ._api import keras_api, to_tensor
from .config import learning_phase
from .state import merge_updates


def function(inputs, outputs, updates=None, name=None, **kwargs):
    """Compile ``outputs`` (and ``updates``) of ``inputs`` into a callable on ONNX Runtime."""
    if kwargs:
        raise ValueError(f"K.function: unknown keyword arguments {sorted(kwargs)}; "
                         f"accepted: inputs, outputs, updates, name")
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"K.function: inputs must be a list or tuple of placeholders, got {type(inputs).__name__}")
    if updates is not None and not isinstance(updates, (list, tuple)):
        raise TypeError(f"K.function: updates must be a list or tuple, got {type(updates).__name__}")
    single = not isinstance(outputs, (list, tuple))
    outputs = [outputs] if single else list(outputs)
    from ..graph import Placeholder
    for i, p in enumerate(inputs):
        if not isinstance(p, Placeholder):
            raise TypeError(f"K.function: input {i} must be a placeholder (K.placeholder or K.learning_phase()), "
                            f"got {p!r}")
    outputs = [to_tensor(o, where="K.function outputs") for o in outputs]
    return Function(list(inputs), outputs, merge_updates(updates, "K.function"), name=name)


_eval_functions = weakref.WeakKeyDictionary()


def eval_tensor(x):
    fn = _eval_functions.get(x)
    if fn is None:
        fn = _eval_functions[x] = Function([], [x], name="eval", mode="fed")
    return fn([])[0]


def clear_function_cache():
    _eval_functions.clear()


@keras_api
def gradients(loss, variables):
    losses = list(loss) if isinstance(loss, (list, tuple)) else [loss]
    single = not isinstance(variables, (list, tuple))
    xs = [variables] if single else list(variables)
    return autodiff.gradients([to_tensor(l) for l in losses], xs)


@keras_api
def stop_gradient(variables):
    if isinstance(variables, (list, tuple)):
        return [sh.stop_gradient(to_tensor(v)) for v in variables]
    return sh.stop_gradient(to_tensor(variables))


@keras_api
def switch(condition, then_expression, else_expression):
    """Select by ``condition``: a scalar picks a whole branch; a tensor of lower rank than the
    branches selects along their leading axes (Keras' TF backend tiles it so)."""
    then_expression = then_expression() if callable(then_expression) else then_expression
    else_expression = else_expression() if callable(else_expression) else else_expression
    condition = to_tensor(condition)
    if condition.dtype != "bool":
        condition = ew.cast(condition, dtype="bool")
    if not isinstance(then_expression, Tensor) and not isinstance(else_expression, Tensor):
        then_expression = to_tensor(then_expression)
    from ._api import binary_operands
    then_expression, else_expression = binary_operands(then_expression, else_expression, "K.switch")
    expr_ndim = max(then_expression.ndim, else_expression.ndim)
    if condition.ndim > expr_ndim:
        raise ValueError(f"K.switch: the rank of condition ({condition.ndim}) must not exceed the rank of "
                         f"then_expression/else_expression ({expr_ndim})")
    if 0 < condition.ndim < expr_ndim:
        condition = sh.unsqueeze(condition, axes=tuple(range(condition.ndim, expr_ndim)))
    return ew.where(condition, then_expression, else_expression)


def in_train_phase(x, alt, training=None):
    uses_learning_phase = training is None
    if training is None:
        training = learning_phase()
    if training is True or (not isinstance(training, Tensor) and training == 1):
        return x() if callable(x) else x
    if training is False or (not isinstance(training, Tensor) and training == 0):
        return alt() if callable(alt) else alt
    out = switch(training, x, alt)
    if uses_learning_phase:
        out._uses_learning_phase = True
    return out


def in_test_phase(x, alt, training=None):
    return in_train_phase(alt, x, training=training)
