"""A Keras 2.3.1 LSTM sequence classifier trained through kgraph, saved as .h5, converted to ONNX
and run on onnxruntime alone.

    pip install ".[keras]"
    python examples/keras_lstm_classifier.py --out keras-lstm --epochs 6

The data is built in: noisy sequences of 16 steps, 2 features, of three kinds — a slow wave, a
fast wave and a ramp — at random phases and amplitudes.  The script trains an LSTM with plain
Keras code (kgraph is only the backend; the LSTM runs as an ONNX Loop), saves it with
``model.save``, converts the ``.h5`` file with ``kgraph.keras.convert`` (what ``kgraph convert``
does) and runs the converted file in a fresh onnxruntime session on held-out sequences, of the
training length and of a longer one (the time dim of the file is symbolic).
"""
import argparse
import os
import sys

# Keras picks its backend once, when it is first imported, from KERAS_BACKEND or keras.json
os.environ.setdefault("KERAS_BACKEND", "kgraph.backend")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import keras  # noqa: E402
from keras import layers, models  # noqa: E402

from kgraph.keras.convert import convert  # noqa: E402

STEPS, FEATURES, CLASSES = 16, 2, ("slow wave", "fast wave", "ramp")


def sequences(n, rng, steps=STEPS):
    """``n`` noisy sequences of random kinds: (n, steps, 2) floats and (n,) labels."""
    labels = rng.integers(0, len(CLASSES), n)
    t = np.arange(steps)[None, :] / STEPS
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    amplitude = rng.uniform(0.5, 1.5, (n, 1))
    slow, fast = np.sin(2 * np.pi * t + phase), np.sin(8 * np.pi * t + phase)
    ramp = 2 * (t + phase / (2 * np.pi)) % 2 - 1
    signal = amplitude * np.choose(labels[:, None], [slow, fast, ramp])
    second = np.cos(2 * np.pi * t + phase) * (labels[:, None] != 2)  # a companion channel
    x = np.stack([signal, second], axis=-1) + rng.normal(0, 0.3, (n, steps, FEATURES))
    return x.astype("float32"), labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="keras-lstm", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "kgraph.backend":
        sys.exit(f"Keras runs on {keras.backend.backend()!r}; run with KERAS_BACKEND=kgraph.backend")
    os.makedirs(args.out, exist_ok=True)
    h5_path, onnx_path = os.path.join(args.out, "lstm.h5"), os.path.join(args.out, "lstm.onnx")
    for path in (h5_path, onnx_path):  # fail before training, not after
        if os.path.exists(path) and not args.force:
            sys.exit(f"{path} already exists (use --force to overwrite it)")

    rng = np.random.default_rng(0)
    np.random.seed(0)  # Keras's initializers and shuffling draw from numpy's global generator
    x_train, y_train = sequences(900, rng)
    x_test, y_test = sequences(300, rng)

    model = models.Sequential([
        layers.LSTM(16, input_shape=(None, FEATURES)),
        layers.Dense(len(CLASSES), activation="softmax")], name="sequence_lstm")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=2)
    keras_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"held-out accuracy (Keras on kgraph): {keras_accuracy:.3f}")

    model.save(h5_path)
    convert(h5_path, onnx_path, force=args.force)  # a fresh load of the file, as `kgraph convert` does
    print(f"wrote {h5_path} and {onnx_path}")

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    probabilities = session.run(None, {name: x_test})[0]
    onnx_accuracy = float(np.mean(probabilities.argmax(1) == y_test))
    print(f"held-out accuracy ({onnx_path} on onnxruntime): {onnx_accuracy:.3f}")
    print(f"largest difference from model.predict: {np.abs(probabilities - model.predict(x_test)).max():.2e}")
    x_long, y_long = sequences(100, rng, steps=2 * STEPS)
    long_accuracy = float(np.mean(session.run(None, {name: x_long})[0].argmax(1) == y_long))
    print(f"accuracy on {2 * STEPS}-step sequences ({onnx_path}): {long_accuracy:.3f}")


if __name__ == "__main__":
    main()
