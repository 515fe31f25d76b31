"""Keras 2.3.1 on kgraph (issue 10): the graphs Keras builds, against the same math written by
hand on raw ONNX Runtime and against PyTorch, side by side in one process.

    python tools/test_env.py keras                       # the Keras environment (numpy < 1.24)
    .venv-keras/bin/pip install torch==2.13.0            # by hand, for the PyTorch columns
    .venv-keras/bin/python bench/bench_keras.py [--threads 1] [--rounds R] [--only step,fit,compile]

Rows:

* ``step`` — MLP 784-512-512-10 (relu, softmax, categorical crossentropy) ``train_on_batch``
  with SGD and Adam at batch 32 and 256, vs a hand-written ONNX Runtime step of the same math with
  the same state (Keras's SGD keeps a momentum buffer per weight and an iteration count; Adam two
  moments and the count), vs PyTorch eager.  Keras's compiled ``train_function`` alone is shown
  too: the difference to ``train_on_batch`` is Keras's own Python.
* ``fit`` — one ``model.fit`` epoch (MLP with SGD at batch 32 and 256 over 4096 samples; LSTM(64)
  on (50, 16) sequences with Adam at batch 64 over 1024 samples) vs the same model as a PyTorch
  loop, and (MLP) the hand-written ORT step in the same Python loop.
* ``compile`` — seconds to the first ``predict`` and the first ``train_on_batch`` of
  keras_applications ResNet50 and MobileNetV2 (weights=None, 224x224, batch 8): graph building,
  autodiff, lowering and session creation.

Before timing, the Keras step and the hand-written one are checked to take the same step from the
same weights (loss and new weights).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "kgraph.backend")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import SIZES, mlp_weights  # noqa: E402
from bench_train import RawStep, batch_data  # noqa: E402
from harness import measure, print_table, setup_threads, thread_counts, torch_or_none  # noqa: E402

LR = 0.01
ADAM = dict(lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)  # Keras 2.3.1's defaults


# -- the hand-written optimizers (state as Keras keeps it) -------------------------------------
class MomentumSGD:
    """Keras's SGD with ``momentum = 0``: ``m = -lr·g; W = W + m``, and the iteration count."""

    def __init__(self, lr=LR):
        self.constants = {"neg_lr": np.float32(-lr), "one": np.float32(1.0)}
        self.state = [("iterations", [])]
        self._counted = False

    def update(self, node, name, grad, shape):
        self.state.append((f"m_{name}", shape))
        m = node("Mul", ["neg_lr", grad], f"m_{name}_new")
        outputs = [node("Add", [name, m], f"{name}_new"), m]
        if not self._counted:
            self._counted = True
            outputs.append(node("Add", ["iterations", "one"], "iterations_new"))
        return outputs


class KerasAdam:
    """Keras 2.3.1's Adam: ``lr_t = lr·sqrt(1 - b2^t)/(1 - b1^t)``, ``m = b1·m + (1 - b1)·g``,
    ``v = b2·v + (1 - b2)·g²``, ``W = W - lr_t·m/(sqrt(v) + eps)``."""

    def __init__(self, lr=ADAM["lr"], beta_1=ADAM["beta_1"], beta_2=ADAM["beta_2"], epsilon=ADAM["epsilon"]):
        self.constants = {"lr": np.float32(lr), "beta1": np.float32(beta_1), "beta2": np.float32(beta_2),
                          "one_b1": np.float32(1 - beta_1), "one_b2": np.float32(1 - beta_2),
                          "eps": np.float32(epsilon), "one": np.float32(1.0)}
        self.state = [("iterations", [])]
        self._lr_t = None

    def _step_size(self, node):
        t = node("Add", ["iterations", "one"], "iterations_new")
        correction = node("Div", [node("Sqrt", [node("Sub", ["one", node("Pow", ["beta2", t], "beta2_t")], "c2")], "sqrt_c2"),
                                  node("Sub", ["one", node("Pow", ["beta1", t], "beta1_t")], "c1")], "correction")
        self._lr_t = node("Mul", ["lr", correction], "lr_t")
        return t

    def update(self, node, name, grad, shape):
        outputs = [] if self._lr_t else [self._step_size(node)]
        self.state += [(f"m_{name}", shape), (f"v_{name}", shape)]
        m = node("Add", [node("Mul", ["beta1", f"m_{name}"], f"beta1m_{name}"),
                         node("Mul", ["one_b1", grad], f"gm_{name}")], f"m_{name}_new")
        v = node("Add", [node("Mul", ["beta2", f"v_{name}"], f"beta2v_{name}"),
                         node("Mul", ["one_b2", node("Mul", [grad, grad], f"g2_{name}")], f"gv_{name}")],
                 f"v_{name}_new")
        step = node("Div", [node("Mul", [self._lr_t, m], f"lrm_{name}"),
                            node("Add", [node("Sqrt", [v], f"sqrtv_{name}"), "eps"], f"den_{name}")], f"step_{name}")
        return [node("Sub", [name, step], f"{name}_new"), m, v] + outputs


# -- Keras and PyTorch models ------------------------------------------------------------------
def keras_mlp(weights, optimizer):
    import keras
    from keras import layers, models
    model = models.Sequential([layers.Dense(SIZES[1], activation="relu", input_shape=(SIZES[0],)),
                               layers.Dense(SIZES[2], activation="relu"),
                               layers.Dense(SIZES[3], activation="softmax")])
    opt = keras.optimizers.SGD(lr=LR) if optimizer == "sgd" else keras.optimizers.Adam(**ADAM)
    model.compile(opt, "categorical_crossentropy")
    model.set_weights(weights)
    return model


def torch_mlp(torch, weights, optimizer):
    layers = []
    for i in range(len(SIZES) - 1):
        linear = torch.nn.Linear(SIZES[i], SIZES[i + 1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[2 * i].T.copy()))
            linear.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        layers += [linear] + ([torch.nn.ReLU()] if i < len(SIZES) - 2 else [])
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR) if optimizer == "sgd" else \
        torch.optim.Adam(model.parameters(), lr=ADAM["lr"], eps=ADAM["epsilon"])
    return model, opt


def torch_step(torch, model, opt):
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, labels):
        loss = loss_fn(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def raw_optimizer(name):
    return MomentumSGD() if name == "sgd" else KerasAdam()


def check_same_step(optimizer, threads):
    """Keras's step and the hand-written one, from the same weights and batch: same loss, same
    new weights."""
    import keras.backend as KB
    weights = mlp_weights()
    x, y, _ = batch_data(32)
    model = keras_mlp(weights, optimizer)
    loss = model.train_on_batch(x, y)
    raw = RawStep(weights, threads, raw_optimizer(optimizer))
    raw_loss = raw(x, y)
    np.testing.assert_allclose(raw_loss, loss, rtol=1e-4)
    names = [f"{kind}{i}" for i in range(len(SIZES) - 1) for kind in ("W", "b")]
    for name, w in zip(names, model.get_weights()):
        np.testing.assert_allclose(raw.state[name], w, rtol=1e-3, atol=1e-5, err_msg=name)
    KB.clear_session()


def bench_steps(threads, rounds, torch):
    for optimizer in ("sgd", "adam"):
        check_same_step(optimizer, threads)
        for batch in (32, 256):
            weights = mlp_weights()
            x, y, labels = batch_data(batch)
            model = keras_mlp(weights, optimizer)
            model.train_on_batch(x, y)
            train_function = model.train_function
            feeds = [x, y, np.ones(batch, np.float32)]
            raw = RawStep(weights, threads, raw_optimizer(optimizer))
            engines = {"Keras train_on_batch": lambda: model.train_on_batch(x, y),
                       "Keras train_function": lambda: train_function(feeds),
                       "raw ORT step": lambda: raw(x, y)}
            if torch is not None:
                step = torch_step(torch, *torch_mlp(torch, weights, optimizer))
                xt, lt = torch.from_numpy(x), torch.from_numpy(labels)
                engines["PyTorch eager"] = lambda: step(xt, lt)
            medians = measure(engines, rounds, target_seconds=0.05)
            print_table(f"Keras MLP train_on_batch, {optimizer.upper()}, batch {batch}", medians,
                        "raw ORT step", notes={"Keras train_on_batch": "(target <= 1.1x)"})


# -- fit epochs ------------------------------------------------------------------------------
def bench_fit(threads, rounds, torch):
    rng = np.random.default_rng(0)
    n = 4096
    x = rng.normal(size=(n, SIZES[0])).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], n)
    y = np.eye(SIZES[-1], dtype=np.float32)[labels]
    for batch in (32, 256):
        weights = mlp_weights()
        model = keras_mlp(weights, "sgd")
        raw = RawStep(weights, threads, MomentumSGD())
        starts = range(0, n, batch)

        def raw_epoch():
            for s in starts:
                raw(x[s:s + batch], y[s:s + batch])

        engines = {"Keras fit": lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False),
                   "raw ORT step loop": raw_epoch}
        if torch is not None:
            step = torch_step(torch, *torch_mlp(torch, weights, "sgd"))
            xt, lt = torch.from_numpy(x), torch.from_numpy(labels)

            def torch_epoch():
                for s in starts:
                    step(xt[s:s + batch], lt[s:s + batch])
            engines["PyTorch loop"] = torch_epoch
        medians = measure(engines, rounds, target_seconds=0.0)
        reference = "PyTorch loop" if torch is not None else "raw ORT step loop"
        print_table(f"fit epoch: MLP, SGD, batch {batch}, {n} samples", medians, reference,
                    notes={"Keras fit": "(target <= 1.0x PyTorch)"})
    bench_fit_lstm(rounds, torch)


def bench_fit_lstm(rounds, torch):
    import keras
    from keras import layers, models
    rng = np.random.default_rng(1)
    n, steps, features, units, classes, batch = 1024, 50, 16, 64, 4, 64
    x = rng.normal(size=(n, steps, features)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    y = np.eye(classes, dtype=np.float32)[labels]
    model = models.Sequential([layers.LSTM(units, input_shape=(steps, features)),
                               layers.Dense(classes, activation="softmax")])
    model.compile(keras.optimizers.Adam(**ADAM), "categorical_crossentropy")
    engines = {"Keras fit": lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)}
    if torch is not None:
        class TorchLSTM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = torch.nn.LSTM(features, units, batch_first=True)
                self.out = torch.nn.Linear(units, classes)

            def forward(self, seq):
                _, (h, _) = self.lstm(seq)
                return self.out(h[-1])
        net = TorchLSTM()
        step = torch_step(torch, net, torch.optim.Adam(net.parameters(), lr=ADAM["lr"], eps=ADAM["epsilon"]))
        xt, lt = torch.from_numpy(x), torch.from_numpy(labels)

        def torch_epoch():
            for s in range(0, n, batch):
                step(xt[s:s + batch], lt[s:s + batch])
        engines["PyTorch loop"] = torch_epoch
    medians = measure(engines, rounds, target_seconds=0.0)
    print_table(f"fit epoch: LSTM({units}) on ({steps}, {features}), Adam, batch {batch}, {n} samples",
                medians, "PyTorch loop" if torch is not None else "Keras fit",
                notes={"Keras fit": "(target <= 1.0x PyTorch)"})


# -- compile time ----------------------------------------------------------------------------
def bench_compile():
    import keras
    import keras.backend as KB
    print("\nCompile time: seconds of the first call (graph building, autodiff, lowering, session) "
          "and of the second, which is the compute alone")
    print(f"  {'model':<12} {'build':>7} {'predict 1st':>12} {'2nd':>6} {'train_on_batch 1st':>19} {'2nd':>6}"
          f"   (target: 1st <= 2 s each)")
    batch = 8
    for name in ("ResNet50", "MobileNetV2"):
        KB.clear_session()
        rng = np.random.default_rng(0)
        x = rng.random((batch, 224, 224, 3), dtype=np.float32)
        y = np.eye(10, dtype=np.float32)[np.arange(batch) % 10]
        times = [time.perf_counter()]
        model = getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3), classes=10)
        model.compile("sgd", "categorical_crossentropy")
        times.append(time.perf_counter())
        for call in (lambda: model.predict(x, batch_size=batch), lambda: model.predict(x, batch_size=batch),
                     lambda: model.train_on_batch(x, y), lambda: model.train_on_batch(x, y)):
            call()
            times.append(time.perf_counter())
        build, p1, p2, t1, t2 = np.diff(times)
        print(f"  {name:<12} {build:6.2f}s {p1:11.2f}s {p2:5.2f}s {t1:18.2f}s {t2:5.2f}s")


# -- memory ----------------------------------------------------------------------------------
def bench_memory(child=None, batch=32):
    """Peak resident memory of one ResNet50 (keras_applications, weights=None, 224x224) training
    step through kgraph, against a ResNet50 of the same layers in PyTorch (torchvision is not
    installable here: bottleneck blocks [3, 4, 6, 3], written below).  Each side runs in a fresh
    subprocess (``child``): the peak ``ru_maxrss`` minus the RSS after the imports, before the
    model is built, so imported libraries count on neither side."""
    import json
    import resource
    import subprocess

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    if child is not None:
        rng = np.random.default_rng(0)
        x = rng.random((batch, 224, 224, 3), dtype=np.float32)
        labels = np.arange(batch) % 10
        if child == "kgraph":
            import keras
            import keras.backend as KB
            KB.clear_session()
            base = rss_mb()
            model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
            model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
            onehot = np.eye(10, dtype=np.float32)[labels]
            steps = [lambda: model.train_on_batch(x, onehot)] * 2
        else:
            import torch
            from torch import nn
            torch.set_num_threads(int(os.environ.get("KGRAPH_NUM_THREADS", "1")))

            class Bottleneck(nn.Module):
                def __init__(self, cin, width, stride):
                    super().__init__()
                    cout = 4 * width
                    self.body = nn.Sequential(
                        nn.Conv2d(cin, width, 1, stride, bias=True), nn.BatchNorm2d(width, eps=1e-3), nn.ReLU(),
                        nn.Conv2d(width, width, 3, 1, 1, bias=True), nn.BatchNorm2d(width, eps=1e-3), nn.ReLU(),
                        nn.Conv2d(width, cout, 1, bias=True), nn.BatchNorm2d(cout, eps=1e-3))
                    self.short = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
                        nn.Conv2d(cin, cout, 1, stride, bias=True), nn.BatchNorm2d(cout, eps=1e-3))

                def forward(self, t):
                    return torch.relu(self.body(t) + self.short(t))

            base = rss_mb()
            blocks, cin = [], 64
            for width, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for i in range(n):
                    blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                    cin = 4 * width
            net = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64, eps=1e-3), nn.ReLU(),
                                nn.MaxPool2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                nn.Linear(2048, 10))
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            yt = torch.from_numpy(labels)

            def step():
                loss = nn.functional.cross_entropy(net(xt), yt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            steps = [step] * 2
        start = time.perf_counter()
        for run in steps:  # the first step includes the compile; the second shows the steady state
            run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_mb": peak - base, "base_mb": base, "after_mb": rss_mb() - base,
                          "seconds": time.perf_counter() - start}))
        return
    print(f"\nMemory: peak resident memory of a ResNet50 training step, batch {batch} "
          f"(224x224, 10 classes), each in a fresh process, above its RSS before the model is built")
    results = {}
    for side in ("kgraph", "torch"):
        if side == "torch" and torch_or_none() is None:
            print("  torch: not installed (skipped)")
            continue
        code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                f"import bench_keras; bench_keras.bench_memory({side!r}, {batch})")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            print(f"  {side}: failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            continue
        results[side] = json.loads(lines[-1])
        r = results[side]
        print(f"  {side:<7} peak {r['peak_mb']:8.0f} MB   (held after the steps {r['after_mb']:6.0f} MB; "
              f"imports {r['base_mb']:.0f} MB; 2 steps {r['seconds']:.1f} s)")
    if len(results) == 2:
        print(f"  kgraph / torch: {results['kgraph']['peak_mb'] / results['torch']['peak_mb']:.2f}x   "
              f"(target <= 1.2x)")


SECTIONS = ("step", "fit", "compile", "memory")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=thread_counts, default="1",
                        help="thread counts for every engine, comma-separated (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds per engine")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"sections to run, comma-separated, of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")
    import keras
    import onnxruntime as ort
    torch = torch_or_none()
    print(f"Keras {keras.__version__} on kgraph: onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"torch {torch.__version__ if torch else 'not installed (columns skipped)'}; {os.cpu_count()} cores")
    for threads in args.threads:
        setup_threads(threads)
        print(f"\n== {threads} thread{'s' if threads > 1 else ''} (ORT intra-op, torch) ==")
        if "step" in sections:
            bench_steps(threads, args.rounds, torch)
        if "fit" in sections:
            bench_fit(threads, max(3, args.rounds // 3), torch)
    if "compile" in sections:
        bench_compile()
    if "memory" in sections:
        bench_memory()


if __name__ == "__main__":
    main()
