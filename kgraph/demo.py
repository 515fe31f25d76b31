"""kgraph's main job, end to end: train an MLP with ``K.gradients`` and Adam through
``K.function``, export it for inference and for training, and run the exported file on a fresh
ONNX Runtime session.

    kgraph demo [--out DIR] [--epochs N] [--force]     # or: python -m kgraph demo

The data are built in and seeded: Gaussian blobs whose labels come from a fixed random *teacher*
network, so the classes are learnable but not linearly separable.  The optimizers below are
Keras 2.3.1's ``SGD`` and ``Adam``, written with the same backend calls (``K.update_add`` of the
iteration count, ``K.update`` of each slot and parameter) so a Keras user recognizes them.
"""
import os
import time

import numpy as np

import kgraph
import kgraph.backend as K
import kgraph.deploy
from kgraph.deploy import write_model_card


# -- optimizers, as Keras 2.3.1 writes them ---------------------------------------------------
class SGD:
    """Keras 2.3.1 ``SGD``: ``v = momentum·m - lr·g``; ``p ← p + v`` (Nesterov:
    ``p ← p + momentum·v - lr·g``); learning-rate decay by iteration."""

    def __init__(self, lr=0.01, momentum=0.0, decay=0.0, nesterov=False):
        with K.name_scope("SGD"):
            self.iterations = K.variable(0, dtype="int64", name="iterations")
            self.lr = K.variable(lr, name="lr")
            self.momentum = K.variable(momentum, name="momentum")
            self.decay = K.variable(decay, name="decay")
        self.initial_decay = decay
        self.nesterov = nesterov

    def get_updates(self, loss, params):
        grads = K.gradients(loss, params)
        updates = [K.update_add(self.iterations, 1)]
        lr = self.lr
        if self.initial_decay > 0:
            lr = lr * (1. / (1. + self.decay * K.cast(self.iterations, K.dtype(self.decay))))
        moments = [K.zeros(K.int_shape(p), name=f"moment_{i}") for i, p in enumerate(params)]
        self.weights = [self.iterations] + moments
        for p, g, m in zip(params, grads, moments):
            v = self.momentum * m - lr * g  # velocity
            updates.append(K.update(m, v))
            new_p = p + self.momentum * v - lr * g if self.nesterov else p + v
            if getattr(p, "constraint", None) is not None:
                new_p = p.constraint(new_p)
            updates.append(K.update(p, new_p))
        return updates


class Adam:
    """Keras 2.3.1 ``Adam``, bias correction folded into the step size as Keras writes it:
    ``lr_t = lr·sqrt(1 - beta_2^t) / (1 - beta_1^t)`` with ``t = iterations + 1``, and
    ``p ← p - lr_t·m_t / (sqrt(v_t) + epsilon)``."""

    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.0, amsgrad=False):
        with K.name_scope("Adam"):
            self.iterations = K.variable(0, dtype="int64", name="iterations")
            self.lr = K.variable(lr, name="lr")
            self.beta_1 = K.variable(beta_1, name="beta_1")
            self.beta_2 = K.variable(beta_2, name="beta_2")
            self.decay = K.variable(decay, name="decay")
        self.epsilon = K.epsilon() if epsilon is None else epsilon
        self.initial_decay = decay
        self.amsgrad = amsgrad

    def get_updates(self, loss, params):
        grads = K.gradients(loss, params)
        updates = [K.update_add(self.iterations, 1)]
        lr = self.lr
        if self.initial_decay > 0:
            lr = lr * (1. / (1. + self.decay * K.cast(self.iterations, K.dtype(self.decay))))
        t = K.cast(self.iterations, K.floatx()) + 1
        lr_t = lr * (K.sqrt(1. - K.pow(self.beta_2, t)) / (1. - K.pow(self.beta_1, t)))
        ms = [K.zeros(K.int_shape(p), dtype=K.dtype(p), name=f"m_{i}") for i, p in enumerate(params)]
        vs = [K.zeros(K.int_shape(p), dtype=K.dtype(p), name=f"v_{i}") for i, p in enumerate(params)]
        vhats = ([K.zeros(K.int_shape(p), dtype=K.dtype(p), name=f"vhat_{i}") for i, p in enumerate(params)]
                 if self.amsgrad else [None] * len(params))
        self.weights = [self.iterations] + ms + vs + [v for v in vhats if v is not None]
        for p, g, m, v, vhat in zip(params, grads, ms, vs, vhats):
            m_t = (self.beta_1 * m) + (1. - self.beta_1) * g
            v_t = (self.beta_2 * v) + (1. - self.beta_2) * K.square(g)
            updates.append(K.update(m, m_t))
            updates.append(K.update(v, v_t))
            if self.amsgrad:
                vhat_t = K.maximum(vhat, v_t)
                p_t = p - lr_t * m_t / (K.sqrt(vhat_t) + self.epsilon)
                updates.append(K.update(vhat, vhat_t))
            else:
                p_t = p - lr_t * m_t / (K.sqrt(v_t) + self.epsilon)
            if getattr(p, "constraint", None) is not None:
                p_t = p.constraint(p_t)
            updates.append(K.update(p, p_t))
        return updates


# -- the model --------------------------------------------------------------------------------
def dense_params(sizes, seed, name="dense"):
    """Glorot-uniform kernels and zero biases for a stack of dense layers, as Keras initializes."""
    rng = np.random.default_rng(seed)
    params = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        limit = np.sqrt(6.0 / (n_in + n_out))
        params.append(K.variable(rng.uniform(-limit, limit, (n_in, n_out)), name=f"{name}_{i}/kernel"))
        params.append(K.variable(np.zeros(n_out), name=f"{name}_{i}/bias"))
    return params


def mlp_logits(x, params):
    """Dense layers with ReLU between them; the last layer's pre-activations (the logits)."""
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = K.bias_add(K.dot(h, params[2 * i]), params[2 * i + 1])
        if i < n_layers - 1:
            h = K.relu(h)
    return h


def softmax_cross_entropy(y_true, logits):
    """The batch mean of Keras' categorical cross-entropy on logits (``from_logits=True``: one
    log-softmax, no clipping)."""
    return K.mean(K.categorical_crossentropy(y_true, logits, from_logits=True))


# -- data -------------------------------------------------------------------------------------
def teacher_blobs(n, n_features=8, n_classes=3, seed=0):
    """``n`` seeded samples: Gaussian blobs around random centres, labelled by a fixed random
    one-hidden-layer teacher network (argmax of its outputs).  Returns features (float32) and
    one-hot labels (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, (2 * n_classes, n_features))
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(0.0, 1.0, (n, n_features))
    w1 = rng.normal(0.0, 1.0, (n_features, 16))
    w2 = rng.normal(0.0, 1.0, (16, n_classes))
    labels = np.argmax(np.tanh(x @ w1) @ w2, axis=1)
    return x.astype(np.float32), np.eye(n_classes, dtype=np.float32)[labels]


# -- the demo ---------------------------------------------------------------------------------
OUTPUT_FILES = ("mlp.onnx", "mlp_train_step.onnx", "mlp.md")


def prepare_output(out_dir, force=False):
    """Make sure the demo can write its files before it trains: ``out_dir`` is (or can be made)
    a writable folder, and none of its outputs exists unless ``force``.  Raises ``ValueError``
    naming the problem."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} is a file, expected a folder for the demo's outputs")
    existing = [name for name in OUTPUT_FILES if os.path.exists(os.path.join(out_dir, name))]
    if existing and not force:
        raise ValueError(f"{', '.join(os.path.join(out_dir, n) for n in existing)} already "
                         f"exist{'s' if len(existing) == 1 else ''} (use --force to overwrite)")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the output folder {out_dir}: {error.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"the output folder {out_dir} is not writable")


def run(out_dir="kgraph-demo", epochs=20, batch_size=64, n_train=2048, n_test=512, hidden=(32, 32),
        lr=0.01, seed=0, log=print, force=True):
    """Train, export, reload, compare.  Returns a dict of what happened (losses, accuracies,
    paths, the agreement between kgraph and the exported file).  Bad arguments and an output
    that cannot be written raise ``ValueError`` before any training."""
    import onnx
    import onnxruntime as ort

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    prepare_output(out_dir, force=force)

    x_all, y_all = teacher_blobs(n_train + n_test, seed=seed)
    x_train, y_train = x_all[:n_train], y_all[:n_train]
    x_test, y_test = x_all[n_train:], y_all[n_train:]
    n_features, n_classes = x_train.shape[1], y_train.shape[1]

    x = K.placeholder((None, n_features), name="features")
    y = K.placeholder((None, n_classes), name="labels")
    sizes = (n_features,) + tuple(hidden) + (n_classes,)
    params = dense_params(sizes, seed=seed + 1)
    logits = mlp_logits(x, params)
    loss = softmax_cross_entropy(y, logits)
    optimizer = Adam(lr=lr)
    train_step = K.function([x, y], [loss], updates=optimizer.get_updates(loss, params), name="train_step")
    probabilities = K.softmax(logits)
    probabilities.name = "probabilities"
    predict = K.function([x], [probabilities], name="predict")

    evaluate_loss = K.function([x, y], [loss], name="loss")

    log(f"kgraph demo: MLP {n_features}-{'-'.join(map(str, hidden))}-{n_classes}, Adam(lr={lr}), "
        f"{n_train} training / {n_test} test samples, batch {batch_size}, {epochs} epochs")
    rng = np.random.default_rng(seed + 2)
    losses = [float(evaluate_loss([x_train, y_train])[0])]
    log(f"  before training  loss {losses[0]:.4f}")
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(n_train)
        batch_losses = [float(train_step([x_train[idx], y_train[idx]])[0])
                        for idx in np.array_split(order, max(1, n_train // batch_size))]
        losses.append(float(np.mean(batch_losses)))
        if epoch == 0 or epoch == epochs - 1 or (epoch + 1) % max(1, epochs // 10) == 0:
            log(f"  epoch {epoch + 1:3d}/{epochs}   loss {losses[-1]:.4f}  (mean over the epoch's batches)")
    train_seconds = time.perf_counter() - start
    probs = predict([x_test])[0]
    accuracy = float(np.mean(probs.argmax(1) == y_test.argmax(1)))
    log(f"trained in {train_seconds:.2f} s; test accuracy (kgraph) {accuracy:.3f}")

    model_path = kgraph.export(predict, os.path.join(out_dir, "mlp.onnx"), force=force)
    step_path = kgraph.export(train_step, os.path.join(out_dir, "mlp_train_step.onnx"), training=True, force=force)
    card_path = write_model_card(onnx.load(model_path), os.path.join(out_dir, "mlp.md"), model_path, force=force,
                                 name="kgraph demo MLP", description=f"MLP {'-'.join(map(str, sizes))} trained "
                                 f"with Adam on synthetic teacher data; test accuracy {accuracy:.3f}.")
    log(f"exported {model_path} (inference), {step_path} (training step) and {card_path} (model card)")

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (input_name,), (output_name,) = [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]
    exported_probs = sess.run([output_name], {input_name: x_test})[0]
    exported_accuracy = float(np.mean(exported_probs.argmax(1) == y_test.argmax(1)))
    max_difference = float(np.max(np.abs(exported_probs - probs)))
    agreement = float(np.mean(exported_probs.argmax(1) == probs.argmax(1)))
    log(f"{os.path.basename(model_path)} on a fresh onnxruntime session: test accuracy "
        f"{exported_accuracy:.3f}, predictions agree with kgraph on {agreement:.1%} of samples "
        f"(max |difference| {max_difference:.2e})")
    # the training-step file steps on plain onnxruntime from the state stored in it (the trained
    # values), so its loss on a batch is kgraph's loss at the current parameters
    step_sess = ort.InferenceSession(step_path, providers=["CPUExecutionProvider"])
    batch = {"features": x_test[:batch_size], "labels": y_test[:batch_size],
             **kgraph.deploy.initial_state(onnx.load(step_path))}
    step_loss = float(step_sess.run([step_sess.get_outputs()[0].name], batch)[0])
    kgraph_loss = float(evaluate_loss([batch["features"], batch["labels"]])[0])
    log(f"{os.path.basename(step_path)} on a fresh onnxruntime session: one step on a test batch, "
        f"loss {step_loss:.6f} (kgraph: {kgraph_loss:.6f}); "
        f"{sum(o.name.endswith(':new') for o in step_sess.get_outputs())} updated variables come back as outputs")
    return {"losses": losses, "step_loss": step_loss, "kgraph_loss": kgraph_loss, "accuracy": accuracy, "exported_accuracy": exported_accuracy,
            "agreement": agreement, "max_difference": max_difference, "model_path": model_path, "card_path": card_path,
            "step_path": step_path, "train_seconds": train_seconds}
