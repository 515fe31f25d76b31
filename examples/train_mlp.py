"""Train a small MLP with kgraph's backend API, export it, and run the export on onnxruntime.

    python examples/train_mlp.py

The same steps as ``kgraph demo``, spelled out: K.gradients for the gradients, Adam written
with K.update / K.update_add as Keras 2.3.1 writes it, one K.function for the training step.
"""
import numpy as np
import onnxruntime as ort

import kgraph
import kgraph.backend as K

# -- data: three classes of 2-D Gaussian blobs ---------------------------------------------
rng = np.random.default_rng(0)
centres = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
labels = rng.integers(0, 3, 1200)
features = (centres[labels] + rng.normal(0, 1.2, (1200, 2))).astype("float32")
one_hot = np.eye(3, dtype="float32")[labels]
x_train, y_train, x_test, y_test = features[:1000], one_hot[:1000], features[1000:], one_hot[1000:]

# -- model: 2-16-3 MLP, softmax cross-entropy -----------------------------------------------
x = K.placeholder((None, 2), name="features")
y = K.placeholder((None, 3), name="labels")
w1 = K.variable(rng.normal(0, 0.5, (2, 16)), name="w1")
b1 = K.variable(np.zeros(16), name="b1")
w2 = K.variable(rng.normal(0, 0.5, (16, 3)), name="w2")
b2 = K.variable(np.zeros(3), name="b2")
params = [w1, b1, w2, b2]

logits = K.bias_add(K.dot(K.relu(K.bias_add(K.dot(x, w1), b1)), w2), b2)
loss = K.mean(K.categorical_crossentropy(y, logits, from_logits=True))
probabilities = K.softmax(logits)

# -- Adam, as Keras 2.3.1 writes it ---------------------------------------------------------
lr, beta_1, beta_2 = 0.01, 0.9, 0.999
iterations = K.variable(0, dtype="int64", name="iterations")
t = K.cast(iterations, K.floatx()) + 1
lr_t = lr * K.sqrt(1.0 - K.pow(K.constant(beta_2), t)) / (1.0 - K.pow(K.constant(beta_1), t))
updates = [K.update_add(iterations, 1)]
for p, g in zip(params, K.gradients(loss, params)):
    m = K.zeros(K.int_shape(p))
    v = K.zeros(K.int_shape(p))
    m_t = beta_1 * m + (1.0 - beta_1) * g
    v_t = beta_2 * v + (1.0 - beta_2) * K.square(g)
    updates += [K.update(m, m_t), K.update(v, v_t),
                K.update(p, p - lr_t * m_t / (K.sqrt(v_t) + K.epsilon()))]

train_step = K.function([x, y], [loss], updates=updates, name="train_step")
predict = K.function([x], [probabilities], name="predict")

# -- train ----------------------------------------------------------------------------------
for epoch in range(10):
    order = rng.permutation(len(x_train))
    epoch_losses = [train_step([x_train[i], y_train[i]])[0] for i in np.array_split(order, 31)]
    print(f"epoch {epoch + 1:2d}  loss {np.mean(epoch_losses):.4f}")

accuracy = np.mean(predict([x_test])[0].argmax(1) == y_test.argmax(1))
print(f"test accuracy (kgraph): {accuracy:.3f}")

# -- export and run the file without kgraph -------------------------------------------------
kgraph.export(predict, "mlp.onnx")                            # weights frozen in
kgraph.export(train_step, "mlp_train_step.onnx", training=True)  # the step: variables in, new values out
session = ort.InferenceSession("mlp.onnx", providers=["CPUExecutionProvider"])
exported = session.run(None, {"features": x_test})[0]
print(f"test accuracy (mlp.onnx on onnxruntime): {np.mean(exported.argmax(1) == y_test.argmax(1)):.3f}")
