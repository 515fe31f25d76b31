"""CNN benchmark (issue 4): a small Keras-style CNN through kgraph vs PyTorch eager, on CPU.

    python bench/bench_cnn.py [--threads N] [--rounds R] [--batch B] [--data-format F]

Model: 28x28x1 → conv 3x3 32 + relu → maxpool 2 → conv 3x3 64 + relu → maxpool 2 → dense 10,
batch 64.  Two workloads:

* forward: the logits (kgraph: a K.function without updates, weights frozen into the session);
* train step: softmax cross-entropy, gradients and an SGD update of every weight (kgraph:
  K.gradients + K.update_sub in one K.function; torch: zero_grad, backward, in-place update).

kgraph is fed channels_last numpy arrays (Keras' default; ``--data-format channels_first``
measures the other), torch NCHW tensors.  Both engines get the same thread count (ORT intra-op
threads through KGRAPH_NUM_THREADS; torch.set_num_threads) and run interleaved round by round.
Before timing, the two engines' logits, loss and updated weights are compared.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import measure, print_table, setup_threads, torch_or_none  # noqa: E402

LEARNING_RATE = 0.05
SETTLE_SECONDS = 0.1  # lets the other engine's spinning threads go idle before a timed block


def init_weights(rng):
    def glorot(shape, fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    return {
        "w1": glorot((3, 3, 1, 32), 9, 9 * 32), "b1": np.zeros(32, np.float32),
        "w2": glorot((3, 3, 32, 64), 9 * 32, 9 * 64), "b2": np.zeros(64, np.float32),
        "wd": glorot((5 * 5 * 64, 10), 1600, 10), "bd": np.zeros(10, np.float32),
    }


# -- kgraph -------------------------------------------------------------------------------------------
def build_kgraph(weights, batch, data_format):
    import kgraph.backend as K

    variables = {name: K.variable(value, name=name) for name, value in weights.items()}
    v = variables
    shape = (batch, 28, 28, 1) if data_format == "channels_last" else (batch, 1, 28, 28)
    x = K.placeholder(shape, name="images")
    labels = K.placeholder((batch, 10), name="labels")

    # what Keras' Conv2D + Activation('relu') emit; plain ops where the nn group is not built yet
    def bias(t, b, data_format=data_format):
        if hasattr(K, "bias_add"):
            return K.bias_add(t, b, data_format=data_format)
        return t + (b if data_format == "channels_last" else K.reshape(b, (1, -1, 1, 1)))

    def relu(t):
        return K.relu(t) if hasattr(K, "relu") else K.maximum(t, 0.0)

    h = relu(bias(K.conv2d(x, v["w1"], data_format=data_format), v["b1"]))
    h = K.pool2d(h, (2, 2), strides=(2, 2), data_format=data_format)
    h = relu(bias(K.conv2d(h, v["w2"], data_format=data_format), v["b2"]))
    h = K.pool2d(h, (2, 2), strides=(2, 2), data_format=data_format)
    if data_format == "channels_first":  # dense weights are laid out (h, w, c), as Keras flattens
        h = K.permute_dimensions(h, (0, 2, 3, 1))
    logits = bias(K.dot(K.batch_flatten(h), v["wd"]), v["bd"], data_format="channels_last")

    shifted = logits - K.stop_gradient(K.max(logits, axis=1, keepdims=True))
    log_probs = shifted - K.log(K.sum(K.exp(shifted), axis=1, keepdims=True))
    loss = -K.mean(K.sum(labels * log_probs, axis=1))
    params = list(variables.values())
    grads = K.gradients(loss, params)
    updates = [K.update_sub(p, LEARNING_RATE * g) for p, g in zip(params, grads)]
    forward = K.function([x], [logits])
    train = K.function([x, labels], [loss], updates=updates)
    return forward, train, variables


# -- torch --------------------------------------------------------------------------------------------
def build_torch(weights, torch):
    t = {
        "w1": torch.tensor(weights["w1"].transpose(3, 2, 0, 1).copy(), requires_grad=True),
        "b1": torch.tensor(weights["b1"], requires_grad=True),
        "w2": torch.tensor(weights["w2"].transpose(3, 2, 0, 1).copy(), requires_grad=True),
        "b2": torch.tensor(weights["b2"], requires_grad=True),
        # Keras flattens (h, w, c); torch's NCHW flattens (c, h, w)
        "wd": torch.tensor(weights["wd"].reshape(5, 5, 64, 10).transpose(2, 0, 1, 3).reshape(1600, 10).T.copy(),
                           requires_grad=True),
        "bd": torch.tensor(weights["bd"], requires_grad=True),
    }
    F = torch.nn.functional

    def logits_of(x):
        h = F.max_pool2d(F.relu(F.conv2d(x, t["w1"], t["b1"])), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, t["w2"], t["b2"])), 2)
        return F.linear(h.flatten(1), t["wd"], t["bd"])

    def forward(x):
        with torch.no_grad():
            return logits_of(x)

    def train(x, labels):
        for p in t.values():
            p.grad = None
        loss = F.cross_entropy(logits_of(x), labels)
        loss.backward()
        with torch.no_grad():
            for p in t.values():
                p.sub_(LEARNING_RATE * p.grad)
        return loss

    return forward, train, t


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--data-format", default="channels_last", choices=["channels_last", "channels_first"])
    args = parser.parse_args()
    setup_threads(args.threads)
    torch = torch_or_none()
    if torch is None:
        print("torch is not installed: timing kgraph only (pip install torch for the comparison)")

    rng = np.random.default_rng(0)
    weights = init_weights(rng)
    images = rng.random((args.batch, 28, 28, 1), dtype=np.float32)
    classes = rng.integers(0, 10, args.batch)
    onehot = np.eye(10, dtype=np.float32)[classes]
    k_images = images if args.data_format == "channels_last" else images.transpose(0, 3, 1, 2).copy()

    import onnxruntime
    print(f"batch {args.batch}, {args.threads} threads, kgraph {args.data_format}, "
          f"onnxruntime {onnxruntime.__version__}" + (f", torch {torch.__version__}" if torch else ""))

    k_forward, k_train, k_vars = build_kgraph(weights, args.batch, args.data_format)
    engines_fwd = {"kgraph": lambda: k_forward([k_images])}
    engines_train = {"kgraph": lambda: k_train([k_images, onehot])}
    if torch is not None:
        t_forward, t_train, t_vars = build_torch(weights, torch)
        t_images = torch.tensor(images.transpose(0, 3, 1, 2).copy())
        t_labels = torch.tensor(classes)
        # the same numbers before timing: logits, loss, and the weights after one step
        k_logits = k_forward([k_images])[0]
        np.testing.assert_allclose(k_logits, t_forward(t_images).numpy(), rtol=1e-3, atol=1e-4)
        k_loss = k_train([k_images, onehot])[0]
        t_loss = t_train(t_images, t_labels).item()
        np.testing.assert_allclose(k_loss, t_loss, rtol=1e-4)
        np.testing.assert_allclose(k_vars["w2"].numpy().transpose(3, 2, 0, 1), t_vars["w2"].detach().numpy(),
                                   rtol=1e-3, atol=1e-5)
        print(f"check: logits, loss ({k_loss:.5f}) and updated weights agree with torch")
        engines_fwd["torch eager"] = lambda: t_forward(t_images)
        engines_train["torch eager"] = lambda: t_train(t_images, t_labels)

    reference = "torch eager" if torch is not None else "kgraph"
    for title, engines in ((f"forward (logits), batch {args.batch}", engines_fwd),
                           (f"train step (loss + grads + SGD update), batch {args.batch}", engines_train)):
        print_table(title, measure(engines, args.rounds, target_seconds=0.2, settle_seconds=SETTLE_SECONDS),
                    reference, notes={"kgraph": "(target <= 1.0x torch eager)"})


if __name__ == "__main__":
    main()
