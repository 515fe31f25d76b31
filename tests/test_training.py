"""Training through K.function: Keras 2.3.1 optimizers against numpy, exported training steps on
plain onnxruntime, second-order gradients, the vjp registry, zeros for unreached variables."""
import importlib
import pkgutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kgraph
import kgraph.backend as K
import kgraph.ops
from kgraph.backend.state import merge_updates
from kgraph.demo import SGD, Adam
from kgraph.ops import Primitive
from kgraph.runtime import Function
from kcheck import check_grad

N, D_IN, D_HID, D_OUT = 6, 4, 5, 3


# -- the model, in kgraph and independently in numpy ------------------------------------------
def initial_values(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, (D_IN, D_HID)), rng.normal(0, 0.1, D_HID),
            rng.normal(0, 0.5, (D_HID, D_OUT)), rng.normal(0, 0.1, D_OUT)]


def batches(steps, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(N, D_IN)), np.eye(D_OUT)[rng.integers(0, D_OUT, N)]) for _ in range(steps)]


def k_model(values):
    """A 2-layer ReLU MLP with softmax cross-entropy, from operators and reductions."""
    x = K.placeholder((None, D_IN), name="x")
    y = K.placeholder((None, D_OUT), name="y")
    params = [K.variable(v, name=name) for v, name in zip(values, ["W1", "b1", "W2", "b2"])]
    w1, b1, w2, b2 = params
    h = K.maximum(x @ w1 + b1, 0.)
    z = h @ w2 + b2
    shifted = z - K.max(z, axis=-1, keepdims=True)
    log_probs = shifted - K.log(K.sum(K.exp(shifted), axis=-1, keepdims=True))
    loss = -K.mean(K.sum(y * log_probs, axis=-1))
    return x, y, params, loss


def np_loss_and_grads(params, x, y):
    """Forward and hand-written backward pass of the same MLP."""
    w1, b1, w2, b2 = params
    z1 = x @ w1 + b1
    h = np.maximum(z1, 0)
    z = h @ w2 + b2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.mean(np.sum(y * np.log(p), axis=1))
    dz = (p - y) / len(x)
    dh = dz @ w2.T
    dz1 = dh * (z1 > 0)
    return loss, [x.T @ dz1, dz1.sum(0), h.T @ dz, dz.sum(0)]


def np_sgd(values, data, lr, momentum=0.0, nesterov=False):
    params = [v.copy() for v in values]
    moments = [np.zeros_like(v) for v in values]
    losses = []
    for x, y in data:
        loss, grads = np_loss_and_grads(params, x, y)
        losses.append(loss)
        for i, g in enumerate(grads):
            v = momentum * moments[i] - lr * g
            moments[i] = v
            params[i] = params[i] + momentum * v - lr * g if nesterov else params[i] + v
    return losses, params


def np_adam(values, data, lr, beta_1=0.9, beta_2=0.999, eps=1e-7):
    params = [v.copy() for v in values]
    ms = [np.zeros_like(v) for v in values]
    vs = [np.zeros_like(v) for v in values]
    losses = []
    for t, (x, y) in enumerate(data, start=1):
        loss, grads = np_loss_and_grads(params, x, y)
        losses.append(loss)
        # the textbook form: bias-corrected moments; equal to Keras' folded lr_t up to where
        # epsilon enters (Keras adds epsilon to sqrt(v_t), not to sqrt(v_hat)), so use Keras'
        lr_t = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        for i, g in enumerate(grads):
            ms[i] = beta_1 * ms[i] + (1 - beta_1) * g
            vs[i] = beta_2 * vs[i] + (1 - beta_2) * g * g
            params[i] = params[i] - lr_t * ms[i] / (np.sqrt(vs[i]) + eps)
    return losses, params


@pytest.fixture
def float64():
    K.set_floatx("float64")


def run_steps(step, data):
    return [float(step([x, y])[0]) for x, y in data]


# -- optimizers against numpy -----------------------------------------------------------------
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_steps_match_numpy(float64, momentum, nesterov):
    values, data = initial_values(), batches(3)
    x, y, params, loss = k_model(values)
    opt = SGD(lr=0.1, momentum=momentum, nesterov=nesterov)
    step = K.function([x, y], [loss], updates=opt.get_updates(loss, params))
    got = run_steps(step, data)
    want, want_params = np_sgd(values, data, lr=0.1, momentum=momentum, nesterov=nesterov)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for p, w in zip(params, want_params):
        np.testing.assert_allclose(K.get_value(p), w, rtol=1e-6, atol=1e-6, err_msg=p.name)
    assert K.get_value(opt.iterations) == 3


def test_adam_steps_match_numpy(float64):
    values, data = initial_values(), batches(3)
    x, y, params, loss = k_model(values)
    opt = Adam(lr=0.01)
    step = K.function([x, y], [loss], updates=opt.get_updates(loss, params))
    got = run_steps(step, data)
    want, want_params = np_adam(values, data, lr=0.01, eps=K.epsilon())
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for p, w in zip(params, want_params):
        np.testing.assert_allclose(K.get_value(p), w, rtol=1e-6, atol=1e-6, err_msg=p.name)
    assert K.get_value(opt.iterations) == 3
    assert K.get_value(opt.iterations).dtype == np.int64


def test_adam_first_step_size_is_keras_bias_corrected(float64):
    # at t=1 Keras' lr_t·m_1/(sqrt(v_1)+eps) = lr·g/(|g| + eps/sqrt(1-beta_2)): every parameter
    # moves by almost exactly lr, less only where |g| is comparable to the scaled epsilon
    values, data = initial_values(), batches(1)
    x, y, params, loss = k_model(values)
    step = K.function([x, y], [loss], updates=Adam(lr=0.01).get_updates(loss, params))
    _, grads = np_loss_and_grads(values, *data[0])
    step(list(data[0]))
    for p, v, g in zip(params, values, grads):
        expected = 0.01 * np.abs(g) / (np.abs(g) + K.epsilon() / np.sqrt(1 - 0.999))
        np.testing.assert_allclose(np.abs(K.get_value(p) - v), expected, rtol=1e-9, atol=1e-15)


def test_resident_variables_train_like_fed_ones(float64):
    # the IOBinding path CUDA uses (variables kept as device OrtValues, double-buffered)
    # selected explicitly on CPU: same steps, and the parameters stay OrtValues between calls
    values, data = initial_values(), batches(3)
    results = {}
    for mode in ("fed", "resident"):
        x, y, params, loss = k_model(values)
        updates = merge_updates(Adam(lr=0.01).get_updates(loss, params), "test")
        step = Function([x, y], [loss], updates, mode=mode)
        results[mode] = (run_steps(step, data), [K.get_value(p) for p in params])
        if mode == "resident":
            assert all(isinstance(p.value, ort.OrtValue) for p in params)
    np.testing.assert_allclose(results["resident"][0], results["fed"][0], rtol=1e-12)
    for a, b in zip(results["resident"][1], results["fed"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_float32_training_reduces_the_loss():
    values, data = initial_values(), batches(1) * 30
    x, y, params, loss = k_model([v.astype(np.float32) for v in values])
    step = K.function([x, y], [loss], updates=Adam(lr=0.05).get_updates(loss, params))
    losses = run_steps(step, data)
    assert losses[-1] < 0.5 * losses[0]


# -- the exported training step on plain onnxruntime ------------------------------------------
def test_exported_training_step_reproduces_kgraph(float64, tmp_path):
    values, data = initial_values(), batches(3)
    x, y, params, loss = k_model(values)
    opt = Adam(lr=0.01)
    step = K.function([x, y], [loss], updates=opt.get_updates(loss, params), name="train_step")
    path = kgraph.export(step, tmp_path / "step.onnx", training=True)  # before any step is taken

    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    initial = kgraph.deploy.initial_state(model)  # the variables' values at export
    state_outputs = [o.name for o in model.graph.output if o.name.endswith(":new")]
    state_inputs = [name[:-len(":new")] for name in state_outputs]
    assert len(state_outputs) == 1 + 4 + 4 + 4  # iterations, m, v and the parameters
    assert set(state_inputs) <= set(initial)  # each updated variable: an input with a stored start
    assert not {i.name for i in model.graph.initializer} & set(state_inputs)  # no ORT load warning
    for p in params:
        assert p.name in state_inputs

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    loss_name = model.graph.output[0].name
    state = dict(initial)  # first step: the stored start (hyperparameter variables included)
    exported_losses = []
    for xb, yb in data:
        out = sess.run([loss_name] + state_outputs, {"x": xb, "y": yb, **state})
        exported_losses.append(float(out[0]))
        state.update(zip(state_inputs, out[1:]))

    kgraph_losses = run_steps(step, data)
    np.testing.assert_allclose(exported_losses, kgraph_losses, rtol=1e-12)
    for p in params:
        np.testing.assert_allclose(state[p.name], K.get_value(p), rtol=1e-12, err_msg=p.name)
    assert int(state[opt.iterations.name]) == 3


# -- gradients --------------------------------------------------------------------------------
def test_second_order_gradient_of_one_input():
    # gradient of (gradient of sum(x^3 · sin x)) against finite differences of the gradient
    check_grad(lambda x: K.gradients(K.sum(x * x * x * K.sin(x)), [x])[0],
               [np.linspace(-1.5, 1.2, 7)])


def test_second_order_mixed_partials_through_matmul():
    rng = np.random.default_rng(3)
    check_grad(lambda a, b: K.gradients(K.sum(K.exp(a @ b) * 0.1), [a])[0],
               [rng.normal(size=(3, 4)) * 0.5, rng.normal(size=(4, 2)) * 0.5])


def test_hessian_vector_product_matches_analytic(float64):
    # f = sum(w·x²·y):  d/dx f = 2·w·x·y;  d/dy (v · d/dx f) = 2·w·x·v
    x = K.placeholder((3,), dtype="float64")
    y = K.placeholder((3,), dtype="float64")
    w, v = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.7, -1.1])
    (gx,) = K.gradients(K.sum(K.constant(w) * x * x * y), [x])
    (hv,) = K.gradients(K.sum(gx * K.constant(v)), [y])
    xv, yv = np.array([0.5, 1.5, -2.0]), np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(K.function([x, y], [hv])([xv, yv])[0], 2 * w * xv * v)


def test_gradients_are_zeros_for_unreached_variables(float64):
    x, y, params, loss = k_model(initial_values())
    unused = K.variable(np.ones((2, 3)), name="unused")
    unused_input = K.placeholder((None, 7), name="unused_input")
    grads = K.gradients(loss, params + [unused, unused_input])
    assert all(g is not None for g in grads)
    values = K.function([x, y, unused_input], grads)([*batches(1)[0], np.ones((2, 7))])
    np.testing.assert_array_equal(values[4], np.zeros((2, 3)))
    np.testing.assert_array_equal(values[5], np.zeros((2, 7)))
    _, want = np_loss_and_grads(initial_values(), *batches(1)[0])
    for got, expected in zip(values[:4], want):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def _import_every_ops_module():
    for info in pkgutil.iter_modules(kgraph.ops.__path__):
        importlib.import_module(f"kgraph.ops.{info.name}")


def test_every_differentiable_primitive_has_a_vjp():
    _import_every_ops_module()
    missing = sorted(name for name, prim in Primitive.registry.items()
                     if prim.differentiable and prim.vjp_rule is None)
    assert not missing, f"differentiable primitives without a vjp rule: {', '.join(missing)}"
