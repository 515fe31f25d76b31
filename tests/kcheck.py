"""The test oracle: run K graphs on ONNX Runtime *and* onnx.reference, check gradients numerically.

    check(outputs, {placeholder: array}, expected)   # both engines against a numpy result
    check_grad(build, arrays)                        # K.gradients vs central differences (float64)
"""
import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

import kgraph.backend as K


def run_reference(fn, values):
    """Run a compiled function's exported model on onnx.reference (after the full checker)."""
    model = fn.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    ref = ReferenceEvaluator(model)
    names = [i.name for i in model.graph.input]
    feeds = dict(zip(names, values))
    return ref.run(None, feeds)


def evaluate(outputs, feeds=None, reference=True, rtol=1e-5, atol=1e-6):
    """Outputs (a tensor or a list) evaluated on ORT; with ``reference``, onnx.reference must agree."""
    single = not isinstance(outputs, (list, tuple))
    outputs = [outputs] if single else list(outputs)
    feeds = feeds or {}
    inputs = list(feeds)
    values = [np.asarray(feeds[p]) for p in inputs]
    fn = K.function(inputs, outputs)
    got = fn(values)
    if reference:
        ref = run_reference(fn, values)
        for i, (a, b) in enumerate(zip(got, ref)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol,
                                       err_msg=f"output {i}: onnxruntime and onnx.reference disagree")
    return got[0] if single else got


def check(outputs, feeds, expected, reference=True, rtol=1e-5, atol=1e-6):
    got = evaluate(outputs, feeds, reference=reference, rtol=rtol, atol=atol)
    if not isinstance(outputs, (list, tuple)):
        got, expected = [got], [expected]
    for i, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        assert g.shape == e.shape, f"output {i}: shape {g.shape}, expected {e.shape}"
        if e.dtype == bool or np.issubdtype(e.dtype, np.integer):
            np.testing.assert_array_equal(g, e, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"output {i}")
    return got


def check_typed(out, feeds, expected, **tol):
    """``check``, and the static and computed dtypes must be the expected array's too."""
    expected = np.asarray(expected)
    assert out.dtype == expected.dtype.name, f"static dtype {out.dtype}, expected {expected.dtype}"
    got = check(out, feeds, expected, **tol)
    assert got[0].dtype == expected.dtype
    return got


def check_grad(build, arrays, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """``build(*placeholders) -> tensor``; compares K.gradients of a random projection of the
    output against central finite differences, all in float64."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    phs = [K.placeholder(a.shape, dtype="float64") for a in arrays]
    out = build(*phs)
    weights = np.random.default_rng(seed).standard_normal(out.shape if None not in out.shape else ())
    w = K.constant(weights, dtype="float64")
    loss = K.sum(out * w)
    grads = K.gradients(loss, phs)
    f_loss = K.function(phs, [loss])
    f_grad = K.function(phs, grads)
    analytic = f_grad(arrays)
    for k, a in enumerate(arrays):
        numeric = np.zeros_like(a)
        flat = numeric.reshape(-1)
        for i in range(a.size):
            plus = [x.copy() for x in arrays]
            minus = [x.copy() for x in arrays]
            plus[k].reshape(-1)[i] += eps
            minus[k].reshape(-1)[i] -= eps
            flat[i] = (f_loss(plus)[0] - f_loss(minus)[0]) / (2 * eps)
        np.testing.assert_allclose(analytic[k], numeric, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {k} disagrees with finite differences")
    return analytic
