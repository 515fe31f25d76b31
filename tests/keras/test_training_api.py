"""Keras 2.3.1's training API on kgraph, against numpy: the optimizers' updates (from a linear
model, whose gradient is analytic), every built-in loss and metric, the fit/evaluate/predict
family, the callbacks, h5 save/load round trips, stateful RNNs, and three small synthetic tasks
that must learn."""
import csv
from functools import partial

import numpy as np
import pytest

import keras
import keras.backend as KB
from keras import callbacks, layers, losses, metrics, models, optimizers
from keras.utils import Sequence

EPS = 1e-7  # K.epsilon()


def _rng(seed):
    return np.random.default_rng(seed)


# -- optimizers ---------------------------------------------------------------------------------
def _linear_model(optimizer, w, b):
    model = models.Sequential([layers.Dense(w.shape[1], input_shape=(w.shape[0],))])
    model.compile(optimizer, "mse")
    model.set_weights([w, b])
    return model


def _mse_grads(x, y, w, b):
    """d/d(w, b) of Keras's mse loss: mean over the batch of mean over outputs of (xw + b - y)²."""
    err = x @ w + b - y
    scale = 2.0 / err.size
    return scale * x.T @ err, scale * err.sum(axis=0)


def np_sgd(lr=0.01, momentum=0.0, nesterov=False):
    def step(p, g, s, t):
        v = momentum * s.get("m", 0.0) - lr * g
        s["m"] = v
        return p + momentum * v - lr * g if nesterov else p + v
    return step


def np_rmsprop(lr=0.001, rho=0.9):
    def step(p, g, s, t):
        s["a"] = rho * s.get("a", 0.0) + (1 - rho) * g ** 2
        return p - lr * g / (np.sqrt(s["a"]) + EPS)
    return step


def np_adagrad(lr=0.01):
    def step(p, g, s, t):
        s["a"] = s.get("a", 0.0) + g ** 2
        return p - lr * g / (np.sqrt(s["a"]) + EPS)
    return step


def np_adadelta(lr=1.0, rho=0.95):
    def step(p, g, s, t):
        s["a"] = rho * s.get("a", 0.0) + (1 - rho) * g ** 2
        update = g * np.sqrt(s.get("d", 0.0) + EPS) / np.sqrt(s["a"] + EPS)
        s["d"] = rho * s.get("d", 0.0) + (1 - rho) * update ** 2
        return p - lr * update
    return step


def np_adam(lr=0.001, b1=0.9, b2=0.999, amsgrad=False):
    def step(p, g, s, t):
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
        if amsgrad:
            s["vhat"] = np.maximum(s.get("vhat", 0.0), s["v"])
            return p - lr_t * s["m"] / (np.sqrt(s["vhat"]) + EPS)
        return p - lr_t * s["m"] / (np.sqrt(s["v"]) + EPS)
    return step


def np_adamax(lr=0.002, b1=0.9, b2=0.999):
    def step(p, g, s, t):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["u"] = np.maximum(b2 * s.get("u", 0.0), np.abs(g))
        return p - lr / (1 - b1 ** t) * s["m"] / (s["u"] + EPS)
    return step


def np_nadam(lr=0.002, b1=0.9, b2=0.999, schedule_decay=0.004):
    shared = {"m_schedule": 1.0}  # one schedule for all parameters, advanced once per step

    def step(p, g, s, t):
        mc_t = b1 * (1 - 0.5 * 0.96 ** (t * schedule_decay))
        mc_t1 = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * schedule_decay))
        if shared.get("t") != t:
            shared["t"], shared["m_schedule"] = t, shared["m_schedule"] * mc_t
        m_schedule_new = shared["m_schedule"]
        m_schedule_next = m_schedule_new * mc_t1
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
        g_prime = g / (1 - m_schedule_new)
        m_bar = (1 - mc_t) * g_prime + mc_t1 * s["m"] / (1 - m_schedule_next)
        return p - lr * m_bar / (np.sqrt(s["v"] / (1 - b2 ** t)) + EPS)
    return step


OPTIMIZERS = {
    "sgd": (lambda: optimizers.SGD(0.1), np_sgd(0.1)),
    "sgd_momentum": (lambda: optimizers.SGD(0.1, momentum=0.9), np_sgd(0.1, 0.9)),
    "sgd_nesterov": (lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True), np_sgd(0.1, 0.9, True)),
    "rmsprop": (lambda: optimizers.RMSprop(0.01), np_rmsprop(0.01)),
    "adagrad": (lambda: optimizers.Adagrad(0.1), np_adagrad(0.1)),
    "adadelta": (lambda: optimizers.Adadelta(), np_adadelta()),
    "adam": (lambda: optimizers.Adam(0.01), np_adam(0.01)),
    "adam_amsgrad": (lambda: optimizers.Adam(0.01, amsgrad=True), np_adam(0.01, amsgrad=True)),
    "adamax": (lambda: optimizers.Adamax(), np_adamax()),
    "nadam": (lambda: optimizers.Nadam(), np_nadam()),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_steps_equal_numpy(name):
    make, np_step = OPTIMIZERS[name]
    rng = _rng(1)
    w, b = rng.normal(size=(4, 2)), rng.normal(size=2)
    model = _linear_model(make(), w.astype(np.float32), b.astype(np.float32))
    states = ({}, {})
    for t in (1, 2, 3):
        x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
        gw, gb = _mse_grads(x, y, w, b)
        loss = model.train_on_batch(x.astype(np.float32), y.astype(np.float32))
        np.testing.assert_allclose(loss, np.mean((x @ w + b - y) ** 2), rtol=1e-5)
        w, b = np_step(w, gw, states[0], t), np_step(b, gb, states[1], t)
        got_w, got_b = model.get_weights()
        np.testing.assert_allclose(got_w, w, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got_b, b, rtol=2e-5, atol=1e-6)
    assert KB.get_value(model.optimizer.iterations) == 3


def test_optimizer_clipnorm_and_clipvalue():
    rng = _rng(2)
    w, b = rng.normal(size=(3, 1)), np.zeros(1)
    x, y = rng.normal(size=(5, 3)), 10 + rng.normal(size=(5, 1))
    gw, gb = _mse_grads(x, y, w, b)
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())  # clipnorm clips by the norm of all gradients
    assert norm > 1.0
    for opt, (ew, eb) in (
            (optimizers.SGD(0.1, clipvalue=0.5), (np.clip(gw, -0.5, 0.5), np.clip(gb, -0.5, 0.5))),
            (optimizers.SGD(0.1, clipnorm=1.0), (gw / norm, gb / norm))):
        model = _linear_model(opt, w.astype(np.float32), b.astype(np.float32))
        model.train_on_batch(x.astype(np.float32), y.astype(np.float32))
        got_w, got_b = model.get_weights()
        np.testing.assert_allclose(got_w, w - 0.1 * ew, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_b, b - 0.1 * eb, rtol=1e-5, atol=1e-6)


# -- losses ---------------------------------------------------------------------------------------
def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _l2n(v):
    return v / np.sqrt(np.maximum((v ** 2).sum(-1, keepdims=True), 1e-12))


def _bce(t, p):
    p = np.clip(p, EPS, 1 - EPS)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def _case(kind, seed, n=20, d=5):
    """(y_true, y_pred) of one kind of target: random, and y_pred within the loss's domain."""
    rng = _rng(seed)
    if kind == "real":
        return rng.normal(size=(n, d)), rng.normal(size=(n, d))
    if kind == "positive":
        return rng.random((n, d)) * 3, 0.1 + rng.random((n, d)) * 3
    if kind == "binary":
        return (rng.random((n, d)) > 0.5).astype(float), rng.uniform(0.02, 0.98, (n, d))
    if kind == "signed":
        return np.where(rng.random((n, d)) > 0.5, 1.0, -1.0), rng.normal(size=(n, d))
    if kind == "onehot":
        return np.eye(d)[rng.integers(0, d, n)], _softmax(rng.normal(size=(n, d)) * 2)
    if kind == "sparse":
        return rng.integers(0, d, (n, 1)).astype(float), _softmax(rng.normal(size=(n, d)) * 2)
    raise AssertionError(kind)


LOSSES = {  # name: (kind of target, per-sample numpy loss)
    "mean_squared_error": ("real", lambda t, p: ((p - t) ** 2).mean(-1)),
    "mean_absolute_error": ("real", lambda t, p: np.abs(p - t).mean(-1)),
    "mean_absolute_percentage_error": (
        "real", lambda t, p: 100 * np.abs((t - p) / np.maximum(np.abs(t), EPS)).mean(-1)),
    "mean_squared_logarithmic_error": (
        "positive", lambda t, p: ((np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(t, EPS) + 1)) ** 2).mean(-1)),
    "squared_hinge": ("signed", lambda t, p: (np.maximum(1 - t * p, 0) ** 2).mean(-1)),
    "hinge": ("binary", lambda t, p: np.maximum(1 - (2 * t - 1) * p, 0).mean(-1)),  # 0/1 → -1/1
    "categorical_hinge": ("onehot", lambda t, p: np.maximum(
        0, ((1 - t) * p).max(-1) - (t * p).sum(-1) + 1)),
    "logcosh": ("real", lambda t, p: np.log(np.cosh(p - t)).mean(-1)),
    "huber_loss": ("real", lambda t, p: np.where(np.abs(p - t) <= 1, 0.5 * (p - t) ** 2,
                                                 np.abs(p - t) - 0.5)),
    "categorical_crossentropy": ("onehot", lambda t, p: -(t * np.log(np.clip(p, EPS, 1 - EPS))).sum(-1)),
    "sparse_categorical_crossentropy": (
        "sparse", lambda t, p: -np.log(np.clip(p, EPS, 1 - EPS))[np.arange(len(t)), t[:, 0].astype(int)]),
    "binary_crossentropy": ("binary", lambda t, p: _bce(t, p).mean(-1)),
    "kullback_leibler_divergence": ("onehot", lambda t, p: (
        np.clip(t, EPS, 1) * np.log(np.clip(t, EPS, 1) / np.clip(p, EPS, 1))).sum(-1)),
    "poisson": ("positive", lambda t, p: (p - t * np.log(p + EPS)).mean(-1)),
    "cosine_proximity": ("real", lambda t, p: -(_l2n(t) * _l2n(p)).sum(-1)),
}


def _identity_model(d, loss, metrics=None):
    model = models.Sequential([layers.Activation("linear", input_shape=(d,))])
    model.compile("sgd", loss, metrics=metrics)
    return model


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_equals_numpy(name):
    kind, np_loss = LOSSES[name]
    y_true, y_pred = _case(kind, seed=len(name))
    model = _identity_model(y_pred.shape[1], name)
    # batches of 8 over 20 samples: the reported loss is the sample-weighted mean of the batches
    got = model.evaluate(y_pred.astype(np.float32), y_true.astype(np.float32), batch_size=8, verbose=0)
    np.testing.assert_allclose(got, np_loss(y_true, y_pred).mean(), rtol=2e-5, atol=1e-6)
    # the function itself, through K functions
    t, p = KB.placeholder(y_true.shape), KB.placeholder(y_pred.shape)
    per_sample = KB.function([t, p], [losses.get(name)(t, p)])([y_true, y_pred])[0]
    np.testing.assert_allclose(per_sample, np_loss(y_true, y_pred), rtol=2e-5, atol=1e-6)


LOSS_CLASSES = {  # each class of keras/losses.py with its defaults: the function it wraps
    "MeanSquaredError": "mean_squared_error", "MeanAbsoluteError": "mean_absolute_error",
    "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
    "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error",
    "BinaryCrossentropy": "binary_crossentropy", "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy", "Hinge": "hinge",
    "SquaredHinge": "squared_hinge", "CategoricalHinge": "categorical_hinge", "Poisson": "poisson",
    "LogCosh": "logcosh", "KLDivergence": "kullback_leibler_divergence", "Huber": "huber_loss",
}


@pytest.mark.parametrize("name", list(LOSS_CLASSES))
def test_loss_classes_equal_numpy(name):
    kind, np_loss = LOSSES[LOSS_CLASSES[name]]
    y_true, y_pred = _case(kind, seed=len(name) + 100)
    model = _identity_model(y_pred.shape[1], getattr(losses, name)())
    got = model.evaluate(y_pred.astype(np.float32), y_true.astype(np.float32), batch_size=8, verbose=0)
    np.testing.assert_allclose(got, np_loss(y_true, y_pred).mean(), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("loss,kind,np_loss", [
    (lambda: losses.Huber(delta=0.5), "real",
     lambda t, p: np.where(np.abs(p - t) <= 0.5, 0.5 * (p - t) ** 2, 0.5 * np.abs(p - t) - 0.125)),
    (lambda: losses.CategoricalCrossentropy(label_smoothing=0.2), "onehot",
     lambda t, p: -((t * 0.8 + 0.2 / t.shape[1]) * np.log(np.clip(p, EPS, 1 - EPS))).sum(-1)),
    (lambda: losses.BinaryCrossentropy(from_logits=True), "real",
     lambda t, p: (np.maximum(p, 0) - p * (t > 0) + np.log1p(np.exp(-np.abs(p)))).mean(-1)),
], ids=["Huber", "CategoricalCrossentropy_smoothed", "BinaryCrossentropy_logits"])
def test_loss_objects_equal_numpy(loss, kind, np_loss):
    y_true, y_pred = _case(kind, seed=7)
    if kind == "real":  # the logits case needs 0/1 targets
        y_true = (y_true > 0).astype(float)
    model = _identity_model(y_pred.shape[1], loss())
    got = model.evaluate(y_pred.astype(np.float32), y_true.astype(np.float32), batch_size=8, verbose=0)
    np.testing.assert_allclose(got, np_loss(y_true, y_pred).mean(), rtol=2e-5, atol=1e-6)


def test_sample_weights_weigh_the_reported_loss():
    y_true, y_pred = _case("real", seed=3)
    weights = _rng(4).random(len(y_true))
    model = _identity_model(y_pred.shape[1], "mse")
    got = model.evaluate(y_pred.astype(np.float32), y_true.astype(np.float32),
                         sample_weight=weights.astype(np.float32), batch_size=20, verbose=0)
    per_sample = ((y_pred - y_true) ** 2).mean(-1)
    np.testing.assert_allclose(got, (per_sample * weights).mean(), rtol=1e-5)


# -- metrics --------------------------------------------------------------------------------------
def _counts(t, p, threshold):
    pos = p > threshold
    return ((pos & (t == 1)).sum(), (pos & (t == 0)).sum(), (~pos & (t == 0)).sum(), (~pos & (t == 1)).sum())


def _thresholds(n=200, eps=0.0):
    return np.array([0.0 - eps] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1.0 + eps])


def _np_auc(t, p):
    tp, fp, tn, fn = np.array([_counts(t, p, th) for th in _thresholds(eps=EPS)]).T.astype(float)
    recall = np.where(tp > 0, tp / np.maximum(tp + fn, 1), 0)
    fpr = np.where(fp > 0, fp / np.maximum(fp + tn, 1), 0)
    return ((fpr[:-1] - fpr[1:]) * (recall[:-1] + recall[1:]) / 2).sum()


def _np_at(t, p, value, sensitivity_given):
    tp, fp, tn, fn = np.array([_counts(t, p, th) for th in _thresholds()]).T.astype(float)
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    if sensitivity_given:
        return spec[np.argmin(np.abs(sens - value))]
    return sens[np.argmin(np.abs(spec - value))]


def _top_k(t_idx, p, k):
    return (np.argsort(-p, axis=-1)[:, :k] == t_idx[:, None]).any(-1)


def _acc(t, p):
    return (t == np.round(p)).mean(-1)


BINARY_METRICS = {  # evaluated with loss binary_crossentropy on "binary" targets
    "accuracy": lambda t, p: _acc(t, p).mean(),  # Keras picks binary_accuracy for this loss
    "binary_accuracy": lambda t, p: _acc(t, p).mean(),
    "mse": lambda t, p: ((p - t) ** 2).mean(),
    "mae": lambda t, p: np.abs(p - t).mean(),
    "hinge": lambda t, p: np.maximum(1 - (2 * t - 1) * p, 0).mean(),
    "binary_crossentropy": lambda t, p: _bce(t, p).mean(),
    # the metric is +cosine (keras/metrics.py:1931) where the loss of the same name is -cosine
    "cosine_proximity": lambda t, p: (_l2n(t) * _l2n(p)).sum(-1).mean(),
    partial(metrics.BinaryAccuracy, threshold=0.7): lambda t, p: (t == (p > 0.7)).mean(),
    partial(metrics.AUC): _np_auc,
    partial(metrics.Precision): lambda t, p: (lambda tp, fp, tn, fn: tp / (tp + fp))(*_counts(t, p, 0.5)),
    partial(metrics.Recall): lambda t, p: (lambda tp, fp, tn, fn: tp / (tp + fn))(*_counts(t, p, 0.5)),
    partial(metrics.TruePositives): lambda t, p: _counts(t, p, 0.5)[0],
    partial(metrics.FalsePositives): lambda t, p: _counts(t, p, 0.5)[1],
    partial(metrics.TrueNegatives): lambda t, p: _counts(t, p, 0.5)[2],
    partial(metrics.FalseNegatives): lambda t, p: _counts(t, p, 0.5)[3],
    partial(metrics.SensitivityAtSpecificity, 0.6): lambda t, p: _np_at(t, p, 0.6, False),
    partial(metrics.SpecificityAtSensitivity, 0.6): lambda t, p: _np_at(t, p, 0.6, True),
    partial(metrics.MeanSquaredError): lambda t, p: ((p - t) ** 2).mean(),
    partial(metrics.RootMeanSquaredError): lambda t, p: np.sqrt(((p - t) ** 2).mean()),
    partial(metrics.MeanAbsoluteError): lambda t, p: np.abs(p - t).mean(),
    partial(metrics.BinaryCrossentropy): lambda t, p: _bce(t, p).mean(),
    partial(metrics.Hinge): lambda t, p: np.maximum(1 - (2 * t - 1) * p, 0).mean(),
    partial(metrics.SquaredHinge): lambda t, p: (np.maximum(1 - (2 * t - 1) * p, 0) ** 2).mean(),
    partial(metrics.CosineSimilarity): lambda t, p: (_l2n(t) * _l2n(p)).sum(-1).mean(),
}
POSITIVE_METRICS = {  # loss mean_squared_error on "positive" targets
    "mape": lambda t, p: 100 * (np.abs(t - p) / np.maximum(np.abs(t), EPS)).mean(),
    "msle": lambda t, p: ((np.log(p + 1) - np.log(np.maximum(t, EPS) + 1)) ** 2).mean(),
    "poisson": lambda t, p: (p - t * np.log(p + EPS)).mean(),
    "logcosh": lambda t, p: np.log(np.cosh(p - t)).mean(),
    "squared_hinge": lambda t, p: (np.maximum(1 - t * p, 0) ** 2).mean(),
    partial(metrics.MeanAbsolutePercentageError): lambda t, p: 100 * (np.abs(t - p) / np.maximum(np.abs(t), EPS)).mean(),
    partial(metrics.MeanSquaredLogarithmicError): lambda t, p: (
        (np.log(p + 1) - np.log(np.maximum(t, EPS) + 1)) ** 2).mean(),
    partial(metrics.Poisson): lambda t, p: (p - t * np.log(p + EPS)).mean(),
    partial(metrics.LogCoshError): lambda t, p: np.log(np.cosh(p - t)).mean(),
}
ONEHOT_METRICS = {  # loss categorical_crossentropy on "onehot" targets
    "accuracy": lambda t, p: (t.argmax(-1) == p.argmax(-1)).mean(),  # categorical_accuracy here
    "categorical_accuracy": lambda t, p: (t.argmax(-1) == p.argmax(-1)).mean(),
    "top_k_categorical_accuracy": lambda t, p: _top_k(t.argmax(-1), p, 5).mean(),
    "categorical_hinge": lambda t, p: np.maximum(0, ((1 - t) * p).max(-1) - (t * p).sum(-1) + 1).mean(),
    "kullback_leibler_divergence": lambda t, p: (np.clip(t, EPS, 1) * np.log(np.clip(t, EPS, 1) / np.clip(p, EPS, 1))).sum(-1).mean(),
    "categorical_crossentropy": lambda t, p: -(t * np.log(p)).sum(-1).mean(),
    partial(metrics.CategoricalAccuracy): lambda t, p: (t.argmax(-1) == p.argmax(-1)).mean(),
    partial(metrics.TopKCategoricalAccuracy, k=2): lambda t, p: _top_k(t.argmax(-1), p, 2).mean(),
    partial(metrics.CategoricalHinge): lambda t, p: np.maximum(
        0, ((1 - t) * p).max(-1) - (t * p).sum(-1) + 1).mean(),
    partial(metrics.KLDivergence): lambda t, p: (
        np.clip(t, EPS, 1) * np.log(np.clip(t, EPS, 1) / np.clip(p, EPS, 1))).sum(-1).mean(),
    partial(metrics.CategoricalCrossentropy): lambda t, p: -(t * np.log(p)).sum(-1).mean(),
}
SPARSE_METRICS = {  # loss sparse_categorical_crossentropy on "sparse" targets
    "accuracy": lambda t, p: (t[:, 0] == p.argmax(-1)).mean(),  # sparse_categorical_accuracy here
    "sparse_categorical_accuracy": lambda t, p: (t[:, 0] == p.argmax(-1)).mean(),
    "sparse_top_k_categorical_accuracy": lambda t, p: _top_k(t[:, 0], p, 5).mean(),
    partial(metrics.SparseCategoricalAccuracy): lambda t, p: (t[:, 0] == p.argmax(-1)).mean(),
    partial(metrics.SparseTopKCategoricalAccuracy, k=2): lambda t, p: _top_k(t[:, 0], p, 2).mean(),
    partial(metrics.SparseCategoricalCrossentropy): lambda t, p: -np.log(p[np.arange(len(t)), t[:, 0].astype(int)]).mean(),
}


@pytest.mark.parametrize("kind,loss,table", [
    ("binary", "binary_crossentropy", BINARY_METRICS),
    ("positive", "mean_squared_error", POSITIVE_METRICS),
    ("onehot", "categorical_crossentropy", ONEHOT_METRICS),
    ("sparse", "sparse_categorical_crossentropy", SPARSE_METRICS),
])
def test_metrics_equal_numpy(kind, loss, table):
    y_true, y_pred = _case(kind, seed=11, n=40)
    names = list(table)
    # metric objects are made here, after the fixture's clear_session
    # (named: Keras keeps one metric per name, and BinaryAccuracy() is also "binary_accuracy")
    model = _identity_model(y_pred.shape[1], loss, metrics=[
        m if isinstance(m, str) else m(name=f"object_{i}") for i, m in enumerate(names)])
    # three batches (16, 16, 8): the stateful metrics accumulate over all of them
    got = model.evaluate(y_pred.astype(np.float32), y_true.astype(np.float32), batch_size=16, verbose=0)
    assert len(got) == len(names) + 1
    np.testing.assert_allclose(got[0], LOSSES[loss][1](y_true, y_pred).mean(), rtol=2e-5)
    for name, value in zip(names, got[1:]):
        np.testing.assert_allclose(value, table[name](y_true, y_pred), rtol=2e-5, atol=1e-6,
                                   err_msg=str(getattr(name, "func", name)))


def test_accuracy_metric_compares_values_exactly():
    # (MeanIoU, the one metric left out: keras/metrics.py:1885 raises on any backend but TF 2)
    rng = _rng(5)
    y_true, y_pred = rng.integers(0, 4, (30, 1)).astype(float), rng.integers(0, 4, (30, 1)).astype(float)
    model = _identity_model(1, "mse", metrics=[metrics.Accuracy()])
    got = model.evaluate(y_pred.astype(np.float32), y_true.astype(np.float32), batch_size=16, verbose=0)
    np.testing.assert_allclose(got[1], (y_true == y_pred).mean(), rtol=1e-6)


def test_metric_functions_through_k_functions():
    y_true, y_pred = _case("onehot", seed=13)
    t, p = KB.placeholder(y_true.shape), KB.placeholder(y_pred.shape)
    fns = [metrics.categorical_accuracy, lambda a, b: metrics.top_k_categorical_accuracy(a, b, k=2)]
    got = KB.function([t, p], [f(t, p) for f in fns])([y_true, y_pred])
    np.testing.assert_array_equal(got[0], (y_true.argmax(-1) == y_pred.argmax(-1)).astype(np.float32))
    np.testing.assert_array_equal(got[1], _top_k(y_true.argmax(-1), y_pred, 2).astype(np.float32))


# -- models: fit / evaluate / predict -------------------------------------------------------------
def _mlp(seed=0):
    np.random.seed(seed)  # Keras's initializers draw their seeds from numpy's global generator
    model = models.Sequential([layers.Dense(8, activation="tanh", input_shape=(4,)),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizers.SGD(0.1), "categorical_crossentropy", metrics=["accuracy"])
    return model


def _np_mlp(weights, x):
    w1, b1, w2, b2 = weights
    return _softmax(np.tanh(x @ w1 + b1) @ w2 + b2)


def _xy(seed, n=24):
    rng = _rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]


def _np_eval(weights, x, y):
    p = _np_mlp(weights, x)
    return -(y * np.log(np.clip(p, EPS, 1 - EPS))).sum(-1).mean(), (p.argmax(-1) == y.argmax(-1)).mean()


def test_predict_evaluate_and_the_batch_methods_equal_numpy():
    model = _mlp()
    x, y = _xy(1)
    weights = model.get_weights()
    expected = _np_mlp(weights, x)
    np.testing.assert_allclose(model.predict(x, batch_size=5), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.predict_on_batch(x), expected, rtol=1e-5, atol=1e-7)
    loss, acc = _np_eval(weights, x, y)
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=10, verbose=0), [loss, acc], rtol=1e-5)
    np.testing.assert_allclose(model.test_on_batch(x, y), [loss, acc], rtol=1e-5)
    # train_on_batch reports the loss before its step, then the weights move by -lr * gradient
    np.testing.assert_allclose(model.train_on_batch(x, y), [loss, acc], rtol=1e-5)
    after = model.get_weights()
    assert all(not np.allclose(a, b) for a, b in zip(after, weights))
    assert _np_eval(after, x, y)[0] < loss


def test_fit_history_and_validation():
    model = _mlp()
    x, y = _xy(2, n=40)
    history = model.fit(x, y, batch_size=8, epochs=3, validation_split=0.25, shuffle=False, verbose=0)
    assert history.epoch == [0, 1, 2]
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    # the last val_ numbers are evaluate on the held-out quarter (the last 10 samples)
    val_loss, val_acc = _np_eval(model.get_weights(), x[30:], y[30:])
    np.testing.assert_allclose([history.history["val_loss"][-1], history.history["val_accuracy"][-1]],
                               [val_loss, val_acc], rtol=1e-5)


class _Batches(Sequence):
    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[s], self.y[s]


def test_fit_generator_and_evaluate_generator_with_a_sequence_equal_fit_and_evaluate():
    x, y = _xy(3, n=30)
    by_fit, by_generator = _mlp(seed=4), _mlp(seed=4)
    np.testing.assert_array_equal(by_fit.get_weights()[0], by_generator.get_weights()[0])
    h1 = by_fit.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    # workers=1 (the default): the batches come from Keras's enqueuer thread
    h2 = by_generator.fit_generator(_Batches(x, y, 8), epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=1e-5)
    for a, b in zip(by_generator.get_weights(), by_fit.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    weights = by_generator.get_weights()
    loss, accuracy = by_generator.evaluate_generator(_Batches(x, y, 7), workers=0)
    # Keras 2.3.1 reports the last batch's loss here (keras/engine/training_generator.py:420) and
    # the accuracy of all batches (its metric state accumulates)
    np.testing.assert_allclose(loss, _np_eval(weights, x[28:], y[28:])[0], rtol=1e-5)
    np.testing.assert_allclose(accuracy, _np_eval(weights, x, y)[1], rtol=1e-6)
    np.testing.assert_allclose(by_generator.predict_generator(_Batches(x, y, 7), workers=0),
                               _np_mlp(by_generator.get_weights(), x), rtol=1e-5, atol=1e-7)


def test_functional_model_with_two_inputs_and_two_outputs():
    a, b = layers.Input((3,), name="a"), layers.Input((2,), name="b")
    h = layers.concatenate([layers.Dense(4, activation="relu", name="da")(a), b])
    cls = layers.Dense(2, activation="softmax", name="cls")(h)
    reg = layers.Dense(1, name="reg")(h)
    model = models.Model([a, b], [cls, reg])
    model.compile("adam", {"cls": "categorical_crossentropy", "reg": "mse"},
                  loss_weights={"cls": 1.0, "reg": 0.5}, metrics={"cls": "accuracy", "reg": "mae"})
    rng = _rng(6)
    xa, xb = rng.normal(size=(20, 3)).astype(np.float32), rng.normal(size=(20, 2)).astype(np.float32)
    yc, yr = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 20)], rng.normal(size=(20, 1)).astype(np.float32)
    model.fit([xa, xb], [yc, yr], epochs=2, batch_size=5, verbose=0)
    wa, ba, wc, bc, wr, br = model.get_weights()
    hid = np.concatenate([np.maximum(xa @ wa + ba, 0), xb], axis=1)
    pc, pr = _softmax(hid @ wc + bc), hid @ wr + br
    got_c, got_r = model.predict({"a": xa, "b": xb})
    np.testing.assert_allclose(got_c, pc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_r, pr, rtol=1e-5, atol=1e-6)
    cls_loss = -(yc * np.log(pc)).sum(-1).mean()
    reg_loss = ((pr - yr) ** 2).mean()
    expected = {"loss": cls_loss + 0.5 * reg_loss, "cls_loss": cls_loss, "reg_loss": reg_loss,
                "cls_accuracy": (pc.argmax(-1) == yc.argmax(-1)).mean(), "reg_mae": np.abs(pr - yr).mean()}
    # equal batches: the per-output losses are means of per-batch means (a Mean metric fed one
    # scalar per batch), equal to the mean over the samples only when the batches are equal
    got = dict(zip(model.metrics_names, model.evaluate([xa, xb], [yc, yr], batch_size=10, verbose=0)))
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=2e-5, err_msg=name)


# -- callbacks ------------------------------------------------------------------------------------
def _linear_data(seed, n=16):
    rng = _rng(seed)
    x = rng.normal(size=(n, 3))
    return x, x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3


def test_early_stopping_stops_after_patience():
    x, y = _linear_data(1)
    model = _linear_model(optimizers.SGD(0.01), np.zeros((3, 1), np.float32), np.zeros(1, np.float32))
    stop = callbacks.EarlyStopping(monitor="loss", min_delta=1e3, patience=2)
    history = model.fit(x, y, epochs=20, batch_size=16, callbacks=[stop], verbose=0)
    # epoch 0 improves on +inf; epochs 1 and 2 do not improve by 1000: training stops after 3
    assert history.epoch == [0, 1, 2] and stop.stopped_epoch == 2


def test_early_stopping_restores_the_best_weights():
    x, y = _linear_data(5)
    w, b = np.zeros((3, 1)), np.zeros(1)
    lr = 1.5  # full-batch steps this large diverge: each epoch's loss is above the one before
    model = _linear_model(optimizers.SGD(lr), w.astype(np.float32), b.astype(np.float32))
    stop = callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    history = model.fit(x, y, epochs=10, batch_size=16, callbacks=[stop], verbose=0)
    assert history.epoch == [0, 1] and history.history["loss"][1] > history.history["loss"][0]
    # epoch 0 had the best loss; its end's weights (one step from zero) are the ones restored
    gw, gb = _mse_grads(x, y, w, b)
    np.testing.assert_allclose(model.get_weights()[0], w - lr * gw, rtol=1e-5)
    np.testing.assert_allclose(model.get_weights()[1], b - lr * gb, rtol=1e-5)


def test_model_checkpoint_writes_reloadable_files(tmp_path):
    x, y = _linear_data(2)
    model = _linear_model(optimizers.Adam(0.05), np.zeros((3, 1), np.float32), np.zeros(1, np.float32))
    pattern = str(tmp_path / "ckpt-{epoch:02d}.h5")
    best = callbacks.ModelCheckpoint(str(tmp_path / "best.h5"), monitor="loss", save_best_only=True)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[callbacks.ModelCheckpoint(pattern), best])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.h5", "ckpt-01.h5", "ckpt-02.h5", "ckpt-03.h5"]
    for name in ("ckpt-03.h5", "best.h5"):  # the loss falls every epoch: best is the last
        loaded = models.load_model(str(tmp_path / name))
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    first = models.load_model(str(tmp_path / "ckpt-01.h5"))
    assert not np.allclose(first.predict(x), model.predict(x))


def test_reduce_lr_on_plateau_changes_the_rate_the_optimizer_uses():
    x, y = _linear_data(3)
    w, b = np.zeros((3, 1)), np.zeros(1)
    model = _linear_model(optimizers.SGD(0.1), w.astype(np.float32), b.astype(np.float32))
    reduce = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e3)
    history = model.fit(x, y, epochs=4, batch_size=16, shuffle=False, callbacks=[reduce], verbose=0)
    # no epoch improves by 1000 after the first: the rate halves after epochs 1, 2, 3 (history
    # logs the rate each epoch ran with)
    np.testing.assert_allclose(history.history["lr"], [0.1, 0.1, 0.05, 0.025], rtol=1e-6)
    np.testing.assert_allclose(KB.get_value(model.optimizer.lr), 0.0125, rtol=1e-6)
    # and the steps used them: one full-batch SGD step per epoch at that epoch's rate
    for lr in (0.1, 0.1, 0.05, 0.025):
        gw, gb = _mse_grads(x, y, w, b)
        w, b = w - lr * gw, b - lr * gb
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-5)
    np.testing.assert_allclose(model.get_weights()[1], b, rtol=1e-5)


def test_learning_rate_scheduler_sets_each_epochs_rate():
    x, y = _linear_data(4)
    w, b = np.zeros((3, 1)), np.zeros(1)
    model = _linear_model(optimizers.SGD(1.0), w.astype(np.float32), b.astype(np.float32))
    schedule = callbacks.LearningRateScheduler(lambda epoch: 0.2 * 0.5 ** epoch)
    history = model.fit(x, y, epochs=3, batch_size=16, callbacks=[schedule], verbose=0)
    np.testing.assert_allclose(history.history["lr"], [0.2, 0.1, 0.05], rtol=1e-6)
    for lr in (0.2, 0.1, 0.05):
        gw, gb = _mse_grads(x, y, w, b)
        w, b = w - lr * gw, b - lr * gb
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-5)


def test_csv_logger_rows_match_history(tmp_path):
    model = _mlp()
    x, y = _xy(5, n=20)
    path = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=3, batch_size=10, validation_split=0.5,
                        callbacks=[callbacks.CSVLogger(str(path))], verbose=0)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == history.epoch
    assert set(rows[0]) == {"epoch"} | set(history.history)
    for key, values in history.history.items():
        np.testing.assert_allclose([float(r[key]) for r in rows], values, rtol=1e-6, err_msg=key)


# -- saving and loading ---------------------------------------------------------------------------
def test_save_and_load_model_continue_training_identically(tmp_path):
    model = _mlp()
    model.compile(optimizers.Adam(0.01), "categorical_crossentropy", metrics=["accuracy"])
    x, y = _xy(6, n=32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.save(str(tmp_path / "m.h5"))
    loaded = models.load_model(str(tmp_path / "m.h5"))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert KB.get_value(loaded.optimizer.iterations) == KB.get_value(model.optimizer.iterations) == 8
    # Adam's moments came back too: the next steps are the same
    for _ in range(2):
        np.testing.assert_allclose(loaded.train_on_batch(x, y), model.train_on_batch(x, y), rtol=1e-6)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_save_weights_and_load_weights_round_trip(tmp_path):
    model, other = _mlp(seed=1), _mlp(seed=2)
    x, _ = _xy(7)
    assert not np.allclose(other.predict(x), model.predict(x))
    model.save_weights(str(tmp_path / "w.h5"))
    other.load_weights(str(tmp_path / "w.h5"))
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    # by name, into a model with a differently shaped extra layer
    np.random.seed(3)
    named = models.Sequential([layers.Dense(8, activation="tanh", input_shape=(4,), name=model.layers[0].name),
                               layers.Dense(3, activation="softmax", name=model.layers[1].name)])
    named.load_weights(str(tmp_path / "w.h5"), by_name=True)
    np.testing.assert_array_equal(named.predict(x), model.predict(x))


def test_model_json_config_round_trip():
    model = _mlp()
    x, _ = _xy(8)
    rebuilt = models.model_from_json(model.to_json())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))


# -- stateful RNNs --------------------------------------------------------------------------------
def _np_lstm(x, kernel, recurrent, bias, h, c, recurrent_activation):
    sig = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)),
           "hard_sigmoid": lambda z: np.clip(0.2 * z + 0.5, 0, 1)}[recurrent_activation]
    units = recurrent.shape[0]
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = (z[:, k * units:(k + 1) * units] for k in range(4))
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
    return h, c


def test_stateful_lstm_carries_state_across_calls_and_resets():
    np.random.seed(9)
    model = models.Sequential([layers.LSTM(4, stateful=True, batch_input_shape=(2, 3, 5))])
    lstm = model.layers[0]
    kernel, recurrent, bias = model.get_weights()
    rng = _rng(9)
    x1, x2 = rng.normal(size=(2, 3, 5)).astype(np.float32), rng.normal(size=(2, 3, 5)).astype(np.float32)
    zeros = np.zeros((2, 4))
    act = lstm.get_config()["recurrent_activation"]
    h1, c1 = _np_lstm(x1, kernel, recurrent, bias, zeros, zeros, act)
    h2, _ = _np_lstm(x2, kernel, recurrent, bias, h1, c1, act)
    np.testing.assert_allclose(model.predict(x1, batch_size=2), h1, rtol=1e-5, atol=1e-6)
    # the second call starts from the state the first left
    np.testing.assert_allclose(model.predict(x2, batch_size=2), h2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(KB.get_value(lstm.states[0]), h2, rtol=1e-5, atol=1e-6)
    model.reset_states()
    assert not np.any(KB.get_value(lstm.states[0])) and not np.any(KB.get_value(lstm.states[1]))
    fresh, _ = _np_lstm(x2, kernel, recurrent, bias, zeros, zeros, act)
    np.testing.assert_allclose(model.predict(x2, batch_size=2), fresh, rtol=1e-5, atol=1e-6)


def test_stateful_lstm_trains_with_state_kept_between_batches():
    np.random.seed(10)
    model = models.Sequential([layers.LSTM(3, stateful=True, batch_input_shape=(2, 4, 2)), layers.Dense(1)])
    model.compile("sgd", "mse")
    lstm = model.layers[0]
    act = lstm.get_config()["recurrent_activation"]
    kernel, recurrent, bias = lstm.get_weights()
    rng = _rng(10)
    x, y = rng.normal(size=(2, 4, 2)).astype(np.float32), rng.normal(size=(2, 1)).astype(np.float32)
    zeros = np.zeros((2, 3))
    model.train_on_batch(x, y)
    # the state the step kept is its forward pass from zeros, with the weights before the step
    h, c = _np_lstm(x, kernel, recurrent, bias, zeros, zeros, act)
    np.testing.assert_allclose(KB.get_value(lstm.states[0]), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(KB.get_value(lstm.states[1]), c, rtol=1e-5, atol=1e-6)
    # the next batch starts from it, with the stepped weights
    kernel, recurrent, bias, w, b = model.get_weights()
    h2, _ = _np_lstm(x, kernel, recurrent, bias, h, c, act)
    np.testing.assert_allclose(model.test_on_batch(x, y), np.mean((h2 @ w + b - y) ** 2), rtol=1e-5)
    model.reset_states()
    assert not np.any(KB.get_value(lstm.states[0]))


# -- synthetic tasks that must learn --------------------------------------------------------------
def _held_out_accuracy(model, x, y, epochs, batch_size=16):
    n = int(len(x) * 0.75)
    model.fit(x[:n], y[:n], epochs=epochs, batch_size=batch_size, verbose=0)
    return model.evaluate(x[n:], y[n:], verbose=0)[1]


def test_vector_mlp_learns():
    rng = _rng(20)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    label = np.argmax(np.abs(x[:, :3]), axis=1)  # 3 classes, not linearly separable
    np.random.seed(20)
    model = models.Sequential([layers.Dense(32, activation="relu", input_shape=(6,)),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizers.Adam(0.01), "categorical_crossentropy", metrics=["accuracy"])
    # 0.91-0.95 over seeds 20-24
    assert _held_out_accuracy(model, x, np.eye(3, dtype=np.float32)[label], epochs=20) > 0.85


@pytest.mark.parametrize("rnn", [layers.LSTM, layers.GRU])
def test_temporal_task_learns(rnn):
    rng = _rng(21)
    x = rng.normal(size=(300, 8, 2)).astype(np.float32)
    label = (x[:, :, 0].sum(1) > x[:, :, 1].sum(1)).astype(int)  # which channel has the larger sum
    np.random.seed(21)
    model = models.Sequential([rnn(8, input_shape=(8, 2)), layers.Dense(2, activation="softmax")])
    model.compile(optimizers.Adam(0.02), "categorical_crossentropy", metrics=["accuracy"])
    assert _held_out_accuracy(model, x, np.eye(2, dtype=np.float32)[label], epochs=15) > 0.85


def test_image_task_learns():
    rng = _rng(22)
    n = 240
    label = rng.integers(0, 2, n)
    x = rng.normal(scale=0.3, size=(n, 8, 8, 1)).astype(np.float32)
    rows, cols = rng.integers(1, 7, n), rng.integers(1, 7, n)
    for i in range(n):  # a horizontal (0) or vertical (1) bar of length 3 at a random place
        if label[i]:
            x[i, rows[i] - 1:rows[i] + 2, cols[i], 0] += 1.0
        else:
            x[i, rows[i], cols[i] - 1:cols[i] + 2, 0] += 1.0
    np.random.seed(22)
    model = models.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),
                               layers.GlobalMaxPooling2D(), layers.Dense(2, activation="softmax")])
    model.compile(optimizers.Adam(0.03), "categorical_crossentropy", metrics=["accuracy"])
    assert _held_out_accuracy(model, x, np.eye(2, dtype=np.float32)[label], epochs=20) > 0.85
